"""eth_sendTransaction / eth_signTransaction through the in-process proxy: real anvil, real KMS
emulator. Every transaction is checked on chain: mined, of the expected type, and recovering
to the KMS key's address."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from eth_account import Account

from tests.conftest import (
    ANVIL_FUNDER,
    Anvil,
    InProcessProxy,
    KmsKey,
    ProxyFactory,
    proxy_settings,
    rpc_call,
    start_anvil,
    stop,
)

pytestmark = pytest.mark.integration

SINK = "0x000000000000000000000000000000000000dEaD"
ANVIL_CHAIN_ID = 31337
GWEI = 10**9
# Init code that deploys a 10-byte runtime returning 42: PUSH1 0x2a PUSH1 0 MSTORE ... RETURN.
INIT_CODE = "0x600a600c600039600a6000f3602a60005260206000f3"
RUNTIME_CODE = "0x602a60005260206000f3"
STORAGE_KEY = "0x" + "00" * 31 + "01"


def wait_for_receipt(anvil: Anvil, tx_hash: str, timeout: float = 10.0) -> dict[str, Any]:
    """anvil mines right after it answers eth_sendRawTransaction, not before: poll briefly."""
    deadline = time.monotonic() + timeout
    while (receipt := anvil.call("eth_getTransactionReceipt", [tx_hash])) is None:
        assert time.monotonic() < deadline, f"{tx_hash} was not mined within {timeout} s"
        time.sleep(0.02)
    return dict(receipt)


def mined(anvil: Anvil, tx_hash: str, sender: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(receipt, tx) of a mined, successful transaction whose signature recovers to `sender`."""
    receipt = wait_for_receipt(anvil, tx_hash)
    assert receipt["status"] == "0x1", receipt
    raw = anvil.call("eth_getRawTransactionByHash", [tx_hash])
    assert Account.recover_transaction(raw) == sender
    tx = anvil.call("eth_getTransactionByHash", [tx_hash])
    assert tx["from"].lower() == sender.lower()
    return receipt, tx


async def send(proxy: InProcessProxy, tx: dict[str, Any]) -> str:
    tx_hash: str = await proxy.result("eth_sendTransaction", [tx])
    return tx_hash


def nonce_count(anvil: Anvil, address: str, block: str = "latest") -> int:
    return int(anvil.call("eth_getTransactionCount", [address, block]), 16)


async def test_legacy_transaction_from_gas_price_is_eip155(
    proxy: InProcessProxy, anvil: Anvil, funded_key: KmsKey
) -> None:
    tx_hash = await send(
        proxy, {"from": funded_key.address, "to": SINK, "value": "0x1", "gasPrice": "0x77359400"}
    )
    _, tx = mined(anvil, tx_hash, funded_key.address)
    assert tx["type"] == "0x0"
    assert int(tx["gasPrice"], 16) == 0x77359400
    assert int(tx["v"], 16) in (ANVIL_CHAIN_ID * 2 + 35, ANVIL_CHAIN_ID * 2 + 36)
    assert int(tx["chainId"], 16) == ANVIL_CHAIN_ID


async def test_access_list_transaction_from_gas_price_and_access_list(
    proxy: InProcessProxy, anvil: Anvil, funded_key: KmsKey
) -> None:
    access_list = [{"address": SINK, "storageKeys": [STORAGE_KEY]}]
    tx_hash = await send(
        proxy,
        {
            "from": funded_key.address,
            "to": SINK,
            "value": "0x2",
            "gasPrice": "0x77359400",
            "accessList": access_list,
        },
    )
    _, tx = mined(anvil, tx_hash, funded_key.address)
    assert tx["type"] == "0x1"
    assert tx["yParity"] in ("0x0", "0x1")
    assert [a["address"].lower() for a in tx["accessList"]] == [SINK.lower()]
    assert tx["accessList"][0]["storageKeys"] == [STORAGE_KEY]


async def test_dynamic_fee_transaction_is_the_default_on_a_base_fee_chain(
    proxy: InProcessProxy, anvil: Anvil, funded_key: KmsKey
) -> None:
    tx_hash = await send(proxy, {"from": funded_key.address, "to": SINK, "value": "0x3"})
    receipt, tx = mined(anvil, tx_hash, funded_key.address)
    assert tx["type"] == "0x2"
    assert int(tx["value"], 16) == 3
    base_fee = int(
        anvil.call("eth_getBlockByNumber", [receipt["blockNumber"], False])["baseFeePerGas"], 16
    )
    assert int(tx["maxFeePerGas"], 16) >= base_fee


@pytest.mark.parametrize("tx_type", ["0x0", "0x1", "0x2"])
async def test_explicit_type_field_is_honoured(
    proxy: InProcessProxy, anvil: Anvil, funded_key: KmsKey, tx_type: str
) -> None:
    tx_hash = await send(
        proxy, {"from": funded_key.address, "to": SINK, "value": "0x1", "type": tx_type}
    )
    _, tx = mined(anvil, tx_hash, funded_key.address)
    assert tx["type"] == tx_type


@pytest.mark.parametrize("field", ["input", "data"])
async def test_input_and_data_are_both_accepted(
    proxy: InProcessProxy, anvil: Anvil, funded_key: KmsKey, field: str
) -> None:
    tx_hash = await send(proxy, {"from": funded_key.address, "to": SINK, field: "0xc0ffee"})
    _, tx = mined(anvil, tx_hash, funded_key.address)
    assert tx["input"] == "0xc0ffee"


async def test_contract_deployment_with_gas_from_estimate_times_margin(
    proxy: InProcessProxy, anvil: Anvil, funded_key: KmsKey
) -> None:
    estimate = int(
        anvil.call("eth_estimateGas", [{"from": funded_key.address, "input": INIT_CODE}]), 16
    )
    tx_hash = await send(proxy, {"from": funded_key.address, "data": INIT_CODE})
    receipt, tx = mined(anvil, tx_hash, funded_key.address)
    assert tx["to"] is None
    assert int(tx["gas"], 16) == -(-estimate * 6 // 5)  # ceil(estimate x 1.2), exactly
    assert int(tx["gas"], 16) > 25200  # a real estimate, not a transfer's
    contract = receipt["contractAddress"]
    assert contract is not None
    assert anvil.call("eth_getCode", [contract, "latest"]) == RUNTIME_CODE
    assert int(anvil.call("eth_call", [{"to": contract}, "latest"]), 16) == 42


async def test_plain_transfer_gas_is_estimate_times_margin(
    proxy: InProcessProxy, anvil: Anvil, funded_key: KmsKey
) -> None:
    tx_hash = await send(proxy, {"from": funded_key.address, "to": SINK, "value": "0x1"})
    _, tx = mined(anvil, tx_hash, funded_key.address)
    assert int(tx["gas"], 16) == 25200  # ceil(21000 x 1.2)


async def test_sign_transaction_returns_raw_that_the_node_accepts(
    proxy: InProcessProxy, anvil: Anvil, funded_key: KmsKey
) -> None:
    raw = await proxy.result(
        "eth_signTransaction", [{"from": funded_key.address, "to": SINK, "value": "0x5"}]
    )
    assert isinstance(raw, str) and raw.startswith("0x02")
    assert Account.recover_transaction(raw) == funded_key.address
    assert nonce_count(anvil, funded_key.address, "pending") == 0  # signed, not sent
    tx_hash = anvil.call("eth_sendRawTransaction", [raw])
    _, tx = mined(anvil, tx_hash, funded_key.address)
    assert int(tx["value"], 16) == 5
    assert tx["nonce"] == "0x0"
    # The nonce it filled is taken as used: the next send goes on from 1.
    tx_hash = await send(proxy, {"from": funded_key.address, "to": SINK})
    _, tx = mined(anvil, tx_hash, funded_key.address)
    assert tx["nonce"] == "0x1"


async def test_caller_given_gas_fees_and_nonce_are_respected(
    proxy: InProcessProxy, anvil: Anvil, funded_key: KmsKey
) -> None:
    tx_hash = await send(
        proxy,
        {
            "from": funded_key.address,
            "to": SINK,
            "gas": "0x7530",
            "maxFeePerGas": "0x12a05f200",
            "maxPriorityFeePerGas": "0x3b9aca00",
            "nonce": "0x0",
        },
    )
    _, tx = mined(anvil, tx_hash, funded_key.address)
    assert (tx["type"], tx["gas"], tx["maxFeePerGas"], tx["maxPriorityFeePerGas"], tx["nonce"]) == (
        "0x2",
        "0x7530",
        "0x12a05f200",
        "0x3b9aca00",
        "0x0",
    )
    tx_hash = await send(
        proxy,
        {
            "from": funded_key.address,
            "to": SINK,
            "gas": "0x5209",
            "gasPrice": "0x9502f9000",
            "nonce": "0x1",
        },
    )
    _, tx = mined(anvil, tx_hash, funded_key.address)
    assert (tx["type"], tx["gas"], tx["gasPrice"], tx["nonce"]) == (
        "0x0",
        "0x5209",
        "0x9502f9000",
        "0x1",
    )


async def test_chain_id_mismatch_is_refused_and_nothing_is_sent(
    proxy: InProcessProxy, anvil: Anvil, funded_key: KmsKey
) -> None:
    block = anvil.call("eth_blockNumber")
    response = await proxy.call(
        "eth_sendTransaction", [{"from": funded_key.address, "to": SINK, "chainId": "0x1"}]
    )
    assert response["error"]["code"] == -32602
    assert "chainId 1" in response["error"]["message"]
    assert str(ANVIL_CHAIN_ID) in response["error"]["message"]
    assert anvil.call("eth_blockNumber") == block
    assert nonce_count(anvil, funded_key.address, "pending") == 0
    # The matching chain id is fine.
    tx_hash = await send(
        proxy, {"from": funded_key.address, "to": SINK, "chainId": hex(ANVIL_CHAIN_ID)}
    )
    _, tx = mined(anvil, tx_hash, funded_key.address)
    assert tx["nonce"] == "0x0"


async def test_no_fee_fields_on_a_chain_without_base_fee_is_legacy(
    start_proxy: ProxyFactory, kms: Any, funded_key: KmsKey
) -> None:
    berlin = start_anvil("--hardfork", "berlin")
    try:
        berlin.fund(funded_key.address)
        proxy = await start_proxy(proxy_settings(berlin.url, kms.url, funded_key.arn))
        tx_hash = await send(proxy, {"from": funded_key.address, "to": SINK, "value": "0x1"})
        _, tx = mined(berlin, tx_hash, funded_key.address)
        assert tx["type"] == "0x0"
        assert int(tx["v"], 16) in (ANVIL_CHAIN_ID * 2 + 35, ANVIL_CHAIN_ID * 2 + 36)
        assert int(tx["gasPrice"], 16) > 0
    finally:
        stop(berlin.process)


async def test_one_hundred_concurrent_sends_get_contiguous_nonces(
    proxy: InProcessProxy, anvil: Anvil, funded_key: KmsKey
) -> None:
    hashes = await asyncio.gather(
        *(
            send(proxy, {"from": funded_key.address, "to": SINK, "value": hex(i + 1)})
            for i in range(100)
        )
    )
    assert len(set(hashes)) == 100
    nonces = sorted(int(mined(anvil, h, funded_key.address)[1]["nonce"], 16) for h in hashes)
    assert nonces == list(range(100))
    assert nonce_count(anvil, funded_key.address) == 100


async def test_rejected_send_reports_the_node_error_and_frees_its_nonce(
    proxy: InProcessProxy, anvil: Anvil, funded_key: KmsKey
) -> None:
    first = await send(proxy, {"from": funded_key.address, "to": SINK})
    # Explicit gas: no estimate, so the refusal comes from eth_sendRawTransaction itself.
    too_rich = {"from": funded_key.address, "to": SINK, "value": hex(10**24), "gas": "0x5208"}
    response = await proxy.call("eth_sendTransaction", [too_rich])
    # The node's own words: the same transaction sent straight to anvil gets the same error.
    raw = await proxy.result("eth_signTransaction", [{**too_rich, "nonce": "0x1"}])
    direct = rpc_call(anvil.url, "eth_sendRawTransaction", [raw])
    assert "insufficient funds" in direct["error"]["message"].lower()
    assert response["error"] == direct["error"]
    assert nonce_count(anvil, funded_key.address, "pending") == 1
    second = await send(proxy, {"from": funded_key.address, "to": SINK})
    nonces = [int(mined(anvil, h, funded_key.address)[1]["nonce"], 16) for h in (first, second)]
    assert nonces == [0, 1]


async def test_rejection_inside_a_concurrent_burst_leaves_no_gap(
    proxy: InProcessProxy, anvil: Anvil, funded_key: KmsKey
) -> None:
    def tx(i: int) -> dict[str, Any]:
        value = 10**24 if i == 7 else 1  # one of them cannot be paid for
        return {"from": funded_key.address, "to": SINK, "value": hex(value), "gas": "0x5208"}

    replies = await asyncio.gather(*(proxy.call("eth_sendTransaction", [tx(i)]) for i in range(20)))
    errors = [r for r in replies if "error" in r]
    assert len(errors) == 1
    assert "insufficient funds" in errors[0]["error"]["message"].lower()
    # Whatever nonce the refused send held is handed out again: no gap stalls the rest.
    after = await send(proxy, {"from": funded_key.address, "to": SINK})
    hashes = [r["result"] for r in replies if "result" in r] + [after]
    nonces = sorted(int(mined(anvil, h, funded_key.address)[1]["nonce"], 16) for h in hashes)
    assert nonces == list(range(20))
    assert nonce_count(anvil, funded_key.address) == 20
    assert anvil.call("txpool_status") == {"pending": "0x0", "queued": "0x0"}


async def test_transactions_sent_around_the_proxy_do_not_break_the_next_send(
    proxy: InProcessProxy, anvil: Anvil, funded_key: KmsKey
) -> None:
    address = funded_key.address
    first = await send(proxy, {"from": address, "to": SINK})
    # Around the proxy 1: anvil itself sends from the KMS address (impersonation).
    anvil.call("anvil_impersonateAccount", [address])
    around = anvil.call("eth_sendTransaction", [{"from": address, "to": SINK, "value": "0x1"}])
    anvil.call("anvil_stopImpersonatingAccount", [address])
    assert anvil.call("eth_getTransactionByHash", [around])["nonce"] == "0x1"
    second = await send(proxy, {"from": address, "to": SINK})
    # Around the proxy 2: a transaction signed through the proxy but sent straight to anvil.
    raw = await proxy.result("eth_signTransaction", [{"from": address, "to": SINK, "nonce": "0x3"}])
    anvil.call("eth_sendRawTransaction", [raw])
    third = await send(proxy, {"from": address, "to": SINK})
    # Around the proxy 3: anvil's funder sends too (another account: must not matter).
    anvil.call("eth_sendTransaction", [{"from": ANVIL_FUNDER, "to": address, "value": "0x1"}])
    fourth = await send(proxy, {"from": address, "to": SINK})
    nonces = [int(mined(anvil, h, address)[1]["nonce"], 16) for h in (first, second, third, fourth)]
    assert nonces == [0, 2, 4, 5]
    assert nonce_count(anvil, address) == 6


async def test_a_send_around_the_proxy_in_the_middle_of_a_burst_is_absorbed(
    proxy: InProcessProxy, anvil: Anvil, funded_key: KmsKey
) -> None:
    """The proxy's counter is stale mid-burst: its clashing send must resync and retry."""
    address = funded_key.address
    anvil.call("anvil_impersonateAccount", [address])
    # Both sides pay the same fees, so neither can replace the other's pending transaction at a
    # shared nonce: the second to arrive is refused (replacement underpriced). With anvil's own
    # fees the "around" send could outbid a pending send of the proxy's, whose hash then never
    # mined (a flaky failure in CI), and that is the node's choice, not a proxy fault.
    fees = {"maxFeePerGas": hex(10 * GWEI), "maxPriorityFeePerGas": hex(GWEI)}

    async def around() -> str:
        await asyncio.sleep(0.05)
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_sendTransaction",
            "params": [{"from": address, "to": SINK, "value": "0x2a", **fees}],
        }
        # anvil fills the nonce of its own eth_sendTransaction from its pool, which races with
        # the proxy's sends just as ours races with it: its clash is anvil's to retry, not ours.
        for _ in range(10):
            async with aiohttp.ClientSession() as session, session.post(anvil.url, json=body) as r:
                reply = await r.json()
            error = str(reply.get("error"))
            if "result" in reply or not ("underpriced" in error or "nonce too low" in error):
                break
            await asyncio.sleep(0.01)
        assert "result" in reply, reply
        return str(reply["result"])

    sends = [send(proxy, {"from": address, "to": SINK, "value": "0x1", **fees}) for _ in range(30)]
    *hashes, around_hash = await asyncio.gather(*sends, around())
    anvil.call("anvil_stopImpersonatingAccount", [address])
    assert len(set(hashes)) == 30
    for h in hashes:
        mined(anvil, h, address)
    nonces = sorted(
        int(anvil.call("eth_getTransactionByHash", [h])["nonce"], 16)
        for h in [*hashes, around_hash]
    )
    assert nonces == list(range(31))
    assert nonce_count(anvil, address) == 31
