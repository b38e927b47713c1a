"""audit: one line per write, appended and on disk before write() returns; rotation by size
and after an outside move; an unwritable log refuses instead of losing lines silently."""

from __future__ import annotations

import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from signer_proxy.access.audit import (
    FileAuditLog,
    NullAuditLog,
    StreamAuditLog,
    encode,
    open_audit_log,
    utc_timestamp,
)
from signer_proxy.errors import AuditUnavailable


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(
    "now",
    [
        0,
        0.001,
        1_767_225_599.9995,  # the last millisecond of 2025, truncated, not rounded up
        1_767_225_600,
        1_767_225_600.0505,
        1_709_207_999.75,  # 2024-02-29 11:59:59.750
        4_102_444_800.123,
    ],
)
def test_utc_timestamp_is_datetime_isoformat_to_the_millisecond(now: float) -> None:
    expected = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
    assert utc_timestamp(now) == expected
    assert utc_timestamp(now) == expected  # the second's text now comes from the cache


def test_encode_is_one_compact_line_in_the_given_order() -> None:
    assert encode({"time": "t", "value": "10", "n": 1}) == b'{"time":"t","value":"10","n":1}\n'


def test_file_log_appends_lines_readable_at_once(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text('{"kept":true}\n')  # an earlier run's lines stay
    log = FileAuditLog(str(path))

    log.write({"n": 1})
    assert lines(path) == [{"kept": True}, {"n": 1}]  # no buffering: visible immediately
    log.write({"n": 2})
    log.close()
    assert lines(path)[-1] == {"n": 2}
    assert os.stat(path).st_mode & 0o777 in (0o600, 0o644)


def test_new_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    FileAuditLog(str(path)).close()
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_rotation_by_size_keeps_backups(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = FileAuditLog(str(path), max_bytes=40, backups=2)

    for n in range(10):
        log.write({"n": n, "pad": "x" * 10})  # 24 bytes a line: one line per file
    log.close()

    assert lines(path) == [{"n": 9, "pad": "x" * 10}]
    assert lines(Path(f"{path}.1")) == [{"n": 8, "pad": "x" * 10}]
    assert lines(Path(f"{path}.2")) == [{"n": 7, "pad": "x" * 10}]
    assert not Path(f"{path}.3").exists()


def test_a_file_moved_away_is_noticed_and_a_new_one_opened(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = FileAuditLog(str(path))
    log.write({"n": 1})
    os.rename(path, tmp_path / "audit.jsonl.old")  # logrotate without copytruncate

    log.write({"n": 2})
    log.close()

    assert lines(tmp_path / "audit.jsonl.old") == [{"n": 1}]
    assert lines(path) == [{"n": 2}]


def test_unwritable_log_refuses_and_check_retries(tmp_path: Path) -> None:
    directory = tmp_path / "logs"
    directory.mkdir()
    path = directory / "audit.jsonl"
    log = FileAuditLog(str(path))
    log.write({"n": 1})
    path.unlink()
    directory.rmdir()  # the volume went away: the file can no longer be created

    with pytest.raises(AuditUnavailable, match="nothing is signed until it can"):
        log.write({"n": 2})
    with pytest.raises(AuditUnavailable):
        log.check()
    directory.mkdir()
    log.check()  # back: reopened
    log.write({"n": 3})
    assert lines(path) == [{"n": 3}]


def test_unwritable_log_refuses_as_root_too(tmp_path: Path) -> None:
    """/dev/full fails every write with ENOSPC, whoever the user is."""
    log = FileAuditLog("/dev/full")
    with pytest.raises(AuditUnavailable, match="/dev/full cannot be written"):
        log.write({"n": 1})
    log.check()  # it opens again (and would fail again on the next write)


def test_stream_log_writes_and_flushes() -> None:
    stream = io.StringIO()
    StreamAuditLog(stream).write({"n": 1})
    assert stream.getvalue() == '{"n":1}\n'


def test_open_audit_log_by_setting(tmp_path: Path) -> None:
    assert isinstance(open_audit_log("", 0, 0), NullAuditLog)
    assert isinstance(open_audit_log("-", 0, 0), StreamAuditLog)
    assert isinstance(open_audit_log(str(tmp_path / "a.jsonl"), 0, 0), FileAuditLog)
    with pytest.raises(OSError):
        open_audit_log(str(tmp_path / "missing" / "a.jsonl"), 0, 0)
