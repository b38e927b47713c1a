"""A fast KMS stand-in for benchmarks: the KMS JSON protocol for DescribeKey, GetPublicKey,
Sign (DIGEST) and ListKeys, with an optional added latency per Sign to model real round trips.

Benchmark fixture only: it does not check SigV4 signatures or IAM, and holds its private keys
in memory. moto is correct but costs ~4 ms CPU per Sign, which would measure moto, not us.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
from dataclasses import dataclass

import coincurve
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

ACCOUNT = "111122223333"
REGION = "us-east-1"
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

# DER SubjectPublicKeyInfo prefix for an uncompressed secp256k1 point (id-ecPublicKey, secp256k1).
_SPKI_PREFIX = bytes.fromhex("3056301006072a8648ce3d020106052b8104000a034200")


@dataclass
class Key:
    key_id: str
    arn: str
    private: coincurve.PrivateKey
    spki: bytes


def make_keys(count: int, seed: str = "bench") -> list[Key]:
    """Deterministic keys, so addresses are stable across runs."""
    keys = []
    for index in range(count):
        secret = hashlib.sha256(f"{seed}-{index}".encode()).digest()
        private = coincurve.PrivateKey(secret)
        key_id = f"00000000-0000-4000-8000-{index:012d}"
        keys.append(
            Key(
                key_id=key_id,
                arn=f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}",
                private=private,
                spki=_SPKI_PREFIX + private.public_key.format(compressed=False),
            )
        )
    return keys


def alias_name(index: int) -> str:
    return f"alias/bench-{index}"


class KmsStandIn:
    def __init__(self, keys: list[Key], sign_latency: float, high_s_every: int = 2) -> None:
        self.by_ref: dict[str, Key] = {}
        for index, key in enumerate(keys):
            for ref in (
                key.key_id,
                key.arn,
                alias_name(index),
                f"arn:aws:kms:{REGION}:{ACCOUNT}:{alias_name(index)}",
            ):
                self.by_ref[ref] = key
        self.keys = keys
        self.sign_latency = sign_latency
        self.signs = 0
        self.high_s_every = high_s_every  # like KMS, half the signatures come back high-S

    def _key(self, body: dict[str, object]) -> Key:
        key = self.by_ref.get(str(body.get("KeyId")))
        if key is None:
            raise web.HTTPBadRequest(
                text=json.dumps({"__type": "NotFoundException", "message": "no such key"}),
                content_type="application/x-amz-json-1.1",
            )
        return key

    async def handle(self, request: web.Request) -> web.Response:
        target = request.headers.get("X-Amz-Target", "").removeprefix("TrentService.")
        body = json.loads(await request.read() or b"{}")
        if target == "Sign":
            key = self._key(body)
            digest = base64.b64decode(str(body["Message"]))
            if self.sign_latency:
                await asyncio.sleep(self.sign_latency)
            raw = key.private.sign_recoverable(digest, hasher=None)
            r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big")
            self.signs += 1
            if self.high_s_every and self.signs % self.high_s_every == 0:
                s = N - s
            result = {
                "KeyId": key.arn,
                "Signature": base64.b64encode(encode_dss_signature(r, s)).decode(),
                "SigningAlgorithm": "ECDSA_SHA_256",
            }
        elif target == "DescribeKey":
            key = self._key(body)
            result = {
                "KeyMetadata": {
                    "KeyId": key.key_id, "Arn": key.arn, "KeySpec": "ECC_SECG_P256K1",
                    "KeyUsage": "SIGN_VERIFY", "KeyState": "Enabled", "Enabled": True,
                    "AWSAccountId": ACCOUNT, "Origin": "AWS_KMS",
                }
            }  # fmt: skip
        elif target == "GetPublicKey":
            key = self._key(body)
            result = {
                "KeyId": key.arn,
                "PublicKey": base64.b64encode(key.spki).decode(),
                "KeySpec": "ECC_SECG_P256K1",
                "KeyUsage": "SIGN_VERIFY",
                "SigningAlgorithms": ["ECDSA_SHA_256"],
            }
        elif target == "ListKeys":
            result = {"Keys": [{"KeyId": k.key_id, "KeyArn": k.arn} for k in self.keys],
                      "Truncated": False}  # fmt: skip
        else:
            raise web.HTTPBadRequest(
                text=json.dumps({"__type": "UnsupportedOperationException", "message": target}),
                content_type="application/x-amz-json-1.1",
            )
        return web.Response(text=json.dumps(result), content_type="application/x-amz-json-1.1")


def build_app(keys: int, sign_latency_ms: float) -> web.Application:
    stand_in = KmsStandIn(make_keys(keys), sign_latency_ms / 1000)
    app = web.Application()
    app.router.add_post("/", stand_in.handle)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--keys", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    web.run_app(
        build_app(args.keys, args.latency_ms),
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main()
