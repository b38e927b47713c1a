"""A node front for tests: relays JSON-RPC to a real anvil on any path, records what reached it,
can hold chosen methods for a while (a slow node, mid-send), and can speak HTTPS."""

from __future__ import annotations

import json
import ssl
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class NodeFront:
    """`url` accepts any path, query and credentials; calls go on to `upstream` unchanged."""

    def __init__(
        self,
        upstream: str,
        delays: dict[str, float] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.upstream = upstream
        self.delays = delays or {}
        self.seen: dict[str, threading.Event] = {m: threading.Event() for m in self.delays}
        self.paths: list[str] = []
        self.bodies: list[bytes] = []
        self.authorizations: list[str | None] = []
        self.traceparents: list[str | None] = []
        self._release = threading.Event()
        front = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                front.paths.append(self.path)
                front.bodies.append(body)
                front.authorizations.append(self.headers.get("Authorization"))
                front.traceparents.append(self.headers.get("traceparent"))
                front.hold(body)
                request = urllib.request.Request(
                    front.upstream, data=body, headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(request, timeout=30) as response:
                    answer = response.read()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if tls is not None:  # an https:// node (the handshake runs in the request thread)
            self._server.socket = tls.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port = self._server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def hold(self, body: bytes) -> None:
        try:
            method = json.loads(body).get("method")
        except (ValueError, AttributeError):
            return
        if method in self.delays:
            self.seen[method].set()
            self._release.wait(self.delays[method])

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
