"""Blob (type 3), set-code (type 4) and pre-EIP-155 transactions through the in-process proxy,
mined by a real anvil (its default hardfork has blobs and EIP-7702; Prague for the EIP-4844
sidecar form), signed by the KMS emulator."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import rlp
from eth_account import Account

from signer_proxy.eth.blobs import SidecarForm, build_sidecar
from signer_proxy.eth.ecdsa import SECP256K1_HALF_N
from signer_proxy.eth.tx_encoding import authorization_digest
from tests.conftest import (
    Anvil,
    InProcessProxy,
    KeyFactory,
    KmsKey,
    ProxyFactory,
    proxy_settings,
    start_anvil,
    stop,
)
from tests.integration.kms_front import KmsFront, start_kms_front
from tests.integration.test_transactions import INIT_CODE, RUNTIME_CODE, SINK, mined, send

pytestmark = pytest.mark.integration

BLOB = "0x" + ("00" + "2a" * 31) * 4096  # every 32-byte word below the field modulus
FORTY_TWO = "0x" + "00" * 31 + "2a"


def versioned_hashes(form: SidecarForm = SidecarForm.EIP7594) -> list[str]:
    sidecar = build_sidecar((bytes.fromhex(BLOB[2:]),), form)
    return ["0x" + h.hex() for h in sidecar.versioned_hashes]


@pytest.mark.usefixtures("eth_account_kzg")
async def test_blob_transaction_with_blobs_is_mined_with_kzg_versioned_hashes(
    proxy: InProcessProxy, anvil: Anvil, funded_key: KmsKey
) -> None:
    tx_hash = await send(proxy, {"from": funded_key.address, "to": SINK, "blobs": [BLOB]})

    _, tx = mined(anvil, tx_hash, funded_key.address)
    assert tx["type"] == "0x3"
    assert tx["blobVersionedHashes"] == versioned_hashes()
    assert int(tx["maxFeePerBlobGas"], 16) >= 1
    assert tx["hash"] == tx_hash  # the hash of the canonical form, not of the sidecar


@pytest.mark.usefixtures("eth_account_kzg")
async def test_blob_transaction_in_eip4844_form_is_mined_on_prague(
    start_proxy: ProxyFactory, kms: Any, make_key: KeyFactory
) -> None:
    anvil = start_anvil("--hardfork", "prague")
    try:
        key = make_key()
        anvil.fund(key.address)
        proxy = await start_proxy(
            proxy_settings(anvil.url, kms.url, key.arn, blob_sidecar="eip4844")
        )
        raw = await proxy.result(
            "eth_signTransaction", [{"from": key.address, "to": SINK, "blobs": [BLOB]}]
        )
        _body, blobs, commitments, proofs = rlp.decode(bytes.fromhex(raw[4:]))
        assert (len(blobs), len(commitments), len(proofs)) == (1, 1, 1)  # one proof per blob

        tx_hash = await send(proxy, {"from": key.address, "to": SINK, "blobs": [BLOB]})
        _, tx = mined(anvil, tx_hash, key.address)
        assert tx["blobVersionedHashes"] == versioned_hashes(SidecarForm.EIP4844)
        assert anvil.call("anvil_nodeInfo")["hardFork"].lower() == "prague"
    finally:
        stop(anvil.process)


async def test_sign_blob_transaction_with_versioned_hashes_alone_is_the_canonical_form(
    proxy: InProcessProxy, funded_key: KmsKey
) -> None:
    hashes = versioned_hashes()
    raw = await proxy.result(
        "eth_signTransaction",
        [{"from": funded_key.address, "to": SINK, "blobVersionedHashes": hashes}],
    )

    fields = rlp.decode(bytes.fromhex(raw[4:]))
    assert raw.startswith("0x03")
    assert len(fields) == 14  # 11 signed fields + yParity, r, s: no sidecar
    assert ["0x" + h.hex() for h in fields[10]] == hashes
    assert Account.recover_transaction(raw) == funded_key.address


async def test_send_blob_transaction_without_blobs_is_refused_saying_why(
    proxy: InProcessProxy, anvil: Anvil, funded_key: KmsKey
) -> None:
    reply = await proxy.call(
        "eth_sendTransaction",
        [{"from": funded_key.address, "to": SINK, "blobVersionedHashes": versioned_hashes()}],
    )

    assert reply["error"]["code"] == -32602
    assert "only be sent with its blobs" in reply["error"]["message"]
    assert anvil.call("eth_getTransactionCount", [funded_key.address, "pending"]) == "0x0"


async def deploy_forty_two(proxy: InProcessProxy, anvil: Anvil, sender: str) -> str:
    receipt, _ = mined(anvil, await send(proxy, {"from": sender, "data": INIT_CODE}), sender)
    address: str = receipt["contractAddress"]
    assert anvil.call("eth_getCode", [address, "latest"]) == RUNTIME_CODE
    return address


async def test_set_code_transaction_with_the_senders_own_authorization(
    proxy: InProcessProxy, anvil: Anvil, funded_key: KmsKey
) -> None:
    delegate = await deploy_forty_two(proxy, anvil, funded_key.address)
    authorization = await proxy.result(
        "signer_signAuthorization", [funded_key.address, {"address": delegate, "executor": "self"}]
    )
    assert authorization["chainId"] == "0x7a69" and authorization["nonce"] == "0x2"
    assert int(authorization["s"], 16) <= SECP256K1_HALF_N

    tx_hash = await send(
        proxy, {"from": funded_key.address, "to": SINK, "authorizationList": [authorization]}
    )

    _, tx = mined(anvil, tx_hash, funded_key.address)
    assert tx["type"] == "0x4"
    code = anvil.call("eth_getCode", [funded_key.address, "latest"])
    assert code == "0xef0100" + delegate[2:].lower()  # EIP-7702 delegation designator
    assert anvil.call("eth_call", [{"to": funded_key.address}, "latest"]) == FORTY_TWO


async def test_an_authorization_counts_the_authoritys_send_still_in_flight(
    aiohttp_server: Any, start_proxy: ProxyFactory, anvil: Anvil, kms: Any, funded_key: KmsKey
) -> None:
    """The authority's send holds nonce 1 while its KMS Sign is held, so the node counts 1
    pending; the authorization with executor "self" is still signed for 3 (its own type 0x4
    transaction takes 2), and once both are sent the delegation is in effect. Signed for the
    node's count + 1 (2), it would have been skipped on chain."""
    release, held, signs = asyncio.Event(), asyncio.Event(), 0

    async def hold_the_second_sign(operation: str, body: dict[str, Any]) -> Any:
        nonlocal signs
        if operation == "Sign":
            signs += 1
            if signs == 2:  # the first is the deployment's
                held.set()
                await release.wait()
        return None

    front = await start_kms_front(aiohttp_server, kms.url, KmsFront(answer=hold_the_second_sign))
    proxy = await start_proxy(proxy_settings(anvil.url, front.url, funded_key.arn))
    delegate = await deploy_forty_two(proxy, anvil, funded_key.address)
    in_flight = asyncio.create_task(send(proxy, {"from": funded_key.address, "to": SINK}))
    await asyncio.wait_for(held.wait(), 10)
    assert anvil.call("eth_getTransactionCount", [funded_key.address, "pending"]) == "0x1"

    authorization = await proxy.result(
        "signer_signAuthorization", [funded_key.address, {"address": delegate, "executor": "self"}]
    )
    assert authorization["nonce"] == "0x3"
    release.set()
    mined(anvil, await in_flight, funded_key.address)
    tx_hash = await send(
        proxy, {"from": funded_key.address, "to": SINK, "authorizationList": [authorization]}
    )
    _, tx = mined(anvil, tx_hash, funded_key.address)
    assert (tx["type"], tx["nonce"]) == ("0x4", "0x2")
    assert anvil.call("eth_call", [{"to": funded_key.address}, "latest"]) == FORTY_TWO


async def test_set_code_transaction_sponsored_for_another_key_with_an_any_chain_authorization(
    start_proxy: ProxyFactory, anvil: Anvil, kms: Any, make_key: KeyFactory
) -> None:
    sponsor, authority = make_key(), make_key()
    anvil.fund(sponsor.address)
    proxy = await start_proxy(proxy_settings(anvil.url, kms.url, sponsor.arn, authority.arn))
    delegate = await deploy_forty_two(proxy, anvil, sponsor.address)
    authorization = await proxy.result(
        "signer_signAuthorization", [authority.address, {"address": delegate, "chainId": "0x0"}]
    )
    digest = authorization_digest(0, delegate, 0)
    recovered = Account._recover_hash(
        digest,
        vrs=(int(authorization["yParity"], 16), int(authorization["r"], 16),
             int(authorization["s"], 16)),
    )  # fmt: skip
    assert recovered == authority.address
    assert authorization["nonce"] == "0x0"

    raw = await proxy.result(
        "eth_signTransaction",
        [{"from": sponsor.address, "to": authority.address, "authorizationList": [authorization]}],
    )
    tx_hash = anvil.call("eth_sendRawTransaction", [raw])

    mined(anvil, tx_hash, sponsor.address)
    assert anvil.call("eth_getCode", [authority.address, "latest"]) == (
        "0xef0100" + delegate[2:].lower()
    )
    assert anvil.call("eth_call", [{"to": authority.address}, "latest"]) == FORTY_TWO
    assert anvil.call("eth_getBalance", [authority.address, "latest"]) == "0x0"


async def test_pre_eip155_legacy_is_refused_unless_the_setting_allows_it(
    start_proxy: ProxyFactory, anvil: Anvil, kms: Any, funded_key: KmsKey
) -> None:
    request = {"from": funded_key.address, "to": SINK, "value": "0x1", "chainId": "0x0"}
    strict = await start_proxy(proxy_settings(anvil.url, kms.url, funded_key.arn))
    reply = await strict.call("eth_sendTransaction", [request])
    assert reply["error"]["code"] == -32602
    assert "--allow-pre-eip155" in reply["error"]["message"]

    allowing = await start_proxy(
        proxy_settings(anvil.url, kms.url, funded_key.arn, allow_pre_eip155=True)
    )
    tx_hash = await send(allowing, request)

    _, tx = mined(anvil, tx_hash, funded_key.address)
    assert tx["type"] == "0x0"
    assert int(tx["v"], 16) in (27, 28)
    assert tx.get("chainId") in (None, "0x0")


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        pytest.param(["0x" + "11" * 20, {"address": SINK}], "is not an account", id="unknown"),
        pytest.param([None], "takes params [authority, {address", id="shape"),
        pytest.param(["KEY", {"address": "0x12"}], "address (the contract", id="bad-delegate"),
        pytest.param(["KEY", {"address": SINK, "foo": 1}], "unknown authorization field", id="f"),
        pytest.param(
            ["KEY", {"address": SINK, "executor": "x"}], 'executor must be "self"', id="e"
        ),
        pytest.param(
            ["KEY", {"address": SINK, "nonce": hex(2**64 - 1)}], "nonce is out of range", id="n"
        ),
    ],
)
async def test_sign_authorization_refuses_bad_params_naming_them(
    proxy: InProcessProxy, funded_key: KmsKey, params: list[Any], fragment: str
) -> None:
    params = [funded_key.address if p == "KEY" else p for p in params]

    reply = await proxy.call("signer_signAuthorization", params)

    assert reply["error"]["code"] == -32602
    assert fragment in reply["error"]["message"]
