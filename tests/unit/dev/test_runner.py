"""dev/runner: option checks that run before anything starts."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from signer_proxy.dev.runner import DevOptions, check_options, check_port_free
from signer_proxy.errors import ConfigError


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(DevOptions(keys=0), "--keys must be from 1 to 100", id="no-keys"),
        pytest.param(DevOptions(keys=101), "--keys must be from 1 to 100", id="too-many-keys"),
        pytest.param(DevOptions(port=70000), "--port must be a TCP port", id="bad-port"),
        pytest.param(DevOptions(kms_port=-1), "--kms-port must be a TCP port", id="bad-kms-port"),
        pytest.param(DevOptions(chain_id=0), "--chain-id must be a positive", id="chain-id-0"),
        pytest.param(
            DevOptions(upstream="http://127.0.0.1:8546", chain_port=9000),
            "--chain-port is for the embedded chain",
            id="chain-port-with-upstream",
        ),
        pytest.param(
            DevOptions(upstream="ftp://127.0.0.1"), "--upstream must be an http", id="bad-upstream"
        ),
    ],
)
def test_check_options_names_the_flag(options: DevOptions, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_options(options)


def test_check_options_refuses_a_state_dir_that_is_a_file(tmp_path: Path) -> None:
    state = tmp_path / "file"
    state.write_text("")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        check_options(DevOptions(state_dir=state))


def test_check_options_accepts_the_defaults() -> None:
    check_options(DevOptions())


def test_check_port_free_names_the_flag_of_a_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}.*choose another --chain-port"):
            check_port_free("--chain-port", port)
    check_port_free("--port", 0)
