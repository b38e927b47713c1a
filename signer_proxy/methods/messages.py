"""personal_sign, eth_sign and eth_signTypedData(_v3, _v4): EIP-191 / EIP-712 signatures.

Every digest carries its EIP-191 prefix (see signer_proxy.eth.messages); v is 27/28.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from signer_proxy.access.gate import SigningGate
from signer_proxy.chain.fill import ChainFacts
from signer_proxy.errors import ChainIdMismatch, InvalidParams
from signer_proxy.eth.hexdata import parse_address, parse_data, to_data
from signer_proxy.eth.messages import (
    load_typed_data,
    message_signature_bytes,
    personal_message_digest,
    personal_sign_bytes,
    personal_sign_order,
    typed_data_chain_id,
    typed_data_digest,
)
from signer_proxy.jsonrpc import CallContext
from signer_proxy.keys import KeyRegistry
from signer_proxy.keys.signer import Signer, sign_checked

log = logging.getLogger(__name__)


def _params(params: Any, method: str, shape: str, counts: tuple[int, ...]) -> list[Any]:
    if not isinstance(params, list) or len(params) not in counts:
        raise InvalidParams(f"{method} takes params {shape}")
    return params


def _typed_data_summary(data: dict[str, Any]) -> dict[str, Any]:
    """What the audit keeps of typed data: the primary type and the domain's identifying
    fields, never the message (it can hold anything the dApp put there)."""
    domain = data["domain"]
    kept = {
        k: str(domain[k])[:100]
        for k in ("name", "version", "chainId", "verifyingContract")
        if k in domain
    }
    return {"primary_type": str(data["primaryType"])[:100], "domain": kept}


class MessageMethods:
    def __init__(
        self,
        registry: Callable[[], KeyRegistry],
        facts: ChainFacts,
        gate: SigningGate | None = None,
    ) -> None:
        self._registry = registry
        self._facts = facts
        self._gate = gate or SigningGate()

    def _signer(self, method: str, address: Any, context: CallContext) -> Signer:
        """The key for `address`, once the client may use it (PolicyDenied, audited, if not):
        checked before the payload is parsed, so a client out of scope costs no parsing."""
        signer = self._registry().get(parse_address(address, "address"))
        self._gate.check_key(context, method, signer)
        return signer

    async def _sign(
        self,
        method: str,
        signer: Signer,
        digest: bytes,
        context: CallContext,
        chain_id: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> str:
        async with self._gate.message(context, method, signer, digest, chain_id, details):
            signature = await sign_checked(signer, digest)
        log.info(
            "%s from=%s digest=%s key=%s", method, signer.address, to_data(digest), signer.key_name
        )
        return to_data(message_signature_bytes(signature))

    async def personal_sign(self, params: Any, context: CallContext) -> str:
        """EIP-191 signature of [message, address]; message as 0x-hex bytes or UTF-8 text."""
        # A third param (geth's password) is accepted and ignored: the keys are in KMS.
        first, second, *_ = _params(params, "personal_sign", "[message, address]", (2, 3))
        # Either order, as MetaMask accepts: [address, message] when only the first is one.
        data, address = personal_sign_order(first, second)
        signer = self._signer("personal_sign", address, context)
        message = personal_sign_bytes(data)
        digest = personal_message_digest(message)
        return await self._sign(
            "personal_sign", signer, digest, context, details={"message_bytes": len(message)}
        )

    async def eth_sign(self, params: Any, context: CallContext) -> str:
        """geth's eth_sign: [address, 0x-hex data], signed with the EIP-191 prefix, never bare."""
        address, data = _params(params, "eth_sign", "[address, 0x-hex data]", (2,))
        signer = self._signer("eth_sign", address, context)
        message = parse_data(data, "eth_sign data")
        digest = personal_message_digest(message)
        return await self._sign(
            "eth_sign", signer, digest, context, details={"message_bytes": len(message)}
        )

    async def _typed(
        self, method: str, params: Any, context: CallContext, *, allow_arrays: bool
    ) -> str:
        address, raw = _params(params, method, "[address, typedData]", (2,))
        signer = self._signer(method, address, context)
        data = load_typed_data(raw)
        chain_id = typed_data_chain_id(data)
        if chain_id is not None:
            node_chain_id = await self._facts.chain_id()
            if chain_id != node_chain_id:
                raise ChainIdMismatch(
                    f"typed data domain.chainId {chain_id} differs from the node's chain id "
                    f"{node_chain_id}; refusing to sign for another chain"
                )
        digest = typed_data_digest(data, allow_arrays=allow_arrays)
        return await self._sign(
            method, signer, digest, context, chain_id, {"typed_data": _typed_data_summary(data)}
        )

    async def eth_signTypedData_v4(self, params: Any, context: CallContext) -> str:
        """EIP-712 signature of [address, typedData (object or JSON string)]."""
        return await self._typed("eth_signTypedData_v4", params, context, allow_arrays=True)

    async def eth_signTypedData_v3(self, params: Any, context: CallContext) -> str:
        """As _v4, without array types (as wallets implement v3)."""
        return await self._typed("eth_signTypedData_v3", params, context, allow_arrays=False)

    async def eth_signTypedData(self, params: Any, context: CallContext) -> str:
        """[address, typedData] as _v4 (Hardhat's and Ganache's meaning); v1 lists are refused."""
        if isinstance(params, list) and params and isinstance(params[0], list):
            load_typed_data(params[0])  # MetaMask's legacy v1 order: raises the v1 explanation
        return await self._typed("eth_signTypedData", params, context, allow_arrays=True)
