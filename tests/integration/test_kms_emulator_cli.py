"""`python -m signer_proxy.dev.kms_emulator`, the emulator the README's walkthrough starts."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.conftest import free_port, stop

pytestmark = pytest.mark.integration


def test_kms_emulator_cli_serves_keys_with_aliases() -> None:
    import boto3

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "signer_proxy.dev.kms_emulator", "--port", str(port), "--keys", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        assert f"127.0.0.1:{port}" in lines[0]
        assert "alias/dev-0" in lines[1] and "alias/dev-1" in lines[2]
        client = boto3.client(
            "kms", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{port}"
        )
        metadata = client.describe_key(KeyId="alias/dev-1")["KeyMetadata"]
        assert metadata["KeySpec"] == "ECC_SECG_P256K1"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        stop(process)
