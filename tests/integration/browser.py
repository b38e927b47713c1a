"""Headless Chromium (Debian's package) driven over the DevTools protocol, for page tests:
open a URL with chosen headers, wait for a condition, read the DOM, collect console errors
(CSP violations included), take a screenshot. No driver library: one WebSocket."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium_binary() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class Page:
    """One tab, attached with a flat session."""

    ws: aiohttp.ClientWebSocketResponse
    session: str
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    waiting: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    console_errors: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    loaded: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        call_id = next(self.ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[call_id] = future
        message = {"id": call_id, "method": method, "params": params or {}}
        if self.session:
            message["sessionId"] = self.session
        await self.ws.send_str(json.dumps(message))
        return await asyncio.wait_for(future, 30)

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            texts = [str(a.get("value", a.get("description", ""))) for a in params["args"]]
            self.console_errors.append(" ".join(texts))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.console_errors.append(
                details.get("exception", {}).get("description") or details.get("text", "")
            )
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.console_errors.append(params["entry"].get("text", ""))
        elif method == "Network.responseReceived":
            response = params["response"]
            self.statuses[response["url"]] = response["status"]
        elif method == "Page.loadEventFired":
            self.loaded.set()

    async def open(self, url: str, headers: dict[str, str] | None = None) -> None:
        for domain in ("Runtime", "Log", "Page", "Network"):
            await self.send(f"{domain}.enable")
        if headers:
            await self.send("Network.setExtraHTTPHeaders", {"headers": headers})
        self.loaded.clear()
        await self.send("Page.navigate", {"url": url})
        await asyncio.wait_for(self.loaded.wait(), 30)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, seconds: float = 20) -> Any:
        """Poll `expression` until it is truthy; its value."""
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"not true within {seconds} s: {expression}")
            await asyncio.sleep(0.1)

    async def screenshot(self, path: str) -> None:
        result = await self.send("Page.captureScreenshot", {"format": "png"})
        await asyncio.to_thread(Path(path).write_bytes, base64.b64decode(result["data"]))


@contextlib.asynccontextmanager
async def chromium_page(width: int = 1280, height: int = 1000) -> AsyncIterator[Page]:
    """A fresh headless Chromium with one page; stopped after."""
    binary = chromium_binary()
    if binary is None:
        raise RuntimeError("chromium is not installed (make tools installs it)")
    profile = tempfile.mkdtemp(prefix="chromium-")
    process = subprocess.Popen(  # noqa: ASYNC220 (it starts once and runs on its own)
        [
            binary, "--headless=new", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking", "--disable-sync",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
            f"--window-size={width},{height}", f"--user-data-dir={profile}", "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HOME": profile},
    )  # fmt: skip
    try:
        # Chromium writes its port and browser path here once DevTools listens.
        active = Path(profile) / "DevToolsActivePort"
        for _ in range(300):
            if active.exists() and len(active.read_text().splitlines()) >= 2:
                break
            if process.poll() is not None:
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("chromium did not start its DevTools endpoint")
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with status {process.returncode}")
        port, path = active.read_text().splitlines()[:2]
        endpoint = f"ws://127.0.0.1:{port}{path}"
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(endpoint, max_msg_size=64 * 1024 * 1024) as ws,
        ):
            browser = Page(ws, "")
            sessions: dict[str, Page] = {}
            reader = asyncio.create_task(_read(ws, browser, sessions))
            try:
                target = await browser.send("Target.createTarget", {"url": "about:blank"})
                attached = await browser.send(
                    "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
                )
                page = Page(ws, attached["sessionId"], ids=browser.ids, waiting=browser.waiting)
                sessions[page.session] = page
                yield page
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(profile, ignore_errors=True)


async def _read(
    ws: aiohttp.ClientWebSocketResponse, browser: Page, sessions: dict[str, Page]
) -> None:
    """Route answers to their callers and each page's events to its Page."""
    async for message in ws:
        data = json.loads(message.data)
        if "id" in data:
            future = browser.waiting.pop(data["id"], None)
            if future is not None and not future.done():
                if "error" in data:
                    future.set_exception(AssertionError(f"DevTools: {data['error']}"))
                else:
                    future.set_result(data.get("result", {}))
        else:
            page = sessions.get(data.get("sessionId", ""))
            if page is not None:
                page.on_event(data["method"], data.get("params", {}))
