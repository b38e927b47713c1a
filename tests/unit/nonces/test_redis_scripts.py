"""nonces/redis_scripts.py: the RESP reader and writer table by table, then the pipelined
connection against a real redis-server (login, database, losses, timeouts, cancellations)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_sync
import uvloop
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    NoScriptError,
    ResponseError,
    TimeoutError,
)

from signer_proxy.nonces import redis_scripts
from signer_proxy.nonces.redis_scripts import (
    Pipelined,
    PipelinedScript,
    _Incomplete,
    encode_command,
    parse_reply,
)
from signer_proxy.nonces.redis_store import connect
from tests.conftest import free_port, start_redis_server, stop


@contextlib.contextmanager
def pipelined(url: str, timeout: float) -> Iterator[Pipelined]:
    connection = Pipelined.from_url(url, timeout)
    assert connection is not None
    try:
        yield connection
    finally:
        connection.close()


@pytest.mark.parametrize(
    "args, wire",
    [
        (("PING",), b"*1\r\n$4\r\nPING\r\n"),
        (("GET", "k"), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
        (("SET", b"\x00\r\n", 12), b"*3\r\n$3\r\nSET\r\n$3\r\n\x00\r\n\r\n$2\r\n12\r\n"),
        (("X", -5, 2**70), b"*3\r\n$1\r\nX\r\n$2\r\n-5\r\n$22\r\n1180591620717411303424\r\n"),
        (("X", 0.5, "é"), b"*3\r\n$1\r\nX\r\n$3\r\n0.5\r\n$2\r\n\xc3\xa9\r\n"),
        ((), b"*0\r\n"),
    ],
)
def test_encode_command(args: tuple[Any, ...], wire: bytes) -> None:
    assert encode_command(args) == wire


@pytest.mark.parametrize("bad", [True, None, [1], {"a": 1}])
def test_encode_command_refuses_what_redis_py_refuses(bad: Any) -> None:
    with pytest.raises(TypeError):
        encode_command(("SET", "k", bad))


@pytest.mark.parametrize(
    "wire, value",
    [
        (b":42\r\n", 42),
        (b":-1\r\n", -1),
        (b"$3\r\nabc\r\n", b"abc"),
        (b"$0\r\n\r\n", b""),
        (b"$4\r\na\r\nb\r\n", b"a\r\nb"),  # a bulk string holds any bytes
        (b"$-1\r\n", None),
        (b"*-1\r\n", None),
        (b"+OK\r\n", b"OK"),
        (b"*0\r\n", []),
        (b"*3\r\n:1\r\n$1\r\nx\r\n*2\r\n:2\r\n$-1\r\n", [1, b"x", [2, None]]),
    ],
)
def test_parse_reply(wire: bytes, value: Any) -> None:
    assert parse_reply(wire) == (value, len(wire))
    assert parse_reply(wire + b":7\r\n") == (value, len(wire))  # the next reply is left
    for cut in range(len(wire)):  # any shorter buffer waits for more
        with pytest.raises(_Incomplete):
            parse_reply(wire[:cut])


@pytest.mark.parametrize(
    "wire, error",
    [
        (b"-ERR unknown command\r\n", ResponseError),
        (b"-NOSCRIPT No matching script\r\n", NoScriptError),
        (b"-WRONGPASS invalid username-password pair\r\n", AuthenticationError),
        (b"-NOAUTH Authentication required.\r\n", AuthenticationError),
    ],
)
def test_an_error_reply_is_an_exception_to_raise(wire: bytes, error: type[Exception]) -> None:
    reply, _ = parse_reply(wire)
    assert type(reply) is error and str(reply) == wire[1:-2].decode()


def test_a_reply_of_an_unknown_type_is_a_broken_connection() -> None:
    with pytest.raises(ConnectionError):
        parse_reply(b"%1\r\n")  # RESP3: never asked for


async def test_scripts_run_pipelined_in_order_and_load_themselves(redis_url: str) -> None:
    with pipelined(redis_url, 5.0) as connection:
        incr = PipelinedScript(connection, "return redis.call('INCRBY', KEYS[1], ARGV[1])")
        # The first calls find the script unknown (NOSCRIPT) and run it again by its source,
        # after the others: each ran once, in some order.
        answers = await asyncio.gather(*(incr(keys=["n"], args=[i]) for i in range(1, 51)))
        assert len(set(answers)) == 50 and max(answers) == 1275
        await connection.command("SET", "n", 0)
        # Known now: the answers come back in the order the calls were made.
        answers = await asyncio.gather(*(incr(keys=["n"], args=[i]) for i in range(1, 201)))
        assert answers == [i * (i + 1) // 2 for i in range(1, 201)]
        assert await connection.command("GET", "n") == b"20100"
        with pytest.raises(ResponseError):
            await connection.command("NOSUCHCOMMAND")
        assert await connection.command("PING") == b"PONG"  # an error leaves it usable


async def test_a_cancelled_caller_does_not_take_the_next_ones_answer(redis_url: str) -> None:
    with pipelined(redis_url, 5.0) as connection:
        waiting = asyncio.ensure_future(connection.command("BLPOP", "never", 1))
        await asyncio.sleep(0.05)
        waiting.cancel()
        assert await connection.command("ECHO", "mine") == b"mine"  # after BLPOP's nil
        with pytest.raises(asyncio.CancelledError):
            await waiting


async def test_no_answer_in_time_closes_the_connection_and_the_next_reconnects(
    redis_url: str,
) -> None:
    with pipelined(redis_url, 0.3) as connection:
        queued = asyncio.ensure_future(connection.command("BLPOP", "never", 5))
        behind = asyncio.ensure_future(connection.command("PING"))  # behind it on the wire
        with pytest.raises(TimeoutError):
            await queued
        with pytest.raises((TimeoutError, ConnectionError)):
            await behind
        assert await connection.command("PING") == b"PONG"


async def test_a_lost_connection_fails_its_commands_and_the_next_reconnects(
    redis_url: str,
) -> None:
    with pipelined(redis_url, 5.0) as connection:
        name = f"victim-{os.getpid()}"
        await connection.command("CLIENT", "SETNAME", name)
        waiting = asyncio.ensure_future(connection.command("BLPOP", "never", 5))
        await asyncio.sleep(0.05)
        other = redis_sync.Redis.from_url(redis_url)
        try:
            assert other.client_kill_filter(_type=None, skipme=True, laddr=None) >= 1
        finally:
            other.close()
        with pytest.raises(ConnectionError):
            await waiting
        assert await connection.command("PING") == b"PONG"


async def test_a_redis_that_is_not_there_is_a_connection_error() -> None:
    connection = Pipelined.from_url(f"redis://127.0.0.1:{free_port()}/0", 1.0)
    assert connection is not None
    with pytest.raises(ConnectionError) as raised:
        await connection.command("PING")
    assert "cannot connect" in str(raised.value)


@pytest.mark.parametrize(
    "extra, auth",
    [
        (("--requirepass", "s3cret"), ":s3cret@"),
        (
            ("--user", "app", "on", ">pw", "~*", "&*", "+@all", "--user", "default", "off"),
            "app:pw@",
        ),
    ],
)
async def test_login_and_database_from_the_url(extra: tuple[str, ...], auth: str) -> None:
    server = start_redis_server(*extra, auth=auth)
    url = server.url.rsplit("/", 1)[0] + "/3"
    try:
        connection = Pipelined.from_url(url, 5.0)
        assert connection is not None
        await connection.command("SET", "where", "db3")
        connection.close()
        check = redis_sync.Redis.from_url(url)
        assert check.get("where") == b"db3"
        check.close()
        check = redis_sync.Redis.from_url(url.rsplit("/", 1)[0] + "/0")
        assert check.get("where") is None
        check.close()
        wrong = Pipelined.from_url(url.replace("pw@", "nope@").replace("s3cret@", "nope@"), 5.0)
        assert wrong is not None
        with pytest.raises(AuthenticationError):
            await wrong.command("PING")
    finally:
        stop(server.process)


async def test_a_unix_socket_url() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/redis.sock"
        server = start_redis_server("--unixsocket", path, "--unixsocketperm", "700")
        try:
            connection = Pipelined.from_url(f"unix://{path}?db=2", 5.0)
            assert connection is not None
            await connection.command("SET", "k", "v")
            assert await connection.command("GET", "k") == b"v"
            connection.close()
        finally:
            stop(server.process)


def test_the_proxys_own_loop_uvloop(redis_url: str) -> None:
    """The proxy runs on uvloop (whose transports are not asyncio's classes)."""

    async def run() -> list[Any]:
        client = connect(redis_url)
        try:
            script = client.register_script("return {1, 'two', {3}}")
            return [await script() for _ in range(3)]
        finally:
            await client.aclose()

    assert uvloop.run(run()) == [[1, b"two", [3]]] * 3


async def test_connect_runs_scripts_pipelined_except_over_tls(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        script = client.register_script("return 7")
        assert isinstance(script, PipelinedScript) and await script() == 7
    finally:
        await client.aclose()
    tls = connect("rediss://127.0.0.1:1/0")
    assert isinstance(tls.register_script("return 7"), AsyncScript)  # redis-py's, TLS and all
    await tls.aclose()


@pytest.mark.parametrize("pipelined", [True, False])
async def test_many_commands_in_one_pipeline(redis_url: str, pipelined: bool) -> None:
    client = connect(redis_url)
    if not pipelined:
        client.pipelined = None  # as over TLS: redis-py's pipeline
    try:
        answers = await client.many(
            [("SET", "a", 1, "EX", 60), ("HSET", "h", 7, "x"), ("HDEL", "h", 7, 8), ("GET", "a")]
        )
        assert answers[1:] == [1, 1, b"1"] and answers[0] in (b"OK", True)
        with pytest.raises(ResponseError):  # the error is raised once every answer is in
            await client.many([("INCR", "b"), ("HSET", "a", 1, 2), ("INCR", "b")])
        assert await client.get("b") == b"2"
    finally:
        await client.aclose()


class _Wire:
    """The transport under _Resp: what it writes is not read here."""

    def write(self, data: bytes) -> None:
        pass

    def abort(self) -> None:
        pass


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


async def test_replies_cut_anywhere_read_the_same() -> None:
    """Replies split at every byte: an array (nested, with a null), a null array, an error,
    a number; each caller gets its own, whole."""
    wire = (
        b"*3\r\n" + _bulk(b"a") + b"*2\r\n:1\r\n$-1\r\n" + _bulk(b"bc")
        + b"*-1\r\n" + b"-ERR no\r\n" + b":7\r\n"
    )  # fmt: skip
    for cut in range(1, len(wire)):
        resp = redis_scripts._Resp()
        resp.connection_made(_Wire())  # type: ignore[arg-type]
        futures = resp.send(b"", 4)
        resp.data_received(wire[:cut])
        resp.data_received(wire[cut:])
        assert [f.result() for f in (futures[0], futures[1], futures[3])] == [
            [b"a", [1, None], b"bc"],
            None,
            7,
        ], cut
        assert isinstance(futures[2].exception(), ResponseError)


async def test_a_large_array_arriving_in_many_reads_is_read_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pending records of an address (thousands of items, hundreds of KB) come in many
    reads; each item is read once, not the whole reply again at every read."""
    values = [b"%05d" % i * 60 for i in range(2_000)]
    wire = b"*2000\r\n" + b"".join(_bulk(v) for v in values)
    calls = 0
    real = redis_scripts.parse_reply

    def counting(buffer: bytes | bytearray, at: int = 0) -> Any:
        nonlocal calls
        calls += 1
        return real(buffer, at)

    monkeypatch.setattr(redis_scripts, "parse_reply", counting)
    resp = redis_scripts._Resp()
    resp.connection_made(_Wire())  # type: ignore[arg-type]
    (future,) = resp.send(b"HVALS key\r\n")
    reads = range(0, len(wire), 4096)
    for at in reads:
        resp.data_received(wire[at : at + 4096])
    assert future.result() == values
    assert calls <= len(values) + len(reads)  # each item once, plus one cut off per read
