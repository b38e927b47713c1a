"""Typed data as MetaMask signs it: every vector of tests/typed_data_vectors.py against
@metamask/eth-sig-util and viem in node (identical digest, or a refusal the libraries justify),
then through the proxy with a KMS key (eth-sig-util recovers the KMS address, or the proxy
refuses with -32602 naming the field); and random well-formed typed data (hypothesis) hashed by
us and by eth-sig-util, batched one node process per batch."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signer_proxy.errors import InvalidParams
from signer_proxy.eth.typed_data import typed_data_digest
from tests import wallet_oracle
from tests.conftest import InProcessProxy, KmsKey
from tests.typed_data_vectors import CHAIN_ID, VECTORS, Refuse

pytestmark = pytest.mark.integration

METHOD = {"V4": "eth_signTypedData_v4", "V3": "eth_signTypedData_v3"}


def ours(version: str, data: Any) -> str | InvalidParams:
    try:
        return "0x" + typed_data_digest(data, version).hex()  # type: ignore[arg-type]
    except InvalidParams as exc:
        return exc


def test_there_are_at_least_sixty_vectors_with_unique_names() -> None:
    names = [name for name, *_ in VECTORS]
    assert len(names) >= 60
    assert len(set(names)) == len(names)


def test_every_vector_hashes_as_eth_sig_util_and_viem_or_is_refused_for_a_true_reason() -> None:
    answers = wallet_oracle.hashes([(version, data) for _, version, data, _ in VECTORS])
    wrong = []
    for (name, version, data, expected), answer in zip(VECTORS, answers, strict=True):
        mine = ours(version, data)
        sigutil, viem = answer["sigutil"], answer["viem"]
        if expected is None:
            if isinstance(mine, InvalidParams):
                wrong.append((name, "refused", mine.message))
            elif (sigutil.get("digest"), viem.get("digest")) != (mine, mine):
                wrong.append((name, mine, sigutil, viem))
            continue
        assert isinstance(expected, Refuse)
        if not isinstance(mine, InvalidParams) or expected.fragment not in mine.message:
            wrong.append((name, "expected refusal", expected.fragment, mine))
            continue
        refused = "error" in sigutil or "error" in viem
        differ = not refused and sigutil["digest"] != viem["digest"]
        reason = "refused" if refused else "differ" if differ else "policy"
        if reason != expected.why:
            wrong.append((name, f"why is {reason}, not {expected.why}", sigutil, viem))
    assert not wrong, json.dumps(wrong, indent=1, default=str)


async def test_every_vector_through_the_proxy_recovers_with_eth_sig_util_or_is_refused(
    proxy: InProcessProxy, funded_key: KmsKey
) -> None:
    address = funded_key.address
    signed: list[tuple[str, str, Any, str]] = []
    for name, version, data, expected in VECTORS:
        reply = await proxy.call(METHOD[version], [address, json.dumps(data)])
        if expected is None:
            assert "result" in reply, (name, reply)
            signed.append((name, version, data, reply["result"]))
        else:
            assert reply.get("error", {}).get("code") == -32602, (name, reply)
            assert isinstance(expected, Refuse)
            assert "typed data" in reply["error"]["message"], (name, reply)
    recovered = wallet_oracle.ask(
        [{"kind": "recoverTyped", "data": d, "version": v, "signature": s} for _, v, d, s in signed]
    )
    wrong = [
        (name, answer)
        for (name, *_), answer in zip(signed, recovered, strict=True)
        if answer.get("address", "").lower() != address.lower()
    ]
    assert not wrong and len(signed) >= 30, wrong


# -- random well-formed typed data ----------------------------------------------------------

_INT_BITS = st.sampled_from([8, 16, 32, 64, 128, 256])


@st.composite
def _atomic(draw: st.DrawFn) -> tuple[str, Any]:
    kind = draw(st.sampled_from(["address", "bool", "string", "bytes", "bytesN", "uint", "int"]))
    if kind == "address":
        raw = draw(st.binary(min_size=20, max_size=20))
        return "address", "0x" + raw.hex()
    if kind == "bool":
        return "bool", draw(st.booleans())
    if kind == "string":
        return "string", draw(st.text(max_size=20))
    if kind == "bytes":
        return "bytes", "0x" + draw(st.binary(max_size=40)).hex()
    if kind == "bytesN":
        size = draw(st.integers(1, 32))
        return f"bytes{size}", "0x" + draw(st.binary(min_size=size, max_size=size)).hex()
    bits = draw(_INT_BITS)
    if kind == "uint":
        value = draw(st.integers(0, 2**bits - 1))
        low, high = 0, 2**bits - 1
    else:
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        value = draw(st.integers(low, high))
    form = draw(st.sampled_from(["number", "decimal", "hex"]))
    if form == "number" and abs(value) <= 2**53 - 1:
        shown: Any = value
    elif form == "hex" and value >= 0:
        shown = hex(value)
    else:
        shown = str(value)
    return f"{kind}{bits}", shown


@st.composite
def _typed_data(draw: st.DrawFn) -> dict[str, Any]:
    types: dict[str, list[dict[str, str]]] = {}
    inner_fields = draw(st.lists(_atomic(), min_size=0, max_size=3))
    names = [f"g{i}" for i in range(len(inner_fields))]
    types["Inner"] = [{"name": names[i], "type": t} for i, (t, _) in enumerate(inner_fields)]
    inner_value = {names[i]: v for i, (_, v) in enumerate(inner_fields)}
    fields = draw(st.lists(_atomic(), min_size=1, max_size=4))
    outer: list[dict[str, str]] = []
    message: dict[str, Any] = {}
    for i, (type_name, value) in enumerate(fields):
        name = f"f{i}"
        if draw(st.booleans()):
            type_name, value = type_name + "[]", [value] * draw(st.integers(0, 3))
        outer.append({"name": name, "type": type_name})
        message[name] = value
    if draw(st.booleans()):
        outer.append({"name": "inner", "type": "Inner[2]"})
        message["inner"] = [inner_value, inner_value]
    types["Outer"] = outer
    domain_names = draw(
        st.lists(st.sampled_from(["name", "version", "chainId", "verifyingContract", "salt"]),
                 unique=True)
    )  # fmt: skip
    values = {
        "name": draw(st.text(max_size=10)),
        "version": "1",
        "chainId": draw(st.sampled_from([CHAIN_ID, str(CHAIN_ID), hex(CHAIN_ID)])),
        "verifyingContract": "0x" + draw(st.binary(min_size=20, max_size=20)).hex(),
        "salt": "0x" + draw(st.binary(min_size=32, max_size=32)).hex(),
    }
    kinds = {"name": "string", "version": "string", "chainId": "uint256",
             "verifyingContract": "address", "salt": "bytes32"}  # fmt: skip
    types["EIP712Domain"] = [{"name": n, "type": kinds[n]} for n in domain_names]
    return {
        "types": types,
        "primaryType": "Outer",
        "domain": {n: values[n] for n in domain_names},
        "message": message,
    }


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(_typed_data(), min_size=25, max_size=25))
def test_random_well_formed_typed_data_hashes_as_eth_sig_util(batch: list[Any]) -> None:
    answers = wallet_oracle.hashes([("V4", data) for data in batch])
    for data, answer in zip(batch, answers, strict=True):
        mine = ours("V4", data)
        assert not isinstance(mine, InvalidParams), (mine.message, data)
        assert answer["sigutil"] == {"digest": mine}, (data, answer)
        assert answer["viem"] == {"digest": mine}, (data, answer)


PERSONAL_MESSAGES = [
    "Sign in to example.org",
    "0x48656c6c6f",
    "0x",
    "",
    "0X4869",
    "0xnot hex",
    "Grüße ✓ 🐄",
    "0x" + "ab" * 32,
]
# A 20-byte message looks like an address: as MetaMask, only [message, address] is understood.
ADDRESS_LIKE = "0x" + "12" * 20


async def test_personal_sign_in_either_order_recovers_with_eth_sig_util(
    proxy: InProcessProxy, funded_key: KmsKey
) -> None:
    address = funded_key.address
    requests = []
    for message in PERSONAL_MESSAGES:
        for params in ([message, address], [address, message]):
            signature = await proxy.result("personal_sign", params)
            requests.append({"kind": "recoverPersonal", "message": message, "signature": signature})
    signature = await proxy.result("personal_sign", [ADDRESS_LIKE, address])
    requests.append({"kind": "recoverPersonal", "message": ADDRESS_LIKE, "signature": signature})
    answers = wallet_oracle.ask(requests)
    assert [a.get("address", a).lower() for a in answers] == [address.lower()] * len(requests)
    reply = await proxy.call("personal_sign", ["0x123", address])
    assert reply["error"]["code"] == -32602
    assert "odd number of hex digits" in reply["error"]["message"]
