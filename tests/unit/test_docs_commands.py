"""Every `signer-proxy …` command in a code block of README.md or docs/*.md parses with the
real command-line parser: a renamed flag or subcommand fails here, not for a reader.

Synopses (`[--flag]`), elisions (`…`) and shell variables (`$ARGS`) are not commands as
written and are left out; the rest are parsed exactly as the shell would split them.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from signer_proxy.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
# The program at the start of a line: after a prompt or a comment mark, environment
# assignments, or a path (.venv/bin/signer-proxy).
COMMAND = re.compile(r"^(?:\$ |# )?(?:[A-Z_]+=\S+\s+)*(?:\S*/)?signer-proxy\s+(.*)$")


def commands(markdown: str) -> Iterator[tuple[str, list[str]]]:
    """(line, argv) of each signer-proxy command in the page's fenced blocks; continuation
    lines joined, comments dropped."""
    for block in FENCE.findall(markdown):
        line = ""
        for raw in block.split("\n"):
            line = f"{line} {raw.strip()}" if line else raw.strip()
            if line.endswith("\\"):
                line = line[:-1]
                continue
            match = COMMAND.match(line)
            if match is not None:
                try:
                    argv = shlex.split(match.group(1), comments=True)
                except ValueError:  # prose that names the program, not a command
                    argv = []
                if argv and not any(
                    arg.startswith("[") or "…" in arg or "$" in arg for arg in argv
                ):
                    yield line, argv
            line = ""


@functools.cache
def parser() -> argparse.ArgumentParser:
    return build_parser()  # ~1 s: every setting is a flag


def subcommands() -> set[str]:
    return {
        name
        for action in parser()._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
    }


def parse_error(argv: list[str]) -> str | None:
    """argparse's complaint about argv, or None when the command parses."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parser().parse_args(argv)
    except SystemExit:
        return stderr.getvalue().strip().splitlines()[-1]
    return None


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCUMENTED = [
    pytest.param(argv, id=f"{page.name}: {line[:70]}")
    for page in PAGES
    for line, argv in commands(page.read_text())
    # Program output that starts with the name ("signer-proxy dev is ready"), not a command.
    if not (argv[0] == "dev" and argv[1:2] == ["is"])
]


def test_the_scanner_reads_commands_as_the_shell_would() -> None:
    page = (
        "```\n"
        "$ signer-proxy serve --upstream http://127.0.0.1:8546 \\\n"
        "    --kms-key alias/a   # a comment\n"
        "AWS_PROFILE=x .venv/bin/signer-proxy address 'pkcs11:token=t;object=o'\n"
        "signer-proxy keys list [--json]\n"
        "signer-proxy serve $ARGS\n"
        "aws cloudformation deploy --stack-name signer-proxy\n"
        "```\n"
    )
    assert [argv for _, argv in commands(page)] == [
        ["serve", "--upstream", "http://127.0.0.1:8546", "--kms-key", "alias/a"],
        ["address", "pkcs11:token=t;object=o"],
    ]


def test_a_stale_flag_is_caught() -> None:
    assert parse_error(["serve", "--upstream", "http://127.0.0.1:8546"]) is None
    assert "unrecognized arguments: --kms-keyz" in (parse_error(["serve", "--kms-keyz", "a"]) or "")
    assert "invalid choice" in (parse_error(["keyz", "list"]) or "")


def test_the_docs_have_commands_to_check() -> None:
    assert len(DOCUMENTED) >= 20  # the scanner still finds them
    named = {param.values[0][0] for param in DOCUMENTED}
    assert {"serve", "dev", "keys", "address", "hash-api-key"} <= named <= subcommands()


@pytest.mark.parametrize("argv", DOCUMENTED)
def test_documented_command_parses(argv: list[str]) -> None:
    assert parse_error(argv) is None
