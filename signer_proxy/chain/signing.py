"""The signing step: sign an unsigned transaction through a key, and prove the signature
recovers to the key's address before it is used. Used by the send handler and gap repair."""

from __future__ import annotations

import logging

from signer_proxy.eth.hexdata import to_data
from signer_proxy.eth.tx_encoding import SignedTx, UnsignedTx, sign_with, signing_digest
from signer_proxy.keys.signer import Signer, sign_checked

log = logging.getLogger(__name__)


async def sign_transaction(tx: UnsignedTx, signer: Signer) -> SignedTx:
    """Sign through the key and prove the result recovers to the key's address before use."""
    digest = signing_digest(tx)
    # debug: the tx hash in the lines that follow identifies the transaction; a line per
    # signature at info cost more CPU than anything else the proxy does for it.
    if log.isEnabledFor(logging.DEBUG):
        hex_digest = to_data(digest)
        log.debug(
            "signing transaction digest=%s from=%s key=%s",
            hex_digest,
            signer.address,
            signer.key_name,
            extra={"digest": hex_digest, "from": signer.address, "key": signer.key_name},
        )
    return sign_with(tx, await sign_checked(signer, digest))
