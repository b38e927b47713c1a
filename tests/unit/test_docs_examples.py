"""The examples in README.md and docs/*.md work as written: a renamed flag, subcommand or
setting fails here, not for a reader.

Every `signer-proxy …` command in a code block parses with the real command-line parser.
Synopses (`[--flag]`), elisions (`…`) and shell variables (`$ARGS`) are not commands as
written and are left out; the rest are parsed exactly as the shell would split them. Every
YAML block is a config file that loads, a policy that parses, the Helm chart's values (whose
`config:` loads as a config file) or an API keys file.
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
import yaml

from signer_proxy.access.policy import parse_policy
from signer_proxy.cli.main import build_parser
from signer_proxy.config import HexTextLoader, load_settings

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)
# The program at the start of a line: after a prompt or a comment mark, environment
# assignments, or a path (.venv/bin/signer-proxy).
COMMAND = re.compile(r"^(?:\$ |# )?(?:[A-Z_]+=\S+\s+)*(?:\S*/)?signer-proxy\s+(.*)$")


def commands(markdown: str) -> Iterator[tuple[str, list[str]]]:
    """(line, argv) of each signer-proxy command in the page's fenced blocks; continuation
    lines joined, comments dropped."""
    for _, block in FENCE.findall(markdown):
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


# --- YAML examples ---------------------------------------------------------------------------

POLICY_SECTIONS = {"defaults", "keys", "clients", "fee_bumping", "chains"}


def yaml_blocks(markdown: str) -> Iterator[str]:
    for lang, block in FENCE.findall(markdown):
        if lang.strip() in {"yaml", "yml"}:
            yield block


def load_example(block: str, tmp_path: Path) -> str:
    """What the block is, once it has loaded as that; ConfigError (or AssertionError) if not."""
    document = yaml.load(block, Loader=HexTextLoader)
    assert isinstance(document, dict) and document, "an example is a non-empty mapping"
    sections = set(document)
    if sections <= POLICY_SECTIONS and not isinstance(document.get("chains", {}), list):
        parse_policy(document, "example")
        return "policy"
    if "serviceAccount" in sections:  # the Helm chart's values; its config: is a config file
        block = yaml.safe_dump(document["config"])
    elif all(
        str(digest).startswith("sha256$")
        for hashes in document.values()
        for digest in (hashes if isinstance(hashes, list) else [hashes])
    ):
        return "api keys"
    config = tmp_path / "example.yaml"
    config.write_text(block)
    load_settings({}, {}, str(config))
    return "config"


YAML_EXAMPLES = [
    pytest.param(block, id=f"{page.name}: {block.strip().splitlines()[0][:60]}")
    for page in PAGES
    for block in yaml_blocks(page.read_text())
]


def test_the_docs_have_yaml_examples_of_each_kind(tmp_path: Path) -> None:
    kinds = [load_example(block.values[0], tmp_path) for block in YAML_EXAMPLES]
    assert {"config", "policy"} <= set(kinds)


def test_a_stale_setting_in_an_example_is_caught(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="unknown setting"):
        load_example("kms_keyz: [alias/a]\n", tmp_path)
    with pytest.raises(Exception, match="max_fees_per_gas"):
        load_example("defaults:\n  max_fees_per_gas: 1 gwei\n", tmp_path)


@pytest.mark.parametrize("block", YAML_EXAMPLES)
def test_yaml_example_loads(block: str, tmp_path: Path) -> None:
    load_example(block, tmp_path)
