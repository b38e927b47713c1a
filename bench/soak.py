"""Soak under hostile connections (not CI): does normal traffic stay fast and memory flat?

    python bench/soak.py                 # 2 minutes: 1,000 slow connections, 100 pipelining
                                         # non-readers and normal traffic against one proxy
    python bench/soak.py --seconds 20 --slow 200 --pipeliners 20   # a short look

Real processes on loopback, as bench/run.py runs them: anvil, the KMS stand-in and
`signer-proxy serve`. Three kinds of client at once:

- slow connections: each sends a request head one byte every few seconds, never finishing;
- pipelining non-readers: each writes POSTs back to back and never reads a reply;
- normal traffic: a few connections of eth_blockNumber, latencies recorded.

Reports (JSON on stdout) normal traffic's p50/p99 and error count, and the proxy's RSS
(VmRSS) before the hostile clients connect, at their peak, and after they are gone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import BLOCK_NUMBER, Bench, memory_mb  # noqa: E402

HEAD = (
    b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(BLOCK_NUMBER)).encode() + b"\r\n\r\n"
)


async def slow_client(host: str, port: int, stop: asyncio.Event, opened: list[int]) -> None:
    """A head trickled a byte at a time, never completed (the server may close us)."""
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return
    opened[0] += 1
    try:
        for byte in HEAD[:-4]:
            if stop.is_set():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), random.uniform(2.0, 5.0))
    except OSError:
        pass  # closed by the server: what a read deadline does
    finally:
        writer.close()


async def pipeliner(host: str, port: int, stop: asyncio.Event, sent: list[int]) -> None:
    """POSTs written back to back, replies never read, until the socket stops taking them."""
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return
    request = HEAD + BLOCK_NUMBER
    try:
        while not stop.is_set():
            writer.write(request * 50)
            sent[0] += 50
            try:
                await asyncio.wait_for(writer.drain(), 1.0)
            except TimeoutError:
                await asyncio.wait_for(stop.wait(), None)  # the server stopped reading us
    except OSError:
        pass
    finally:
        writer.transport.abort()


async def normal(url: str, stop: asyncio.Event, latencies: list[float], errors: list[int]) -> None:
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                async with session.post(
                    url, data=BLOCK_NUMBER, headers={"Content-Type": "application/json"},
                    timeout=aiohttp.ClientTimeout(total=10),
                ) as response:  # fmt: skip
                    answer = await response.json()
                    if response.status != 200 or "result" not in answer:
                        errors[0] += 1
                    else:
                        latencies.append((time.perf_counter() - started) * 1000)
            except (aiohttp.ClientError, TimeoutError):
                errors[0] += 1
            await asyncio.sleep(0.01)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


async def soak(url: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stop, hostile_stop = asyncio.Event(), asyncio.Event()
    latencies: list[float] = []
    errors, opened, sent = [0], [0], [0]
    rss: dict[str, float] = {"before": memory_mb(pid, "VmRSS")}

    normals = [asyncio.create_task(normal(url, stop, latencies, errors)) for _ in range(4)]
    await asyncio.sleep(min(5.0, args.seconds / 6))
    baseline = percentile(latencies, 0.99)
    before_count = len(latencies)
    hostile = [
        *(asyncio.create_task(slow_client(host, int(port), hostile_stop, opened))
          for _ in range(args.slow)),
        *(asyncio.create_task(pipeliner(host, int(port), hostile_stop, sent))
          for _ in range(args.pipeliners)),
    ]  # fmt: skip
    peak = rss["before"]
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        peak = max(peak, memory_mb(pid, "VmRSS"))
    rss["during_peak"] = peak
    under_load = latencies[before_count:]
    hostile_stop.set()
    await asyncio.gather(*hostile, return_exceptions=True)
    await asyncio.sleep(3.0)
    rss["after"] = memory_mb(pid, "VmRSS")
    stop.set()
    await asyncio.gather(*normals, return_exceptions=True)
    return {
        "seconds": args.seconds,
        "slow_connections_opened": opened[0],
        "pipelined_requests_written": sent[0],
        "normal": {
            "p99_ms_before": baseline,
            "requests_during": len(under_load),
            "p50_ms_during": percentile(under_load, 0.50),
            "p99_ms_during": percentile(under_load, 0.99),
            "errors": errors[0],
        },
        "rss_mb": {k: round(v, 1) for k, v in rss.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--slow", type=int, default=1000, help="slow connections (1,000)")
    parser.add_argument("--pipeliners", type=int, default=100, help="non-readers (100)")
    args = parser.parse_args()
    # The proxy (a child: it inherits this) and this script each hold a socket per connection.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.slow + args.pipeliners + 512
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    bench = Bench(smoke=True, use_wrk=False)
    with bench.anvil() as anvil, bench.kms(1, 0) as kms, bench.proxy(anvil, kms, 1) as (url, pid):
        result = asyncio.run(soak(url, pid, args))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
