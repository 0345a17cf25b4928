"""The hand-written training items of the entailment cross-encoder (scripts/data/written_pairs):
well-formed, labelled as the README says, the held-back part kept out of training, and no
context shared with a contradiction set the scorer is measured on."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
WRITTEN = ROOT / "scripts" / "data" / "written_pairs"
FIELDS = ("id", "domain", "question", "context", "paraphrase", "paraphrase_style",
          "contradiction", "contradiction_kind", "unsupported", "unsupported_kind")
STYLES = {"reworded", "negated_form", "contraction", "double_negative", "reformatted",
          "combined", "yes_no", "partial", "abstractive"}
KINDS = {"negation", "antonym", "number", "date_time", "unit", "role_swap", "quantifier",
         "entity_swap", "wrong_sentence_value", "partly_contradicted", "condition"}


def _train_entailment() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "train_entailment", ROOT / "scripts" / "train_entailment.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while defined
    spec.loader.exec_module(module)
    return module


def _rows(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def test_every_item_is_complete_and_of_a_named_kind() -> None:
    files = sorted(WRITTEN.glob("part*.jsonl"))
    assert len(files) == 12
    ids: set[str] = set()
    for path in files:
        rows = _rows(path)
        assert len(rows) == 150, path.name
        for row in rows:
            where = f"{path.name} {row.get('id')}"
            assert all(isinstance(row.get(f), str) and row[f].strip() for f in FIELDS), where
            assert row["paraphrase_style"] in STYLES, where
            assert row["contradiction_kind"] in KINDS, where
            assert row["unsupported_kind"] in {"added_detail", "off_context"}, where
            assert row["paraphrase"] != row["context"], where
            ids.add(row["id"])
    assert len(ids) == 1800


def test_written_pairs_label_each_answer_and_hold_back_a_whole_file(tmp_path: Path) -> None:
    te = _train_entailment()
    row = {f: f"{f} text" for f in FIELDS}
    for name, prefix in (("part1", "a"), ("part4", "b")):
        (tmp_path / f"{name}.jsonl").write_text(
            json.dumps({**row, "id": f"{prefix}-1"}) + "\n", encoding="utf-8")
    train, held, files = te.written_pairs(tmp_path, ["part4"])
    assert sorted(files) == ["part1", "part4"]
    assert [(p.hypothesis, p.label3, p.entailed, p.group) for p in train] == [
        ("paraphrase text", "entailment", 1, "a-1"),
        ("contradiction text", "contradiction", 0, "a-1"),
        ("unsupported text", "neutral", 0, "a-1")]
    assert {p.group for p in held} == {"b-1"} and len(held) == 3
    assert all(p.premise == "context text" for p in train + held)
    assert train[1].kind == "contradiction:contradiction_kind text"


def test_no_written_context_is_one_the_scorer_is_measured_on() -> None:
    """The contradiction sets are test data: a training item must not share a passage with
    them (compared by hash; the sealed set's rows are not printed)."""
    def digest(text: str) -> str:
        return hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest()

    measured = {digest(r["context"]) for path in (
        ROOT / "benchmarks" / "data" / "contradictions.jsonl",
        ROOT / "benchmarks" / "data" / "sealed" / "contradictions_v2.jsonl",
        ROOT / "benchmarks" / "data" / "sealed" / "contradictions_v3.jsonl",
        ROOT / "benchmarks" / "data" / "sealed" / "contradictions_v4.jsonl")
        for r in _rows(path)}
    written = {digest(r[f]) for path in WRITTEN.glob("part*.jsonl") for r in _rows(path)
               for f in ("context", "paraphrase", "contradiction")}
    assert len(measured) == 425
    assert not measured & written
