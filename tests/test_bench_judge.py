"""``make bench-judge`` (benchmarks/judge_accuracy.py) against the scripted judge server: the
labelled slice is balanced and drawn from the tuned part only, and every item's calls,
outcomes and figures are counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import judge_accuracy
from benchmarks.sealed import is_sealed
from tests.judge_server import CHAT_PATH, JudgeServer

pytestmark = pytest.mark.timeout(300)


def write_dev(directory: Path) -> Path:
    """Small labelled files in the dev sets' format (the tests do not read the shared data)."""
    facts = [("How long are deleted buckets kept?", "Deleted buckets are kept for {} days.")]
    for file, label in (("halueval_qa", "label_faithful"), ("wice", "label_faithful"),
                        ("alce_utility", "label_relevant")):
        rows = []
        for i in range(40):
            question, fact = facts[0]
            rows.append({"id": f"{file}-{i}", "question": f"{question} ({i})",
                         "contexts": [fact.format(30)], "answer": fact.format(30 + i % 2),
                         "label_faithful": None, "label_relevant": None,
                         label: int(i % 2 == 0)})
        (directory / f"{file}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return directory


def test_the_slice_is_balanced_seeded_and_never_sealed(tmp_path: Path) -> None:
    data = write_dev(tmp_path)
    files = ["halueval_qa", "alce_utility"]
    one = judge_accuracy.labelled_slice(data, files, 3, seed=1)
    assert [r.request_id for _, r, _ in one] == \
        [r.request_id for _, r, _ in judge_accuracy.labelled_slice(data, files, 3, 1)]
    for file in files:
        labels = [lab for f, _, labs in one if f == file for lab in labs.values()]
        assert labels.count(1) == labels.count(0) == 3, file
    rows = {json.loads(line)["id"]: json.loads(line) for file in files for line in
            (data / f"{file}.jsonl").read_text().splitlines()}
    assert any(is_sealed(r) for r in rows.values())  # there were sealed rows to leave out
    assert not any(is_sealed(rows[r.request_id.split(":", 1)[1]]) for _, r, _ in one)


def test_bench_judge_counts_calls_outcomes_and_figures(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_BENCH_JUDGE_KEY", "sk-bench")
    with JudgeServer() as server:
        config = tmp_path / "judge.toml"
        config.write_text("\n".join([
            "[scoring]", 'judge = "compact"', "[judge]", f'base_url = "{server.url}"',
            'model = "stub-judge"', 'api_key_env = "GW_BENCH_JUDGE_KEY"', "timeout_s = 5",
            "cache_ttl_s = 0", "[broker]", 'url = "filesystem:///nonexistent"', ""]))
        out = tmp_path / "out.json"
        assert judge_accuracy.run(["--config", str(config), "--files", "halueval_qa,wice",
                                   "--data", str(write_dev(tmp_path)), "--per-class", "2",
                                   "--out", str(out)]) == 0
        chats = server.count(CHAT_PATH)
    result = json.loads(out.read_text())
    assert result["judge"]["items"] == 8 and chats == 8  # compact: one call per item
    assert result["judge"]["calls_per_item"] == 1.0
    assert set(result["rows"]) == {"halueval_qa/faithfulness", "halueval_qa/groundedness",
                                   "wice/faithfulness", "wice/groundedness"}
    for row in result["rows"].values():
        assert row["n"] == 4 and row["pos"] == 2
        for name in ("compact", "embedded"):
            cell = row["by"][name]
            assert sum(cell["outcomes"].values()) == 4
            assert cell["ok"] == cell["outcomes"].get("ok", 0)
            assert cell["accuracy"] is None or 0.0 <= cell["accuracy"] <= 1.0
