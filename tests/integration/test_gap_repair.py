"""Gap repair against a real anvil and a real redis-server: a nonce left unused under a sent
transaction is filled with a zero-value transfer to the key itself, and that filler is
audited as the proxy's own signature (client "signer-proxy"), as every signature is; while
the audit log cannot be written, no filler is signed."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from signer_proxy.access.audit import FileAuditLog
from signer_proxy.access.gate import SigningGate
from signer_proxy.chain.fill import ChainFacts, fill
from signer_proxy.chain.signing import sign_transaction
from signer_proxy.errors import AuditUnavailable
from signer_proxy.eth.hexdata import to_data
from signer_proxy.eth.tx_encoding import with_nonce
from signer_proxy.eth.tx_request import TxRequest
from signer_proxy.keys import KeyRegistry
from signer_proxy.keys.local import LocalKeySigner
from signer_proxy.nonces.gap_repair import GapRepairer
from signer_proxy.nonces.redis_store import connect
from signer_proxy.nonces.replicas import redis_nonces
from signer_proxy.upstream.http import HttpUpstream
from tests.conftest import Anvil, proxy_settings

pytestmark = pytest.mark.integration


class DownAuditLog:
    """An audit log that cannot be written (a full disk), at the AuditLog seam."""

    def check(self) -> None:
        raise AuditUnavailable("the audit log cannot be written (test); nothing is signed")

    def write(self, entry: Mapping[str, Any]) -> None:
        self.check()


async def test_a_gap_filler_is_audited_as_the_proxys_own_signature_and_mined(
    anvil: Anvil, redis_url: str, tmp_path: Path
) -> None:
    signer = LocalKeySigner(b"\x42" * 32, "test key")
    anvil.fund(signer.address)
    upstream = HttpUpstream(anvil.url, 10.0)
    redis = connect(redis_url)
    audit = FileAuditLog(str(tmp_path / "audit.jsonl"))
    try:
        facts = ChainFacts(upstream)
        settings = proxy_settings(anvil.url, "http://127.0.0.1:9", nonce_store=redis_url)
        nonces = redis_nonces(redis, upstream, facts, settings)
        registry = KeyRegistry([signer])

        def repairer(gate: SigningGate) -> GapRepairer:
            return GapRepairer(
                nonces, lambda: registry, upstream, facts, 1.2, 30.0,
                witness=lambda s, tx, reason: gate.on_its_own("default", s, tx, reason),
            )  # fmt: skip

        # Nonce 0 reserved and given up, nonce 1 sent: 1 waits in the pool behind a hole.
        hole = await nonces.reserve(signer.address)
        later = await nonces.reserve(signer.address)
        assert (hole.nonce, later.nonce) == (0, 1)
        request = TxRequest(sender=signer.address, to=signer.address)
        sent = await sign_transaction(
            with_nonce(await fill(request, upstream, facts, 1.2), 1), signer
        )
        await later.record(sent.raw)
        await upstream.call("eth_sendRawTransaction", [to_data(sent.raw)])
        await later.commit()
        await hole.release()

        def mined() -> int:
            return int(anvil.call("eth_getTransactionCount", [signer.address, "latest"]), 16)

        assert mined() == 0

        refusing = repairer(SigningGate(audit=DownAuditLog()))
        await refusing.repair(signer.address)  # sees nonce 0 released
        with pytest.raises(AuditUnavailable):
            await refusing.repair(signer.address)  # would fill it: refused, nothing signed
        assert mined() == 0

        working = repairer(SigningGate(audit=audit))
        await working.repair(signer.address)
        await working.repair(signer.address)  # fills it: nonce 0, then 1 behind it, mined
        assert mined() == 2
        (line,) = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
        filler = anvil.call("eth_getTransactionByHash", [line["tx_hash"]])
        assert (filler["from"].lower(), filler["to"].lower(), filler["value"], filler["nonce"]) == (
            signer.address.lower(), signer.address.lower(), "0x0", "0x0",
        )  # fmt: skip
        assert {k: line[k] for k in ("client", "method", "reason", "result", "nonce", "from")} == {
            "client": "signer-proxy", "method": "eth_sendTransaction",
            "reason": "nonce gap filler", "result": "ok", "nonce": 0, "from": signer.address,
        }  # fmt: skip
    finally:
        audit.close()
        await redis.aclose()
        await upstream.aclose()
