"""dev/chain: the JSON-RPC face of eth-tester (pure helpers, then a real in-memory chain)."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account

from signer_proxy.dev.chain import (
    DevChain,
    camel,
    effective_tip,
    node_message,
    percentile_rewards,
    raw_transaction_chain_id,
    to_json_rpc,
)
from signer_proxy.errors import InvalidParams, MethodNotFound, NodeRejected
from signer_proxy.upstream.node_errors import SendOutcome, classify_send_error

RECIPIENT = "0x000000000000000000000000000000000000dEaD"
TOPIC = "0x" + "ab" * 32


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        pytest.param("block_number", "blockNumber", id="two-words"),
        pytest.param("max_priority_fee_per_gas", "maxPriorityFeePerGas", id="many-words"),
        pytest.param("hash", "hash", id="one-word"),
        pytest.param("logsBloom", "logsBloom", id="already-camel"),
    ],
)
def test_camel_converts_snake_case(key: str, expected: str) -> None:
    assert camel(key) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(0, "0x0", id="zero"),
        pytest.param(1337, "0x539", id="int"),
        pytest.param(True, True, id="bool-stays"),
        pytest.param(None, None, id="null"),
        pytest.param(0.25, 0.25, id="float-stays"),
        pytest.param("0xab", "0xab", id="string-stays"),
        pytest.param(b"\x01\x02", "0x0102", id="bytes-hex"),
        pytest.param([1, [2]], ["0x1", ["0x2"]], id="nested-lists"),
        pytest.param({"gas_used": 21000}, {"gasUsed": "0x5208"}, id="dict-keys-camel"),
        pytest.param(
            {"logs_bloom": 1}, {"logsBloom": "0x" + "00" * 255 + "01"}, id="bloom-256-bytes"
        ),
    ],
)
def test_to_json_rpc_encodes_values(value: Any, expected: Any) -> None:
    assert to_json_rpc(value) == expected


def test_to_json_rpc_refuses_unknown_types() -> None:
    with pytest.raises(TypeError, match="set"):
        to_json_rpc({1, 2})


@pytest.mark.parametrize(
    ("message", "expected", "outcome"),
    [
        pytest.param(
            "Invalid transaction nonce: Expected 3, but got 1",
            "nonce too low: next nonce 3, tx nonce 1",
            SendOutcome.NONCE_TOO_LOW,
            id="nonce-low",
        ),
        pytest.param(
            "Invalid transaction nonce: Expected 3, but got 9",
            "nonce too high: next nonce 3, tx nonce 9",
            SendOutcome.NONCE_TOO_HIGH,
            id="nonce-high",
        ),
        pytest.param(
            "Sender does not have enough balance to cover transaction value and gas",
            "insufficient funds for gas * price + value: Sender does not have enough balance "
            "to cover transaction value and gas",
            SendOutcome.REJECTED,
            id="insufficient-funds",
        ),
        pytest.param(
            "Sender's max fee per gas (1) is lower than block's base fee per gas (7)",
            "max fee per gas less than block base fee: Sender's max fee per gas (1) is lower "
            "than block's base fee per gas (7)",
            SendOutcome.REJECTED,
            id="fee-below-base-fee",
        ),
        pytest.param("something else", "something else", SendOutcome.REJECTED, id="unchanged"),
    ],
)
def test_node_message_speaks_geth_so_the_proxy_classifies_it(
    message: str, expected: str, outcome: SendOutcome
) -> None:
    assert node_message(message) == expected
    assert classify_send_error(node_message(message)) is outcome


@pytest.mark.parametrize(
    ("tips_and_gas", "percentiles", "expected"),
    [
        pytest.param([], [10, 50], [0, 0], id="empty-block"),
        pytest.param([(5, 21000)], [0, 50, 100], [5, 5, 5], id="one-tx"),
        pytest.param([(9, 10), (1, 10)], [25, 50, 75, 100], [1, 1, 9, 9], id="sorted-by-tip"),
        pytest.param([(1, 90), (9, 10)], [50, 95], [1, 9], id="gas-weighted"),
        pytest.param([(3, 0)], [50], [0], id="no-gas-used"),
    ],
)
def test_percentile_rewards_follow_geths_rule(
    tips_and_gas: list[tuple[int, int]], percentiles: list[float], expected: list[int]
) -> None:
    assert percentile_rewards(tips_and_gas, percentiles) == expected


@pytest.mark.parametrize(
    ("tx", "base_fee", "expected"),
    [
        pytest.param({"gas_price": 10}, 7, 3, id="legacy"),
        pytest.param(
            {"max_fee_per_gas": 100, "max_priority_fee_per_gas": 2}, 7, 2, id="tip-capped"
        ),
        pytest.param(
            {"max_fee_per_gas": 8, "max_priority_fee_per_gas": 2}, 7, 1, id="max-fee-capped"
        ),
    ],
)
def test_effective_tip(tx: dict[str, int], base_fee: int, expected: int) -> None:
    assert effective_tip(tx, base_fee) == expected


@pytest.mark.parametrize(
    ("fields", "chain_id"),
    [
        pytest.param({"type": 2, "chainId": 1337}, 1337, id="eip1559"),
        pytest.param({"type": 1, "chainId": 5, "gasPrice": 1}, 5, id="eip2930"),
        pytest.param({"chainId": 31337, "gasPrice": 1}, 31337, id="legacy-eip155"),
        pytest.param({"gasPrice": 1}, None, id="legacy-pre-eip155"),
    ],
)
def test_raw_transaction_chain_id(fields: dict[str, Any], chain_id: int | None) -> None:
    tx = {"to": RECIPIENT, "value": 1, "gas": 21000, "nonce": 0, **fields}
    if "gasPrice" not in fields:
        tx.update(maxFeePerGas=2, maxPriorityFeePerGas=1)
    raw = bytes(Account.create().sign_transaction(tx).raw_transaction)
    assert raw_transaction_chain_id(raw) == chain_id


# --- A real eth-tester chain, in memory ---------------------------------------------------


@pytest.fixture(scope="module")
def chain() -> DevChain:
    return DevChain()


def signed(account: Any, **fields: Any) -> str:
    tx = {"to": RECIPIENT, "value": 1, "gas": 21000, "maxFeePerGas": 10**10,
          "maxPriorityFeePerGas": 10**9, "chainId": 1337, "type": 2, **fields}  # fmt: skip
    return "0x" + account.sign_transaction(tx).raw_transaction.hex()


def funded_account(chain: DevChain) -> Any:
    account = Account.create()
    chain.request(
        "eth_sendTransaction", [{"from": chain.funder, "to": account.address, "value": hex(10**18)}]
    )
    return account


def test_dev_chain_reports_its_chain_id() -> None:
    chain = DevChain(chain_id=4242)
    assert chain.request("eth_chainId", []) == hex(4242)
    assert chain.request("net_version", []) == "4242"


def test_dev_chain_mines_a_block_per_transaction_with_the_chain_id(chain: DevChain) -> None:
    account = funded_account(chain)
    before = chain.head_number()
    tx_hash = chain.request("eth_sendRawTransaction", [signed(account, nonce=0)])
    assert chain.head_number() == before + 1
    tx = chain.request("eth_getTransactionByHash", [tx_hash])
    assert tx["chainId"] == hex(1337)
    assert tx["from"] == account.address
    assert tx["blockNumber"] == hex(before + 1)


def test_dev_chain_refuses_a_reused_nonce_in_geths_words(chain: DevChain) -> None:
    account = funded_account(chain)
    chain.request("eth_sendRawTransaction", [signed(account, nonce=0)])
    with pytest.raises(NodeRejected) as refused:
        chain.request("eth_sendRawTransaction", [signed(account, nonce=0, value=2)])
    assert refused.value.node_code == -32000
    assert refused.value.message == "nonce too low: next nonce 1, tx nonce 0"


def test_dev_chain_refuses_a_transaction_signed_for_another_chain(chain: DevChain) -> None:
    account = funded_account(chain)
    with pytest.raises(NodeRejected, match="invalid chain id for signer: have 1 want 1337"):
        chain.request("eth_sendRawTransaction", [signed(account, nonce=0, chainId=1)])
    assert chain.request("eth_getTransactionCount", [account.address, "latest"]) == "0x0"


def test_dev_chain_receipt_carries_the_logs_bloom_of_its_block(chain: DevChain) -> None:
    # Init code: LOG1(offset 0, size 0, topic TOPIC), then stop: a deployment that logs.
    init_code = "0x7f" + TOPIC[2:] + "60006000a100"
    tx_hash = chain.request("eth_sendTransaction", [{"from": chain.funder, "data": init_code}])
    receipt = chain.request("eth_getTransactionReceipt", [tx_hash])
    block = chain.request("eth_getBlockByNumber", [receipt["blockNumber"], False])
    assert receipt["logs"][0]["topics"] == [TOPIC]
    assert receipt["logsBloom"] == block["logsBloom"] != "0x" + "00" * 256
    assert receipt["status"] == "0x1"
    assert "stateRoot" not in receipt


def test_dev_chain_fee_history_has_next_base_fee_and_rewards(chain: DevChain) -> None:
    funded_account(chain)
    head = chain.head_number()
    history = chain.request("eth_feeHistory", ["0x2", "latest", [50]])
    assert history["oldestBlock"] == hex(head - 1)
    assert len(history["baseFeePerGas"]) == 3  # the two blocks, then the next one's
    pending = chain.request("eth_getBlockByNumber", ["pending", False])
    assert history["baseFeePerGas"][-1] == pending["baseFeePerGas"]
    assert len(history["gasUsedRatio"]) == 2
    block = chain.request("eth_getBlockByNumber", ["latest", True])
    tx, base_fee = block["transactions"][0], int(block["baseFeePerGas"], 16)
    tip = min(int(tx["maxPriorityFeePerGas"], 16), int(tx["maxFeePerGas"], 16) - base_fee)
    assert history["reward"][-1] == [hex(tip)]  # the latest block's only transaction


@pytest.mark.parametrize(
    ("params", "message"),
    [
        pytest.param(["0x0", "latest", []], "between 1 and 1024", id="zero-blocks"),
        pytest.param(["0x1", "latest", [101]], "0 to 100", id="bad-percentile"),
        pytest.param(["0x1", "0xffffff", []], "after the head block", id="future-block"),
        pytest.param(["0x1"], "takes [blockCount", id="missing-params"),
    ],
)
def test_dev_chain_fee_history_refuses_bad_params(
    chain: DevChain, params: list[Any], message: str
) -> None:
    with pytest.raises(InvalidParams, match=message.replace("[", r"\[")):
        chain.request("eth_feeHistory", params)


def test_dev_chain_accepts_input_and_pending_as_clients_send_them(chain: DevChain) -> None:
    gas = chain.request(
        "eth_estimateGas",
        [{"from": chain.funder, "to": RECIPIENT, "input": "0x", "value": "0x1"}, "pending"],
    )
    assert gas == hex(21000)


def test_dev_chain_reports_a_revert_with_code_3_and_its_reason(chain: DevChain) -> None:
    from eth_abi import abi

    data = bytes.fromhex("08c379a0") + abi.encode(["string"], ["no luck"])
    init_code = (
        "".join(  # MSTORE each 32-byte word of `data`, then REVERT(0, len(data))
            "7f" + data[i : i + 32].ljust(32, b"\0").hex() + f"60{i:02x}52"
            for i in range(0, len(data), 32)
        )
        + f"60{len(data):02x}6000fd"
    )
    with pytest.raises(NodeRejected) as reverted:
        chain.request("eth_estimateGas", [{"from": chain.funder, "data": "0x" + init_code}])
    assert reverted.value.node_code == 3
    assert reverted.value.message == "execution reverted: no luck"
    assert reverted.value.data == "0x" + data.hex()


@pytest.mark.parametrize(
    "method",
    [pytest.param("eth_sign", id="not-implemented"), pytest.param("foo_bar", id="unknown")],
)
def test_dev_chain_names_methods_it_does_not_have(chain: DevChain, method: str) -> None:
    with pytest.raises(MethodNotFound, match=f"does not implement {method}; use --upstream"):
        chain.request(method, [])


def test_dev_chain_new_head_is_a_header_without_the_body(chain: DevChain) -> None:
    funded_account(chain)
    head = chain.new_head(chain.head_number())
    assert head["number"] == hex(chain.head_number())
    assert "transactions" not in head and "parentHash" in head and "baseFeePerGas" in head
