"""The contradiction set of benchmarks/data is what its README says (issue 10 leans on it)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

SET = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "contradictions.jsonl"
KINDS = {"negation", "quantifier", "antonym", "entity", "place", "number", "date", "unit"}


def test_the_contradiction_set_is_balanced_and_well_formed() -> None:
    rows = [json.loads(line) for line in SET.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 60
    assert len({r["id"] for r in rows}) == len(rows)
    assert len(Counter(r["domain"] for r in rows)) >= 5
    assert {r["kind"] for r in rows} == KINDS
    assert sum(not r["has_number"] for r in rows) * 2 >= len(rows)  # half without numbers
    for r in rows:
        text = r["context"] + r["paraphrase"] + r["contradiction"]
        assert r["has_number"] == any(ch.isdigit() for ch in text), r["id"]
        assert all(r[k].strip() for k in ("question", "context", "paraphrase", "contradiction"))
        assert r["paraphrase"] != r["contradiction"] != r["context"]
