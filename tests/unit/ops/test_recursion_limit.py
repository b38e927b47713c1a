"""ops/recursion_limit.py: no import's recursion limit survives create_app."""

from __future__ import annotations

import subprocess
import sys


def test_create_app_puts_the_recursion_limit_back_after_py_ecc_raised_it() -> None:
    # A fresh interpreter: py_ecc (a dependency of eth-account) raises the limit at import.
    code = (
        "import sys\n"
        "import py_ecc  # what eth-account pulls in: it raises the limit at import\n"
        "import signer_proxy.app as app\n"
        "from signer_proxy.config import Settings\n"
        "raised = sys.getrecursionlimit()\n"
        "app.create_app(Settings(upstream='http://127.0.0.1:9', kms_keys=('alias/x',)))\n"
        "print(raised, sys.getrecursionlimit())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    raised, after = map(int, result.stdout.split())
    assert raised == 100_000  # the import raised it (if this changes, the guard is moot)
    assert after == 1000
