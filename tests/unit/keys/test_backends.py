"""keys.backends: a `--key` source is parsed by the backend its scheme names, and its keys go
through the same load as every other: mixed with keystores, an address held twice refused
naming both, a transient failure on reload keeping the previous signers.

The backend here is a test double of our own seam (BackendSource), not of a service."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from eth_keyfile import create_keyfile_json

from signer_proxy.config import Settings
from signer_proxy.errors import ConfigError, KeyLoadFailed
from signer_proxy.eth.ecdsa import keccak256
from signer_proxy.keys import backends
from signer_proxy.keys.aws_clients import KmsClients
from signer_proxy.keys.backends import Backend, LoadContext, LoadedKey, backend_for
from signer_proxy.keys.loading import KeyLoad, load_keys
from signer_proxy.keys.local import LocalKeySigner
from signer_proxy.keys.signer import Signer
from signer_proxy.keys.sources import KeySources, KeystoreSpec, key_sources

KEYS = [keccak256(b"backend %d" % i) for i in range(3)]
TRIES: dict[str, list[object]] = {}  # label -> what each load does: a key index list or error


@dataclass
class Vault:
    label: str
    seen: list[Mapping[str, Signer]] = field(default_factory=list)

    async def load(self, previous: Mapping[str, Signer], context: LoadContext) -> list[LoadedKey]:
        self.seen.append(previous)
        outcome = TRIES[self.label].pop(0)
        if isinstance(outcome, KeyLoadFailed):
            raise outcome
        assert isinstance(outcome, list)
        return [
            LoadedKey(f"{self.label}/{i}", f"vault key {i}", "here",
                      LocalKeySigner(KEYS[i], f"vault key {i}"), required=False)
            for i in outcome
        ]  # fmt: skip


def parse_source(text: str, settings: Settings | None) -> Vault:
    return Vault(text)


@pytest.fixture(autouse=True)
def vault_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        backends, "BACKENDS", (Backend("vault:", "vault", "Vault", __name__), *backends.BACKENDS)
    )
    TRIES.clear()


async def load(sources: KeySources, previous: KeyLoad | None = None, strict: bool = False):  # type: ignore[no-untyped-def]
    async with KmsClients(Settings()) as clients:
        return await load_keys(sources, clients, previous, strict=strict)


def test_the_scheme_picks_the_backend_and_an_unknown_one_lists_the_known() -> None:
    assert backend_for("vault:a").source == "vault"
    assert backend_for("pkcs11:token=t").source == "pkcs11"
    with pytest.raises(ConfigError, match=r"names no known backend.*pkcs11:… \(PKCS#11\)"):
        backend_for("hsm://x")


async def test_one_address_in_a_keystore_and_a_backend_is_refused_naming_both(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ks"
    path.write_text(json.dumps(create_keyfile_json(KEYS[0], b"pw", kdf="pbkdf2", iterations=2)))
    (tmp_path / "pw").write_text("pw\n")
    TRIES["vault:a"] = [[0, 1], [0, 1]]
    sources = KeySources(
        keystores=(KeystoreSpec(str(path), str(tmp_path / "pw")),),
        others=(("vault", parse_source("vault:a", None)),),
    )
    loaded = await load(sources)
    assert len(loaded.signers) == 2  # one keyring, two backends
    duplicate = loaded.failures()[0]
    assert (duplicate.source, duplicate.reason) == ("vault", "duplicate")
    assert f"held by both {path} (keystore) and vault key 0 (vault)" in duplicate.message
    with pytest.raises(ConfigError, match="held by both"):
        await load(sources, strict=True)


async def test_a_transient_failure_keeps_the_source_s_keys_and_a_lasting_one_drops_them() -> None:
    TRIES["vault:b"] = [
        [0, 2],
        KeyLoadFailed("vault b is down", "unreachable", transient=True),
        KeyLoadFailed("vault b: access denied", "access_denied"),
    ]
    sources = key_sources((), others=("vault:b",))
    first = await load(sources)
    assert [s.state for s in first.statuses] == ["loaded", "loaded"]

    second = await load(sources, first)
    assert [(s.ref, s.state) for s in second.statuses] == [
        ("vault:b", "failed"), ("vault:b/0", "kept"), ("vault:b/2", "kept"),
    ]  # fmt: skip
    assert second.signers == first.signers
    assert dict(sources.others[0][1].seen[1]) == {  # type: ignore[attr-defined]
        "vault:b/0": first.signers[0], "vault:b/2": first.signers[1],
    }  # fmt: skip

    third = await load(sources, second)
    assert [(s.ref, s.state) for s in third.statuses] == [("vault:b", "failed")]
    assert third.signers == ()


async def test_a_shared_client_is_made_once_and_closed_with_the_load_clients() -> None:
    closed: list[object] = []

    class Client:
        async def aclose(self) -> None:
            closed.append(self)

    made: list[Client] = []

    def make() -> Client:
        made.append(Client())
        return made[-1]

    async with KmsClients(Settings()) as clients:
        first = clients.shared(("vault", "a"), make)
        assert clients.shared(("vault", "a"), make) is first and len(made) == 1
        other = clients.shared(("vault", "b"), make)
        assert closed == []
    assert sorted(map(id, closed)) == sorted(map(id, [first, other]))
