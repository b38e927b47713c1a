"""Property: whatever is signed through the KMS path (emulator, DIGEST, DER → low-S → parity by
trial) recovers to the key's address, with s ≤ n/2, for random transactions of every type,
random messages and random EIP-7702 authorizations."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aioboto3
import pytest
import rlp
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signer_proxy.chain.signing import sign_transaction
from signer_proxy.eth.ecdsa import SECP256K1_HALF_N, address_from_public_key, recover_public_key
from signer_proxy.eth.messages import message_signature_bytes, personal_message_digest
from signer_proxy.eth.tx_encoding import UnsignedTx, authorization_digest
from signer_proxy.eth.tx_request import (
    ACCESS_LIST,
    BLOB,
    DYNAMIC_FEE,
    LEGACY,
    MAX_UINT64,
    SET_CODE,
    Authorization,
)
from signer_proxy.keys.aws_kms import KmsSigner, load_key
from signer_proxy.methods.authorizations import sign_authorization
from tests.conftest import REGION, KeyFactory

pytestmark = pytest.mark.integration

PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

uint256 = st.integers(min_value=0, max_value=2**256 - 1)
uint64 = st.integers(min_value=0, max_value=MAX_UINT64 - 1)
checksummed = st.binary(min_size=20, max_size=20).map(to_checksum_address)
access_lists = st.lists(
    st.tuples(checksummed, st.lists(st.binary(min_size=32, max_size=32), max_size=3).map(tuple)),
    max_size=3,
).map(tuple)
authorizations = st.builds(
    Authorization,
    chain_id=uint256,
    address=checksummed,
    nonce=uint64,
    y_parity=st.integers(0, 1),
    r=uint256,
    s=uint256,
)


@st.composite
def transactions(draw: st.DrawFn) -> UnsignedTx:
    tx_type = draw(st.sampled_from([LEGACY, ACCESS_LIST, DYNAMIC_FEE, BLOB, SET_CODE]))
    needs_to = tx_type in (BLOB, SET_CODE)
    to = draw(checksummed if needs_to else st.one_of(st.none(), checksummed))
    return UnsignedTx(
        type=tx_type,
        chain_id=draw(st.integers(min_value=1 if tx_type == LEGACY else 0, max_value=2**64)),
        nonce=draw(uint64),
        gas=draw(st.integers(min_value=0, max_value=MAX_UINT64)),
        to=to,
        value=draw(uint256),
        data=draw(st.binary(max_size=300)),
        gas_price=draw(uint256),
        max_fee_per_gas=draw(uint256),
        max_priority_fee_per_gas=draw(uint256),
        access_list=draw(access_lists) if tx_type != LEGACY else (),
        max_fee_per_blob_gas=draw(uint256) if tx_type == BLOB else 0,
        blob_versioned_hashes=tuple(
            b"\x01" + h
            for h in draw(st.lists(st.binary(min_size=31, max_size=31), min_size=1, max_size=4))
        )
        if tx_type == BLOB
        else (),
        authorization_list=tuple(draw(st.lists(authorizations, min_size=1, max_size=3)))
        if tx_type == SET_CODE
        else (),
    )


@pytest.fixture(scope="module")
def kms_signer(
    kms: Any, make_key: KeyFactory
) -> Iterator[tuple[asyncio.AbstractEventLoop, KmsSigner]]:
    """A KmsSigner on the emulator, with the event loop its client lives on."""
    loop = asyncio.new_event_loop()
    context = aioboto3.Session().client("kms", region_name=REGION, endpoint_url=kms.url)
    client = loop.run_until_complete(context.__aenter__())
    key = make_key()
    info = loop.run_until_complete(load_key(client, key.arn, REGION))
    assert info.address == key.address
    yield loop, KmsSigner(client, info)
    loop.run_until_complete(context.__aexit__(None, None, None))
    loop.close()


@PROPERTY_SETTINGS
@given(tx=transactions())
def test_kms_signed_transactions_recover_to_the_key_with_low_s(
    kms_signer: tuple[asyncio.AbstractEventLoop, KmsSigner], tx: UnsignedTx
) -> None:
    loop, signer = kms_signer

    signed = loop.run_until_complete(sign_transaction(tx, signer))

    assert Account.recover_transaction(signed.raw) == signer.address
    fields = rlp.decode(signed.raw if tx.type == LEGACY else signed.raw[1:])
    assert 0 < int.from_bytes(fields[-1], "big") <= SECP256K1_HALF_N


@PROPERTY_SETTINGS
@given(message=st.binary(max_size=500))
def test_kms_signed_messages_recover_to_the_key_with_low_s_and_v_27_28(
    kms_signer: tuple[asyncio.AbstractEventLoop, KmsSigner], message: bytes
) -> None:
    loop, signer = kms_signer

    signature = loop.run_until_complete(signer.sign_digest(personal_message_digest(message)))

    encoded = message_signature_bytes(signature)
    assert Account.recover_message(encode_defunct(primitive=message), signature=encoded) == (
        signer.address
    )
    assert signature.s <= SECP256K1_HALF_N
    assert encoded[64] in (27, 28)


@PROPERTY_SETTINGS
@given(chain_id=uint256, address=checksummed, nonce=uint64)
def test_kms_signed_authorizations_recover_to_the_key_with_low_s(
    kms_signer: tuple[asyncio.AbstractEventLoop, KmsSigner],
    chain_id: int,
    address: str,
    nonce: int,
) -> None:
    loop, signer = kms_signer

    auth = loop.run_until_complete(sign_authorization(signer, chain_id, address, nonce))

    digest = authorization_digest(chain_id, address, nonce)
    public_key = recover_public_key(digest, auth.r, auth.s, auth.y_parity)
    assert public_key is not None and address_from_public_key(public_key) == signer.address
    assert auth.s <= SECP256K1_HALF_N
