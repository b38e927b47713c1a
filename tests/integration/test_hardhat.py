"""Hardhat pointed at the proxy as the README tells users: a project whose network has
`accounts: "remote"` (Hardhat 2, CommonJS; Hardhat 3, ESM with `type: "http"`), a script run
with `hardhat run --network kms` that sends a transaction. Each Hardhat is the npm package,
installed by `make test` in its own folder (.tools/hardhat2, .tools/hardhat3); Hardhat 3 runs
on Node 22 from npm (`node@22`, in .tools/node22), since it needs Node 22 or later."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from signer_proxy.dev.kms_emulator import KmsEmulator
from tests.auth_support import API_KEYS
from tests.conftest import ROOT, Anvil, KeyFactory, serving, start_api_key_proxy, stop

pytestmark = pytest.mark.integration

TOOLS = ROOT / ".tools"
FIXTURES = ROOT / "tests" / "fixtures" / "hardhat"
RECIPIENT = "0x000000000000000000000000000000000000dEaD"
README = (ROOT / "README.md").read_text()


def hardhat2_config(network: str) -> str:
    return f"module.exports = {{\n  networks: {{\n    {network}\n  }},\n}};\n"


def hardhat3_config(network: str) -> str:
    return (
        'import { defineConfig } from "hardhat/config";\n\n'
        f"export default defineConfig({{\n  networks: {{\n    {network}\n  }},\n}});\n"
    )


def readme_network(major: int) -> str:
    """The `kms: {...}` line of the README's Hardhat `major` block, as written there."""
    block = README.split(f"**Hardhat {major}**", 1)[1].split("```js", 1)[1].split("```", 1)[0]
    lines = [line.strip() for line in block.splitlines() if line.strip().startswith("kms:")]
    assert len(lines) == 1, f"the README's Hardhat {major} block has no kms network"
    return lines[0]


def run_hardhat(major: int, project: Path, url: str, headers: str = "") -> dict[str, object]:
    """Make a project in `project` with the README's network (its URL replaced by `url`,
    `headers` added), run the send script through `hardhat run`, return what it printed."""
    install = TOOLS / f"hardhat{major}"
    assert (install / "node_modules" / "hardhat").is_dir(), "Hardhat missing: run `make test`"
    network = readme_network(major).replace("http://127.0.0.1:8545", url)
    if headers:
        network = network.replace(' accounts: "remote" }', f' accounts: "remote", {headers} }}')
    project.mkdir()
    (project / "node_modules").symlink_to(install / "node_modules")
    if major == 2:
        node = shutil.which("node")
        (project / "hardhat.config.js").write_text(hardhat2_config(network))
        script = "send2.cjs"
    else:
        node = str(TOOLS / "node22" / "node_modules" / "node" / "bin" / "node")
        (project / "package.json").write_text('{"type": "module"}\n')
        (project / "hardhat.config.js").write_text(hardhat3_config(network))
        script = "send3.mjs"
    assert node is not None and Path(node).exists(), "node missing: run `make test`"
    for name in (script, "send.cjs"):
        shutil.copy(FIXTURES / name, project / name)
    cli = (
        install
        / "node_modules"
        / "hardhat"
        / ("internal/cli/cli.js" if major == 2 else "dist/src/cli.js")
    )
    env = {
        **os.environ,
        "RECIPIENT": RECIPIENT,
        "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true",
        "DO_NOT_TRACK": "1",
        "CI": "true",
        "PATH": f"{Path(node).parent}:{os.environ['PATH']}",
    }
    result = subprocess.run(
        [node, str(cli), "run", "--no-compile", "--network", "kms", script],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("major", [2, 3])
def test_hardhat_sends_through_the_proxy_with_remote_accounts(
    major: int, anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory, tmp_path: Path
) -> None:
    key = make_key()
    anvil.fund(key.address)
    with serving(anvil, kms, key.arn) as proxy:
        out = run_hardhat(major, tmp_path / "project", proxy.url)
    assert out["accounts"] == [key.address.lower()] or out["accounts"] == [key.address]
    assert out["status"] == "0x1"
    mined = anvil.call("eth_getTransactionByHash", [out["hash"]])
    assert mined["from"].lower() == key.address.lower()


@pytest.mark.parametrize("major", [2, 3])
def test_hardhat_sends_its_api_key_in_http_headers(
    major: int, anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory, tmp_path: Path
) -> None:
    """The README's `httpHeaders: { Authorization: "Bearer …" }` in the network."""
    assert 'Hardhat `httpHeaders: { Authorization: "Bearer …" }`' in README
    key = make_key()
    anvil.fund(key.address)
    proxy = start_api_key_proxy(anvil, kms, key.arn, tmp_path)
    try:
        header = f'httpHeaders: {{ Authorization: "Bearer {API_KEYS["ci"]}" }}'
        out = run_hardhat(major, tmp_path / "project", proxy.url, header)
        # Hardhat 2 shows the proxy's message; Hardhat 3 only the HTTP status ("Received an
        # unexpected status code", statusCode: 401), not the JSON-RPC error in the body.
        refused = "authentication required: send an API key" if major == 2 else "statusCode: 401"
        with pytest.raises(AssertionError, match=refused):
            run_hardhat(major, tmp_path / "unauthenticated", proxy.url)
    finally:
        stop(proxy.process)
    assert out["status"] == "0x1"
    assert re.fullmatch(r"0x[0-9a-f]{64}", str(out["hash"]))
