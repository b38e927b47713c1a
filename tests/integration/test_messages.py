"""personal_sign, eth_sign and eth_signTypedData(_v3, _v4) through the in-process proxy.

With a local key the proxy's signatures are byte-identical to eth-account's for the same key
(RFC 6979); with a KMS key they recover to the KMS address, checked by eth-account and by
Foundry's `cast wallet verify`."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data

from signer_proxy.keys.local import LocalKeySigner
from tests.conftest import Anvil, InProcessProxy, KmsKey, ProxyFactory, proxy_settings, tool
from tests.unit.eth.test_messages import GROUP, MAIL

pytestmark = pytest.mark.integration

ANVIL_MAIL = {**MAIL, "domain": {**MAIL["domain"], "chainId": 31337}}
ANVIL_GROUP = {**GROUP, "domain": {**GROUP["domain"], "chainId": "0x7a69"}}
V3_MAIL = ANVIL_MAIL  # no arrays: valid for v3


def cast_verify(address: str, message: str, signature: str, *typed: str) -> None:
    result = subprocess.run(
        [tool("cast"), "wallet", "verify", *typed, "--address", address, message, signature],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Validation succeeded" in result.stdout


@pytest.fixture
async def local_proxy(start_proxy: ProxyFactory, anvil: Anvil, kms: Any) -> Any:
    private_key = os.urandom(32)
    proxy = await start_proxy(
        proxy_settings(anvil.url, kms.url), signers=[LocalKeySigner(private_key)]
    )
    return proxy, private_key, Account.from_key(private_key).address


MESSAGE_CASES = [
    pytest.param("personal_sign", "0x48656c6c6f", b"Hello", id="personal-sign-hex"),
    pytest.param("personal_sign", "Hello, wallet ✓", "Hello, wallet ✓".encode(), id="ps-text"),
    pytest.param("personal_sign", "0x", b"", id="personal-sign-empty"),
    pytest.param("personal_sign", "0x" + "ab" * 32, b"\xab" * 32, id="ps-32-bytes-prefixed"),
    pytest.param("eth_sign", "0x" + "cd" * 32, b"\xcd" * 32, id="eth-sign-32-bytes-prefixed"),
    pytest.param("eth_sign", "0x00ff", b"\x00\xff", id="eth-sign-bytes"),
]


@pytest.mark.parametrize(("method", "data", "message"), MESSAGE_CASES)
async def test_message_signature_is_byte_identical_to_eth_account_for_a_local_key(
    local_proxy: Any, method: str, data: str, message: bytes
) -> None:
    proxy, private_key, address = local_proxy
    params = [data, address] if method == "personal_sign" else [address, data]

    signature = await proxy.result(method, params)

    expected = Account.sign_message(encode_defunct(primitive=message), private_key)
    assert signature == "0x" + bytes(expected.signature).hex()
    assert int(signature[-2:], 16) in (27, 28)


@pytest.mark.parametrize(
    ("method", "data"),
    [
        pytest.param("eth_signTypedData_v4", ANVIL_MAIL, id="v4-object"),
        pytest.param("eth_signTypedData_v4", json.dumps(ANVIL_GROUP), id="v4-json-arrays"),
        pytest.param("eth_signTypedData_v3", json.dumps(V3_MAIL), id="v3"),
        pytest.param("eth_signTypedData", ANVIL_MAIL, id="plain-alias"),
    ],
)
async def test_typed_data_signature_is_byte_identical_to_eth_account_for_a_local_key(
    local_proxy: Any, method: str, data: Any
) -> None:
    proxy, private_key, address = local_proxy

    signature = await proxy.result(method, [address, data])

    full = json.loads(data) if isinstance(data, str) else data
    expected = Account.sign_typed_data(private_key, full_message=full)
    assert signature == "0x" + bytes(expected.signature).hex()
    assert int(signature[-2:], 16) in (27, 28)


async def test_kms_message_signatures_recover_to_the_kms_address_and_cast_verifies(
    proxy: InProcessProxy, funded_key: KmsKey
) -> None:
    address = funded_key.address
    text = "Sign in to example.org"

    by_text = await proxy.result("personal_sign", [text, address])
    by_hex = await proxy.result("personal_sign", ["0x" + text.encode().hex(), address])
    by_eth_sign = await proxy.result("eth_sign", [address, "0x" + text.encode().hex()])

    for signature in (by_text, by_hex, by_eth_sign):
        assert Account.recover_message(encode_defunct(text=text), signature=signature) == address
        cast_verify(address, text, signature)
    cast_verify(address, "0x" + text.encode().hex(), by_hex)


async def test_kms_typed_data_signatures_recover_to_the_kms_address_and_cast_verifies(
    proxy: InProcessProxy, funded_key: KmsKey
) -> None:
    address = funded_key.address
    for method, data in (
        ("eth_signTypedData_v4", ANVIL_MAIL),
        ("eth_signTypedData_v4", ANVIL_GROUP),
        ("eth_signTypedData_v3", ANVIL_MAIL),
    ):
        signature = await proxy.result(method, [address, json.dumps(data)])
        signable = encode_typed_data(full_message=data)
        assert Account.recover_message(signable, signature=signature) == address
        cast_verify(address, json.dumps(data), signature, "--data")


@pytest.mark.parametrize(
    ("method", "params", "code", "fragment"),
    [
        pytest.param(
            "eth_signTypedData_v4", ["KEY", MAIL], -32602, "domain.chainId 1 differs", id="chain"
        ),
        pytest.param(
            "eth_signTypedData_v3", ["KEY", ANVIL_GROUP], -32602, "array type", id="v3-arrays"
        ),
        pytest.param(
            "eth_signTypedData",
            [[{"type": "string", "name": "m", "value": "hi"}], "KEY"],
            -32602,
            "legacy (v1)",
            id="v1-refused",
        ),
        pytest.param("eth_sign", ["KEY", "hello"], -32602, "must be 0x-prefixed hex", id="text"),
        pytest.param("eth_sign", ["KEY"], -32602, "takes params [address, 0x-hex", id="one"),
        pytest.param("personal_sign", ["0x00"], -32602, "[message, address]", id="ps-one"),
        pytest.param(
            "personal_sign", ["0x00", "0x" + "11" * 20], -32602, "is not an account", id="who"
        ),
        pytest.param("personal_sign", ["0x00", "nope"], -32602, "address must be a", id="addr"),
    ],
)
async def test_message_methods_refuse_bad_requests_and_keep_serving(
    proxy: InProcessProxy,
    funded_key: KmsKey,
    method: str,
    params: list[Any],
    code: int,
    fragment: str,
) -> None:
    params = [funded_key.address if p == "KEY" else p for p in params]

    reply = await proxy.call(method, params)

    assert reply["error"]["code"] == code, reply
    assert fragment in reply["error"]["message"]
    assert await proxy.result("personal_sign", ["0x00", funded_key.address])
