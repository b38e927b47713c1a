"""The command line's own surface: every command's --help renders (argparse reads help text
as a %-format: one unescaped % in a setting's description made `serve --help` crash)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any

import pytest

from signer_proxy.cli.main import build_parser


def _parsers(parser: argparse.ArgumentParser, path: str = "") -> list[tuple[str, Any]]:
    found = [(path or "signer-proxy", parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _parsers(sub, f"{path} {name}".strip())
    return found


PARSERS = _parsers(build_parser())


def test_every_command_is_listed() -> None:
    names = [name for name, _ in PARSERS]
    assert {"signer-proxy", "serve", "dev", "version", "healthcheck"} <= set(names)
    assert any(name.startswith("keys ") for name in names)


@pytest.mark.parametrize("parser", [p for _, p in PARSERS], ids=[n for n, _ in PARSERS])
def test_help_renders(parser: argparse.ArgumentParser) -> None:
    text = parser.format_help()
    assert text.startswith("usage:")


def test_serve_help_from_the_command_line_shows_a_literal_percent() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "signer_proxy", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "id=%01 instead of object" in " ".join(done.stdout.split())
    assert "--upstream" in done.stdout
