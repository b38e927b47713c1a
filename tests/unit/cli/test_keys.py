"""cli_keys: the pure parts of the key commands (tables, --valid-to)."""

from __future__ import annotations

import datetime

import pytest

from signer_proxy.cli.keys import _valid_to, table
from signer_proxy.errors import ConfigError


def test_table_aligns_columns_under_their_headers() -> None:
    text = table(["ADDRESS", "STATE"], [["0xabc", "Enabled"], ["0x1234567", "failed (state)"]])
    assert text.splitlines() == [
        "ADDRESS    STATE",
        "0xabc      Enabled",
        "0x1234567  failed (state)",
    ]


def test_valid_to_reads_iso_8601_in_utc_when_no_zone_is_given() -> None:
    ahead = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=10)
    naive = ahead.replace(tzinfo=None).isoformat()
    assert _valid_to(naive) == ahead
    assert _valid_to(None) is None and _valid_to("") is None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("tomorrow", "not an ISO 8601 time", id="words"),
        pytest.param("2001-01-01T00:00:00+00:00", "in the future", id="past"),
        pytest.param(
            (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=400)).isoformat(),
            "at most 365 days",
            id="too-far",
        ),
    ],
)
def test_valid_to_refuses(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match="--valid-to") as info:
        _valid_to(text)
    assert fragment in str(info.value)
