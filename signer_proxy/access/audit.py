"""The audit log: one JSON line per signing decision, written before the client gets its reply.

Lines are appended with one unbuffered write(2) on a file opened O_APPEND (so a crash right
after cannot lose a line the client was told about), rotated by size here (`--audit-log-max-
bytes`, `--audit-log-backups`), and reopened when something else moved the file away
(logrotate without copytruncate). What a line holds, and what it never holds: docs/security.md,
"Audit log".
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from signer_proxy.errors import AuditUnavailable

log = logging.getLogger(__name__)


def utc_timestamp(now: float) -> str:
    """A Unix time as ISO 8601 in UTC to the millisecond (truncated), e.g.
    "2025-06-01T12:00:00.250+00:00": a line's `time`."""
    second = int(now // 1)
    return f"{_second_text(second)}.{int((now - second) * 1000):03d}+00:00"


@functools.lru_cache(maxsize=4)
def _second_text(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


class AuditLog(Protocol):
    """Where signing decisions are recorded."""

    def check(self) -> None:
        """Raise AuditUnavailable when a line could not be written now (checked before KMS)."""
        ...

    def write(self, entry: Mapping[str, Any]) -> None:
        """Append one decision; AuditUnavailable when it could not be written."""
        ...


def encode(entry: Mapping[str, Any]) -> bytes:
    """One line: compact JSON, keys in the order given, newline-terminated."""
    return (json.dumps(entry, separators=(",", ":"), default=str) + "\n").encode()


class NullAuditLog:
    """No audit log configured: decisions go nowhere (the ordinary log still has them)."""

    def check(self) -> None:
        pass

    def write(self, entry: Mapping[str, Any]) -> None:
        pass


class StreamAuditLog:
    """Lines on a stream (stdout, for container log collectors), flushed one by one."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout

    def check(self) -> None:
        pass

    def write(self, entry: Mapping[str, Any]) -> None:
        try:
            self._stream.write(encode(entry).decode())
            self._stream.flush()
        except (OSError, ValueError) as exc:
            raise AuditUnavailable(
                f"the audit log (stdout) cannot be written ({exc}); nothing is signed until it can"
            ) from exc


class FileAuditLog:
    """Append-only JSON lines in `path`, rotated at `max_bytes` (0: never) keeping `backups`."""

    def __init__(self, path: str, max_bytes: int = 0, backups: int = 5) -> None:
        self.path = path
        self._max_bytes = max_bytes
        self._backups = backups
        self._fd: int | None = None
        self._size = 0
        self._ino = 0
        self._open()  # at startup: an unwritable path refuses the start (OSError → ConfigError)

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        stat = os.fstat(fd)
        self._fd, self._size, self._ino = fd, stat.st_size, stat.st_ino

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _moved_away(self) -> bool:
        try:
            return os.stat(self.path).st_ino != self._ino
        except FileNotFoundError:
            return True

    def _rotate(self) -> None:
        self.close()
        for index in range(self._backups - 1, 0, -1):
            older = f"{self.path}.{index}"
            if os.path.exists(older):
                os.replace(older, f"{self.path}.{index + 1}")
        if self._backups > 0:
            os.replace(self.path, f"{self.path}.1")
        else:
            os.truncate(self.path, 0)
        self._open()

    def check(self) -> None:
        if self._fd is None:
            try:
                self._open()
            except OSError as exc:
                raise self._unavailable(exc) from exc

    def _unavailable(self, exc: OSError) -> AuditUnavailable:
        return AuditUnavailable(
            f"the audit log {self.path} cannot be written ({exc.strerror or exc}); nothing is "
            "signed until it can: check the disk and the file's permissions"
        )

    def write(self, entry: Mapping[str, Any]) -> None:
        line = encode(entry)
        try:
            if self._fd is None or self._moved_away():
                self.close()
                self._open()
            if self._max_bytes and self._size and self._size + len(line) > self._max_bytes:
                self._rotate()
            assert self._fd is not None
            view = memoryview(line)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            self._size += len(line)
        except OSError as exc:
            self.close()  # the next check() tries to reopen
            raise self._unavailable(exc) from exc


def open_audit_log(path: str, max_bytes: int, backups: int) -> AuditLog:
    """The audit log a setting names: "" none, "-" stdout, else a file."""
    if not path:
        return NullAuditLog()
    if path == "-":
        return StreamAuditLog()
    return FileAuditLog(path, max_bytes, backups)
