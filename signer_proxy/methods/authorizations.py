"""signer_signAuthorization: a key of this proxy signs an EIP-7702 authorization.

An extension method (no Ethereum JSON-RPC standard covers it; the `signer_` prefix says it is
this proxy's): the authority delegates its code to a contract, for a chain (0 = any chain)
and at the authority's nonce. The result goes into a type 0x4 transaction's
authorizationList, sent by this key or by anyone else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from signer_proxy.access.gate import SigningGate
from signer_proxy.chain.fill import ChainFacts, pending_nonce
from signer_proxy.errors import InvalidParams
from signer_proxy.eth.hexdata import MAX_UINT256, parse_address, parse_quantity, to_data
from signer_proxy.eth.tx_encoding import authorization_digest
from signer_proxy.eth.tx_request import MAX_UINT64, Authorization
from signer_proxy.jsonrpc import CallContext
from signer_proxy.keys import KeyRegistry, Signer
from signer_proxy.keys.signer import sign_checked
from signer_proxy.nonces.base import NonceManager
from signer_proxy.upstream.base import Upstream

log = logging.getLogger(__name__)

_FIELDS = frozenset({"address", "chainId", "nonce", "executor"})


async def sign_authorization(
    signer: Signer, chain_id: int, address: str, nonce: int
) -> Authorization:
    """`signer`'s EIP-7702 authorization delegating to `address` (checked to recover to it)."""
    signature = await sign_checked(signer, authorization_digest(chain_id, address, nonce))
    return Authorization(chain_id, address, nonce, signature.y_parity, signature.r, signature.s)


class AuthorizationMethods:
    def __init__(
        self,
        registry: Callable[[], KeyRegistry],
        upstream: Upstream,
        facts: ChainFacts,
        gate: SigningGate | None = None,
        nonces: NonceManager | None = None,
    ) -> None:
        self._registry = registry
        self._upstream = upstream
        self._facts = facts
        self._gate = gate or SigningGate()
        self._nonces = nonces  # None: the node's pending count

    async def signer_signAuthorization(self, params: Any, context: CallContext) -> Any:
        """[authority, {address, chainId?, nonce?, executor?}] → {chainId, address, nonce,
        yParity, r, s}; chainId defaults to the node's, nonce to the authority's next nonce
        (+1 with executor "self", when the authority also sends the type 0x4 transaction)."""
        if not isinstance(params, list) or len(params) != 2 or not isinstance(params[1], dict):
            raise InvalidParams(
                "signer_signAuthorization takes params [authority, {address, chainId?, nonce?, "
                'executor?: "self"}]'
            )
        authority, request = params
        unknown = sorted(set(request) - _FIELDS)
        if unknown:
            raise InvalidParams(
                f"unknown authorization field(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(_FIELDS))}"
            )
        signer = self._registry().get(parse_address(authority, "authority"))
        self._gate.check_key(context, "signer_signAuthorization", signer)
        address = parse_address(request.get("address"), "address (the contract to delegate to)")
        executor = request.get("executor")
        if executor not in (None, "self"):
            raise InvalidParams('executor must be "self" or absent')
        if request.get("chainId") is None:
            chain_id = await self._facts.chain_id()
        else:
            chain_id = parse_quantity(request["chainId"], "chainId", max_value=MAX_UINT256)
        if request.get("nonce") is None:
            # The sender's nonce is bumped before authorizations are processed, so an authority
            # that sends its own type 0x4 transaction signs for the nonce after it.
            nonce = await self._next_nonce(signer.address) + (executor == "self")
        else:
            nonce = parse_quantity(request["nonce"], "nonce", max_value=MAX_UINT64 - 1)
        digest = authorization_digest(chain_id, address, nonce)
        async with self._gate.authorization(context, signer, chain_id, address, nonce, digest):
            authorization = await sign_authorization(signer, chain_id, address, nonce)
        log.info(
            "signer_signAuthorization authority=%s delegate=%s chainId=%d nonce=%d digest=%s "
            "key=%s",
            signer.address,
            address,
            chain_id,
            nonce,
            to_data(authorization_digest(chain_id, address, nonce)),
            signer.key_name,
        )
        return authorization.to_json()

    async def _next_nonce(self, address: str) -> int:
        """The nonce the authority's next send through this proxy would take: the nonce
        manager's, so sends of its own still in flight (not yet at the node) count. Nothing
        is reserved: a nonce reserved and released here would open a gap under a send that
        reserved the next one meanwhile."""
        if self._nonces is None:
            return await pending_nonce(self._upstream, address)
        return await self._nonces.next_nonce(address)
