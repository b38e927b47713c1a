"""KMS keys: startup refusals through the real CLI, the ways to name a key, the signing path's
hard failures, and the emulator's DIGEST semantics that all of it rests on."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from typing import Any

import pytest
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.serialization import load_der_public_key

from signer_proxy.eth.ecdsa import Signature, keccak256
from signer_proxy.keys.local import LocalKeySigner
from tests.conftest import (
    REGION,
    Anvil,
    KeyFactory,
    KmsKey,
    ProxyFactory,
    free_port,
    proxy_settings,
    run_cli,
)
from tests.integration.kms_front import KmsFront, start_kms_front

pytestmark = pytest.mark.integration

SINK = "0x000000000000000000000000000000000000dEaD"
IAM_ACTIONS = ("kms:DescribeKey", "kms:GetPublicKey", "kms:Sign")


def serve_refused(kms_url: str, *keys: str) -> str:
    """`signer-proxy serve` with these keys: must exit 2 before listening; its stderr."""
    args = ["serve", "--listen", "127.0.0.1:0", "--upstream", f"http://127.0.0.1:{free_port()}"]
    args += ["--aws-region", REGION, "--aws-endpoint-url", kms_url, "--kms-timeout", "5"]
    for key in keys:
        args += ["--kms-key", key]
    result = run_cli(*args, timeout=30)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "listening" not in result.stdout
    assert "Traceback" not in result.stderr
    return result.stderr


# --- startup refusals ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_spec", "key_usage", "problems"),
    [
        ("ECC_NIST_P256", "SIGN_VERIFY", ["KeySpec is ECC_NIST_P256, needs ECC_SECG_P256K1"]),
        (
            "RSA_2048",
            "ENCRYPT_DECRYPT",
            ["KeySpec is RSA_2048", "KeyUsage is ENCRYPT_DECRYPT, needs SIGN_VERIFY"],
        ),
        (
            "SYMMETRIC_DEFAULT",
            "ENCRYPT_DECRYPT",
            ["KeySpec is SYMMETRIC_DEFAULT", "KeyUsage is ENCRYPT_DECRYPT, needs SIGN_VERIFY"],
        ),
    ],
)
def test_serve_refuses_a_key_that_cannot_sign_for_ethereum(
    kms: Any, make_key: KeyFactory, key_spec: str, key_usage: str, problems: list[str]
) -> None:
    key = make_key(key_spec=key_spec, key_usage=key_usage)
    stderr = serve_refused(kms.url, key.alias or "")
    assert key.alias in stderr and key.arn in stderr
    for problem in problems:
        assert problem in stderr


def test_serve_refuses_a_disabled_key(kms: Any, kms_client: Any, make_key: KeyFactory) -> None:
    key = make_key()
    kms_client.disable_key(KeyId=key.key_id)
    stderr = serve_refused(kms.url, key.key_id)
    assert key.key_id in stderr
    assert "KeyState is Disabled" in stderr and "enable it" in stderr


def test_serve_refuses_an_unknown_alias_pointing_at_the_region(kms: Any) -> None:
    stderr = serve_refused(kms.url, "alias/no-such-key")
    assert "alias/no-such-key" in stderr
    assert "not found" in stderr and REGION in stderr and "--aws-region" in stderr


def test_serve_refuses_an_arn_from_another_region(kms: Any, make_key: KeyFactory) -> None:
    key = make_key()
    elsewhere = key.arn.replace(f":{REGION}:", ":eu-west-1:")
    stderr = serve_refused(kms.url, elsewhere)
    assert elsewhere in stderr
    assert "Region eu-west-1" in stderr and f"--aws-region is {REGION}" in stderr


def test_one_bad_key_among_good_ones_stops_startup(kms: Any, make_key: KeyFactory) -> None:
    good, bad = make_key(), make_key(key_spec="ECC_NIST_P384")
    stderr = serve_refused(kms.url, good.arn, bad.arn)
    assert bad.arn in stderr and "ECC_NIST_P384" in stderr


@pytest.mark.parametrize("denied", ["DescribeKey", "GetPublicKey"])
async def test_serve_access_denied_names_the_iam_actions(
    aiohttp_server: Any, kms: Any, make_key: KeyFactory, denied: str
) -> None:
    """moto does not enforce IAM: a KMS-protocol front denies `denied`, the rest reaches moto."""
    key = make_key()

    async def deny(operation: str, body: dict[str, Any]) -> web.Response | None:
        if operation != denied:
            return None
        error = {
            "__type": "AccessDeniedException",
            "message": f"User: arn:aws:iam::123456789012:user/ci is not authorized to "
            f"perform: kms:{denied} on resource: {key.arn}",
        }
        return web.json_response(error, status=400, content_type="application/x-amz-json-1.1")

    front = await start_kms_front(aiohttp_server, kms.url, KmsFront(answer=deny))
    stderr = await asyncio.to_thread(serve_refused, front.url, key.alias)
    assert front.operations(denied)
    assert key.alias in stderr and "AccessDeniedException" in stderr
    for action in IAM_ACTIONS:
        assert action in stderr


async def test_serve_refuses_a_kms_endpoint_that_answers_nonsense(aiohttp_server: Any) -> None:
    """An endpoint that is not KMS (HTTP 200, no KeyMetadata): exit 2 and a clear message."""

    async def not_kms(request: web.Request) -> web.Response:
        return web.json_response({}, content_type="application/x-amz-json-1.1")

    app = web.Application()
    app.router.add_post("/", not_kms)
    front = await aiohttp_server(app, host="127.0.0.1")
    stderr = await asyncio.to_thread(serve_refused, f"http://127.0.0.1:{front.port}", "alias/x")
    assert "alias/x" in stderr and "--aws-endpoint-url" in stderr


# --- naming a key ----------------------------------------------------------------------------


def key_refs(key: KmsKey) -> dict[str, str]:
    assert key.alias is not None
    return {
        "id": key.key_id,
        "arn": key.arn,
        "alias": key.alias,
        "alias-arn": key.arn.replace(f"key/{key.key_id}", key.alias),
    }


@pytest.mark.parametrize("kind", ["id", "arn", "alias", "alias-arn"])
async def test_every_way_of_naming_a_key_loads_the_same_address(
    start_proxy: ProxyFactory, anvil: Anvil, kms: Any, make_key: KeyFactory, kind: str
) -> None:
    key = make_key()
    proxy = await start_proxy(proxy_settings(anvil.url, kms.url, key_refs(key)[kind]))
    assert await proxy.result("eth_accounts") == [key.address]
    assert await proxy.result("eth_requestAccounts") == [key.address]


async def test_one_key_named_many_ways_is_one_account(
    start_proxy: ProxyFactory, anvil: Anvil, kms: Any, make_key: KeyFactory
) -> None:
    key, other = make_key(), make_key()
    refs = [*key_refs(key).values(), key.arn, other.alias or "", key.alias or ""]
    proxy = await start_proxy(proxy_settings(anvil.url, kms.url, *refs))
    assert await proxy.result("eth_accounts") == [key.address, other.address]
    # Either address signs, whichever way its key was named.
    anvil.fund(other.address)
    tx_hash = await proxy.result("eth_sendTransaction", [{"from": other.address, "to": SINK}])
    assert anvil.call("eth_getTransactionByHash", [tx_hash])["from"] == other.address.lower()


# --- the signing path fails hard ---------------------------------------------------------------


class WrongDigestSigner:
    """Claims a key's address but signs something other than the digest it is given."""

    def __init__(self, inner: LocalKeySigner) -> None:
        self._inner = inner
        self.broken = True

    @property
    def address(self) -> str:
        return self._inner.address

    @property
    def key_name(self) -> str:
        return "test-key/wrong-digest"

    async def sign_digest(self, digest: bytes) -> Signature:
        if self.broken:
            digest = keccak256(b"not the transaction" + digest)
        return await self._inner.sign_digest(digest)


class ImpostorSigner:
    """Claims one key's address, signs (correctly) with another key."""

    def __init__(self, claimed: LocalKeySigner, actual: LocalKeySigner) -> None:
        self._claimed = claimed
        self._actual = actual

    @property
    def address(self) -> str:
        return self._claimed.address

    @property
    def key_name(self) -> str:
        return "test-key/impostor"

    async def sign_digest(self, digest: bytes) -> Signature:
        return await self._actual.sign_digest(digest)


def local_key() -> LocalKeySigner:
    return LocalKeySigner(os.urandom(32))


def nothing_reached_the_node(anvil: Anvil, address: str, block: str) -> None:
    assert anvil.call("eth_getTransactionCount", [address, "pending"]) == "0x0"
    assert anvil.call("txpool_status") == {"pending": "0x0", "queued": "0x0"}
    assert anvil.call("eth_blockNumber") == block


@pytest.mark.parametrize("kind", ["wrong-digest", "impostor"])
async def test_a_signature_that_does_not_recover_is_never_sent(
    start_proxy: ProxyFactory, anvil: Anvil, kms: Any, kind: str
) -> None:
    claimed = local_key()
    bad = (
        WrongDigestSigner(claimed)
        if kind == "wrong-digest"
        else ImpostorSigner(claimed, local_key())
    )
    good = local_key()
    anvil.fund(claimed.address)
    anvil.fund(good.address)
    proxy = await start_proxy(proxy_settings(anvil.url, kms.url), signers=[bad, good])
    block = anvil.call("eth_blockNumber")
    for method in ("eth_sendTransaction", "eth_signTransaction", "eth_sendTransaction"):
        reply = await proxy.call(method, [{"from": claimed.address, "to": SINK, "value": "0x1"}])
        assert reply["error"]["code"] == -32010, reply
        message = reply["error"]["message"]
        assert bad.key_name in message and claimed.address in message
        assert "nothing was sent" in message
    nothing_reached_the_node(anvil, claimed.address, block)
    # The other key is unaffected.
    tx_hash = await proxy.result("eth_sendTransaction", [{"from": good.address, "to": SINK}])
    assert anvil.call("eth_getTransactionByHash", [tx_hash])["from"] == good.address.lower()
    if isinstance(bad, WrongDigestSigner):
        # Once the key signs what it is given, the first send takes nonce 0: no nonce was burnt.
        bad.broken = False
        tx_hash = await proxy.result("eth_sendTransaction", [{"from": claimed.address, "to": SINK}])
        assert anvil.call("eth_getTransactionByHash", [tx_hash])["nonce"] == "0x0"


async def test_a_key_disabled_after_startup_fails_sends_naming_it(
    start_proxy: ProxyFactory, anvil: Anvil, kms: Any, kms_client: Any, funded_key: KmsKey
) -> None:
    proxy = await start_proxy(proxy_settings(anvil.url, kms.url, funded_key.alias or ""))
    tx = {"from": funded_key.address, "to": SINK}
    first = await proxy.result("eth_sendTransaction", [tx])
    kms_client.disable_key(KeyId=funded_key.key_id)
    try:
        reply = await proxy.call("eth_sendTransaction", [tx])
        assert reply["error"]["code"] == -32010, reply
        message = reply["error"]["message"]
        assert funded_key.arn in message
        assert "DisabledException" in message and "enable it" in message
        assert anvil.call("eth_getTransactionCount", [funded_key.address, "pending"]) == "0x1"
    finally:
        kms_client.enable_key(KeyId=funded_key.key_id)
    second = await proxy.result("eth_sendTransaction", [tx])
    nonces = [anvil.call("eth_getTransactionByHash", [h])["nonce"] for h in (first, second)]
    assert nonces == ["0x0", "0x1"]


# --- the emulator's DIGEST shim ------------------------------------------------------------------


def test_emulator_signs_a_digest_as_a_digest(kms_client: Any, make_key: KeyFactory) -> None:
    key = make_key()
    der_key = kms_client.get_public_key(KeyId=key.arn)["PublicKey"]
    public_key = load_der_public_key(der_key)
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert isinstance(public_key.curve, ec.SECP256K1)
    digest = keccak256(b"signer-proxy emulator check")
    signature = kms_client.sign(
        KeyId=key.arn, Message=digest, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256"
    )["Signature"]
    # AWS semantics: the 32 bytes are the hash that was signed.
    public_key.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    # moto's own semantics (hash the digest again) would make this the signed value instead.
    with pytest.raises(InvalidSignature):
        public_key.verify(
            signature, hashlib.sha256(digest).digest(), ec.ECDSA(Prehashed(hashes.SHA256()))
        )
    with pytest.raises(InvalidSignature):
        public_key.verify(signature, digest, ec.ECDSA(hashes.SHA256()))
    # KMS Verify agrees, and RAW still hashes (so the two message types really differ).
    verified = kms_client.verify(
        KeyId=key.arn,
        Message=digest,
        MessageType="DIGEST",
        Signature=signature,
        SigningAlgorithm="ECDSA_SHA_256",
    )
    assert verified["SignatureValid"] is True
    raw = kms_client.sign(
        KeyId=key.arn, Message=digest, MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256"
    )["Signature"]
    public_key.verify(raw, digest, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        public_key.verify(raw, digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def test_emulator_refuses_a_digest_of_the_wrong_length(
    kms_client: Any, make_key: KeyFactory
) -> None:
    key = make_key()
    with pytest.raises(kms_client.exceptions.ClientError) as caught:
        kms_client.sign(
            KeyId=key.arn,
            Message=b"\x01" * 31,
            MessageType="DIGEST",
            SigningAlgorithm="ECDSA_SHA_256",
        )
    assert "Digest is invalid length" in json.dumps(caught.value.response["Error"])


# --- what goes to KMS ------------------------------------------------------------------------


async def test_kms_sees_digests_by_arn_and_the_public_key_is_fetched_once(
    aiohttp_server: Any,
    start_proxy: Any,
    anvil: Anvil,
    kms: Any,
    funded_key: KmsKey,
) -> None:
    """SIGNING.md 1 and 7: Sign gets DIGEST + ECDSA_SHA_256 by key ARN; GetPublicKey once."""
    front = await start_kms_front(aiohttp_server, kms.url)
    proxy = await start_proxy(proxy_settings(anvil.url, front.url, funded_key.alias or ""))
    for _ in range(3):
        await proxy.result(
            "eth_sendTransaction", [{"from": funded_key.address, "to": SINK, "value": "0x1"}]
        )

    assert len(front.operations("DescribeKey")) == 1
    assert len(front.operations("GetPublicKey")) == 1
    signs = front.operations("Sign")
    assert len(signs) == 3
    for body in signs:
        assert body["KeyId"] == funded_key.arn
        assert body["MessageType"] == "DIGEST"
        assert body["SigningAlgorithm"] == "ECDSA_SHA_256"
        assert len(base64.b64decode(body["Message"])) == 32
