"""chain/fill.py: filling a transaction request from the node (chain id, gas, fees, blobs)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import rlp

from signer_proxy.chain.fill import ChainFacts, apply_gas_margin, dynamic_fees, fill
from signer_proxy.errors import InvalidParams, UpstreamUnavailable
from signer_proxy.eth.blobs import BYTES_PER_BLOB, SidecarForm, build_sidecar
from signer_proxy.eth.tx_encoding import (
    UnsignedTx,
    signing_payload,
)
from signer_proxy.eth.tx_request import (
    DYNAMIC_FEE,
    LEGACY,
    MAX_UINT64,
)
from tests.unit.tx_support import TO, FakeNode, _req


async def _fill(node: FakeNode, margin: float = 1.2, **fields: Any) -> UnsignedTx:
    return await fill(_req(**fields), node, ChainFacts(node), margin)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("base_fee", "suggested", "max_fee", "max_tip", "expected"),
    [
        pytest.param(100, 2, None, None, (202, 2), id="defaults-2-base-plus-tip"),
        pytest.param(0, 3, None, None, (3, 3), id="zero-base-fee"),
        pytest.param(100, 2, 50, None, (50, 2), id="only-max-fee-tip-suggested"),
        pytest.param(100, 20, 5, None, (5, 5), id="only-max-fee-below-suggested-tip"),
        pytest.param(100, 2, None, 7, (207, 7), id="only-tip-given"),
        pytest.param(100, 2, 1000, 0, (1000, 0), id="both-given-kept"),
        pytest.param(100, 2, 9, 9, (9, 9), id="max-fee-equal-tip"),
    ],
)
def test_dynamic_fees(
    base_fee: int,
    suggested: int,
    max_fee: int | None,
    max_tip: int | None,
    expected: tuple[int, int],
) -> None:
    assert dynamic_fees(base_fee, suggested, max_fee, max_tip) == expected


def test_dynamic_fees_max_fee_below_tip_is_refused() -> None:
    with pytest.raises(InvalidParams) as info:
        dynamic_fees(100, 2, 10, 20)

    assert "maxFeePerGas (10)" in info.value.message
    assert "maxPriorityFeePerGas (20)" in info.value.message


@pytest.mark.parametrize(
    ("estimate", "margin", "expected"),
    [
        pytest.param(21_000, 1.0, 21_000, id="no-margin"),
        pytest.param(21_000, 1.5, 31_500, id="exact"),
        pytest.param(21_001, 1.5, 31_502, id="rounds-up"),
        pytest.param(100_000, 1.25, 125_000, id="quarter"),
        pytest.param(MAX_UINT64, 2.0, MAX_UINT64, id="capped-at-uint64"),
    ],
)
def test_apply_gas_margin(estimate: int, margin: float, expected: int) -> None:
    assert apply_gas_margin(estimate, margin) == expected


@pytest.mark.parametrize("estimate", [21_000, 53_001, 1_234_567])
def test_apply_gas_margin_never_below_the_margin(estimate: int) -> None:
    result = apply_gas_margin(estimate, 1.2)

    assert result * 10 >= estimate * 12
    assert result <= math.ceil(estimate * 12 / 10) + 1


async def test_fill_everything_from_the_node() -> None:
    node = FakeNode()

    tx = await _fill(node, to=TO, value=5, data=b"\x01\x02")

    assert tx == UnsignedTx(
        type=DYNAMIC_FEE,
        chain_id=1,
        nonce=0,
        gas=apply_gas_margin(21_000, 1.2),
        to=TO,
        value=5,
        data=b"\x01\x02",
        max_fee_per_gas=2 * 0x70 + 2,  # the next block's base fee, doubled, plus the tip
        max_priority_fee_per_gas=2,
    )
    assert sorted(node.methods) == sorted(
        [
            "eth_chainId",
            "eth_getBlockByNumber",
            "eth_estimateGas",
            "eth_feeHistory",
            "eth_maxPriorityFeePerGas",
        ]
    )
    assert ("eth_feeHistory", ["0x1", "latest", []]) in node.calls


async def test_fill_reuses_the_fee_suggestion_for_a_second_then_asks_again() -> None:
    node, clock = FakeNode(), Clock()
    facts = ChainFacts(node, fee_ttl_seconds=1.0, clock=clock)

    async def fees() -> tuple[int, int]:
        tx = await fill(_req(to=TO, gas=21_000), node, facts, 1.2)
        return tx.max_fee_per_gas, tx.max_priority_fee_per_gas

    first = await fees()
    node.answers["eth_maxPriorityFeePerGas"] = "0x9"  # the node's suggestion moves on
    clock.now += 0.5
    assert await fees() == first == (2 * 0x70 + 2, 2)
    assert node.methods.count("eth_maxPriorityFeePerGas") == 1
    assert node.methods.count("eth_feeHistory") == 1
    clock.now += 0.5  # a second after the node was asked

    assert await fees() == (2 * 0x70 + 9, 9)
    assert node.methods.count("eth_maxPriorityFeePerGas") == 2


async def test_fill_fee_suggestion_that_failed_is_not_kept() -> None:
    node, clock = FakeNode(eth_feeHistory=UpstreamUnavailable("the node is down")), Clock()
    facts = ChainFacts(node, fee_ttl_seconds=1.0, clock=clock)
    with pytest.raises(UpstreamUnavailable):
        await fill(_req(to=TO, gas=21_000), node, facts, 1.2)
    node.answers["eth_feeHistory"] = FakeNode().answers["eth_feeHistory"]

    tx = await fill(_req(to=TO, gas=21_000), node, facts, 1.2)

    assert (tx.max_fee_per_gas, tx.max_priority_fee_per_gas) == (2 * 0x70 + 2, 2)


async def test_chain_facts_asks_the_node_once() -> None:
    node = FakeNode()
    facts = ChainFacts(node)

    for _ in range(3):
        await fill(_req(to=TO), node, facts, 1.2)

    assert node.methods.count("eth_chainId") == 1
    assert node.methods.count("eth_getBlockByNumber") == 1
    assert facts.known_chain_id == 1


def test_apply_gas_margin_is_exact_for_decimal_margins() -> None:
    assert apply_gas_margin(21_000, 1.1) == 23_100


async def test_fill_pre_eip155_with_the_setting_is_legacy_with_chain_id_0() -> None:
    node = FakeNode(eth_getBlockByNumber=AssertionError("no base-fee question for chainId 0"))

    tx = await fill(_req(to=TO, chain_id=0), node, ChainFacts(node), 1.0, allow_pre_eip155=True)

    assert (tx.type, tx.chain_id, tx.gas_price) == (LEGACY, 0, 0x3B9ACA00)
    assert signing_payload(tx) == rlp.encode([0, 0x3B9ACA00, 21_000, bytes.fromhex(TO[2:]), 0, b""])


async def test_fill_blobs_compute_hashes_and_the_configured_sidecar_form() -> None:
    blob = bytes(BYTES_PER_BLOB)
    node = FakeNode()

    tx = await fill(
        _req(to=TO, blobs=(blob,), max_fee_per_blob_gas=5, max_fee_per_gas=9,
             max_priority_fee_per_gas=1, gas=21_000),
        node, ChainFacts(node), 1.0, sidecar_form=SidecarForm.EIP4844,
    )  # fmt: skip

    expected = build_sidecar((blob,), SidecarForm.EIP4844)
    assert tx.sidecar == expected
    assert tx.blob_versioned_hashes == expected.versioned_hashes
    assert node.methods == ["eth_chainId"]
