"""PKCS#11 keys on a real SoftHSM2 token (made in a temporary directory via SOFTHSM2_CONF):
keys created and imported through the CLI, cast and web3.py sending through `signer-proxy
serve` with them, the PIN in no output, and a token removed mid-run giving clear errors and
coming back on its own."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from re import compile as re_compile

import pytest
from eth_account import Account

from signer_proxy.dev.softhsm import SoftHsmToken, make_token
from signer_proxy.eth.ecdsa import keccak256
from tests.conftest import Anvil, rpc_call, run_cli, start_proxy_process, stop, tool

pytestmark = pytest.mark.integration

RECIPIENT = "0x000000000000000000000000000000000000dEaD"
IMPORTED = keccak256(b"pkcs11 imported key")


@pytest.fixture
def token(tmp_path: Path) -> SoftHsmToken:
    return make_token(tmp_path / "softhsm", "signer")


def pin_of(token: SoftHsmToken) -> str:
    return token.pin_file.read_text().strip()


def flags(token: SoftHsmToken) -> list[str]:
    return ["--pkcs11-module", token.module, "--pkcs11-pin-file", str(token.pin_file)]


def cli(token: SoftHsmToken, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_cli(*args, env=token.env)
    assert pin_of(token) not in result.stdout + result.stderr
    return result


def create(token: SoftHsmToken, label: str) -> dict[str, str]:
    result = cli(token, "keys", "create", "--backend", "pkcs11", "--token", token.label,
                 "--label", label, "--json", *flags(token))  # fmt: skip
    assert result.returncode == 0, result.stderr
    made: dict[str, str] = json.loads(result.stdout)
    return made


def finish(process: subprocess.Popen[str]) -> str:
    """Stop `signer-proxy serve` (SIGTERM) and return everything it wrote."""
    process.terminate()
    out, err = process.communicate(timeout=15)
    assert process.returncode == 0, out + err
    return out + err


def test_keys_made_by_the_cli_send_through_the_proxy_with_cast_and_web3(
    anvil: Anvil, token: SoftHsmToken, tmp_path: Path
) -> None:
    from web3 import Web3

    created = create(token, "treasury")
    private_key_file = tmp_path / "key.hex"
    private_key_file.write_text(IMPORTED.hex() + "\n")
    result = cli(token, "keys", "import", "--backend", "pkcs11", "--token", token.label,
                 "--label", "imported", "--private-key-file", str(private_key_file), "--json",
                 *flags(token))  # fmt: skip
    assert result.returncode == 0, result.stderr
    imported = json.loads(result.stdout)
    assert imported["address"] == Account.from_key(IMPORTED).address
    assert created["key"].startswith("pkcs11:token=signer;object=treasury;id=%")

    again = cli(token, "keys", "create", "--backend", "pkcs11", "--token", token.label,
                "--label", "treasury", *flags(token))  # fmt: skip
    assert again.returncode == 1 and "labelled 'treasury' exists already" in again.stderr

    # `address` of one key, then of every key of the token (issue 16, item 3).
    one = cli(token, "address", "pkcs11:token=signer;object=treasury", *flags(token))
    assert one.returncode == 0, one.stderr
    assert one.stdout.split() == [created["address"], created["key"]]
    every = cli(token, "address", "pkcs11:token=signer", "--json", *flags(token))
    assert every.returncode == 0, every.stderr
    assert {k["address"] for k in json.loads(every.stdout)["keys"]} == {
        created["address"], imported["address"],
    }  # fmt: skip

    verified = cli(token, "keys", "verify", "pkcs11:token=signer", "--json", *flags(token))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert sorted(k["address"] for k in json.loads(verified.stdout)["keys"]) == sorted(
        [created["address"], imported["address"]]
    )

    for key in (created, imported):
        anvil.fund(key["address"])
    # One source for the whole token (discovery), the PIN from an environment variable.
    proxy = start_proxy_process(
        "--upstream", anvil.url, "--key", "pkcs11:token=signer", "--pkcs11-module", token.module,
        "--pkcs11-pin-env", "HSM_PIN", "--log-level", "debug",
        env={**token.env, "HSM_PIN": pin_of(token)},
    )  # fmt: skip
    try:
        accounts = rpc_call(proxy.url, "eth_accounts")["result"]
        assert sorted(accounts) == sorted([created["address"], imported["address"]])
        sent = subprocess.run(
            [tool("cast"), "send", "--unlocked", "--from", created["address"], "--rpc-url",
             proxy.url, RECIPIENT, "--value", "1", "--json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        cast_hash = json.loads(sent.stdout)["transactionHash"]

        w3 = Web3(Web3.HTTPProvider(proxy.url))
        web3_hash = w3.eth.send_transaction(
            {"from": imported["address"], "to": RECIPIENT, "value": 2}
        )
        receipt = w3.eth.wait_for_transaction_receipt(web3_hash, timeout=30)
        assert receipt["status"] == 1
        metrics = subprocess.run(
            ["curl", "-s", proxy.url.rstrip("/") + "/metrics"], capture_output=True, text=True
        ).stdout
    except BaseException:
        stop(proxy.process)
        raise
    logs = finish(proxy.process)
    for tx_hash, key in ((cast_hash, created), (web3_hash.to_0x_hex(), imported)):
        raw = anvil.call("eth_getRawTransactionByHash", [tx_hash])
        assert Account.recover_transaction(raw) == key["address"]
    assert "pkcs11" in logs  # the keys were loaded and logged by URI …
    assert pin_of(token) not in logs + metrics  # … and the PIN is nowhere


def test_the_login_user_type_reaches_c_login(token: SoftHsmToken) -> None:
    """--pkcs11-user-type crypto-user logs in as Luna's CKU_CRYPTO_USER (0x80000001), which
    SoftHSM2 refuses at C_Login: the refusal names the setting; user (the default) signs."""
    created = create(token, "roles")
    uri = "pkcs11:token=signer;object=roles"
    crypto_user = cli(token, "address", uri, "--pkcs11-user-type", "crypto-user", *flags(token))
    assert crypto_user.returncode == 1, crypto_user.stdout
    assert "CKR_USER_TYPE_INVALID" in crypto_user.stderr
    assert "--pkcs11-user-type crypto-user is Thales Luna's Crypto User" in crypto_user.stderr
    assert "cannot be reached" not in crypto_user.stderr  # not taken for a token gone away
    user = cli(token, "address", uri, "--pkcs11-user-type", "user", *flags(token))
    assert user.returncode == 0 and user.stdout.split()[0] == created["address"], user.stderr
    other = cli(token, "address", uri, "--pkcs11-user-type", "officer", *flags(token))
    assert other.returncode == 2 and "must be user (CKU_USER) or crypto-user" in other.stderr


def test_a_wrong_pin_refuses_startup_naming_the_token_not_the_pin(
    anvil: Anvil, token: SoftHsmToken, tmp_path: Path
) -> None:
    create(token, "k")
    wrong = tmp_path / "wrong-pin"
    wrong.write_text("0000-not-it\n")
    result = run_cli("serve", "--upstream", anvil.url, "--key", "pkcs11:token=signer;object=k",
                     "--pkcs11-module", token.module, "--pkcs11-pin-file", str(wrong),
                     env=token.env)  # fmt: skip
    assert result.returncode == 2
    assert "pkcs11:token=signer;object=k" in result.stderr
    assert "CKR_PIN_INCORRECT" in result.stderr
    assert "0000-not-it" not in result.stdout + result.stderr


def test_a_token_removed_mid_run_fails_clearly_and_comes_back(
    anvil: Anvil, token: SoftHsmToken
) -> None:
    key = create(token, "hot")
    anvil.fund(key["address"])
    proxy = start_proxy_process(
        "--upstream", anvil.url, "--key", "pkcs11:token=signer;object=hot", *flags(token),
        env=token.env,
    )  # fmt: skip
    tx = {"from": key["address"], "to": RECIPIENT, "value": "0x1"}
    away = token.tokens.with_name("tokens.away")
    try:
        assert "result" in rpc_call(proxy.url, "eth_sendTransaction", [tx])
        token.tokens.rename(away)  # the token is pulled out
        failed = rpc_call(proxy.url, "eth_sendTransaction", [tx])
        error = failed["error"]
        assert error["code"] == -32011, failed
        assert "pkcs11:token=signer;object=hot" in error["message"]
        assert "cannot be reached" in error["message"]
        ready = subprocess.run(["curl", "-s", proxy.url.rstrip("/") + "/ready"],
                               capture_output=True, text=True).stdout  # fmt: skip
        away.rename(token.tokens)  # … and put back
        again = rpc_call(proxy.url, "eth_sendTransaction", [tx])
        assert "result" in again, again
    finally:
        if away.exists():
            away.rename(token.tokens)
    logs = finish(proxy.process)
    assert "token=signer" in logs and pin_of(token) not in logs
    raw = anvil.call("eth_getRawTransactionByHash", [again["result"]])
    assert Account.recover_transaction(raw) == key["address"]
    assert pin_of(token) not in ready


def test_dev_backend_softhsm_serves_token_keys_that_survive_a_restart(tmp_path: Path) -> None:
    from tests.integration.test_dev import start_dev

    line = re_compile(r"^\s+(pkcs11:token=dev;object=dev-\d+;id=\S+)\s+(0x[0-9a-fA-F]{40})\s")
    state = tmp_path / "state"
    dev = start_dev("--backend", "softhsm", "--port", "0", "--keys", "2", "--state-dir", str(state))
    try:
        keys = [m.groups() for m in map(line.match, dev.banner.splitlines()) if m]
        assert len(keys) == 2, dev.banner
        assert "signed by a SoftHSM2 token (PKCS#11)" in dev.banner
        assert "KMS emulator" not in dev.banner and "Key store" in dev.banner
        sent = subprocess.run(
            [tool("cast"), "send", "--unlocked", "--from", keys[0][1], "--rpc-url",
             dev.proxy_url, RECIPIENT, "--value", "1", "--json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["status"] == "0x1"
    finally:
        assert dev.interrupt() == 0
        stop(dev.process)  # closes its pipes
    again = start_dev("--backend", "softhsm", "--port", "0", "--keys", "2", "--state-dir",
                      str(state))  # fmt: skip
    try:
        assert [m.groups() for m in map(line.match, again.banner.splitlines()) if m] == keys
    finally:
        assert again.interrupt() == 0
        stop(again.process)
    pin = (state / "softhsm" / "pin").read_text().strip()
    assert pin not in dev.banner + again.banner + "".join(dev.stderr_lines + again.stderr_lines)


async def test_a_reload_reuses_token_signers_and_keeps_them_while_the_token_is_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from signer_proxy.config import Settings
    from signer_proxy.keys.aws_clients import KmsClients
    from signer_proxy.keys.loading import KeyLoad, load_keys
    from signer_proxy.keys.pkcs11_keys import module
    from signer_proxy.keys.sources import KeySources, key_sources

    token = make_token(tmp_path / "softhsm", "reload")
    monkeypatch.setenv("SOFTHSM2_CONF", str(token.conf))
    loaded_module = module(token.module)  # this process may have met SoftHSM2 under another
    loaded_module.reinitialize(loaded_module.generation)  # conf: read this one
    created = create(token, "r1")
    settings = Settings(pkcs11_module=token.module, pkcs11_pin_file=str(token.pin_file))
    sources = key_sources((), others=("pkcs11:token=reload",), settings=settings)

    async def load(sources: KeySources, previous: KeyLoad | None = None) -> KeyLoad:
        async with KmsClients(settings) as clients:
            return await load_keys(sources, clients, previous)

    first = await load(sources)
    assert [s.address for s in first.signers] == [created["address"]]
    second = await load(sources, first)
    assert second.signers[0] is first.signers[0]  # the same key: the same signer

    away = token.tokens.with_name("tokens.away")
    token.tokens.rename(away)
    try:
        third = await load(sources, second)
    finally:
        away.rename(token.tokens)
    assert [(s.state, s.reason) for s in third.statuses] == [
        ("failed", "unreachable"), ("kept", "unreachable"),
    ]  # fmt: skip
    assert third.signers == second.signers
    assert "CKR_" in third.statuses[0].message and pin_of(token) not in third.statuses[0].message

    fourth = await load(sources, third)
    assert [s.state for s in fourth.statuses] == ["loaded"]
    from signer_proxy.keys.verify import signature_check

    assert (await signature_check(fourth.signers[0])).ok  # signs again once it is back
