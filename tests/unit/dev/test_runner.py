"""dev/runner: option checks that run before anything starts."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from signer_proxy.dev.runner import (
    DevOptions,
    chain_ports,
    chains_config,
    check_options,
    check_port_free,
)
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
        pytest.param(DevOptions(chains=0), "--chains must be from 1 to 4", id="no-chains"),
        pytest.param(DevOptions(chains=5), "--chains must be from 1 to 4", id="too-many-chains"),
        pytest.param(
            DevOptions(chains=2, upstream="http://127.0.0.1:8546"),
            "--chains runs several embedded chains; it has no use with --upstream",
            id="chains-with-upstream",
        ),
        pytest.param(
            DevOptions(chains=3, chain_port=65534),
            "--chain-port 65534 leaves no room for 3 chains",
            id="chain-ports-past-65535",
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


def test_several_chains_take_consecutive_ports_and_ids_and_the_first_is_default() -> None:
    options = DevOptions(chains=3, chain_id=31337, chain_port=9000)
    assert chain_ports(options) == [9000, 9001, 9002]
    assert chain_ports(DevOptions(chains=2)) == [0, 0]
    urls = ["http://127.0.0.1:9000", "http://127.0.0.1:9001", "http://127.0.0.1:9002"]
    chains = chains_config(options, urls)
    assert [(c.name, c.chain_id, c.default) for c in chains] == [
        ("dev1", 31337, True),
        ("dev2", 31338, False),
        ("dev3", 31339, False),
    ]
    assert [dict(c.overrides)["upstream"] for c in chains] == urls
