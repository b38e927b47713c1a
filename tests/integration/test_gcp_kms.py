"""Google Cloud KMS keys through the official async client (gRPC) and real google-auth
refresh, against the local emulator (signer_proxy/dev/gcp_kms_emulator.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.cloud import kms_v1

from signer_proxy.dev.gcp_kms_emulator import GcpKmsEmulator, emulator_client
from signer_proxy.errors import KeyLoadFailed, KmsUnavailable, SigningFailed
from signer_proxy.eth.ecdsa import SECP256K1_HALF_N, keccak256, recover_public_key
from signer_proxy.keys.gcp_kms import GcpKms, GcpKmsSigner, crc32c, parse_gcp_key
from signer_proxy.keys.signer import sign_checked

pytestmark = pytest.mark.integration
ALG = kms_v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm


@pytest.fixture
async def emulator() -> AsyncIterator[GcpKmsEmulator]:
    emu = GcpKmsEmulator()
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


def adc_credentials(
    emulator: GcpKmsEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """Application Default Credentials from an authorized_user file, as in production;
    google-auth pins such files to Google's token endpoint, so it is moved to ours."""
    import google.auth

    adc = tmp_path / "adc.json"
    adc.write_text(json.dumps(emulator.adc()))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloudkms"])
    return credentials.with_token_uri(emulator.token_uri)


@pytest.fixture
async def kms(
    emulator: GcpKmsEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[GcpKms]:
    client = emulator_client(emulator.target, adc_credentials(emulator, tmp_path, monkeypatch))
    service = GcpKms(client, backoff=0.01)
    try:
        yield service
    finally:
        await service.aclose()


async def test_emulator_refuses_what_cloud_kms_refuses(
    emulator: GcpKmsEmulator, kms: GcpKms
) -> None:
    version = emulator.create_key("k")
    p256 = emulator.create_key("p256", algorithm=ALG.EC_SIGN_P256_SHA256)
    local = grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    async with grpc.aio.secure_channel(emulator.target, local) as channel:  # no token
        call = channel.unary_unary(
            "/google.cloud.kms.v1.KeyManagementService/GetPublicKey",
            request_serializer=kms_v1.GetPublicKeyRequest.serialize,
            response_deserializer=kms_v1.PublicKey.deserialize,
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(kms_v1.GetPublicKeyRequest(name=version.name))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(
                kms_v1.GetPublicKeyRequest(name=version.name),
                metadata=(("authorization", "Bearer forged"),),
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    client = kms.client
    digest = keccak256(b"d")

    async def sign_status(**fields: Any) -> str:
        request = kms_v1.AsymmetricSignRequest(**fields)
        with pytest.raises(Exception) as refused:
            await client.asymmetric_sign(request=request, retry=None)
        return str(refused.value.grpc_status_code.name)  # type: ignore[attr-defined]

    short = kms_v1.Digest(sha256=digest[:31])
    assert await sign_status(name=version.name, digest=short) == "INVALID_ARGUMENT"
    good = kms_v1.Digest(sha256=digest)
    bad_crc = (crc32c(digest) + 1) % 2**32
    assert (
        await sign_status(name=version.name, digest=good, digest_crc32c=bad_crc)
        == "INVALID_ARGUMENT"
    )
    assert await sign_status(name=p256.name, digest=good) == "INVALID_ARGUMENT"
    assert await sign_status(name=version.name + "0", digest=good) == "NOT_FOUND"
    version.enabled = False
    assert await sign_status(name=version.name, digest=good) == "FAILED_PRECONDITION"
    version.enabled = True
    answer = await client.asymmetric_sign(
        request=kms_v1.AsymmetricSignRequest(
            name=version.name, digest=good, digest_crc32c=crc32c(digest)
        )
    )
    assert answer.verified_digest_crc32c and answer.signature_crc32c == crc32c(answer.signature)


async def test_signatures_recover_low_s_with_checksums_both_ways(
    emulator: GcpKmsEmulator, kms: GcpKms
) -> None:
    version = emulator.create_key("treasury")
    info = await kms.load(parse_gcp_key("gcpkms://" + version.name))
    assert info.public_key == emulator.public_key(version)
    signer = GcpKmsSigner(kms, info)
    for i in range(6):
        digest = keccak256(bytes([i]))
        signature = await sign_checked(signer, digest)
        assert signature.s <= SECP256K1_HALF_N
        assert recover_public_key(
            digest, signature.r, signature.s, signature.y_parity
        ) == emulator.public_key(version)
    assert emulator.sign_calls == 6


async def test_a_corrupted_answer_is_never_used(emulator: GcpKmsEmulator, kms: GcpKms) -> None:
    version = emulator.create_key("treasury")
    signer = GcpKmsSigner(kms, await kms.load(parse_gcp_key("gcpkms://" + version.name)))
    emulator.corrupt_next = 1
    with pytest.raises(KmsUnavailable, match="integrity"):
        await signer.sign_digest(keccak256(b"flipped in transit"))
    await sign_checked(signer, keccak256(b"next one is fine"))


async def test_unavailable_is_retried_then_reported(emulator: GcpKmsEmulator, kms: GcpKms) -> None:
    version = emulator.create_key("treasury")
    signer = GcpKmsSigner(kms, await kms.load(parse_gcp_key("gcpkms://" + version.name)))
    emulator.unavailable_next = 2
    await sign_checked(signer, keccak256(b"after two UNAVAILABLE"))
    emulator.unavailable_next = 100
    with pytest.raises(KmsUnavailable, match="UNAVAILABLE"):
        await signer.sign_digest(keccak256(b"still down"))


async def test_keys_that_cannot_sign_for_ethereum_are_refused(
    emulator: GcpKmsEmulator, kms: GcpKms
) -> None:
    p256 = emulator.create_key("p256", algorithm=ALG.EC_SIGN_P256_SHA256)
    with pytest.raises(KeyLoadFailed, match="EC_SIGN_SECP256K1_SHA256") as refused:
        await kms.load(parse_gcp_key("gcpkms://" + p256.name))
    assert refused.value.reason == "spec"
    missing = p256.name.replace("p256", "absent")
    with pytest.raises(KeyLoadFailed, match="not found"):
        await kms.load(parse_gcp_key("gcpkms://" + missing))
    version = emulator.create_key("later-disabled")
    signer = GcpKmsSigner(kms, await kms.load(parse_gcp_key("gcpkms://" + version.name)))
    version.enabled = False
    with pytest.raises(SigningFailed, match="FAILED_PRECONDITION"):
        await signer.sign_digest(keccak256(b"disabled"))


async def test_discovery_by_key_ring_and_label(emulator: GcpKmsEmulator, kms: GcpKms) -> None:
    a1 = emulator.create_key("a", labels={"signer": "yes"})
    a2 = emulator.create_key("a")
    a2.enabled = False
    emulator.create_key("b", labels={"signer": "no"})
    emulator.create_key("c", labels={"signer": "yes"}, algorithm=ALG.EC_SIGN_P256_SHA256)
    emulator.create_key("d", labels={"signer": "yes"}, ring="elsewhere")
    found = await kms.discover(emulator.key_ring(), {"signer": "yes"})
    assert [
        (info.public_key if info else None, label, failure) for info, label, failure in found
    ] == [(emulator.public_key(a1), "gcpkms://" + a1.name, None)]


async def test_no_token_or_secret_in_errors(emulator: GcpKmsEmulator, kms: GcpKms) -> None:
    version = emulator.create_key("quiet")
    signer = GcpKmsSigner(kms, await kms.load(parse_gcp_key("gcpkms://" + version.name)))
    emulator.unavailable_next = 100
    with pytest.raises(KmsUnavailable) as failure:
        await signer.sign_digest(keccak256(b"x"))
    text = f"{failure.value} {signer!r}"
    assert emulator.tokens
    for secret in [*emulator.tokens, emulator.client_secret, emulator.refresh_token]:
        assert secret not in text
