"""Lua scripts over one pipelined connection: the Redis round trips on the send path.

With --nonce-store each send runs three scripts (reserve, record, settle) and tracking one
more per group of sends. redis-py's asyncio client costs ~64 µs of the proxy's CPU per
EVALSHA (its connection pool, command packing and RESP parser, in Python); the same EVALSHA
over `_Resp`, an asyncio Protocol that writes each command as it comes and matches the replies
in order, costs ~13 µs (measured on this machine, docs/design.md "Fast"). So `connect()` gives
redis-py's client (everything else: pipelines, reads, the readiness ping) whose
`register_script` runs scripts this way. A rediss:// URL (TLS) keeps redis-py's scripts:
TLS options are redis-py's to interpret.

Errors are redis-py's classes (callers already catch RedisError): a reply error is a
ResponseError (NoScriptError for NOSCRIPT, AuthenticationError for a refused AUTH), a lost
connection fails every command waiting on it with ConnectionError, and a command not answered
within `timeout` closes the connection (as redis-py's socket timeout does) with redis-py's
TimeoutError.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    NoScriptError,
    ResponseError,
)
from redis.exceptions import TimeoutError as RedisTimeout


class _Incomplete(Exception):
    """The buffer ends inside a reply: wait for more bytes."""


def encode_command(args: Sequence[Any]) -> bytes:
    """A command as a RESP array of bulk strings (values encoded as redis-py encodes them)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            value = arg
        elif isinstance(arg, str):
            value = arg.encode()
        elif isinstance(arg, bool):
            raise TypeError("a bool is not a Redis value: give 0/1 or a string")
        elif isinstance(arg, int):
            value = b"%d" % arg
        elif isinstance(arg, float):
            value = repr(arg).encode()
        else:
            raise TypeError(f"cannot send a {type(arg).__name__} to Redis")
        parts.append(b"$%d\r\n%s\r\n" % (len(value), value))
    return b"".join(parts)


def _error(message: str) -> ResponseError | AuthenticationError:
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    if message.startswith(("WRONGPASS", "NOAUTH", "NOPERM")):
        return AuthenticationError(message)
    return ResponseError(message)


def parse_reply(buffer: bytes | bytearray, at: int = 0) -> tuple[Any, int]:
    """One RESP2 reply starting at `at`: (value, where the next begins); _Incomplete when the
    buffer ends first. Values as redis-py returns them undecoded: int, bytes, None, list, and
    a RedisError instance for an error reply (raised by whoever waits for it)."""
    end = buffer.find(b"\r\n", at)
    if end < 0:
        raise _Incomplete
    kind, line = buffer[at : at + 1], buffer[at + 1 : end]
    at = end + 2
    if kind == b":":
        return int(line), at
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, at
        if len(buffer) < at + size + 2:
            raise _Incomplete
        return bytes(buffer[at : at + size]), at + size + 2
    if kind == b"+":
        return bytes(line), at
    if kind == b"-":
        return _error(bytes(line).decode(errors="replace")), at
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, at
        items = []
        for _ in range(count):
            item, at = parse_reply(buffer, at)
            items.append(item)
        return items, at
    raise ConnectionError(f"Redis sent a reply this client cannot read (type {kind!r})")


class _Resp(asyncio.Protocol):
    """One connection: commands pipelined (those sent in one turn of the event loop written
    together), replies matched in order."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._out: list[bytes] = []  # sent this turn of the loop, written at its end
        # A top-level array reply read so far (its items, how many are left): a large one (the
        # pending records of an address) arrives in many reads and is read once, item by item.
        self._items: list[Any] | None = None
        self._left = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, command: bytes, count: int = 1) -> list[asyncio.Future[Any]]:
        """Write `command` (`count` commands encoded back to back: one write, one system
        call); a future per reply."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(count)]
        if self.closed or self._transport is None:
            for future in futures:
                future.set_exception(ConnectionError("the connection to Redis is closed"))
            return futures
        self._waiting.extend(futures)
        if not self._out:
            loop.call_soon(self._flush)
        self._out.append(command)
        return futures

    def _flush(self) -> None:
        """Write what this turn of the loop sent, at once: concurrent sends' commands share
        one system call (each write to a socket costs ~20-50 µs of kernel time here, more
        than the rest of a command)."""
        out, self._out = self._out, []
        if self._transport is not None and not self.closed and out:
            self._transport.write(b"".join(out))

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        at = 0
        try:
            while at < len(buffer):
                if self._items is None and buffer[at] == 0x2A:  # "*": an array, item by item
                    end = buffer.find(b"\r\n", at)
                    if end < 0:
                        raise _Incomplete
                    count = int(buffer[at + 1 : end])
                    at = end + 2
                    if count < 0:
                        self._deliver(None)
                        continue
                    self._items, self._left = [], count
                if self._items is not None:
                    while self._left:  # an item cut off by the read is read whole next time
                        item, at = parse_reply(buffer, at)
                        self._items.append(item)
                        self._left -= 1
                    reply, self._items = self._items, None
                else:
                    reply, at = parse_reply(buffer, at)
                self._deliver(reply)
        except _Incomplete:
            pass
        except (ConnectionError, ValueError) as exc:
            self.close(ConnectionError(f"unreadable reply from Redis: {exc}"))
            return
        del buffer[:at]

    def _deliver(self, reply: Any) -> None:
        if not self._waiting:
            raise ConnectionError("Redis sent a reply nobody asked for")
        future = self._waiting.popleft()
        if future.done():  # its caller gave up (cancelled): the reply is dropped
            return
        if isinstance(reply, (ResponseError, AuthenticationError)):
            future.set_exception(reply)
        else:
            future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError("the connection to Redis was lost"))

    def close(self, reason: Exception) -> None:
        self._fail(reason)
        if self._transport is not None:
            self._transport.abort()

    def _fail(self, reason: Exception) -> None:
        self.closed = True
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(reason)


class Pipelined:
    """Commands to one Redis over one connection, made on first use and again after a loss."""

    def __init__(
        self,
        *,
        host: str = "localhost",
        port: int = 6379,
        path: str | None = None,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        timeout: float = 5.0,
    ) -> None:
        self._where = (host, port, path)
        self._auth = (username, password)
        self._db = db
        self._timeout = timeout
        self._resp: _Resp | None = None
        self._connecting: asyncio.Lock | None = None

    @classmethod
    def from_url(cls, url: str, timeout: float) -> Pipelined | None:
        """For a redis:// or unix:// URL; None for rediss:// (TLS stays with redis-py)."""
        options = parse_url(url)
        if options.get("connection_class") is SSLConnection:
            return None
        return cls(
            host=options.get("host", "localhost"),
            port=int(options.get("port", 6379)),
            path=options.get("path"),
            username=options.get("username"),
            password=options.get("password"),
            db=int(options.get("db", 0)),
            timeout=timeout,
        )

    async def command(self, *args: Any) -> Any:
        resp = self._resp
        if resp is None or resp.closed:
            resp = await self._connect()
        return await self._answer(resp, resp.send(encode_command(args))[0])

    async def many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Every command in one write (a pipeline, not a transaction); each one's answer, in
        order. The first error reply is raised once all have answered."""
        resp = self._resp
        if resp is None or resp.closed:
            resp = await self._connect()
        futures = resp.send(b"".join(map(encode_command, commands)), len(commands))
        answers: list[Any] = await self._answer(
            resp, asyncio.gather(*futures, return_exceptions=True)
        )
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        return answers

    async def _answer(self, resp: _Resp, future: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await future
        except TimeoutError:
            resp.close(RedisTimeout("Redis did not answer in time"))
            raise RedisTimeout(f"Redis did not answer within {self._timeout:g} s") from None

    async def _connect(self) -> _Resp:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._resp is not None and not self._resp.closed:
                return self._resp  # another caller connected meanwhile
            loop = asyncio.get_running_loop()
            host, port, path = self._where
            try:
                async with asyncio.timeout(self._timeout):
                    if path is not None:
                        _, resp = await loop.create_unix_connection(_Resp, path)
                    else:
                        _, resp = await loop.create_connection(_Resp, host, port)
            except (OSError, TimeoutError) as exc:
                raise ConnectionError(f"cannot connect to Redis ({type(exc).__name__})") from None
            username, password = self._auth
            setup = []
            if password is not None:
                auth = ("AUTH", username, password) if username else ("AUTH", password)
                setup += resp.send(encode_command(auth))
            if self._db:
                setup += resp.send(encode_command(("SELECT", self._db)))
            try:
                for future in setup:
                    await self._answer(resp, future)
            except BaseException:
                resp.close(ConnectionError("connection setup failed"))
                raise
            self._resp = resp
            return resp

    def close(self) -> None:
        if self._resp is not None:
            self._resp.close(ConnectionError("the Redis client was closed"))
            self._resp = None


class PipelinedScript:
    """A Lua script run by EVALSHA (EVAL once when Redis does not know it yet)."""

    def __init__(self, connection: Pipelined, source: str) -> None:
        self._connection = connection
        self._source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        try:
            return await self._connection.command("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self._connection.command("EVAL", self._source, len(keys), *keys, *args)


class SharedRedis(Redis):
    """redis-py's client, except that its scripts run over a `Pipelined` connection when the
    URL allows (`connect()` sets `pipelined`)."""

    pipelined: Pipelined | None = None

    def register_script(self, script: Any) -> Any:
        if self.pipelined is None:
            return AsyncScript(self, script)
        source = script.decode() if isinstance(script, bytes) else str(script)
        return PipelinedScript(self.pipelined, source)

    async def many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Commands in one pipeline (not a transaction); each one's answer, in order."""
        if self.pipelined is not None:
            return await self.pipelined.many(commands)
        pipe = self.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute())

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if self.pipelined is not None:
            self.pipelined.close()
        await super().aclose(close_connection_pool)
