"""Offline scoring (``groundwatch score``), the ROC-AUC of the quality benchmark, and the
benchmark's output shape. Lexical scorer only: fast, no model."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from benchmarks.quality import roc_auc
from benchmarks.quality import run as run_quality
from evaluator.config import load_config
from evaluator.offline import Progress, score_file
from evaluator.scorers import build_scorer
from groundwatch.cli import main

CONTEXT = "The Eiffel Tower is in Paris and was completed in 1889."


def _dev_line(id_: str, question: str, answer: str, contexts: list[str] | None = None,
              **labels: Any) -> str:
    row = {"id": id_, "question": question,
           "contexts": [CONTEXT] if contexts is None else contexts, "answer": answer,
           "label_faithful": labels.get("faithful"), "label_relevant": labels.get("relevant"),
           "source": "test", "meta": {"note": "ignored"}}
    return json.dumps(row)


@pytest.fixture
def mixed_file(tmp_path: Path) -> Path:
    lines = [
        _dev_line("q1", "Where is the Eiffel Tower?", "The Eiffel Tower is in Paris."),
        _dev_line("c1", "", "The Eiffel Tower was completed in 1889."),  # claim check: no question
        "{not json",
        "",  # blank lines are not items
        json.dumps({"id": "bad-ctx", "question": "q?", "contexts": "nope", "answer": "a"}),
        json.dumps({"request_id": "own-1", "timestamp": "2026-01-01T00:00:00Z",
                    "question": "When was the Eiffel Tower completed?", "contexts": [CONTEXT],
                    "answer": "In 1889.", "route": "faq"}),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_score_cli_writes_one_line_per_item_and_exits_1_on_bad_lines(
        mixed_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.jsonl"
    rc = main(["score", str(mixed_file), "--scorer", "lexical", "--out", str(out),
               "--batch-size", "2", "--quiet"])
    assert rc == 1
    rows = _read(out)
    assert [(r["id"], r["line"]) for r in rows] == [
        ("q1", 1), ("c1", 2), (None, 3), ("bad-ctx", 5), ("own-1", 6)]

    q1 = rows[0]
    assert set(q1) == {"id", "line", "metrics", "detections"}
    assert set(q1["metrics"]) == {"faithfulness", "groundedness", "answer_relevance",
                                  "context_relevance"}
    assert q1["metrics"]["faithfulness"] == {"value": 1.0, "outcome": "ok", "reason": None}

    claim = rows[1]
    assert claim["question_absent"] is True
    assert claim["metrics"]["faithfulness"]["outcome"] == "ok"
    assert claim["metrics"]["answer_relevance"] == {
        "value": None, "outcome": "not_applicable", "reason": "no_question_terms"}

    assert rows[2]["error"]["reason"] == "bad_json"
    assert rows[3]["error"] == {"reason": "bad_contexts", "field": "contexts",
                                "detail": "not valid JSON: Expecting value"}
    assert rows[4]["metrics"]["answer_relevance"]["outcome"] == "ok"

    err = capsys.readouterr().err
    assert f"{mixed_file}:3: bad_json" in err
    assert f"{mixed_file}:5: bad_contexts (contexts)" in err
    assert "scored" not in err  # --quiet: no progress


def test_score_cli_exit_0_explain_and_progress(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "good.jsonl"
    src.write_text("\n".join(_dev_line(f"i{i}", "Where is the Eiffel Tower?",
                                       "It is in Paris.") for i in range(5)) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["score", str(src), "--scorer", "lexical", "--out", str(out), "--explain",
                 "--batch-size", "2"]) == 0
    rows = _read(out)
    assert len(rows) == 5 and all(r["explanation"]["scorer"] == "lexical" for r in rows)
    assert "scored 5/5 items, 0 failed" in capsys.readouterr().err


def test_score_cli_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", str(tmp_path / "missing.jsonl"), "--scorer", "lexical"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"groundwatch score: {tmp_path / 'missing.jsonl'}: no such file"

    src = tmp_path / "one.jsonl"
    src.write_text(_dev_line("x", "q?", "a") + "\n")
    assert main(["score", str(src), "--scorer", "no-such-scorer"]) == 2
    assert "unknown scorer 'no-such-scorer'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["score", str(src), "--batch-size", "0"])
    assert exc.value.code == 2


def test_score_file_batches_and_reports_progress(mixed_file: Path) -> None:
    scorer = build_scorer(load_config(), "lexical")
    seen: list[Progress] = []
    rows = list(score_file(mixed_file, scorer, batch_size=1, on_progress=seen.append))
    assert len(rows) == 5
    assert [p.done for p in seen][-1] == 5 and all(p.total == 5 for p in seen)
    assert seen[-1].failed == 2


def test_score_file_prepare_and_limit(mixed_file: Path) -> None:
    scorer = build_scorer(load_config(), "lexical")

    def only_questions(obj: dict[str, Any]) -> dict[str, Any] | None:
        return obj if obj.get("question") else None

    rows = list(score_file(mixed_file, scorer, prepare=only_questions, limit=2))
    assert [r["id"] for r in rows] == ["q1", None]  # the unparseable line is not skipped...
    rows = list(score_file(mixed_file, scorer, prepare=only_questions))
    assert [r["line"] for r in rows] == [1, 3, 5, 6]  # ...because it cannot be judged


def test_score_file_missing_file_raises_at_call(tmp_path: Path) -> None:
    scorer = build_scorer(load_config(), "lexical")
    with pytest.raises(FileNotFoundError):
        score_file(tmp_path / "nope.jsonl", scorer)


class _Broken:
    name = "broken"
    version = "0"

    def score_batch(self, records: Any) -> list[Any]:
        raise RuntimeError("model fell over")

    def close(self) -> None:
        return None


def test_score_file_whole_batch_failure_becomes_error_lines(mixed_file: Path) -> None:
    rows = list(score_file(mixed_file, _Broken(), batch_size=64))
    assert [r["error"]["reason"] for r in rows] == [
        "scorer_failed", "scorer_failed", "bad_json", "bad_contexts", "scorer_failed"]
    assert rows[0]["error"]["detail"] == "RuntimeError: model fell over"


# -- ROC-AUC --------------------------------------------------------------------------------
@pytest.mark.parametrize(("scores", "labels", "expected"), [
    ([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], 1.0),             # perfect
    ([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1], 0.0),             # perfectly wrong
    ([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1], 0.5),             # all tied
    # pairs (pos, neg): (0.4>0.1) 1, (0.4=0.4) 0.5, (0.4<0.8) 0, (0.9>all) 3 -> 4.5 / 6
    ([0.1, 0.4, 0.8, 0.4, 0.9], [0, 0, 0, 1, 1], 0.75),
    # pos {0.3, 0.3}, neg {0.3, 0.1}: each pos beats 0.1 (1) and ties 0.3 (0.5) -> 3 / 4
    ([0.3, 0.3, 0.3, 0.1], [1, 1, 0, 0], 0.75),
])
def test_roc_auc_hand_computed(scores: list[float], labels: list[int], expected: float) -> None:
    assert roc_auc(scores, labels) == pytest.approx(expected)


def test_roc_auc_edge_cases() -> None:
    assert roc_auc([0.1, 0.2], [1, 1]) is None
    assert roc_auc([], []) is None
    with pytest.raises(ValueError):
        roc_auc([0.1, float("nan")], [0, 1])
    with pytest.raises(ValueError):
        roc_auc([0.1], [0, 1])


# -- the benchmark's output -----------------------------------------------------------------
def test_bench_quality_writes_the_json_shape(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "dev"
    data.mkdir()
    faith = [
        _dev_line("f1", "", "The Eiffel Tower is in Paris.", faithful=1),
        _dev_line("f2", "", "It was completed in 1889 in Paris.", faithful=1),
        _dev_line("f3", "", "Bananas grow on the moon.", faithful=0),
        _dev_line("f4", "", "Penguins compose symphonies nightly.", faithful=0),
        _dev_line("f5", "", "No label here.", faithful=None),
        _dev_line("f6", "", "Nothing to check.", [], faithful=0),  # not_applicable: no contexts
    ]
    (data / "claims.jsonl").write_text("\n".join(faith) + "\n")
    passages = [
        _dev_line("p1", "Where is the Eiffel Tower?", "The Eiffel Tower stands in Paris.", [],
                  relevant=1),
        _dev_line("p2", "Where is the Eiffel Tower?", "Cows graze on grass.", [], relevant=0),
    ]
    (data / "context_relevance_msmarco.jsonl").write_text("\n".join(passages) + "\n")
    out = tmp_path / "quality.json"

    rc = run_quality(["--data", str(data), "--scorers", "lexical,not-a-scorer",
                      "--out", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["lexical"] == {
        "claims": {"faithfulness": 1.0, "groundedness": 1.0},
        "context_relevance_msmarco": {"context_relevance": 1.0},
    }
    counts = report["_counts"]["lexical"]["claims"]["faithfulness"]
    assert counts["n"] == 5 and counts["ok"] == 4 and counts["coverage"] == 0.8
    assert counts["not_ok"] == {"not_applicable/no_contexts": 1}
    parts = report["_parts"]["lexical"]["claims"]["faithfulness"]
    assert parts["tuned"]["n"] + parts["sealed"]["n"] == 5
    assert parts["tuned"]["ok"] + parts["sealed"]["ok"] == 4
    assert report["_meta"]["skipped"] == ["not-a-scorer"]
    captured = capsys.readouterr()
    assert "skipping scorer 'not-a-scorer'" in captured.err
    assert "context_relevance_msmarco" in captured.out
    assert "TUNED-ON | SEALED" in captured.out

    assert run_quality(["--data", str(data), "--scorers", "lexical", "--files", "claims",
                        "--limit", "1", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["_counts"]["lexical"]["claims"]["faithfulness"]["n"] == 1
    assert run_quality(["--data", str(tmp_path / "empty"), "--out", str(out)]) == 2


def test_score_ends_with_a_summary_per_metric(
        mixed_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.jsonl"
    lines = mixed_file.read_text(encoding="utf-8")
    mixed_file.write_text(lines + _dev_line("w1", "Where is the Eiffel Tower?",
                                            "The Eiffel Tower is in Rome, built in 1920.") + "\n")
    assert main(["score", str(mixed_file), "--scorer", "lexical", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    rows = [r for r in _read(out) if "metrics" in r]
    faithful = [r["metrics"]["faithfulness"]["value"] for r in rows
                if r["metrics"]["faithfulness"]["outcome"] == "ok"]
    assert len(faithful) == 4 and min(faithful) < 0.5 <= max(faithful)
    below = sum(v < 0.5 for v in faithful) / 4
    mean = sum(faithful) / 4
    assert re.search(rf"^faithfulness +4 +{mean:.3f} +{below:.1%} \(< 0\.5\) +0 +0$", err,
                     re.MULTILINE), err
    # c1 has no question: its question-based metrics are not applicable, not errors.
    assert re.search(r"^answer_relevance +\d+ .* 0 +[1-9]\d*$", err, re.MULTILINE), err
    assert "6 record(s), 2 could not be scored" in err  # the blank line is not one
