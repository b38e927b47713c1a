"""Authentication helpers shared by the transports' tests (HTTP here; the WebSocket transport's
tests use the same cases against its upgrade request): API key files, the table of
credential cases every transport must answer alike, test certificates, and a Signer that
records which approval each signature ran under.
"""

from __future__ import annotations

import datetime
import ipaddress
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from signer_proxy.access.auth import hash_api_key
from signer_proxy.access.gate import Approval, current_approval
from signer_proxy.eth.ecdsa import Signature
from signer_proxy.keys.local import LocalKeySigner

# Fixed, obviously fake keys (long enough for hash_api_key); tests scan output for them.
API_KEYS = {
    "ci": "spk_test-ci-0123456789abcdefghijklmnopqrstuv",
    "dapp": "spk_test-dapp-0123456789abcdefghijklmnopqrstu",
    "reader": "spk_test-reader-0123456789abcdefghijklmnopqr",
}


def write_api_keys_file(directory: Path, keys: dict[str, str] | None = None) -> Path:
    """A YAML API keys file (client: salted hash) for `keys` (default API_KEYS)."""
    path = directory / "api-keys.yaml"
    hashes = {client: hash_api_key(key) for client, key in (keys or API_KEYS).items()}
    path.write_text(yaml.safe_dump(hashes))
    return path


def receipt(anvil: Any, tx_hash: str, timeout: float = 10.0) -> dict[str, Any]:
    """The transaction's receipt, once anvil has mined it (automine is quick, not instant)."""
    deadline = time.monotonic() + timeout
    while True:
        found = anvil.call("eth_getTransactionReceipt", [tx_hash])
        if found is not None or time.monotonic() > deadline:
            assert found is not None, f"{tx_hash} was not mined within {timeout} s"
            return dict(found)
        time.sleep(0.05)


def write_policy_file(directory: Path, policy: dict[str, Any]) -> Path:
    path = directory / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


@dataclass(frozen=True)
class AuthCase:
    """One way of presenting credentials, and what any transport must answer."""

    id: str
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    client: str | None = None  # the client it authenticates as; None: refused with 401
    message: str = ""  # a fragment of the refusal


# With authentication on and ?key= not allowed.
AUTH_CASES = [
    AuthCase("none", message="authentication required"),
    AuthCase("wrong-key", {"Authorization": "Bearer spk_" + "x" * 40}, message="not valid"),
    AuthCase("empty-bearer", {"Authorization": "Bearer "}, message="must be 'Bearer <API key>'"),
    AuthCase("basic-scheme", {"Authorization": "Basic dXNlcjpwYXNz"}, message="must be 'Bearer"),
    AuthCase("key-as-scheme", {"Authorization": API_KEYS["ci"]}, message="must be 'Bearer"),
    AuthCase("bearer", {"Authorization": f"Bearer {API_KEYS['ci']}"}, client="ci"),
    AuthCase("bearer-lowercase", {"Authorization": f"bearer {API_KEYS['dapp']}"}, client="dapp"),
    AuthCase("query-not-allowed", query={"key": API_KEYS["ci"]}, message="not accepted"),
    AuthCase(
        "bearer-wins-over-query",
        {"Authorization": f"Bearer {API_KEYS['reader']}"},
        {"key": API_KEYS["ci"]},
        client="reader",
    ),
]
# With --allow-api-key-in-query.
QUERY_AUTH_CASES = [
    AuthCase("query-key", query={"key": API_KEYS["ci"]}, client="ci"),
    AuthCase("query-wrong-key", query={"key": "spk_" + "y" * 40}, message="not valid"),
]


def auth_params(cases: list[AuthCase]) -> list[Any]:
    return [pytest.param(case, id=case.id) for case in cases]


# --- certificates ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path
    serial: int


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


CA_KEY_USAGE = dict.fromkeys(
    ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
     "encipher_only", "decipher_only"),
    False,
) | {"digital_signature": True, "key_cert_sign": True, "crl_sign": True}  # fmt: skip


class TestCa:
    """A throwaway certificate authority issuing server and client certificates."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, name: str = "signer-proxy test CA") -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(**CA_KEY_USAGE), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / f"{name.replace(' ', '-')}.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, common_name: str, *, server: bool, file_stem: str | None = None) -> Cert:
        """A certificate for 127.0.0.1/localhost (server) or a client named `common_name`."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            ).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        cert = builder.sign(self.key, hashes.SHA256())
        stem = file_stem or common_name
        cert_path, key_path = self.directory / f"{stem}.crt", self.directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
        return Cert(cert_path, key_path, serial)


# --- a Signer that records under which approval it signed -------------------------------------


@dataclass(frozen=True)
class SignatureRecord:
    digest: bytes
    approval: Approval | None


class RecordingSigner:
    """A local key (our Signer seam) that notes the gate approval in force at each signature:
    a KMS call made without one would show up as approval None."""

    def __init__(self, private_key: bytes, name: str = "recording key") -> None:
        self._inner = LocalKeySigner(private_key, name)
        self.records: list[SignatureRecord] = []

    @property
    def address(self) -> str:
        return self._inner.address

    @property
    def key_name(self) -> str:
        return self._inner.key_name

    async def sign_digest(self, digest: bytes) -> Signature:
        self.records.append(SignatureRecord(digest, current_approval()))
        return await self._inner.sign_digest(digest)
