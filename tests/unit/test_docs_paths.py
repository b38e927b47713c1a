"""Every `docs/...` path the code or the docs name exists, and every relative Markdown link in
README.md and docs/*.md points at a file that does (a renamed or never-written page fails)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS_PATH = re.compile(r"(?<![\w/.-])docs/[A-Za-z0-9_./-]*[A-Za-z0-9_]")
MD_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def _sources() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml"]
    files += [ROOT / "Dockerfile"] if (ROOT / "Dockerfile").exists() else []
    files += sorted((ROOT / "docs").glob("*.md"))
    for folder in ("signer_proxy", "tests", "deploy", "charts"):
        if (ROOT / folder).exists():
            files += sorted(
                p
                for p in (ROOT / folder).rglob("*")
                if p.is_file()
                and p.suffix in {".py", ".md", ".yaml", ".yml", ".txt", ".sh", ".tpl"}
            )
    return [p for p in files if p.exists()]


def test_the_scanner_finds_paths() -> None:
    # The checker sees what it must (a path in prose, in backticks, before punctuation).
    assert DOCS_PATH.findall("see docs/errors.md. and `docs/config.md`,") == [
        "docs/errors.md",
        "docs/config.md",
    ]
    assert MD_LINK.findall("[a](keys.md#reload) [b](https://x.y/z) [c](#local)") == [
        "keys.md",
        "https://x.y/z",
    ]


def test_every_docs_path_named_exists() -> None:
    missing = sorted(
        f"{path.relative_to(ROOT)}: {name}"
        for path in _sources()
        for name in set(DOCS_PATH.findall(path.read_text(errors="replace")))
        if not (ROOT / name).exists() and path != Path(__file__).resolve()
    )
    assert not missing, "named but absent (write the page or fix the name):\n" + "\n".join(missing)


def test_every_relative_markdown_link_resolves() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = sorted(
        f"{page.relative_to(ROOT)}: {target}"
        for page in pages
        for target in MD_LINK.findall(page.read_text())
        if "://" not in target
        and not target.startswith("mailto:")
        and not (page.parent / target).exists()
    )
    assert not broken, "links to nowhere:\n" + "\n".join(broken)
