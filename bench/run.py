"""signer-proxy benchmark: one command, real processes on loopback, results as JSON + markdown.

    python bench/run.py              # full run (~3 min), writes bench/results/latest.{json,md}
    python bench/run.py --smoke      # seconds; what CI runs through tests/integration

The proxy runs pinned to CPU 0 (taskset); anvil, the KMS stand-in, and the load generator run
on CPU 1. Pass-through load comes from wrk when installed (Debian package `wrk`), else from a
Python aiohttp load generator (which cannot saturate anvil: ratios are then client-bound and
the report says so). Proxy CPU per request is read from /proc/PID/stat (utime + stime) around
each measurement: stable where wall time is not.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.kms_server import alias_name, make_keys  # noqa: E402
from signer_proxy.eth.ecdsa import address_from_public_key  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
SINK = "0x000000000000000000000000000000000000dEaD"
BLOCK_NUMBER = b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}'
ETH_CALL = (
    b'{"jsonrpc":"2.0","id":1,"method":"eth_call","params":[{"to":"0x000000000000000000000000'
    b'000000000000dEaD","data":"0x70a08231000000000000000000000000000000000000000000000000000'
    b'000000000dEaD"},"latest"]}'
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tool(name: str) -> str:
    local = ROOT / ".tools" / "node_modules" / ".bin" / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: run `make tools`")
    return found


def pinned(cmd: list[str], cpu: int | None) -> list[str]:
    if cpu is None or shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return cmd
    return ["taskset", "-c", str(cpu), *cmd]


def rpc(url: str, method: str, params: Any = None) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    request = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


def wait_for(url: str, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            urllib.request.urlopen(
                urllib.request.Request(url, BLOCK_NUMBER, {"Content-Type": "application/json"}),
                timeout=1,
            ).read()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up in {seconds} s")


@contextmanager
def process(cmd: list[str], url: str | None = None, env: dict[str, str] | None = None,
            ready: str | None = None) -> Iterator[subprocess.Popen[bytes]]:  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})}
    )
    try:
        if url is not None:
            wait_for(ready or url, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_mined(node: str, address: str, expected: int, seconds: float = 15.0) -> int:
    """The address's mined transaction count, once it reaches `expected` (anvil mines a
    transaction just after acknowledging it) or `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while True:
        mined = int(rpc(node, "eth_getTransactionCount", [address, "latest"]), 16)
        if mined >= expected or time.monotonic() > deadline:
            return mined
        time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_mb(pid: int, name: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Load:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    generator: str = "python"


def wrk_load(url: str, body: bytes, conns: int, seconds: float) -> Load:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(body.decode())}\n"
        )
    try:
        out = subprocess.run(
            pinned([shutil.which("wrk") or "wrk", "-t1", f"-c{conns}",
                    f"-d{max(1, round(seconds))}s", "--latency", "-s", script.name, url], 1),
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script.name)

    def latency(pct: str) -> float:
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if not match:
            return float("nan")
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]
        return float(match.group(1)) * scale

    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors_match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Load(requests, seconds, rps, latency("50"), latency("99"),
                int(errors_match.group(1)) if errors_match else 0, "wrk")  # fmt: skip


async def _py_load(url: str, body: bytes, conns: int, seconds: float | None,
                   total: int | None) -> Load:  # fmt: skip
    latencies: list[float] = []
    errors = 0
    sent = 0
    deadline = time.perf_counter() + (seconds or 1e9)
    connector = aiohttp.TCPConnector(limit=conns)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors, sent
            while time.perf_counter() < deadline and (total is None or sent < total):
                sent += 1
                start = time.perf_counter()
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as response:
                    answer = await response.read()
                latencies.append(time.perf_counter() - start)
                if response.status != 200 or b'"error"' in answer:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conns)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return Load(
        len(latencies), elapsed, len(latencies) / elapsed,
        statistics.median(latencies) * 1000,
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, errors,
    )  # fmt: skip


async def _direct_sends(node: str, count: int) -> list[float]:
    """Latencies of `count` eth_sendRawTransaction calls straight to the node, one at a time:
    the node round trip a signed send cannot avoid (signed here, by a throwaway key)."""
    from eth_account import Account

    account = Account.create()
    rpc(node, "anvil_setBalance", [account.address, hex(10**24)])
    chain_id = int(rpc(node, "eth_chainId"), 16)
    raws = [
        Account.sign_transaction(
            {"to": SINK, "value": 1, "gas": 21000, "maxFeePerGas": 2 * 10**9,
             "maxPriorityFeePerGas": 10**9, "nonce": nonce, "chainId": chain_id, "type": 2},
            account.key,
        ).raw_transaction.hex()
        for nonce in range(count)
    ]  # fmt: skip
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:
        for nonce, raw in enumerate(raws):
            body = {"jsonrpc": "2.0", "id": nonce, "method": "eth_sendRawTransaction",
                    "params": [raw if raw.startswith("0x") else "0x" + raw]}  # fmt: skip
            start = time.perf_counter()
            async with session.post(node, json=body) as response:
                answer = await response.json()
            latencies.append(time.perf_counter() - start)
            if "error" in answer:
                raise RuntimeError(f"direct send failed: {answer['error']}")
    return latencies


def direct_send_p50_ms(node: str, count: int) -> float:
    return statistics.median(asyncio.run(_direct_sends(node, count))) * 1000


async def _direct_signs(kms: str, count: int) -> list[float]:
    """Latencies of `count` KMS Sign calls straight to the stand-in, one at a time: the KMS
    round trip a signed send cannot avoid (its modelled latency plus the stand-in's work)."""
    body = json.dumps({"KeyId": alias_name(0), "Message": base64.b64encode(bytes(32)).decode(),
                       "MessageType": "DIGEST", "SigningAlgorithm": "ECDSA_SHA_256"})  # fmt: skip
    headers = {"X-Amz-Target": "TrentService.Sign", "Content-Type": "application/x-amz-json-1.1"}
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            start = time.perf_counter()
            async with session.post(kms, data=body, headers=headers) as response:
                await response.read()
            latencies.append(time.perf_counter() - start)
            if response.status != 200:
                raise RuntimeError(f"direct Sign failed: HTTP {response.status}")
    return latencies


def direct_sign_p50_ms(kms: str, count: int) -> float:
    return statistics.median(asyncio.run(_direct_signs(kms, count))) * 1000


def py_load(url: str, body: bytes, conns: int, seconds: float | None = None,
            total: int | None = None) -> Load:  # fmt: skip
    return asyncio.run(_py_load(url, body, conns, seconds, total))


@dataclass
class Report:
    machine: dict[str, Any] = field(default_factory=dict)
    passthrough: list[dict[str, Any]] = field(default_factory=list)
    signing: list[dict[str, Any]] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)


class Bench:
    def __init__(self, smoke: bool, use_wrk: bool, only: tuple[str, ...] = ()) -> None:
        self.only = only
        self.smoke = smoke
        self.use_wrk = use_wrk and shutil.which("wrk") is not None
        self.seconds = 1.0 if smoke else 5.0
        self.conns = [1, 4] if smoke else [1, 16, 64]
        self.busy = 4 if smoke else 16  # the rows at or above this concurrency are saturated
        self.txs = 20 if smoke else 600
        self.report = Report()
        self.env = {
            "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_EC2_METADATA_DISABLED": "true",
        }  # fmt: skip

    def load(self, url: str, body: bytes, conns: int) -> Load:
        if self.use_wrk:
            return wrk_load(url, body, conns, self.seconds)
        return py_load(url, body, conns, seconds=self.seconds)

    @contextmanager
    def anvil(self) -> Iterator[str]:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [tool("anvil"), "--host", "127.0.0.1", "--port", str(port), "--silent"]
        with process(pinned(cmd, 1), url):
            yield url

    @contextmanager
    def kms(self, keys: int, latency_ms: float) -> Iterator[str]:
        port = free_port()
        cmd = [sys.executable, "-m", "bench.kms_server", "--port", str(port), "--keys",
               str(keys), "--latency-ms", str(latency_ms)]  # fmt: skip
        proc = subprocess.Popen(pinned(cmd, 1), cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait()

    @contextmanager
    def proxy(self, upstream: str, kms_url: str, keys: int) -> Iterator[tuple[str, int]]:
        port = free_port()
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as config:
            json.dump(
                {
                    "listen": f"127.0.0.1:{port}",
                    "upstream": upstream,
                    "aws_region": "us-east-1",
                    "aws_endpoint_url": kms_url,
                    "log_level": "warning",
                    "kms_keys": [alias_name(i) for i in range(keys)],
                },
                config,
            )  # fmt: skip  (JSON is YAML)
        cmd = [sys.executable, "-m", "signer_proxy", "serve", "--config", config.name]
        url = f"http://127.0.0.1:{port}"
        try:
            with process(pinned(cmd, 0), url, env=self.env) as proc:
                yield url, proc.pid
        finally:
            os.unlink(config.name)

    @contextmanager
    def forwarder(self, upstream: str) -> Iterator[str]:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, str(ROOT / "bench" / "naive_forwarder.py"), "--port", str(port),
               "--upstream", upstream]  # fmt: skip
        with process(pinned(cmd, 0), url):
            yield url

    def passthrough(self) -> None:
        with (
            self.anvil() as anvil,
            self.kms(1, 0) as kms,
            self.proxy(anvil, kms, 1) as (proxy, pid),
            self.forwarder(anvil) as naive,
        ):
            for name, body in (("eth_blockNumber", BLOCK_NUMBER), ("eth_call", ETH_CALL)):
                for conns in self.conns:
                    row: dict[str, Any] = {"method": name, "concurrency": conns}
                    row["direct"] = asdict(self.load(anvil, body, conns))
                    row["naive_forwarder"] = asdict(self.load(naive, body, conns))
                    before = cpu_seconds(pid)
                    proxied = self.load(proxy, body, conns)
                    cpu = cpu_seconds(pid) - before
                    row["proxy"] = asdict(proxied)
                    row["proxy_cpu_us_per_call"] = cpu / max(proxied.requests, 1) * 1e6
                    row["proxy_vs_naive"] = proxied.rps / max(row["naive_forwarder"]["rps"], 1)
                    row["proxy_vs_direct"] = proxied.rps / max(row["direct"]["rps"], 1)
                    self.report.passthrough.append(row)
                    print(
                        f"  pass-through {name} c={conns}: proxy {proxied.rps:,.0f}/s "
                        f"naive {row['naive_forwarder']['rps']:,.0f}/s "
                        f"direct {row['direct']['rps']:,.0f}/s, "
                        f"{row['proxy_cpu_us_per_call']:.0f} us CPU/call",
                        flush=True,
                    )

    def signing(self) -> None:
        address = address_from_public_key(make_keys(1)[0].private.public_key.format(False))
        latencies = [0.0] if self.smoke else [0.0, 20.0]
        for latency_ms in latencies:
            for path in ("gas_given", "estimate"):
                for conns in self.conns:
                    tx: dict[str, Any] = {"from": address, "to": SINK, "value": "0x1"}
                    if path == "gas_given":
                        tx.update(gas="0x5208", maxFeePerGas="0x77359400",
                                  maxPriorityFeePerGas="0x3b9aca00")  # fmt: skip
                    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_sendTransaction",
                                       "params": [tx]}).encode()  # fmt: skip
                    with self.anvil() as anvil, self.kms(1, latency_ms) as kms:
                        rpc(anvil, "anvil_setBalance", [address, hex(10**24)])
                        with self.proxy(anvil, kms, 1) as (proxy, pid):
                            before = cpu_seconds(pid)
                            result = py_load(proxy, body, conns, total=self.txs)
                            cpu = cpu_seconds(pid) - before
                            mined = wait_mined(anvil, address, result.requests)
                        # At concurrency 1 the proxy's own share of the latency is what is
                        # left after the KMS round trip and the node's answer to the send.
                        node_ms = direct_send_p50_ms(anvil, 50) if conns == 1 else None
                        kms_ms = direct_sign_p50_ms(kms, 50) if conns == 1 else None
                    row = {
                        "kms_latency_ms": latency_ms, "path": path, "concurrency": conns,
                        **asdict(result), "mined": mined,
                        "proxy_cpu_us_per_tx": cpu / max(result.requests, 1) * 1e6,
                        "direct_send_p50_ms": node_ms, "direct_sign_p50_ms": kms_ms,
                        "added_p50_ms": None if node_ms is None or kms_ms is None else
                        result.p50_ms - kms_ms - node_ms,
                    }  # fmt: skip
                    self.report.signing.append(row)
                    print(
                        f"  signing kms={latency_ms:g}ms {path} c={conns}: "
                        f"{result.rps:,.0f} tx/s p50 {result.p50_ms:.1f} ms, "
                        f"{row['proxy_cpu_us_per_tx']:.0f} us CPU/tx, "
                        f"{mined}/{result.requests} mined",
                        flush=True,
                    )

    def memory(self) -> None:
        keys = 50 if self.smoke else 1000
        with self.anvil() as anvil, self.kms(keys, 0) as kms:
            started = time.monotonic()
            with self.proxy(anvil, kms, keys) as (proxy, pid):
                ready = time.monotonic() - started
                accounts = rpc(proxy, "eth_accounts")
                py_load(proxy, BLOCK_NUMBER, 4, total=200)
                self.report.memory = {
                    "keys": keys, "keys_loaded": len(accounts), "startup_s": ready,
                    "rss_mb": memory_mb(pid, "VmRSS"), "peak_rss_mb": memory_mb(pid, "VmHWM"),
                }  # fmt: skip
        print(
            f"  memory: {keys} keys, peak RSS {self.report.memory['peak_rss_mb']:.0f} MB, "
            f"ready in {ready:.1f} s",
            flush=True,
        )

    def judge(self) -> None:
        """Each target against the worst of the rows it is about (saturated rows: the highest
        concurrency levels; the smoke run has one level)."""
        targets = self.report.targets
        busy = self.busy
        rows = [r for r in self.report.passthrough if r["concurrency"] >= busy]
        if rows:
            ratio = min(r["proxy_vs_naive"] for r in rows)
            targets.append({"target": f"pass-through >= 2x naive forwarder (c>={busy})",
                            "measured": round(ratio, 2), "met": ratio >= 2})  # fmt: skip
            cpu = max(r["proxy_cpu_us_per_call"] for r in rows)
            targets.append({"target": f"pass-through <= 100 us CPU/call (c>={busy})",
                            "measured": round(cpu, 1), "met": cpu <= 100})  # fmt: skip
        given = [r for r in self.report.signing if r["path"] == "gas_given"]
        saturated = [r for r in given if r["kms_latency_ms"] == 0 and r["concurrency"] >= busy]
        if saturated:
            cpu = max(r["proxy_cpu_us_per_tx"] for r in saturated)
            targets.append({"target": f"signing (gas given) <= 500 us CPU/tx (0 ms KMS, c>={busy})",
                            "measured": round(cpu, 1), "met": cpu <= 500})  # fmt: skip
        slow = [r for r in given if r["kms_latency_ms"] > 0]
        if slow:
            latency = max(r["kms_latency_ms"] for r in slow)
            best = max(r["rps"] for r in slow if r["kms_latency_ms"] == latency)
            targets.append({"target": f"1,000 signatures/s on one core ({latency:g} ms KMS)",
                            "measured": round(best), "met": best >= 1000})  # fmt: skip
            added = [r["added_p50_ms"] for r in slow if r["added_p50_ms"] is not None
                     and r["kms_latency_ms"] == latency]  # fmt: skip
            if added:
                worst = max(added)
                targets.append({"target": f"added latency <= 2 ms p50 ({latency:g} ms KMS, c=1)",
                                "measured": round(worst, 2), "met": worst <= 2})  # fmt: skip
        if self.report.memory:
            rss = self.report.memory["peak_rss_mb"]
            targets.append({"target": f"<= 150 MB RSS with {self.report.memory['keys']} keys",
                            "measured": round(rss, 1), "met": rss <= 150})  # fmt: skip

    def run(self) -> Report:
        self.report.machine = {
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "load_generator": "wrk" if self.use_wrk else
            "python aiohttp", "smoke": self.smoke, "proxy_cpu": 0 if shutil.which("taskset")
            else None, "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        }  # fmt: skip
        for part in ("passthrough", "signing", "memory"):
            if not self.only or part in self.only:
                print(part, flush=True)
                getattr(self, part)()
        self.judge()
        return self.report


def markdown(report: Report) -> str:
    m = report.machine
    lines = [
        f"Measured {m['when']} on {m['cpus']} CPUs, Python {m['python']}, load from "
        f"{m['load_generator']}; proxy pinned to CPU 0, everything else on CPU 1.",
        "",
        "| pass-through | conc. | direct req/s | naive fwd req/s | proxy req/s | proxy/naive "
        "| proxy p50 / p99 ms | proxy CPU µs/call |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report.passthrough:
        lines.append(
            f"| {r['method']} | {r['concurrency']} | {r['direct']['rps']:,.0f} | "
            f"{r['naive_forwarder']['rps']:,.0f} | {r['proxy']['rps']:,.0f} | "
            f"{r['proxy_vs_naive']:.2f}x | "
            f"{r['proxy']['p50_ms']:.2f} / {r['proxy']['p99_ms']:.2f} | "
            f"{r['proxy_cpu_us_per_call']:.0f} |"
        )
    lines += ["", "| eth_sendTransaction | KMS latency | conc. | tx/s | p50 / p99 ms | proxy CPU "
              "µs/tx | added p50 ms | mined |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in report.signing:
        added = r.get("added_p50_ms")
        lines.append(
            f"| {r['path'].replace('_', ' ')} | {r['kms_latency_ms']:g} ms | {r['concurrency']} | "
            f"{r['rps']:,.0f} | {r['p50_ms']:.1f} / {r['p99_ms']:.1f} | "
            f"{r['proxy_cpu_us_per_tx']:.0f} | {'-' if added is None else f'{added:.2f}'} | "
            f"{r['mined']}/{r['requests']} |"
        )
    lines += ["", "Added latency (concurrency 1): the proxy's p50 minus the p50 of a KMS Sign sent "
              "straight to the stand-in and of the same eth_sendRawTransaction sent straight to "
              "the node (same client, one at a time)."]
    if report.memory:
        mem = report.memory
        lines += ["", f"Memory: {mem['keys_loaded']} keys loaded, peak RSS "
                  f"{mem['peak_rss_mb']:.0f} MB, ready in {mem['startup_s']:.1f} s."]  # fmt: skip
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    for t in report.targets:
        lines.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny run, for CI")
    parser.add_argument("--no-wrk", action="store_true", help="use the Python load generator")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="output folder")
    parser.add_argument(
        "--only", action="append", choices=["passthrough", "signing", "memory"], default=[],
        help="run only this part (repeatable); the report then has only those rows",
    )  # fmt: skip
    args = parser.parse_args()
    report = Bench(args.smoke, not args.no_wrk, tuple(args.only)).run()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "smoke" if args.smoke else "latest"
    (out / f"{name}.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
