"""The start-up checks of a key as a report: each check, its outcome, and the fix.

For a KMS key: it is found, its spec and usage can sign for Ethereum, it is enabled, its
public key parses, and a test signature from KMS recovers to its address. For a keystore:
it decrypts, and its test signature recovers. The test digest carries a prefix no
transaction or message the proxy signs can have (0x19 then "signer-proxy key check"), so the
signature it yields authorises nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from signer_proxy.errors import SignerProxyError
from signer_proxy.eth.ecdsa import (
    SignatureError,
    address_from_public_key,
    keccak256,
    public_key_from_spki,
)
from signer_proxy.keys.aws_kms import (
    IAM_ACTIONS,
    REQUIRED_KEY_SPEC,
    REQUIRED_KEY_USAGE,
    KmsKeyInfo,
    KmsSigner,
    describe_kms_error,
    kms_error_code,
    state_advice,
)
from signer_proxy.keys.signer import Signer, sign_checked

CHECK_PREFIX = b"\x19signer-proxy key check\n"
NEW_KEY = "create a new key with signer-proxy keys create (a key's spec and usage never change)"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass
class KeyReport:
    """Every check of one key, in order; `ok` when all passed."""

    key: str
    source: str
    region: str = ""
    arn: str = ""
    address: str = ""
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "source": self.source,
            "region": self.region,
            "arn": self.arn,
            "address": self.address,
            "ok": self.ok,
            "checks": [
                {"name": c.name, "ok": c.ok, "detail": c.detail, "fix": c.fix} for c in self.checks
            ],
        }


def check_digest() -> bytes:
    """A fresh digest no Ethereum transaction or signed message can have."""
    return keccak256(CHECK_PREFIX + os.urandom(16))


async def signature_check(signer: Signer) -> Check:
    """A test signature by `signer`, proven to recover to its address."""
    try:
        await sign_checked(signer, check_digest())
    except SignerProxyError as exc:
        return Check("signature", False, exc.message, "fix what the message names")
    return Check("signature", True, f"a test signature recovers to {signer.address}")


def _kms_fix(code: str, key: str) -> str:
    if code == "NotFoundException":
        return "check the key id or alias and --aws-region (or KEY?region=… for another Region)"
    if code == "AccessDeniedException":
        return f"allow {IAM_ACTIONS} on the key for this AWS identity"
    return describe_kms_error(code, key).split(": ", 2)[-1]


async def verify_kms_key(client: Any, key: str, region: str, source: str = "kms") -> KeyReport:
    """Run every check on one KMS key; never raises for the key's own problems."""
    report = KeyReport(key, source, region)
    checks = report.checks
    try:
        metadata = (await client.describe_key(KeyId=key))["KeyMetadata"]
    except ClientError as exc:
        code = kms_error_code(exc)
        checks.append(Check("found", False, f"DescribeKey: {code}", _kms_fix(code, key)))
        return report
    except (BotoCoreError, OSError, KeyError, TypeError) as exc:
        checks.append(
            Check("found", False, f"no answer from KMS ({type(exc).__name__})",
                  "check the network, --aws-endpoint-url and the AWS credentials")
        )  # fmt: skip
        return report
    report.arn = str(metadata.get("Arn", ""))
    checks.append(Check("found", True, report.arn))
    spec, usage, state = metadata.get("KeySpec"), metadata.get("KeyUsage"), metadata.get("KeyState")
    checks.append(
        Check("spec", spec == REQUIRED_KEY_SPEC, f"KeySpec {spec}",
              "" if spec == REQUIRED_KEY_SPEC else NEW_KEY)
    )  # fmt: skip
    checks.append(
        Check("usage", usage == REQUIRED_KEY_USAGE, f"KeyUsage {usage}",
              "" if usage == REQUIRED_KEY_USAGE else NEW_KEY)
    )  # fmt: skip
    checks.append(
        Check("state", state == "Enabled", f"KeyState {state}",
              "" if state == "Enabled" else state_advice(state))
    )  # fmt: skip
    if spec != REQUIRED_KEY_SPEC or usage != REQUIRED_KEY_USAGE or state != "Enabled":
        return report
    try:
        public_key = public_key_from_spki(
            (await client.get_public_key(KeyId=report.arn))["PublicKey"]
        )
    except ClientError as exc:
        code = kms_error_code(exc)
        checks.append(Check("public key", False, f"GetPublicKey: {code}", _kms_fix(code, key)))
        return report
    except (SignatureError, BotoCoreError, OSError, KeyError, TypeError) as exc:
        checks.append(Check("public key", False, str(exc), "check --aws-endpoint-url"))
        return report
    report.address = address_from_public_key(public_key)
    checks.append(Check("public key", True, f"address {report.address}"))
    info = KmsKeyInfo(ref=key, arn=report.arn, public_key=public_key, address=report.address)
    checks.append(await signature_check(KmsSigner(client, info)))
    return report
