"""`signer-proxy dev` without the dev extra says which command installs it."""

from __future__ import annotations

import subprocess
import sys

BLOCK_DEV_EXTRA = """
import sys
for name in ("moto", "eth_tester", "web3"):
    sys.modules[name] = None  # as if not installed: find_spec raises, import fails
import importlib.util
real_find_spec = importlib.util.find_spec
def find_spec(name, *args):
    if name in ("moto", "eth_tester", "web3"):
        return None
    return real_find_spec(name, *args)
importlib.util.find_spec = find_spec
from signer_proxy.cli.main import main
sys.exit(main(["dev"]))
"""


def test_dev_without_the_extra_names_the_install_command() -> None:
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_DEV_EXTRA], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "pip install 'signer-proxy[dev]'" in result.stderr
    assert "moto, eth_tester, web3 are not installed" in result.stderr


def test_the_production_package_imports_nothing_from_the_dev_extra() -> None:
    code = (
        "import sys\n"
        "for name in ('moto', 'eth_tester', 'web3', 'eth', 'flask', 'werkzeug'):\n"
        "    sys.modules[name] = None\n"
        "import signer_proxy.app, signer_proxy.cli.main, signer_proxy.cli.keys\n"
        "from signer_proxy.config import Settings\n"
        "signer_proxy.app.create_app(Settings(upstream='http://127.0.0.1:9', "
        "kms_keys=('alias/x',)))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
