"""dev/runner in this process: after a stop or a failed start, no thread is left behind."""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time
from pathlib import Path

import pytest

from signer_proxy.dev.banner import READY_LINE
from signer_proxy.dev.runner import DevOptions, run_dev
from signer_proxy.errors import ConfigError
from tests.conftest import free_port

pytestmark = pytest.mark.integration


class BannerOut(io.StringIO):
    """Collects the banner; flush() (after the banner is written) runs `on_ready`."""

    def __init__(self, on_ready: object) -> None:
        super().__init__()
        self.on_ready = on_ready

    def flush(self) -> None:
        self.on_ready()  # type: ignore[operator]


def threads() -> set[str]:
    return {f"{t.name}:{t.ident}" for t in threading.enumerate()}


def threads_left_since(before: set[str], seconds: float = 3.0) -> set[str]:
    """Threads started since `before` and still alive, after giving werkzeug's per-request
    threads (they end when their connection closes, just after the server stops) a moment to
    finish. Threads of earlier tests that end meanwhile (the session KMS emulator's request
    threads) are no leak of this test, so they are not compared."""
    deadline = time.monotonic() + seconds
    while threads() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    return threads() - before


def test_run_dev_serves_then_stops_every_thread_it_started() -> None:
    before = threads()
    seen: dict[str, object] = {}

    async def scenario() -> None:
        stop = asyncio.Event()

        def ready() -> None:
            seen["threads"] = threads() - before
            stop.set()

        out = BannerOut(ready)
        await run_dev(DevOptions(port=0, keys=1), stop=stop, out=out)
        seen["banner"] = out.getvalue()

    asyncio.run(scenario())
    assert str(seen["banner"]).startswith(READY_LINE)
    started = seen["threads"]
    assert any(name.startswith("kms-emulator") for name in started)  # type: ignore[attr-defined]
    assert any(name.startswith("dev-chain") for name in started)  # type: ignore[attr-defined]
    assert threads_left_since(before) == set()


def test_run_dev_refuses_a_dead_upstream_before_starting_anything() -> None:
    before = threads()
    dead_node = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError, match=f"the node at {dead_node}: .*could not be reached"):
        asyncio.run(run_dev(DevOptions(port=0, keys=1, upstream=dead_node), out=io.StringIO()))
    assert threads_left_since(before) == set()


def test_run_dev_unwinds_the_kms_emulator_when_a_later_step_fails(tmp_path: Path) -> None:
    (tmp_path / "kms-keys.json").write_text("{damaged")
    before = threads()
    kms_port = free_port()
    options = DevOptions(port=0, keys=1, state_dir=tmp_path, kms_port=kms_port)
    with pytest.raises(ConfigError, match="not a signer-proxy dev state file"):
        asyncio.run(run_dev(options, out=io.StringIO()))
    assert threads_left_since(before) == set()
    with socket.socket() as probe:  # the emulator had started on this port, and is gone
        assert probe.connect_ex(("127.0.0.1", kms_port)) != 0
