"""How long discovering N keys takes against the KMS emulator (issue 5: 1,000 keys in a few
seconds). Reproduce with:

    .venv/bin/python bench/key_discovery.py            # 1000 keys, 3 runs each, JSON to stdout
    .venv/bin/python bench/key_discovery.py --keys 200 --runs 1

The emulator (moto with signer-proxy's shims, as in the tests) runs in a process of its own, as a
real KMS would, with N ECC_SECG_P256K1 keys tagged and aliased. Each scenario runs the proxy's own
loader (`keys.loading.load_keys`, bounded by --kms-load-concurrency) from a cold start, then once
more as a reload (public keys reused, one DescribeKey per key). The emulator costs ~1-3 ms of CPU
per call, so these figures measure the emulator and our client together; AWS KMS answers in tens
of ms per call but in parallel, within its quotas (DescribeKey and GetPublicKey 2,000/s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_emulator(port: int, count: int) -> None:
    """The child process: an emulator holding `count` tagged, aliased signing keys."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.kms.models import kms_backends

    from signer_proxy.dev.kms_emulator import start_kms_emulator

    emulator = start_kms_emulator(port=port)
    backend = kms_backends[DEFAULT_ACCOUNT_ID][REGION]
    for i in range(count):  # straight into moto: setting up is not what is measured
        tags = [{"TagKey": "bench", "TagValue": "yes"}]
        key = backend.create_key(None, "SIGN_VERIFY", "ECC_SECG_P256K1", "bench", tags)
        backend.create_alias(key.id, f"alias/bench/{i:05d}")
    for _ in range(count // 10):  # other keys of the account, which discovery must pass over
        backend.create_key(None, "ENCRYPT_DECRYPT", "SYMMETRIC_DEFAULT", "noise", None)
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        emulator.stop()


async def measure(url: str, scenario: dict[str, Any], concurrency: int) -> dict[str, float]:
    from signer_proxy.config import Settings
    from signer_proxy.keys.aws_clients import KmsClients
    from signer_proxy.keys.loading import load_keys
    from signer_proxy.keys.sources import key_sources

    settings = Settings(aws_region=REGION, aws_endpoint_url=url, kms_load_concurrency=concurrency)
    sources = key_sources((), scenario.get("tags", ()), scenario.get("prefixes", ()))
    async with KmsClients(settings) as clients:
        started = time.perf_counter()
        first = await load_keys(sources, clients, concurrency=concurrency)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        again = await load_keys(sources, clients, first, concurrency=concurrency)
        reload = time.perf_counter() - started
    assert len(first.signers) == len(again.signers) == scenario["expected"], len(first.signers)
    return {"cold": cold, "reload": reload}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--serve-emulator", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    if args.serve_emulator:
        serve_emulator(args.serve_emulator, args.keys)
        return
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve-emulator", str(port), "--keys", str(args.keys)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        url = f"http://127.0.0.1:{port}"
        scenarios = {
            "alias prefix": {"prefixes": ("alias/bench/",), "expected": args.keys},
            "tags": {"tags": ("bench=yes",), "expected": args.keys},
        }
        results: dict[str, Any] = {}
        for name, scenario in scenarios.items():
            runs = [asyncio.run(measure(url, scenario, args.concurrency)) for _ in range(args.runs)]
            results[name] = {
                "cold_seconds": [round(r["cold"], 2) for r in runs],
                "reload_seconds": [round(r["reload"], 2) for r in runs],
                "cold_median": round(statistics.median(r["cold"] for r in runs), 2),
                "reload_median": round(statistics.median(r["reload"] for r in runs), 2),
            }
    finally:
        child.terminate()
        child.wait(10)
    report = {
        "keys": args.keys,
        "concurrency": args.concurrency,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "load_average_1m": round(os.getloadavg()[0], 2),
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
