"""The sealed part of the dev data (issue 17): drawn once, by group, never fitted on."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path
from typing import Any

from benchmarks import sealed
from benchmarks.quality import MetricTally, part_figures

ROOT = Path(__file__).resolve().parent.parent


def _row(i: int, question: str, context: str = "A page.") -> dict[str, Any]:
    return {"id": f"r{i}", "question": question, "contexts": [context], "answer": "x",
            "label_faithful": i % 2, "label_relevant": None}


def test_the_draw_is_pinned() -> None:
    """Changing the salt or the share unseals what was sealed: this pins both, and a few
    rows' sides as drawn on 2026-12-07."""
    assert sealed.SALT == "groundwatch-sealed-2026-12-07"
    assert sealed.SEALED_SHARE == 0.3
    assert sealed.is_sealed({"question": "What is the impact of domestic violence on children?"})
    assert not sealed.is_sealed({"question": "How long must my password be?"})
    assert [sealed.is_sealed({"question": q}) for q in "abc"] == [True, False, True]


def test_a_group_falls_on_one_side_whatever_the_file_or_order() -> None:
    rows = [_row(i, f"question {i % 700}", f"page {i}") for i in range(2100)]
    parts = {}
    for r in rows:
        side = sealed.part_of(r)
        assert parts.setdefault(r["question"], side) == side  # same question, same side
    share = sum(p == "sealed" for p in parts.values()) / len(parts)
    assert 0.25 < share < 0.35
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    assert {r["id"]: sealed.is_sealed(r) for r in shuffled} == \
        {r["id"]: sealed.is_sealed(r) for r in rows}
    # Claim checking without a question groups by the cited page; then the id.
    page = "Some long page " * 40
    assert sealed.group_of({"question": "", "contexts": [page], "id": "w1"}) == page[:300]
    assert sealed.group_of({"question": "", "contexts": [], "id": "w1"}) == "w1"


def test_calibrate_never_reads_a_sealed_row(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("calibrate_sealed", ROOT / "scripts" /
                                                  "calibrate.py")
    assert spec is not None and spec.loader is not None
    calibrate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(calibrate)
    rows = [_row(i, f"question {i}") for i in range(300)]
    (tmp_path / "claims.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept = calibrate.tuning_rows("claims", tmp_path)
    assert kept and not any(sealed.is_sealed(r) for r in kept)
    assert len(kept) == sum(not sealed.is_sealed(r) for r in rows)


def test_figures_come_per_part() -> None:
    tally = MetricTally()
    # tuned: perfectly ranked; sealed: inverted.
    for score, label, part in [(0.9, 1, "tuned"), (0.8, 1, "tuned"), (0.1, 0, "tuned"),
                               (0.2, 1, "sealed"), (0.7, 0, "sealed"), (0.6, 0, "sealed")]:
        tally.n += 1
        tally.n_parts[part] += 1
        tally.scores.append(score)
        tally.labels.append(label)
        tally.parts.append(part)
    tally.n_parts["sealed"] += 1  # labelled but not scored
    tally.clashes["sealed", "negation", 1] += 2
    tally.clashes["sealed", "negation", 0] += 1
    figures = part_figures(tally, 0.5)
    assert figures["tuned"]["auc"] == 1.0 and figures["sealed"]["auc"] == 0.0
    assert figures["tuned"]["n"] == 3 and figures["sealed"]["n"] == 4
    assert figures["sealed"]["ok"] == 3
    assert figures["tuned"]["pos_at_or_above"] == 1.0 and figures["tuned"]["neg_below"] == 1.0
    assert figures["sealed"]["pos_at_or_above"] == 0.0 and figures["sealed"]["neg_below"] == 0.0
    assert figures["sealed"]["mean"] == 0.5 and figures["sealed"]["pos_rate"] == 0.3333
    assert figures["sealed"]["clashes"] == {"negation": {"faithful": 2, "unfaithful": 1}}
    assert "clashes" not in figures["tuned"]
