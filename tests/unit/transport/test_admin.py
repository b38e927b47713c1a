"""transport.admin: the admin token file."""

from __future__ import annotations

from pathlib import Path

import pytest

from signer_proxy.errors import ConfigError
from signer_proxy.transport.admin import read_admin_token


def test_the_token_is_the_file_without_surrounding_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  0123456789abcdef0123\n")
    assert read_admin_token(str(path)) == b"0123456789abcdef0123"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        pytest.param(None, "cannot be read", id="missing"),
        pytest.param("\n", "at least 16 characters", id="empty"),
        pytest.param("short-token\n", "at least 16 characters", id="short"),
    ],
)
def test_an_unusable_token_file_refuses_startup(
    tmp_path: Path, content: str | None, fragment: str
) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match="--admin-token-file") as info:
        read_admin_token(str(path))
    assert fragment in str(info.value)
    assert "short-token" not in str(info.value)
