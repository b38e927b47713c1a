"""An in-process KMS emulator (moto's server) that honours MessageType=DIGEST.

moto signs `Message` with `ECDSA(SHA256)` whatever MessageType says, so a DIGEST request gets
hashed a second time and the signature is over sha256(digest): useless to an Ethereum signer,
and the very bug real signers must not have. `apply_digest_shim` teaches moto's Sign/Verify
handlers DIGEST for ECC keys (sign the 32 bytes as a pre-hashed value, as AWS KMS does) and
leaves everything else to moto. The tests and `signer-proxy dev` both start KMS through here,
so the shim lives in one place. Remove it when moto implements DIGEST.

Two more differences from AWS are taught the same way: moto answers ListKeys, ListAliases and
ListResourceTags in one page (`apply_pagination_shim` pages them with Limit/Marker as AWS
does), and it has no key material import (`kms_import.apply_import_shim`).

`create_dev_keys` makes the alias/dev-N keys of `signer-proxy dev` and the README walkthrough;
with a state directory it restores them across restarts (see `kms_state`).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from signer_proxy.dev import kms_import

_HASHES = {"ECDSA_SHA_256": 32, "ECDSA_SHA_384": 48, "ECDSA_SHA_512": 64}
_shim_lock = threading.Lock()
_shim_applied = False
_pages_applied = False


def _hash_for(algorithm: str) -> Any:
    from cryptography.hazmat.primitives import hashes

    return {
        "ECDSA_SHA_256": hashes.SHA256(),
        "ECDSA_SHA_384": hashes.SHA384(),
        "ECDSA_SHA_512": hashes.SHA512(),
    }[algorithm]


def apply_digest_shim() -> None:
    """Patch moto's KMS Sign and Verify to honour MessageType=DIGEST for ECC keys (idempotent)."""
    global _shim_applied
    with _shim_lock:
        if _shim_applied:
            return
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
        from moto.core.exceptions import JsonRESTError
        from moto.kms.exceptions import ValidationException
        from moto.kms.responses import KmsResponse
        from moto.kms.utils import ECDSAPrivateKey

        original_sign = KmsResponse.sign
        original_verify = KmsResponse.verify

        def _digest_request(self: Any) -> tuple[Any, bytes, str] | None:
            if self._get_param("MessageType") != "DIGEST":
                return None
            self._validate_key_id(self._get_param("KeyId"))  # moto's NotFound, as AWS answers
            key = self.kms_backend.describe_key(self._get_param("KeyId"))
            algorithm = self._get_param("SigningAlgorithm")
            if not isinstance(key.private_key, ECDSAPrivateKey) or algorithm not in _HASHES:
                return None
            message = self._get_param("Message")  # moto has already base64-decoded it
            if isinstance(message, str):
                message = message.encode()
            if len(message) != _HASHES[algorithm]:
                raise ValidationException(
                    f"Digest is invalid length for algorithm {algorithm}."  # AWS's wording
                )
            if algorithm not in key.private_key.valid_signing_algorithms:
                return None  # let moto raise its usual error
            return key, message, algorithm

        def sign(self: Any) -> str:
            request = _digest_request(self)
            if request is None:
                return str(original_sign(self))
            key, digest, algorithm = request
            if key.key_usage != "SIGN_VERIFY":
                return str(original_sign(self))
            if key.key_state == "Disabled":  # AWS refuses; moto would sign with any key state
                raise JsonRESTError("DisabledException", f"{key.arn} is disabled.")
            if key.key_state != "Enabled":
                raise JsonRESTError("KMSInvalidStateException", f"{key.arn} is {key.key_state}.")
            der = key.private_key.private_key.sign(
                digest, ec.ECDSA(Prehashed(_hash_for(algorithm)))
            )
            return json.dumps(
                {
                    "KeyId": key.arn,
                    "Signature": base64.b64encode(der).decode(),
                    "SigningAlgorithm": algorithm,
                }
            )

        def verify(self: Any) -> str:
            request = _digest_request(self)
            if request is None:
                return str(original_verify(self))
            key, digest, algorithm = request
            signature = base64.b64decode(self._get_param("Signature"))
            try:
                key.private_key.private_key.public_key().verify(
                    signature, digest, ec.ECDSA(Prehashed(_hash_for(algorithm)))
                )
                valid = True
            except InvalidSignature:
                valid = False
            return json.dumps(
                {"KeyId": key.arn, "SignatureValid": valid, "SigningAlgorithm": algorithm}
            )

        KmsResponse.sign = sign  # type: ignore[method-assign]
        KmsResponse.verify = verify  # type: ignore[method-assign]
        _shim_applied = True


# AWS's page sizes: (default, maximum) of Limit for each list operation.
_PAGES = {
    "list_keys": ("Keys", 100, 1000),
    "list_aliases": ("Aliases", 50, 100),
    "list_resource_tags": ("Tags", 50, 50),
}


def _marker(operation: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{operation}:{offset}".encode()).decode()


def _offset(operation: str, marker: str | None) -> int:
    """The offset a Marker stands for; InvalidMarkerException (as AWS) when it is not ours."""
    from moto.core.exceptions import JsonRESTError

    if marker is None:
        return 0
    try:
        name, _, offset = base64.urlsafe_b64decode(marker.encode()).decode().partition(":")
        if name == operation and int(offset) >= 0:
            return int(offset)
    except ValueError:
        pass
    raise JsonRESTError(
        "InvalidMarkerException", "The marker that specifies where to start is invalid."
    )


def apply_pagination_shim() -> None:
    """Teach moto's ListKeys, ListAliases and ListResourceTags AWS's Limit/Marker paging.

    moto answers every list in one page (`Truncated: false`), so code that forgets
    `NextMarker` would pass against it and miss keys against AWS. Idempotent.
    """
    global _pages_applied
    with _shim_lock:
        if _pages_applied:
            return
        from moto.kms.exceptions import ValidationException
        from moto.kms.responses import KmsResponse

        def paged(operation: str) -> Any:
            member, default, maximum = _PAGES[operation]
            original = getattr(KmsResponse, operation)

            def page(self: Any) -> str:
                limit = self._get_param("Limit", default)
                if not isinstance(limit, int) or not 1 <= limit <= maximum:
                    raise ValidationException(
                        f"1 validation error detected: Value '{limit}' at 'limit' failed to "
                        f"satisfy constraint: Member must have value less than or equal to "
                        f"{maximum}"
                    )
                start = _offset(operation, self._get_param("Marker"))
                answer = json.loads(original(self))
                items = answer.get(member) or []
                answer[member] = items[start : start + limit]
                answer.pop("NextMarker", None)
                answer["Truncated"] = start + limit < len(items)
                if answer["Truncated"]:
                    answer["NextMarker"] = _marker(operation, start + limit)
                return json.dumps(answer)

            return page

        for operation in _PAGES:
            setattr(KmsResponse, operation, paged(operation))
        _pages_applied = True


def _cache_moto_service_list() -> None:
    """moto's server lists its own package directory on every request to route it (a third
    of the emulator's time per KMS call); the list never changes while it runs."""
    import moto.backends

    if getattr(moto.backends.list_of_moto_modules, "_cached", False):
        return
    modules = tuple(moto.backends.list_of_moto_modules())

    def cached() -> tuple[str, ...]:
        return modules

    cached._cached = True  # type: ignore[attr-defined]
    moto.backends.list_of_moto_modules = cached


@dataclass
class KmsEmulator:
    """A running moto server on loopback; `url` is its endpoint, `stop()` ends it."""

    url: str
    _server: Any

    def stop(self) -> None:
        self._server.stop()


def start_kms_emulator(host: str = "127.0.0.1", port: int = 0) -> KmsEmulator:
    """Start moto's server in a thread with the DIGEST shim applied; port 0 picks a free one.

    OSError when it cannot listen (moto's own start() would wait forever: werkzeug ends the
    server thread with SystemExit when the port is taken).
    """
    from moto.server import ThreadedMotoServer

    apply_digest_shim()
    apply_pagination_shim()
    kms_import.apply_import_shim()
    _cache_moto_service_list()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per KMS call
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    ready = server._server_ready_event  # moto's start() waits on it with no timeout
    thread = threading.Thread(target=server._server_entry, name="kms-emulator", daemon=True)
    server._thread = thread
    thread.start()
    while not ready.wait(0.02):
        if not thread.is_alive():
            raise OSError(f"the KMS emulator cannot listen on {host}:{port}")
    bound_host, bound_port = server.get_host_and_port()
    return KmsEmulator(url=f"http://{bound_host}:{bound_port}", _server=server)


@dataclass(frozen=True)
class DevKey:
    """A dev key in the emulator: its alias, ARN and Ethereum address."""

    alias: str
    arn: str
    address: str


def dev_alias(index: int) -> str:
    return f"alias/dev-{index}"


def create_dev_keys(
    url: str, count: int, region: str = "us-east-1", state_dir: Path | None = None
) -> list[DevKey]:
    """Ensure secp256k1 signing keys alias/dev-0 .. dev-(count-1) exist; return them in order.

    Without `state_dir` every key is new. With it, the keys recorded there are first restored
    into the emulator (which must run in this process) and only the missing ones are created
    and recorded: addresses survive a restart. See `kms_state` for the file and its secrecy.
    """
    import boto3

    from signer_proxy.dev import kms_state
    from signer_proxy.errors import ConfigError
    from signer_proxy.eth.ecdsa import address_from_public_key, public_key_from_spki

    saved = kms_state.load_state(state_dir) if state_dir is not None else []
    for key in saved:
        kms_state.restore_key(region, key)
    recorded = {key.alias: key for key in saved}
    client = boto3.client(
        "kms",
        region_name=region,
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    keys: list[DevKey] = []
    created: list[kms_state.SavedKey] = []
    for index in range(count):
        alias = dev_alias(index)
        if alias in recorded:
            arn = client.describe_key(KeyId=alias)["KeyMetadata"]["Arn"]
        else:
            arn = client.create_key(KeySpec=kms_state.KEY_SPEC, KeyUsage=kms_state.KEY_USAGE)[
                "KeyMetadata"
            ]["Arn"]
            client.create_alias(AliasName=alias, TargetKeyId=arn)
        der = client.get_public_key(KeyId=arn)["PublicKey"]
        address = address_from_public_key(public_key_from_spki(der))
        if alias in recorded and recorded[alias].address != address:
            raise ConfigError(
                f"{alias} restored from {kms_state.state_path(state_dir or Path())} signs for "
                f"{address}, not the recorded {recorded[alias].address}: the state file is "
                "damaged; move it away to start with new keys"
            )
        if alias not in recorded and state_dir is not None:
            created.append(kms_state.export_key(region, alias, arn.rsplit("/", 1)[1], address))
        keys.append(DevKey(alias, arn, address))
    if created and state_dir is not None:
        kms_state.save_state(state_dir, [*saved, *created])
    return keys


def main() -> None:
    """`python -m signer_proxy.dev.kms_emulator`: a KMS emulator with N keys, until Ctrl-C."""
    import argparse
    import time

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--keys", type=int, default=1)
    args = parser.parse_args()
    emulator = start_kms_emulator(port=args.port)
    try:
        print(f"KMS emulator on {emulator.url} (region us-east-1, any credentials)")
        for key in create_dev_keys(emulator.url, args.keys):
            print(f"  {key.alias}  {key.arn}  {key.address}", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
