"""eth/tx_encoding.py: signing payloads, digests and the network form, against eth-account."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import rlp
from eth_account import Account

from signer_proxy.errors import InvalidParams
from signer_proxy.eth.blobs import BYTES_PER_BLOB, SidecarForm, build_sidecar
from signer_proxy.eth.ecdsa import SECP256K1_HALF_N, keccak256
from signer_proxy.eth.tx_encoding import (
    UnsignedTx,
    authorization_digest,
    encode_network,
    encode_signed,
    sign_with,
    signing_digest,
    signing_payload,
    with_nonce,
)
from signer_proxy.eth.tx_request import (
    ACCESS_LIST,
    BLOB,
    DYNAMIC_FEE,
    LEGACY,
    MAX_UINT64,
    SET_CODE,
    Authorization,
)
from signer_proxy.keys.local import LocalKeySigner
from tests.unit.tx_support import PRIVATE_KEY, SENDER, TO

OTHER = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"


GWEI = 10**9


SLOT_0 = bytes(32)


SLOT_1 = (1).to_bytes(32, "big")


SLOT_X = keccak256(b"slot")


HASH_A = bytes([1]) + keccak256(b"a")[1:]


HASH_B = bytes([1]) + keccak256(b"b")[1:]


# Two authorizations as a type 0x4 carries them (signatures need not be valid to be encoded).
AUTH_ANY_CHAIN = Authorization(0, OTHER, 0, 0, 1, 2)


AUTH_BIG = Authorization(2**256 - 1, TO, MAX_UINT64 - 1, 1, 2**255, SECP256K1_HALF_N)


def _eth_account_dict(tx: UnsignedTx) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "nonce": tx.nonce,
        "gas": tx.gas,
        "value": tx.value,
        "data": "0x" + tx.data.hex(),
        "chainId": tx.chain_id,
    }
    if tx.to is not None:
        fields["to"] = tx.to
    if tx.type == LEGACY:
        fields["gasPrice"] = tx.gas_price
        if tx.chain_id == 0:  # eth-account's spelling of pre-EIP-155: no chainId at all
            del fields["chainId"]
        return fields
    fields["type"] = tx.type
    fields["accessList"] = [
        {"address": address, "storageKeys": ["0x" + key.hex() for key in keys]}
        for address, keys in tx.access_list
    ]
    if tx.type == ACCESS_LIST:
        fields["gasPrice"] = tx.gas_price
    else:
        fields["maxFeePerGas"] = tx.max_fee_per_gas
        fields["maxPriorityFeePerGas"] = tx.max_priority_fee_per_gas
    if tx.type == BLOB:
        fields["maxFeePerBlobGas"] = tx.max_fee_per_blob_gas
        if tx.sidecar is None:  # with blobs, eth-account computes the hashes itself
            fields["blobVersionedHashes"] = ["0x" + h.hex() for h in tx.blob_versioned_hashes]
    if tx.type == SET_CODE:
        fields["authorizationList"] = [
            {
                "chainId": a.chain_id,
                "address": a.address,
                "nonce": a.nonce,
                "yParity": a.y_parity,
                "r": a.r,
                "s": a.s,
            }
            for a in tx.authorization_list
        ]
    return fields


ORACLE_CASES = [
    pytest.param(
        UnsignedTx(LEGACY, 1, 0, 21_000, TO, 10**18, b"", gas_price=20 * GWEI),
        id="legacy-eip155-mainnet-transfer",
    ),
    pytest.param(
        UnsignedTx(
            LEGACY, 1337, 7, 300_000, None, 0, bytes.fromhex("6080604052348015"), gas_price=1
        ),
        id="legacy-eip155-1337-contract-creation",
    ),
    pytest.param(
        UnsignedTx(
            LEGACY, 296, 2**40, 15_000_000, OTHER, 2**200, b"\x00" * 100, gas_price=530 * GWEI
        ),
        id="legacy-eip155-hedera-testnet-big-values",
    ),
    pytest.param(
        UnsignedTx(
            ACCESS_LIST,
            1,
            3,
            60_000,
            TO,
            5,
            bytes.fromhex("a9059cbb"),
            gas_price=3 * GWEI,
            access_list=((OTHER, (SLOT_0, SLOT_1)), (TO, ())),
        ),
        id="type1-access-list-two-entries",
    ),
    pytest.param(
        UnsignedTx(
            ACCESS_LIST,
            296,
            0,
            500_000,
            None,
            0,
            bytes.fromhex("60006000f3"),
            gas_price=GWEI,
            access_list=((TO, (SLOT_X,)),),
        ),
        id="type1-hedera-contract-creation",
    ),
    pytest.param(
        UnsignedTx(ACCESS_LIST, 1337, 1, 21_000, TO, 1, b"", gas_price=GWEI),
        id="type1-empty-access-list",
    ),
    pytest.param(
        UnsignedTx(
            DYNAMIC_FEE,
            1,
            42,
            21_000,
            TO,
            123_456_789,
            b"",
            max_fee_per_gas=100 * GWEI,
            max_priority_fee_per_gas=2 * GWEI,
        ),
        id="type2-mainnet-transfer",
    ),
    pytest.param(
        UnsignedTx(
            DYNAMIC_FEE,
            1337,
            0,
            1_000_000,
            None,
            10**17,
            bytes(range(256)),
            max_fee_per_gas=7,
            max_priority_fee_per_gas=0,
            access_list=((OTHER, (SLOT_1, SLOT_X)),),
        ),
        id="type2-1337-creation-with-value-data-access-list",
    ),
    pytest.param(
        UnsignedTx(
            DYNAMIC_FEE,
            296,
            MAX_UINT64 - 1,
            2**63,
            OTHER,
            0,
            b"\xff",
            max_fee_per_gas=2**255,
            max_priority_fee_per_gas=2**255,
        ),
        id="type2-hedera-extreme-fields",
    ),
    pytest.param(
        UnsignedTx(LEGACY, 0, 0, 21_000, TO, 1, b"", gas_price=GWEI),
        id="legacy-pre-eip155-transfer",
    ),
    pytest.param(
        UnsignedTx(
            LEGACY, 0, 9, 100_000, None, 0, bytes.fromhex("600060005560016000f3"), gas_price=1
        ),
        id="legacy-pre-eip155-contract-creation",
    ),
    pytest.param(
        UnsignedTx(
            BLOB,
            1,
            0,
            21_000,
            TO,
            0,
            b"",
            max_fee_per_gas=30 * GWEI,
            max_priority_fee_per_gas=GWEI,
            max_fee_per_blob_gas=1,
            blob_versioned_hashes=(HASH_A,),
        ),
        id="type3-one-versioned-hash-zero-value",
    ),
    pytest.param(
        UnsignedTx(
            BLOB,
            31337,
            2**32,
            2**40,
            OTHER,
            2**256 - 1,
            bytes(range(256)) * 4,
            max_fee_per_gas=2**255,
            max_priority_fee_per_gas=0,
            access_list=((TO, (SLOT_0, SLOT_X)),),
            max_fee_per_blob_gas=2**256 - 1,
            blob_versioned_hashes=(HASH_A, HASH_B, HASH_A),
        ),
        id="type3-three-hashes-access-list-max-fields",
    ),
    pytest.param(
        UnsignedTx(
            SET_CODE,
            1,
            5,
            80_000,
            TO,
            0,
            b"",
            max_fee_per_gas=GWEI,
            max_priority_fee_per_gas=GWEI,
            authorization_list=(AUTH_ANY_CHAIN,),
        ),
        id="type4-one-authorization-any-chain",
    ),
    pytest.param(
        UnsignedTx(
            SET_CODE,
            31337,
            0,
            2**63,
            OTHER,
            10**30,
            b"\x00" * 33,
            max_fee_per_gas=2**200,
            max_priority_fee_per_gas=2**100,
            access_list=((OTHER, ()),),
            authorization_list=(AUTH_ANY_CHAIN, AUTH_BIG),
        ),
        id="type4-two-authorizations-big-values-access-list",
    ),
]


@pytest.mark.parametrize("tx", ORACLE_CASES)
async def test_encode_signed_matches_eth_account_byte_for_byte(tx: UnsignedTx) -> None:
    signer = LocalKeySigner(PRIVATE_KEY)
    digest = signing_digest(tx)

    signature = await signer.sign_digest(digest)
    signed = sign_with(tx, signature)
    expected = Account.sign_transaction(_eth_account_dict(tx), PRIVATE_KEY)

    assert signed.raw == encode_signed(tx, signature)
    assert signed.raw.hex() == expected.raw_transaction.hex()
    assert signed.hash == bytes(expected.hash) == keccak256(signed.raw)
    assert signed.nonce == tx.nonce
    assert Account.recover_transaction(signed.raw) == signer.address == SENDER
    assert signature.s <= SECP256K1_HALF_N


@pytest.mark.parametrize("chain_id", [1, 1337, 296])
async def test_encode_signed_legacy_v_is_eip155(chain_id: int) -> None:
    tx = UnsignedTx(LEGACY, chain_id, 0, 21_000, TO, 0, b"", gas_price=GWEI)
    signature = await LocalKeySigner(PRIVATE_KEY).sign_digest(signing_digest(tx))

    fields = rlp.decode(encode_signed(tx, signature))

    assert int.from_bytes(fields[6], "big") == chain_id * 2 + 35 + signature.y_parity
    # The signed payload is EIP-155's: the six fields, then chainId, 0, 0.
    assert rlp.decode(signing_payload(tx))[6:] == [
        chain_id.to_bytes((chain_id.bit_length() + 7) // 8, "big"),
        b"",
        b"",
    ]


@pytest.mark.parametrize("tx_type", [ACCESS_LIST, DYNAMIC_FEE, BLOB, SET_CODE])
async def test_encode_signed_typed_uses_y_parity_and_the_type_byte(tx_type: int) -> None:
    # SIGNING.md item 5: typed transactions carry yParity 0/1, never 27/28 or EIP-155's v.
    tx = UnsignedTx(
        tx_type, 1, 0, 21_000, TO, 0, b"", gas_price=GWEI, max_fee_per_gas=GWEI,
        blob_versioned_hashes=(HASH_A,) if tx_type == BLOB else (),
        authorization_list=(AUTH_ANY_CHAIN,) if tx_type == SET_CODE else (),
    )  # fmt: skip
    signature = await LocalKeySigner(PRIVATE_KEY).sign_digest(signing_digest(tx))

    raw = encode_signed(tx, signature)
    fields = rlp.decode(raw[1:])

    assert raw[0] == tx_type
    assert signing_payload(tx)[0] == tx_type
    assert fields[-3] == (b"\x01" if signature.y_parity else b"")


def test_signing_payload_refuses_unsupported_type() -> None:
    with pytest.raises(InvalidParams, match="not supported"):
        signing_payload(UnsignedTx(5, 1, 0, 21_000, TO, 0, b""))


async def test_encode_signed_pre_eip155_legacy_v_is_27_or_28() -> None:
    tx = UnsignedTx(LEGACY, 0, 0, 21_000, TO, 0, b"", gas_price=GWEI)
    signature = await LocalKeySigner(PRIVATE_KEY).sign_digest(signing_digest(tx))

    fields = rlp.decode(encode_signed(tx, signature))

    assert int.from_bytes(fields[6], "big") == 27 + signature.y_parity
    assert len(rlp.decode(signing_payload(tx))) == 6  # no chainId, 0, 0: pre-EIP-155


@pytest.mark.parametrize(
    ("chain_id", "address", "nonce", "payload_hex"),
    [
        # rlp([0, address, 0]): both zeros encode as the empty string 0x80, not 0x00.
        pytest.param(0, OTHER, 0, "d780" + "94" + OTHER[2:].lower() + "80", id="zeros-are-0x80"),
        pytest.param(1, TO, 1, "d701" + "94" + TO[2:].lower() + "01", id="one-byte-values"),
        pytest.param(
            31337, TO, 256, "db827a69" + "94" + TO[2:].lower() + "820100", id="two-byte-values"
        ),
    ],
)
def test_authorization_digest_is_keccak_of_magic_and_rlp(
    chain_id: int, address: str, nonce: int, payload_hex: str
) -> None:
    assert authorization_digest(chain_id, address, nonce) == keccak256(
        b"\x05" + bytes.fromhex(payload_hex)
    )


@pytest.mark.parametrize(
    ("chain_id", "nonce"),
    [
        pytest.param(0, 0, id="any-chain-nonce-0"),
        pytest.param(1, 7, id="mainnet"),
        pytest.param(31337, 2**64 - 2, id="anvil-max-nonce"),
        pytest.param(2**256 - 1, 1, id="max-chain-id"),
    ],
)
async def test_authorization_signature_matches_eth_account(chain_id: int, nonce: int) -> None:
    digest = authorization_digest(chain_id, OTHER, nonce)
    signature = await LocalKeySigner(PRIVATE_KEY).sign_digest(digest)

    expected = Account.sign_authorization(
        {"chainId": chain_id, "address": OTHER, "nonce": nonce}, PRIVATE_KEY
    )

    assert digest == bytes(expected.authorization_hash)
    assert (signature.y_parity, signature.r, signature.s) == (
        expected.y_parity,
        expected.r,
        expected.s,
    )
    assert expected.authority == bytes.fromhex(SENDER[2:])


@pytest.mark.usefixtures("eth_account_kzg")
async def test_blob_transaction_with_sidecar_matches_eth_account_byte_for_byte() -> None:
    blobs = (bytes(BYTES_PER_BLOB), b"\x00\x01" * (BYTES_PER_BLOB // 2))
    sidecar = build_sidecar(blobs, SidecarForm.EIP7594)
    tx = UnsignedTx(
        BLOB,
        31337,
        3,
        21_000,
        TO,
        1,
        b"",
        max_fee_per_gas=GWEI,
        max_priority_fee_per_gas=1,
        max_fee_per_blob_gas=7,
        blob_versioned_hashes=sidecar.versioned_hashes,
        sidecar=sidecar,
    )
    signature = await LocalKeySigner(PRIVATE_KEY).sign_digest(signing_digest(tx))

    signed = sign_with(tx, signature)
    expected = Account.sign_transaction(_eth_account_dict(tx), PRIVATE_KEY, blobs=list(blobs))

    assert signed.raw == bytes(expected.raw_transaction)
    # eth-account's `hash` covers the sidecar too; the transaction hash nodes use does not.
    assert signed.hash == keccak256(encode_signed(tx, signature)) != bytes(expected.hash)
    assert Account.recover_transaction(signed.raw) == SENDER


@pytest.mark.usefixtures("eth_account_kzg")
async def test_blob_transaction_eip4844_sidecar_form_has_one_proof_per_blob() -> None:
    import ckzg

    from signer_proxy.eth.blobs import trusted_setup

    blob = b"\x00\x05" * (BYTES_PER_BLOB // 2)
    sidecar = build_sidecar((blob,), SidecarForm.EIP4844)
    tx = UnsignedTx(
        BLOB, 1, 0, 21_000, TO, 0, b"", max_fee_per_gas=2, max_priority_fee_per_gas=1,
        max_fee_per_blob_gas=1, blob_versioned_hashes=sidecar.versioned_hashes, sidecar=sidecar,
    )  # fmt: skip
    signature = await LocalKeySigner(PRIVATE_KEY).sign_digest(signing_digest(tx))

    raw = encode_network(tx, signature)
    body, blobs, commitments, proofs = rlp.decode(raw[1:])

    assert raw[0] == BLOB
    assert b"\x03" + rlp.encode(body) == encode_signed(tx, signature)
    assert (blobs, commitments) == ([blob], list(sidecar.commitments))
    assert len(proofs) == 1
    assert ckzg.verify_blob_kzg_proof(blob, commitments[0], proofs[0], trusted_setup())
    assert Account.recover_transaction(raw) == SENDER


def test_with_nonce_replaces_only_the_nonce() -> None:
    tx = UnsignedTx(DYNAMIC_FEE, 1, 0, 21_000, TO, 5, b"\x01", max_fee_per_gas=9)

    assert with_nonce(tx, 12) == replace(tx, nonce=12)
    assert tx.nonce == 0  # frozen: the original is untouched
