"""dev/banner: what `signer-proxy dev` prints once ready."""

from __future__ import annotations

import dataclasses

import pytest

from signer_proxy.dev.banner import (
    READY_LINE,
    Account,
    BannerInfo,
    DevChainLine,
    format_ether,
    render_banner,
)

INFO = BannerInfo(
    proxy_url="http://127.0.0.1:8545",
    node_url="http://127.0.0.1:40000",
    chain_url="http://127.0.0.1:40000",
    chain_id=1337,
    kms_url="http://127.0.0.1:40001",
    region="us-east-1",
    accounts=[
        Account("alias/dev-0", "0x" + "aa" * 20, 1000 * 10**18),
        Account("alias/dev-10", "0x" + "bb" * 20, 5 * 10**17),
    ],
    funding="1000 ETH each via transfer from 0xfunder",
    state_dir="",
    ready_seconds=1.234,
)


@pytest.mark.parametrize(
    ("wei", "text"),
    [
        pytest.param(0, "0", id="zero"),
        pytest.param(10**18, "1", id="one"),
        pytest.param(1000 * 10**18, "1000", id="thousand"),
        pytest.param(15 * 10**17, "1.5", id="fraction"),
        pytest.param(1, "0.000000000000000001", id="one-wei"),
    ],
)
def test_format_ether_is_exact(wei: int, text: str) -> None:
    assert format_ether(wei) == text


def test_banner_shows_urls_accounts_and_ready_time() -> None:
    text = render_banner(INFO)
    assert text.startswith(f"{READY_LINE} (1.2 s)\n")
    assert "http://127.0.0.1:40000 (HTTP), ws://127.0.0.1:40000 (WebSocket)" in text
    assert f"{INFO.proxy_url} (HTTP), ws{INFO.proxy_url[4:]} (WebSocket)" in text
    assert "chain id 1337" in text
    assert f"    alias/dev-0   {'0x' + 'aa' * 20}  1000 ETH\n" in text  # aliases aligned
    assert f"    alias/dev-10  {'0x' + 'bb' * 20}  0.5 ETH\n" in text
    assert "in memory only" in text
    assert text.endswith("Ctrl-C stops everything.\n")


def test_banner_commands_use_the_proxy_and_the_first_account() -> None:
    text = render_banner(INFO)
    first = "0x" + "aa" * 20
    assert f"cast send --unlocked --from {first} --rpc-url http://127.0.0.1:8545 " in text
    assert '{ dev: { type: "http", url: "http://127.0.0.1:8545", accounts: "remote" } }' in text
    assert f'JsonRpcProvider("http://127.0.0.1:8545").getSigner("{first}")' in text
    assert f'w3.eth.send_transaction({{"from": "{first}"' in text


def test_banner_with_upstream_and_state_dir() -> None:
    text = render_banner(
        dataclasses.replace(INFO, chain_url="", chain_id=31337, state_dir="/tmp/state")
    )
    assert "Node                        http://127.0.0.1:40000, chain id 31337" in text
    assert "ws://127.0.0.1:40000" not in text  # no dev chain WebSocket to show
    assert "kept in /tmp/state (addresses survive a restart)" in text


def test_banner_names_the_backend_the_keys_live_in() -> None:
    text = render_banner(
        dataclasses.replace(
            INFO,
            signed_by="the Azure Key Vault emulator",
            key_store="https://127.0.0.1:40002 (its credentials are set for this process only)",
            can_keep=False,
        )
    )
    assert (
        "  Key store                   the Azure Key Vault emulator: https://127.0.0.1:40002"
        in text
    )
    assert "Accounts (signed by the Azure Key Vault emulator through the proxy)" in text
    assert "KMS" not in text and "--state-dir" not in text
    assert "in the emulator's memory only (new addresses next time)" in text


SEVERAL = dataclasses.replace(
    INFO,
    chains=[
        DevChainLine("dev1", 1337, "http://127.0.0.1:8545/chain/dev1", "http://127.0.0.1:40000"),
        DevChainLine("dev2", 1338, "http://127.0.0.1:8545/chain/dev2", "http://127.0.0.1:40002"),
    ],
)


def test_banner_of_several_chains_gives_each_its_url_and_cast_command() -> None:
    text = render_banner(SEVERAL)
    first = "0x" + "aa" * 20
    assert "2 embedded, one path each (HTTP and WebSocket); / is dev1" in text
    assert (
        "    dev1  chain id 1337  http://127.0.0.1:8545/chain/dev1  "
        "(its node: http://127.0.0.1:40000)\n" in text
    )
    assert "    dev2  chain id 1338  http://127.0.0.1:8545/chain/dev2  " in text
    for name in ("dev1", "dev2"):
        url = f"http://127.0.0.1:8545/chain/{name}"
        assert f"cast send --unlocked --from {first} --rpc-url {url} 0x" in text
        assert f'{name}: {{ type: "http", url: "{url}", accounts: "remote" }}' in text
    assert 'JsonRpcProvider("http://127.0.0.1:8545/chain/dev1")' in text
    assert "--rpc-url http://127.0.0.1:8545 " not in text  # every command names its chain
    assert text.endswith("Ctrl-C stops everything.\n")


def test_banner_of_several_chains_shows_per_chain_balances_only_when_they_differ() -> None:
    same = Account("alias/dev-0", "0x" + "aa" * 20, 10**18, (10**18, 10**18))
    differ = Account("alias/dev-1", "0x" + "bb" * 20, 10**18, (10**18, 2 * 10**18))
    text = render_banner(dataclasses.replace(SEVERAL, accounts=[same, differ]))
    assert f"    alias/dev-0  {'0x' + 'aa' * 20}  1 ETH\n" in text
    assert f"    alias/dev-1  {'0x' + 'bb' * 20}  1 ETH on dev1, 2 ETH on dev2\n" in text
