"""@metamask/eth-sig-util and viem in node, as oracles: one node process per batch of requests
(tests/fixtures/typed_data_oracle.cjs says what a request and an answer are)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NODE_MODULES = ROOT / ".tools" / "node_modules"
SCRIPT = ROOT / "tests" / "fixtures" / "typed_data_oracle.cjs"


def ask(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    node = shutil.which("node")
    assert node, "node missing"
    for package in ("@metamask/eth-sig-util", "viem"):
        assert (NODE_MODULES / package).is_dir(), f"{package} missing: run `make tools`"
    result = subprocess.run(
        [node, str(SCRIPT)],
        input=json.dumps(requests),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    answers: list[dict[str, Any]] = json.loads(result.stdout)
    assert len(answers) == len(requests)
    return answers


def hashes(items: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """[(version, typed data)] → [{sigutil: {digest}|{error}, viem: {digest}|{error}}]."""
    return ask([{"kind": "hash", "version": v, "data": d} for v, d in items])
