"""Signatures per second and CPU per signature of the PKCS#11 signer on a SoftHSM2 token.

    .venv/bin/python bench/pkcs11_softhsm.py [--seconds 5] [--concurrency 1 4 16] [--json]

Makes a token in a temporary directory, generates a secp256k1 key on it through the CLI's
own code (keys create --backend pkcs11), and drives Pkcs11Signer.sign_digest (the path every
eth_sendTransaction takes: the session pool's worker threads, CKM_ECDSA, low-S and the
recovery bit by trial) from the event loop at each concurrency. CPU is the process's
(user + system, all threads: SoftHSM2 signs in-process) divided by the signatures made.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from signer_proxy.dev.softhsm import make_token
from signer_proxy.eth.ecdsa import keccak256


async def run(seconds: float, concurrencies: list[int], sessions: int) -> dict[str, object]:
    from signer_proxy.keys.pkcs11_keys import Pkcs11Signer, find_keys, parse_uri, token_pool
    from signer_proxy.keys.pkcs11_manage import make_key

    with tempfile.TemporaryDirectory() as directory:
        token = make_token(Path(directory), "bench")
        os.environ.update(token.env)
        uri = f"pkcs11:token=bench?module-path={token.module}&pin-source=file:{token.pin_file}"
        spec = parse_uri(uri)
        spec = type(spec)(**{**{f: getattr(spec, f) for f in spec.__slots__}, "sessions": sessions})
        made = await make_key(spec, "bench")
        pool = token_pool(spec)
        [info] = await pool.run(lambda held: find_keys(held.session, spec))
        assert not isinstance(info, Exception)
        signer = Pkcs11Signer(pool, info)
        rows = []
        for concurrency in concurrencies:
            count = 0
            stop_at = time.perf_counter() + seconds

            async def worker(index: int, stop_at: float = stop_at) -> None:
                nonlocal count
                n = 0
                while time.perf_counter() < stop_at:
                    await signer.sign_digest(keccak256(b"%d-%d" % (index, n)))
                    n += 1
                    count += 1

            cpu0, wall0 = time.process_time(), time.perf_counter()
            await asyncio.gather(*(worker(i) for i in range(concurrency)))
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            rows.append({
                "concurrency": concurrency,
                "signatures": count,
                "signatures_per_s": round(count / wall, 1),
                "cpu_us_per_signature": round(cpu / count * 1e6, 1),
            })  # fmt: skip
        return {"address": made.address, "sessions": sessions, "seconds": seconds, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = asyncio.run(run(args.seconds, args.concurrency, args.sessions))
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"SoftHSM2, {report['sessions']} sessions, {report['seconds']} s per row")
    print("concurrency  signatures/s  CPU us/signature")
    for row in report["rows"]:  # type: ignore[attr-defined]
        print(f"{row['concurrency']:>11}  {row['signatures_per_s']:>12}  "
              f"{row['cpu_us_per_signature']:>16}")  # fmt: skip
    sys.stdout.flush()
    os._exit(0)  # the pool's worker threads hold the module: no need to wait for them


if __name__ == "__main__":
    main()
