"""ChainRoutes.for_path: which chain a path names, and the refusals that list the chains."""

from __future__ import annotations

from typing import Any

import pytest

from signer_proxy.errors import UnknownChain
from signer_proxy.transport.chains import ChainRoute, ChainRoutes


def routes(default: str | None) -> ChainRoutes:
    router: Any = object()
    return ChainRoutes(
        [ChainRoute("mainnet", 1, router, "ws://a"), ChainRoute("base", 8453, router, "ws://b")],
        default,
    )


@pytest.mark.parametrize(
    ("path", "chain"),
    [
        ("/", "mainnet"),
        ("/chain/mainnet", "mainnet"),
        ("/chain/1", "mainnet"),
        ("/chain/0x1", "mainnet"),
        ("/chain/base", "base"),
        ("/chain/base/", "base"),
        ("/chain/8453", "base"),
        ("/chain/0x2105", "base"),
        ("/chain/0X2105", "base"),
    ],
)
def test_paths_name_chains(path: str, chain: str) -> None:
    assert routes("mainnet").for_path(path).name == chain


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/chain/", "no chain ''"),
        ("/chain/optimism", "no chain 'optimism'"),
        ("/chain/10", "no chain '10'"),
        ("/chain/0xzz", "no chain '0xzz'"),
        ("/chain/base/x", "no chain 'base/x'"),
        ("/other", "is not a chain's path"),
    ],
)
def test_unknown_paths_are_refused_listing_the_chains(path: str, fragment: str) -> None:
    with pytest.raises(UnknownChain) as raised:
        routes("mainnet").for_path(path)
    assert fragment in raised.value.message
    assert "/chain/mainnet (chain id 1), /chain/base (chain id 8453)" in raised.value.message
    assert raised.value.http_status == 404


def test_without_a_default_the_root_names_the_paths() -> None:
    with pytest.raises(UnknownChain, match="none is the default"):
        routes(None).for_path("/")


def test_a_long_or_odd_segment_is_cut_and_kept_printable() -> None:
    with pytest.raises(UnknownChain) as raised:
        routes(None).for_path("/chain/" + "é" * 500)
    assert len(raised.value.message) < 300
