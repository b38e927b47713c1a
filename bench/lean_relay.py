"""A reference, not a product: the least a Python process does to relay JSON-RPC over HTTP/1.1.

It reads each request's head and Content-Length by hand, decodes the JSON body and looks at
its method, writes the body to a keep-alive connection to the node, reads the answer's
framing and writes it back with a small head of its own. All of it in protocol callbacks on
uvloop: no task, no future, no timer per request. It has no door, no limits, no timeouts, no
errors worth the name: it exists so the benchmark can say, in the same run, what a hop costs
in CPython before any of the proxy's own work, beside nginx (the same hop in C).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import uvloop

LOCAL = frozenset({"eth_accounts", "eth_sendTransaction", "eth_sign"})  # what a signer keeps


def framed(buffer: bytearray) -> bytes | None:
    """The body of the first whole message in `buffer` (removed from it), or None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).lower()
    start = head.find(b"\r\ncontent-length:")
    if start < 0:
        raise ValueError("only Content-Length framing")
    stop = head.find(b"\r\n", start + 2)
    total = end + 4 + int(head[start + 17 : stop if stop > 0 else None])
    if len(buffer) < total:
        return None
    body = bytes(buffer[end + 4 : total])
    del buffer[:total]
    return body


class NodeConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: Any = None
        self.answered: Callable[[bytes], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        body = framed(self.buffer)
        if body is not None and self.answered is not None:
            answered, self.answered = self.answered, None
            answered(body)


class Relay(asyncio.Protocol):
    def __init__(self, node: tuple[str, int], idle: list[NodeConnection]) -> None:
        self.node = node
        self.idle = idle
        self.head = b"POST / HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n" % (
            node[0].encode(),
            node[1],
        )
        self.buffer = bytearray()
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        body = framed(self.buffer)
        if body is None:
            return
        call = orjson.loads(body)
        if call.get("method") in LOCAL:
            self.transport.close()  # a signer would answer these itself
            return
        request = b"%sContent-Length: %d\r\n\r\n%s" % (self.head, len(body), body)
        if self.idle:
            self.send(self.idle.pop(), request)
        else:
            asyncio.get_running_loop().create_task(self.connect_and_send(request))

    async def connect_and_send(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        _, node = await loop.create_connection(NodeConnection, *self.node)
        self.send(node, request)

    def send(self, node: NodeConnection, request: bytes) -> None:
        def answered(body: bytes) -> None:
            self.idle.append(node)
            self.transport.writelines(
                (
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body),
                    body,
                )
            )

        node.answered = answered
        node.transport.write(request)


async def serve(port: int, upstream: str) -> None:
    host, node_port = upstream.rsplit("//", 1)[1].rsplit(":", 1)
    idle: list[NodeConnection] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Relay((host, int(node_port)), idle), "127.0.0.1", port
    )
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="http://HOST:PORT of the node")
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.upstream))


if __name__ == "__main__":
    main()
