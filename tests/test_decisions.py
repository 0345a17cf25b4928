"""The decision records (docs/decisions/): numbered files, each with its parts, all listed in
the index, and no link into the docs left dangling (README, docs/)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from metrics.alerts.config import REPO_ROOT

DECISIONS = REPO_ROOT / "docs" / "decisions"
RECORDS = sorted(DECISIONS.glob("[0-9][0-9][0-9][0-9]-*.md"))
PARTS = ("**Status.**", "**Context.**", "**Decision", "**Consequences.**")


def test_records_are_numbered_in_order() -> None:
    numbers = [int(p.name[:4]) for p in RECORDS]
    assert numbers == list(range(1, len(RECORDS) + 1))
    assert len(RECORDS) >= 14


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.stem)
def test_record_has_its_parts(path: Path) -> None:
    body = path.read_text(encoding="utf-8")
    assert body.startswith(f"# {path.name[:4]}. "), "title: '# NNNN. What was decided'"
    for part in PARTS:
        assert part in body, f"{path.name}: no {part}"


def test_the_index_lists_every_record() -> None:
    index = (DECISIONS / "README.md").read_text(encoding="utf-8")
    for path in RECORDS:
        assert f"]({path.name})" in index, f"docs/decisions/README.md does not link {path.name}"


_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (path.parent / target).exists(), f"{path.name}: broken link {target}"
