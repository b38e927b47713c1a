"""Every example under config/ loads into valid Settings (and so stays true to the code)."""

from __future__ import annotations

from pathlib import Path

import pytest

from signer_proxy.config import load_settings, require_serve_settings

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "config").glob("*.yaml"))


def test_config_examples_exist() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_config_example_loads_and_is_servable(path: Path) -> None:
    settings = load_settings({}, environ={}, config_file=str(path))
    require_serve_settings(settings)
    for chain in settings.chain_list():
        assert settings.for_chain(chain).upstream.startswith("http")
    assert settings.kms_keys
