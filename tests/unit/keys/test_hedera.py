"""hedera: the Hedera-native ECDSA form (keccak-256 of the bytes, 64-byte r ‖ s, compressed
key), checked against eth-keys (RFC 6979, same key) and verified by `cryptography`."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.typed_transactions import TypedTransaction
from eth_keys import keys
from hexbytes import HexBytes

from signer_proxy.chain.fill import ChainFacts, pending_nonce
from signer_proxy.errors import ChainIdMismatch, InvalidParams, NodeRejected, SigningFailed
from signer_proxy.eth.ecdsa import SECP256K1_HALF_N, Signature, keccak256
from signer_proxy.jsonrpc import CallContext
from signer_proxy.keys import KeyRegistry
from signer_proxy.keys.hedera import (
    HEDERA_CHAIN_IDS,
    hedera_digest,
    raw_signature,
    sign_hedera,
)
from signer_proxy.keys.local import LocalKeySigner
from signer_proxy.methods.messages import MessageMethods
from signer_proxy.methods.transactions import TransactionMethods
from signer_proxy.nonces.memory import MemoryNonceManager
from tests.unit.eth.test_messages import MAIL

PRIVATE_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
TO = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"

BODIES = [
    pytest.param(b"", id="empty"),
    pytest.param(bytes.fromhex("0a1c0a0c08c8f6b8a806100a18"), id="protobuf-prefix"),
    pytest.param(bytes(range(256)) * 20, id="5k-body"),
]


# X.509 SubjectPublicKeyInfo header for a compressed secp256k1 key (what `cryptography` reads).
X509_PREFIX = bytes.fromhex("3036301006072a8648ce3d020106052b8104000a032200")


def _verify(public_key: bytes, signature: bytes, digest: bytes) -> None:
    """Raises InvalidSignature unless `signature` (r ‖ s) is valid over `digest`."""
    key = load_der_public_key(X509_PREFIX + public_key)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    # Prehashed only needs a 32-byte digest: the keccak-256 is passed through unchanged.
    key.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def test_hedera_chain_ids() -> None:
    assert set(HEDERA_CHAIN_IDS) == {295, 296, 297}


@pytest.mark.parametrize("body", BODIES)
def test_hedera_digest_is_keccak256_of_the_bytes(body: bytes) -> None:
    assert hedera_digest(body) == keccak256(body)


def test_raw_signature_is_64_bytes_r_then_s_zero_padded() -> None:
    assert raw_signature(Signature(1, 2, 1)) == (1).to_bytes(32, "big") + (2).to_bytes(32, "big")


@pytest.mark.parametrize("body", BODIES)
async def test_sign_hedera_matches_eth_keys_and_verifies(body: bytes) -> None:
    private = keys.PrivateKey(PRIVATE_KEY)

    result = await sign_hedera(LocalKeySigner(PRIVATE_KEY), body)

    expected = private.sign_msg_hash(keccak256(body))
    assert result.digest == keccak256(body)
    assert result.signature == expected.to_bytes()[:64]
    assert len(result.signature) == 64
    assert int.from_bytes(result.signature[32:], "big") <= SECP256K1_HALF_N
    assert result.public_key == private.public_key.to_compressed_bytes()
    assert result.public_key_hex == private.public_key.to_compressed_bytes().hex()
    _verify(result.public_key, result.signature, result.digest)


async def test_sign_hedera_public_key_der_is_hedera_short_der_of_the_compressed_key() -> None:
    result = await sign_hedera(LocalKeySigner(PRIVATE_KEY), b"x")

    key = load_der_public_key(X509_PREFIX + result.public_key)

    assert result.public_key_der_hex == "302d300706052b8104000a032200" + result.public_key_hex
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.public_bytes(Encoding.X962, PublicFormat.CompressedPoint) == result.public_key
    assert result.public_key[0] in (2, 3) and len(result.public_key) == 33


class WrongKeySigner:
    """A Signer whose signatures come from another key than its address says."""

    def __init__(self) -> None:
        self._inner = LocalKeySigner(b"\x01" * 32)
        self.address = LocalKeySigner(PRIVATE_KEY).address
        self.key_name = "wrong"

    async def sign_digest(self, digest: bytes) -> Signature:
        return await self._inner.sign_digest(digest)


async def test_sign_hedera_refuses_a_signature_that_is_not_the_signers() -> None:
    with pytest.raises(SigningFailed, match="does not recover to"):
        await sign_hedera(WrongKeySigner(), b"body")


# --- a Hedera JSON-RPC relay, at the Upstream seam ------------------------------------------

# The relay's answers as its documentation and source give them: chain id 296 (testnet), a
# fixed network gas price as base fee (in weibars), a zero priority fee, and no pending pool.
RELAY_GAS_PRICE = 0x1A3185C5000  # 1800 gwei-equivalent weibars: Hedera's prices are high


class FakeRelay:
    """An `Upstream` answering like a Hedera JSON-RPC relay; records raw transactions sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.count_tags: list[str] = []

    async def call(self, method: str, params: Any) -> Any:
        if method == "eth_chainId":
            return "0x128"
        if method == "eth_getTransactionCount":
            self.count_tags.append(params[1])
            if params[1] == "pending":
                raise NodeRejected(-32602, "Invalid parameter 1: The value passed is not valid")
            return hex(len(self.sent))
        if method == "eth_getBlockByNumber":
            return {"number": "0x10", "baseFeePerGas": hex(RELAY_GAS_PRICE)}
        if method == "eth_feeHistory":
            return {"baseFeePerGas": [hex(RELAY_GAS_PRICE)] * 2, "reward": [["0x0"]]}
        if method == "eth_maxPriorityFeePerGas":
            return "0x0"
        if method == "eth_estimateGas":
            return "0x5208"
        if method == "eth_sendRawTransaction":
            self.sent.append(bytes.fromhex(params[0][2:]))
            return "0x" + keccak256(self.sent[-1]).hex()
        raise NodeRejected(-32601, f"Unsupported JSON-RPC method: {method}")

    async def forward(self, body: bytes) -> bytes:
        raise AssertionError("nothing is forwarded in these tests")


@pytest.fixture
def relay_methods() -> tuple[FakeRelay, TransactionMethods, MessageMethods, LocalKeySigner]:
    relay = FakeRelay()
    signer = LocalKeySigner(PRIVATE_KEY)
    registry = KeyRegistry([signer])
    facts = ChainFacts(relay)

    async def pending(address: str) -> int:
        return await pending_nonce(relay, address)

    txs = TransactionMethods(lambda: registry, relay, MemoryNonceManager(pending), facts, 1.2)
    return relay, txs, MessageMethods(lambda: registry, facts), signer


async def test_hedera_relay_sends_are_type_2_for_chain_296_with_zero_tip_and_latest_nonces(
    relay_methods: tuple[FakeRelay, TransactionMethods, MessageMethods, LocalKeySigner],
) -> None:
    relay, txs, _, signer = relay_methods
    request = [{"from": signer.address, "to": TO, "value": hex(10**10)}]  # 1 tinybar

    hashes = await asyncio.gather(
        *(txs.eth_sendTransaction(request, CallContext()) for _ in range(3))
    )

    assert "pending" in relay.count_tags and "latest" in relay.count_tags  # the fallback
    decoded = [TypedTransaction.from_bytes(HexBytes(raw)).as_dict() for raw in relay.sent]
    assert sorted(tx["nonce"] for tx in decoded) == [0, 1, 2]
    for raw, tx in zip(relay.sent, decoded, strict=True):
        assert raw[0] == 2 and tx["chainId"] == 296
        assert tx["maxPriorityFeePerGas"] == 0
        assert tx["maxFeePerGas"] == 2 * RELAY_GAS_PRICE
        assert Account.recover_transaction(raw) == signer.address
    assert sorted(hashes) == sorted("0x" + keccak256(raw).hex() for raw in relay.sent)


async def test_hedera_relay_blob_transactions_are_refused_before_signing(
    relay_methods: tuple[FakeRelay, TransactionMethods, MessageMethods, LocalKeySigner],
) -> None:
    relay, txs, _, signer = relay_methods
    hashes = ["0x01" + "00" * 31]

    with pytest.raises(InvalidParams, match=r"Hedera \(chain id 296\) rejects blob"):
        await txs.eth_signTransaction(
            [{"from": signer.address, "to": TO, "blobVersionedHashes": hashes}], CallContext()
        )
    assert relay.sent == []


async def test_hedera_relay_message_and_typed_data_signing_happen_in_the_proxy(
    relay_methods: tuple[FakeRelay, TransactionMethods, MessageMethods, LocalKeySigner],
) -> None:
    # The relay itself answers eth_sign and eth_signTypedData_v4 with "Unsupported JSON-RPC
    # method": the proxy answers them, with the domain's chainId checked against 296.
    _, _, messages, signer = relay_methods
    typed = {**MAIL, "domain": {**MAIL["domain"], "chainId": 296}}

    signature = await messages.personal_sign(["0x48656c6c6f", signer.address], CallContext())
    typed_signature = await messages.eth_signTypedData_v4([signer.address, typed], CallContext())

    assert Account.recover_message(encode_defunct(b"Hello"), signature=signature) == signer.address
    expected = Account.sign_typed_data(PRIVATE_KEY, full_message=typed)
    assert typed_signature == "0x" + bytes(expected.signature).hex()
    with pytest.raises(ChainIdMismatch, match="differs from the node's chain id 296"):
        await messages.eth_signTypedData_v4([signer.address, MAIL], CallContext())
