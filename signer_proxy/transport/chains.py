"""Which chain a request is for, read from its path: `/` is the default chain's, `/chain/NAME`
and `/chain/CHAIN_ID` name one (HTTP POST and WebSocket alike).

Each chain has its own router (its node, nonces, tracker, keys); nothing here crosses chains:
a request is routed by its path once, before its body is parsed, and a WebSocket connection
keeps the chain of the path it was opened on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from signer_proxy.errors import UnknownChain
from signer_proxy.router import Router

CHAIN_PREFIX = "/chain/"


@dataclass(frozen=True, slots=True)
class ChainRoute:
    """One chain as the transports see it."""

    name: str
    chain_id: int
    router: Router
    ws_url: str  # the node's WebSocket, for calls over WebSocket that pass through
    ws_upgrade_headers: Callable[[], Mapping[str, str]] | None = None  # SigV4, header secrets


class ChainRoutes:
    """The chains served, by path segment (name and decimal chain id)."""

    def __init__(self, routes: list[ChainRoute], default: str | None) -> None:
        self.routes = routes
        self._by_segment: dict[str, ChainRoute] = {}
        for route in routes:
            self._by_segment[route.name] = route
            self._by_segment[str(route.chain_id)] = route
        self.default = self._by_segment.get(default) if default is not None else None

    def for_path(self, path: str) -> ChainRoute:
        """The chain of `path` (/, /chain/X, /chain/X/); UnknownChain listing the chains."""
        if path == "/":
            if self.default is not None:
                return self.default
            raise UnknownChain(
                "this proxy serves several chains and none is the default: send to "
                f"{self._listing()}"
            )
        if path.startswith(CHAIN_PREFIX):
            segment = path[len(CHAIN_PREFIX) :].removesuffix("/")
            route = self._by_segment.get(segment)
            if route is None and segment.lower().startswith("0x"):
                try:
                    route = self._by_segment.get(str(int(segment, 16)))
                except ValueError:
                    route = None
            if route is not None:
                return route
            shown = segment[:64].encode("ascii", "replace").decode()
            raise UnknownChain(f"no chain {shown!r} is served here; send to {self._listing()}")
        raise UnknownChain(f"{path[:64]!r} is not a chain's path; send to {self._listing()}")

    def _listing(self) -> str:
        return ", ".join(f"/chain/{r.name} (chain id {r.chain_id})" for r in self.routes)

    @staticmethod
    def is_chain_path(path: str) -> bool:
        """Whether `path` is one the JSON-RPC endpoints answer (/ or /chain/…)."""
        return path == "/" or path.startswith(CHAIN_PREFIX)


ROUTES = web.AppKey("routes", ChainRoutes)
