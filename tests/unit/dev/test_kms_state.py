"""dev/kms_state: the --state-dir file: strict parsing, owner-only writes, no secret in repr."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from signer_proxy.dev.kms_state import (
    SavedKey,
    load_state,
    parse_state,
    render_state,
    save_state,
    state_path,
)
from signer_proxy.errors import ConfigError

PEM = "-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n"
KEY = SavedKey("alias/dev-0", "1234abcd", "0x" + "11" * 20, PEM)


def entry(**overrides: object) -> dict[str, object]:
    return {"alias": "alias/dev-0", "key_id": "k0", "address": "0x" + "11" * 20,
            "private_key_pem": PEM, **overrides}  # fmt: skip


@pytest.mark.parametrize(
    ("text", "why"),
    [
        pytest.param("not json", "not JSON", id="not-json"),
        pytest.param("[]", "version 1", id="not-object"),
        pytest.param('{"version": 2, "keys": []}', "version 1", id="other-version"),
        pytest.param('{"version": 1}', '"keys" must be a list', id="no-keys"),
        pytest.param(
            json.dumps({"version": 1, "keys": [{"alias": "alias/dev-0"}]}),
            "key 0 needs the string fields",
            id="missing-field",
        ),
        pytest.param(
            json.dumps({"version": 1, "keys": [entry(alias="dev-0")]}),
            "alias must start with alias/",
            id="bad-alias",
        ),
        pytest.param(
            json.dumps({"version": 1, "keys": [entry(), entry(key_id="k1")]}),
            "appears twice",
            id="duplicate-alias",
        ),
    ],
)
def test_parse_state_refuses_what_it_did_not_write(text: str, why: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_state(text, "/state/kms-keys.json")
    message = str(refused.value)
    assert why in message
    assert "/state/kms-keys.json" in message and "move it away" in message
    assert "secret" not in message


def test_render_then_parse_round_trips() -> None:
    assert parse_state(render_state([KEY]), "x") == [KEY]


def test_saved_key_repr_hides_the_private_key() -> None:
    assert "secret" not in repr(KEY) and "PRIVATE" not in repr(KEY)


def test_save_state_is_owner_only_and_load_reads_it_back(tmp_path: Path) -> None:
    state_dir = tmp_path / "new" / "state"
    save_state(state_dir, [KEY])
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(state_path(state_dir).stat().st_mode) == 0o600
    assert load_state(state_dir) == [KEY]
    assert not list(state_dir.glob("*.partial"))


def test_load_state_of_an_empty_dir_is_empty(tmp_path: Path) -> None:
    assert load_state(tmp_path) == []


def test_save_state_names_an_unwritable_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="check --state-dir is writable"):
        save_state(blocker / "state", [KEY])
