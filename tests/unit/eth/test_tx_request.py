"""eth/tx_request.py: parsing and validating transaction requests, choosing the type."""

from __future__ import annotations

from typing import Any

import pytest

from signer_proxy.chain.fill import ChainFacts, fill
from signer_proxy.errors import ChainIdMismatch, InvalidParams, NodeRejected
from signer_proxy.eth.blobs import BYTES_PER_BLOB, SidecarForm, build_sidecar
from signer_proxy.eth.ecdsa import SECP256K1_HALF_N, keccak256
from signer_proxy.eth.tx_encoding import (
    UnsignedTx,
)
from signer_proxy.eth.tx_request import (
    ACCESS_LIST,
    BLOB,
    DYNAMIC_FEE,
    LEGACY,
    MAX_UINT64,
    SET_CODE,
    Authorization,
    TxRequest,
    choose_type,
    parse_authorization,
    parse_tx_request,
)
from tests.unit.tx_support import SENDER, TO, FakeNode, _req

OTHER = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"


GWEI = 10**9


SLOT_0 = bytes(32)


HASH_A = bytes([1]) + keccak256(b"a")[1:]


# Two authorizations as a type 0x4 carries them (signatures need not be valid to be encoded).
AUTH_ANY_CHAIN = Authorization(0, OTHER, 0, 0, 1, 2)


AUTH_BIG = Authorization(2**256 - 1, TO, MAX_UINT64 - 1, 1, 2**255, SECP256K1_HALF_N)


AL = ((TO, (SLOT_0,)),)


async def _fill(node: FakeNode, margin: float = 1.2, **fields: Any) -> UnsignedTx:
    return await fill(_req(**fields), node, ChainFacts(node), margin)


def test_build_sidecar_eip7594_has_128_cell_proofs_per_blob_and_kzg_hashes() -> None:
    sidecar = build_sidecar((bytes(BYTES_PER_BLOB),) * 2, SidecarForm.EIP7594)

    assert len(sidecar.commitments) == 2 and len(sidecar.proofs) == 256
    for commitment, versioned in zip(sidecar.commitments, sidecar.versioned_hashes, strict=True):
        assert versioned[0] == 1
        assert versioned[1:] == __import__("hashlib").sha256(commitment).digest()[1:]


@pytest.mark.parametrize(
    ("blob", "fragment"),
    [
        pytest.param(b"\x00" * 100, "blobs[0] is 100 bytes", id="short"),
        pytest.param(b"\xff" * BYTES_PER_BLOB, "field modulus", id="not-field-elements"),
    ],
)
def test_build_sidecar_refuses_invalid_blobs(blob: bytes, fragment: str) -> None:
    with pytest.raises(InvalidParams) as info:
        build_sidecar((blob,), SidecarForm.EIP4844)

    assert fragment in info.value.message


@pytest.mark.parametrize(
    ("request_", "base_fee", "expected"),
    [
        pytest.param(_req(type=0), True, LEGACY, id="type-0-given"),
        pytest.param(_req(type=1), True, ACCESS_LIST, id="type-1-given"),
        pytest.param(_req(type=2), False, DYNAMIC_FEE, id="type-2-given-beats-no-base-fee"),
        pytest.param(_req(type=0, access_list=()), True, LEGACY, id="type-0-empty-access-list"),
        pytest.param(_req(gas_price=GWEI), True, LEGACY, id="gas-price-means-legacy"),
        pytest.param(_req(gas_price=GWEI, access_list=AL), True, ACCESS_LIST, id="gas-price-al"),
        pytest.param(_req(max_fee_per_gas=GWEI), False, DYNAMIC_FEE, id="max-fee-means-2"),
        pytest.param(_req(max_priority_fee_per_gas=1), False, DYNAMIC_FEE, id="tip-means-2"),
        pytest.param(_req(), True, DYNAMIC_FEE, id="nothing-node-has-base-fee"),
        pytest.param(_req(), False, LEGACY, id="nothing-no-base-fee"),
        pytest.param(_req(access_list=AL), False, ACCESS_LIST, id="access-list-no-base-fee"),
        pytest.param(_req(access_list=AL), True, DYNAMIC_FEE, id="access-list-base-fee"),
        pytest.param(_req(type=3, to=TO, blobs=(b"",)), False, BLOB, id="type-3-given"),
        pytest.param(_req(to=TO, blob_versioned_hashes=(HASH_A,)), True, BLOB, id="hashes-mean-3"),
        pytest.param(_req(to=TO, blobs=(b"",), max_fee_per_gas=1), True, BLOB, id="blobs-mean-3"),
        pytest.param(
            _req(type=4, to=TO, authorization_list=(AUTH_BIG,)), False, SET_CODE, id="type-4-given"
        ),
        pytest.param(
            _req(to=TO, authorization_list=(AUTH_BIG,)), True, SET_CODE, id="auth-list-means-4"
        ),
        pytest.param(_req(chain_id=0), True, LEGACY, id="chain-id-0-means-legacy"),
        pytest.param(_req(chain_id=0, type=0), True, LEGACY, id="chain-id-0-type-0"),
    ],
)
def test_choose_type(request_: TxRequest, base_fee: bool, expected: int) -> None:
    assert choose_type(request_, node_has_base_fee=base_fee) == expected


@pytest.mark.parametrize(
    ("request_", "fragments"),
    [
        pytest.param(
            _req(gas_price=1, max_fee_per_gas=2),
            ["gasPrice", "maxFeePerGas/maxPriorityFeePerGas", "send one kind"],
            id="gas-price-and-max-fee",
        ),
        pytest.param(
            _req(type=2, gas_price=1, max_priority_fee_per_gas=2),
            ["gasPrice", "maxFeePerGas/maxPriorityFeePerGas"],
            id="gas-price-and-tip-with-type",
        ),
        pytest.param(
            _req(type=0, max_fee_per_gas=2), ["type 0x0", "gasPrice", "maxFeePerGas"], id="t0-fee"
        ),
        pytest.param(
            _req(type=1, max_priority_fee_per_gas=2),
            ["type 0x1", "gasPrice", "maxPriorityFeePerGas"],
            id="type-1-tip",
        ),
        pytest.param(
            _req(type=2, gas_price=2), ["type 0x2", "maxFeePerGas", "not gasPrice"], id="t2-gp"
        ),
        pytest.param(_req(type=0, access_list=AL), ["legacy", "accessList"], id="t0-access-list"),
        pytest.param(_req(type=5), ["type 0x5 is not supported", "0x4 (EIP-7702"], id="type-5"),
        pytest.param(_req(type=0x7E), ["type 0x7e is not supported"], id="type-7e-deposit"),
        pytest.param(_req(type=3, to=TO), ["type 0x3", "needs blobs"], id="t3-without-blobs"),
        pytest.param(
            _req(blob_versioned_hashes=(HASH_A,)), ["cannot create a contract"], id="t3-no-to"
        ),
        pytest.param(
            _req(to=TO, blobs=(b"", b""), blob_versioned_hashes=(HASH_A,)),
            ["2 blobs but 1 blobVersionedHashes"],
            id="t3-count-mismatch",
        ),
        pytest.param(
            _req(to=TO, blobs=(b"",), gas_price=1), ["type 0x3", "not gasPrice"], id="t3-gas-price"
        ),
        pytest.param(
            _req(type=2, to=TO, max_fee_per_blob_gas=1),
            ["belong to type 0x3", "not to type 0x2"],
            id="t2-blob-fee",
        ),
        pytest.param(
            _req(to=TO, blobs=(b"",), authorization_list=(AUTH_BIG,)),
            ["blob fields and an authorizationList"],
            id="blobs-and-auths",
        ),
        pytest.param(_req(type=4, to=TO), ["needs an authorizationList"], id="t4-without-auths"),
        pytest.param(
            _req(authorization_list=(AUTH_BIG,)), ["type 0x4", "cannot create"], id="t4-no-to"
        ),
        pytest.param(
            _req(type=2, to=TO, authorization_list=(AUTH_BIG,)),
            ["authorizationList belongs to type 0x4", "not to type 0x2"],
            id="t2-auths",
        ),
        pytest.param(
            _req(chain_id=0, max_fee_per_gas=1), ["chainId 0x0", "only for legacy"], id="c0-t2"
        ),
        pytest.param(_req(chain_id=0, type=1), ["chainId 0x0", "not type 0x1"], id="c0-t1"),
    ],
)
def test_choose_type_refuses_contradictions_naming_the_fields(
    request_: TxRequest, fragments: list[str]
) -> None:
    with pytest.raises(InvalidParams) as info:
        choose_type(request_, node_has_base_fee=True)

    assert info.value.code == -32602
    for fragment in fragments:
        assert fragment in info.value.message


def test_parse_tx_request_full_object() -> None:
    request = parse_tx_request(
        [
            {
                "from": SENDER.lower(),
                "to": TO.lower(),
                "value": "0xde0b6b3a7640000",
                "input": "0xa9059cbb",
                "gas": "0x5208",
                "maxFeePerGas": "0x3b9aca00",
                "maxPriorityFeePerGas": "0x1",
                "nonce": "0x7",
                "chainId": "0x1",
                "type": "0x2",
                "accessList": [{"address": OTHER.lower(), "storageKeys": ["0x" + "00" * 32]}],
            }
        ]
    )

    assert request == TxRequest(
        sender=SENDER,
        to=TO,
        value=10**18,
        data=bytes.fromhex("a9059cbb"),
        gas=21_000,
        max_fee_per_gas=GWEI,
        max_priority_fee_per_gas=1,
        nonce=7,
        chain_id=1,
        type=2,
        access_list=((OTHER, (SLOT_0,)),),
    )


def test_parse_tx_request_minimal_object_and_bare_object_params() -> None:
    request = parse_tx_request({"from": SENDER})

    assert request == TxRequest(sender=SENDER)
    assert request.value == 0 and request.data == b"" and request.to is None


@pytest.mark.parametrize(
    "to", [pytest.param(None, id="null"), pytest.param("", id="empty"), pytest.param("0x", id="0x")]
)
def test_parse_tx_request_contract_creation(to: Any) -> None:
    assert parse_tx_request([{"from": SENDER, "to": to, "data": "0x6000"}]).to is None


def test_parse_tx_request_data_equal_to_input_is_allowed() -> None:
    request = parse_tx_request([{"from": SENDER, "data": "0xABCD", "input": "0xabcd"}])

    assert request.data == b"\xab\xcd"


def test_parse_tx_request_null_fields_mean_fill_in() -> None:
    request = parse_tx_request(
        [{"from": SENDER, "gas": None, "gasPrice": None, "nonce": None, "someExtension": None}]
    )

    assert request == TxRequest(sender=SENDER)


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        pytest.param([{"to": TO}], 'no "from"', id="missing-from"),
        pytest.param([{"from": "0x1234"}], "from must be a 20-byte", id="short-from"),
        pytest.param([{"from": SENDER, "to": "0xzz"}], "to must be a 20-byte", id="bad-to"),
        pytest.param([{"from": SENDER, "data": "0xabc"}], "data has an odd number", id="odd-data"),
        pytest.param(
            [{"from": SENDER, "input": "0xabc"}], "input has an odd number", id="odd-input"
        ),
        pytest.param(
            [{"from": SENDER, "data": "0x01", "input": "0x02"}],
            'both "data" and "input" are set and differ',
            id="data-and-input-differ",
        ),
        pytest.param(
            [{"from": SENDER, "sidecar": {}}],
            "unsupported transaction field(s) sidecar",
            id="unknown-field",
        ),
        pytest.param(
            [{"from": SENDER, "bar": [], "foo": 1}],
            "bar, foo",
            id="two-unknown-fields-sorted",
        ),
        pytest.param(
            [{"from": SENDER, "to": TO, "blobVersionedHashes": ["0x01"]}],
            "blobVersionedHashes[0] must be 32 bytes starting with 0x01",
            id="short-versioned-hash",
        ),
        pytest.param(
            [{"from": SENDER, "to": TO, "blobVersionedHashes": ["0x02" + "00" * 31]}],
            "starting with 0x01",
            id="versioned-hash-wrong-version",
        ),
        pytest.param(
            [{"from": SENDER, "to": TO, "blobVersionedHashes": []}],
            "blobVersionedHashes must be a non-empty list",
            id="no-versioned-hashes",
        ),
        pytest.param(
            [{"from": SENDER, "to": TO, "blobs": ["0x00"]}],
            "blobs[0] is 1 bytes; a blob is exactly 131072 bytes",
            id="short-blob",
        ),
        pytest.param(
            [{"from": SENDER, "to": TO, "blobs": "0x00"}], "blobs must be a non-empty list", id="b"
        ),
        pytest.param(
            [{"from": SENDER, "to": TO, "authorizationList": []}],
            "authorizationList must be a non-empty list",
            id="empty-authorization-list",
        ),
        pytest.param(
            [{"from": SENDER, "to": TO, "authorizationList": [{"address": TO}]}],
            "authorizationList[0] has no chainId, nonce, r, s, yParity",
            id="authorization-missing-fields",
        ),
        pytest.param(
            [{"from": SENDER, "to": TO, "maxFeePerBlobGas": "0x1", "gasPrice": "0x1"}],
            "type 0x3 takes maxFeePerGas/maxPriorityFeePerGas, not gasPrice",
            id="blob-fee-and-gas-price",
        ),
        pytest.param("0xf86c", "must be a JSON object", id="params-string"),
        pytest.param(["0xf86c"], "must be a JSON object", id="params-list-of-string"),
        pytest.param([], "one transaction object", id="empty-params"),
        pytest.param([{"from": SENDER}, {"from": SENDER}], "one transaction object", id="two"),
        pytest.param([{"from": SENDER, "value": "12"}], "value must be a 0x-prefixed", id="dec"),
        pytest.param(
            [{"from": SENDER, "gas": hex(2**64)}], "gas is out of range", id="gas-over-uint64"
        ),
        pytest.param(
            [{"from": SENDER, "nonce": hex(2**64 - 1)}], "nonce is out of range", id="eip2681"
        ),
        pytest.param([{"from": SENDER, "type": "0x100"}], "type is out of range", id="type-byte"),
        pytest.param(
            [{"from": SENDER, "gasPrice": "0x1", "maxFeePerGas": "0x2"}],
            "both gasPrice and maxFeePerGas",
            id="contradictory-fees-early",
        ),
        pytest.param(
            [{"from": SENDER, "accessList": {}}], "accessList must be a list", id="al-not-list"
        ),
        pytest.param(
            [{"from": SENDER, "accessList": ["0x01"]}], "accessList[0] must be an object", id="al"
        ),
        pytest.param(
            [{"from": SENDER, "accessList": [{"address": TO, "storageKeys": ["0x01"]}]}],
            "accessList[0].storageKeys[0] must be 32 bytes",
            id="al-short-key",
        ),
        pytest.param(
            [{"from": SENDER, "accessList": [{"address": TO, "storageKeys": "0x01"}]}],
            "accessList[0].storageKeys must be a list",
            id="al-keys-not-list",
        ),
        pytest.param(
            [{"from": SENDER, "accessList": [{"storageKeys": []}]}],
            "accessList[0].address must be a 20-byte",
            id="al-no-address",
        ),
    ],
)
def test_parse_tx_request_rejects_with_a_helpful_message(params: Any, fragment: str) -> None:
    with pytest.raises(InvalidParams) as info:
        parse_tx_request(params)

    assert info.value.code == -32602
    assert fragment in info.value.message


async def test_fill_estimate_gets_the_transaction_and_the_margin() -> None:
    node = FakeNode(eth_estimateGas="0x186a0")  # 100,000

    tx = await _fill(node, margin=1.5, to=TO, value=7, data=b"\xab", access_list=AL)

    assert tx.gas == 150_000
    (params,) = [p for m, p in node.calls if m == "eth_estimateGas"]
    assert params == [
        {
            "from": SENDER,
            "to": TO,
            "value": "0x7",
            "input": "0xab",
            "accessList": [{"address": TO, "storageKeys": ["0x" + "00" * 32]}],
        }
    ]


async def test_fill_estimate_for_contract_creation_has_no_to() -> None:
    node = FakeNode()

    await _fill(node, data=b"\x60\x00")

    (params,) = [p for m, p in node.calls if m == "eth_estimateGas"]
    assert "to" not in params[0]


async def test_fill_caller_gas_is_kept_and_not_estimated() -> None:
    node = FakeNode()

    tx = await _fill(node, gas=50_000, to=TO)

    assert tx.gas == 50_000  # no margin on the caller's own number
    assert "eth_estimateGas" not in node.methods


async def test_fill_caller_fees_are_kept_and_nothing_fee_related_asked() -> None:
    node = FakeNode()

    tx = await _fill(node, to=TO, max_fee_per_gas=77, max_priority_fee_per_gas=7)

    assert (tx.type, tx.max_fee_per_gas, tx.max_priority_fee_per_gas) == (DYNAMIC_FEE, 77, 7)
    assert set(node.methods) == {"eth_chainId", "eth_estimateGas"}


async def test_fill_caller_gas_and_fees_only_ask_the_chain_id() -> None:
    node = FakeNode()

    await _fill(node, gas=21_000, gas_price=5, to=TO)

    assert node.methods == ["eth_chainId"]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            {"gas_price": 5}, (LEGACY, 21_000, 5, 0, 0, 0), id="legacy"
        ),
        pytest.param(
            {"max_fee_per_gas": 9, "max_priority_fee_per_gas": 2},
            (DYNAMIC_FEE, 21_000, 0, 9, 2, 0),
            id="eip-1559",
        ),
        pytest.param(
            {"max_fee_per_gas": 9, "max_priority_fee_per_gas": 2, "max_fee_per_blob_gas": 4,
             "blob_versioned_hashes": (HASH_A,)},
            (BLOB, 21_000, 0, 9, 2, 4),
            id="blob-with-its-fee",
        ),
    ],
)  # fmt: skip
async def test_fill_everything_given_keeps_every_value_and_asks_only_the_chain_id(
    fields: dict[str, Any], expected: tuple[int, ...]
) -> None:
    node = FakeNode()

    tx = await _fill(node, gas=21_000, to=TO, **fields)

    filled = (tx.type, tx.gas, tx.gas_price, tx.max_fee_per_gas, tx.max_priority_fee_per_gas)
    assert (*filled, tx.max_fee_per_blob_gas) == expected
    assert node.methods == ["eth_chainId"]


async def test_fill_caller_fees_below_tip_are_refused() -> None:
    with pytest.raises(InvalidParams, match="must cover the tip"):
        await _fill(FakeNode(), gas=21_000, max_fee_per_gas=1, max_priority_fee_per_gas=2)


async def test_fill_only_max_fee_given_tip_is_capped_by_it() -> None:
    node = FakeNode(eth_maxPriorityFeePerGas=hex(10 * GWEI))

    tx = await _fill(node, gas=21_000, max_fee_per_gas=3 * GWEI)

    assert (tx.max_fee_per_gas, tx.max_priority_fee_per_gas) == (3 * GWEI, 3 * GWEI)


async def test_fill_caller_gas_price_makes_legacy_without_asking_fees() -> None:
    node = FakeNode()

    tx = await _fill(node, gas_price=9 * GWEI, to=TO)

    assert (tx.type, tx.gas_price, tx.max_fee_per_gas) == (LEGACY, 9 * GWEI, 0)
    assert "eth_gasPrice" not in node.methods
    assert "eth_getBlockByNumber" not in node.methods


async def test_fill_node_without_base_fee_gets_legacy_at_its_gas_price() -> None:
    node = FakeNode(eth_getBlockByNumber={"number": "0x1"})

    tx = await _fill(node, to=TO)

    assert (tx.type, tx.gas_price) == (LEGACY, GWEI)
    assert "eth_feeHistory" not in node.methods


async def test_fill_access_list_on_node_without_base_fee_is_type_1() -> None:
    node = FakeNode(eth_getBlockByNumber={"number": "0x1", "baseFeePerGas": None})

    tx = await _fill(node, to=TO, access_list=AL)

    assert (tx.type, tx.gas_price, tx.access_list) == (ACCESS_LIST, GWEI, AL)


async def test_fill_tip_falls_back_to_fee_history_median_reward() -> None:
    node = FakeNode(eth_maxPriorityFeePerGas=NodeRejected(-32601, "method not found"))

    tx = await _fill(node, gas=21_000, to=TO)

    assert tx.max_priority_fee_per_gas == 5  # median of 5, 1, 9, 3, 7
    assert tx.max_fee_per_gas == 2 * 0x70 + 5
    assert ("eth_feeHistory", ["0x5", "latest", [50]]) in node.calls


async def test_fill_tip_fallback_without_rewards_is_zero() -> None:
    def history(params: Any) -> Any:
        return {"baseFeePerGas": ["0x64", "0x64"], "reward": []}

    node = FakeNode(
        eth_maxPriorityFeePerGas=NodeRejected(-32601, "method not found"), eth_feeHistory=history
    )

    tx = await _fill(node, gas=21_000, to=TO)

    assert (tx.max_fee_per_gas, tx.max_priority_fee_per_gas) == (200, 0)


async def test_fill_other_node_errors_are_not_swallowed() -> None:
    node = FakeNode(eth_estimateGas=NodeRejected(3, "execution reverted", "0x08c379a0"))

    with pytest.raises(NodeRejected, match="execution reverted"):
        await _fill(node, to=TO)


@pytest.mark.parametrize("chain_id", [1337, 296, 5])
async def test_fill_chain_id_mismatch_is_refused_before_anything_else(chain_id: int) -> None:
    node = FakeNode(eth_chainId="0x1")

    with pytest.raises(ChainIdMismatch) as info:
        await _fill(node, chain_id=chain_id, to=TO)

    assert info.value.code == -32602
    assert f"chainId {chain_id}" in info.value.message
    assert "chain id 1" in info.value.message
    assert node.methods == ["eth_chainId"]


async def test_fill_matching_chain_id_and_caller_nonce_pass_through() -> None:
    node = FakeNode(eth_chainId=hex(296))

    tx = await _fill(node, chain_id=296, nonce=12, to=TO)

    assert (tx.chain_id, tx.nonce) == (296, 12)


def test_parse_tx_request_blob_and_set_code_fields() -> None:
    blob = "0x" + "00" * BYTES_PER_BLOB
    auth = {"chainId": "0x0", "address": OTHER.lower(), "nonce": "0x1", "yParity": "0x1",
            "r": "0x2", "s": "0x3"}  # fmt: skip

    blob_request = parse_tx_request(
        [
            {
                "from": SENDER,
                "to": TO,
                "blobs": [blob],
                "blobVersionedHashes": ["0x" + HASH_A.hex()],
                "maxFeePerBlobGas": "0x9",
            }
        ]
    )
    set_code_request = parse_tx_request([{"from": SENDER, "to": TO, "authorizationList": [auth]}])

    assert blob_request.blobs == (bytes(BYTES_PER_BLOB),)
    assert blob_request.blob_versioned_hashes == (HASH_A,)
    assert blob_request.max_fee_per_blob_gas == 9
    assert set_code_request.authorization_list == (Authorization(0, OTHER, 1, 1, 2, 3),)


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        pytest.param(
            {"chainId": "0x1", "address": TO, "nonce": "0x0", "yParity": "0x0", "r": "0x1",
             "s": "0x2"},
            Authorization(1, TO, 0, 0, 1, 2),
            id="y-parity",
        ),
        pytest.param(
            {"chainId": 1, "address": TO, "nonce": 0, "v": "0x1c", "r": "0x1", "s": "0x2"},
            Authorization(1, TO, 0, 1, 1, 2),
            id="v-28-means-parity-1",
        ),
        pytest.param(
            {"chainId": "0x0", "address": TO, "nonce": "0x0", "v": "0x0", "r": "0x1", "s": "0x2"},
            Authorization(0, TO, 0, 0, 1, 2),
            id="v-0",
        ),
    ],
)  # fmt: skip
def test_parse_authorization(item: dict[str, Any], expected: Authorization) -> None:
    assert parse_authorization(item, "a") == expected


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        pytest.param("0x01", "must be an object", id="not-object"),
        pytest.param(
            {"chainId": "0x1", "address": TO, "nonce": "0x0", "yParity": "0x2", "r": "0x1",
             "s": "0x2"},
            "a.yParity must be 0x0 or 0x1",
            id="parity-2",
        ),
        pytest.param(
            {"chainId": "0x1", "address": TO, "nonce": hex(2**64 - 1), "yParity": "0x0",
             "r": "0x1", "s": "0x2"},
            "a.nonce is out of range",
            id="nonce-eip2681",
        ),
        pytest.param(
            {"chainId": "0x1", "address": "0x12", "nonce": "0x0", "yParity": "0x0", "r": "0x1",
             "s": "0x2"},
            "a.address must be a 20-byte",
            id="bad-address",
        ),
    ],
)  # fmt: skip
def test_parse_authorization_refuses_naming_the_field(item: Any, fragment: str) -> None:
    with pytest.raises(InvalidParams) as info:
        parse_authorization(item, "a")

    assert fragment in info.value.message


async def test_fill_pre_eip155_is_refused_without_the_setting() -> None:
    node = FakeNode()

    with pytest.raises(InvalidParams) as info:
        await _fill(node, to=TO, chain_id=0, gas_price=1)

    assert "--allow-pre-eip155 true" in info.value.message
    assert "replay" in info.value.message
    assert "eth_estimateGas" not in node.methods


async def test_fill_blob_with_hashes_asks_blob_fee_and_estimates_with_the_hashes() -> None:
    node = FakeNode(eth_blobBaseFee="0x10")

    tx = await _fill(node, to=TO, blob_versioned_hashes=(HASH_A,))

    assert (tx.type, tx.max_fee_per_blob_gas, tx.blob_versioned_hashes) == (BLOB, 0x20, (HASH_A,))
    assert tx.sidecar is None
    estimate = dict(node.calls)["eth_estimateGas"][0]
    assert estimate["blobVersionedHashes"] == ["0x" + HASH_A.hex()]


async def test_fill_blob_fee_falls_back_to_fee_history_blob_base_fee() -> None:
    history = {"baseFeePerGas": ["0x64", "0x70"], "baseFeePerBlobGas": ["0x1", "0x3"]}
    node = FakeNode(eth_blobBaseFee=NodeRejected(-32601, "method not found"),
                    eth_feeHistory=history)  # fmt: skip

    tx = await _fill(node, to=TO, blob_versioned_hashes=(HASH_A,))

    assert tx.max_fee_per_blob_gas == 6


async def test_fill_blob_without_any_blob_fee_from_the_node_says_what_to_give() -> None:
    node = FakeNode(eth_blobBaseFee=NodeRejected(-32601, "method not found"),
                    eth_feeHistory={"baseFeePerGas": ["0x1", "0x1"]})  # fmt: skip

    with pytest.raises(InvalidParams, match="give maxFeePerBlobGas"):
        await _fill(node, to=TO, blob_versioned_hashes=(HASH_A,))


async def test_fill_blobs_with_wrong_versioned_hashes_are_refused() -> None:
    with pytest.raises(InvalidParams, match="do not match the blobs' KZG commitments"):
        await _fill(FakeNode(), to=TO, blobs=(bytes(BYTES_PER_BLOB),),
                    blob_versioned_hashes=(HASH_A,))  # fmt: skip


@pytest.mark.parametrize("chain_id", ["0x127", "0x128"])
async def test_fill_blob_on_hedera_is_refused_before_any_work(chain_id: str) -> None:
    node = FakeNode(eth_chainId=chain_id)

    with pytest.raises(InvalidParams) as info:
        await _fill(node, to=TO, blob_versioned_hashes=(HASH_A,))

    assert f"Hedera (chain id {int(chain_id, 16)}) rejects blob (type 0x3)" in info.value.message
    assert node.methods == ["eth_chainId"]


async def test_fill_set_code_estimates_with_the_authorization_list() -> None:
    node = FakeNode()

    tx = await _fill(node, to=TO, authorization_list=(AUTH_ANY_CHAIN,))

    assert tx.type == SET_CODE and tx.authorization_list == (AUTH_ANY_CHAIN,)
    estimate = dict(node.calls)["eth_estimateGas"][0]
    assert estimate["authorizationList"] == [AUTH_ANY_CHAIN.to_json()]
