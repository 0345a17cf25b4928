"""How well the configured judge agrees with human labels: ``make bench-judge`` (issue 20).

Scores a fixed, labelled, balanced slice of the dev data with the judge of a groundwatch
config (``[judge]``, the mode from ``[scoring] judge`` or ``--mode``) and with the embedded
scorer, item by item through the same path the workers take (gates, redaction, transport,
budgets), and prints per file and metric: items, the judge's parse failures and other
errors, ROC-AUC and accuracy at 0.5 against the labels for the judge and for the embedded
scorer on the same items; then calls, tokens and seconds per item for the judge.

The slice: per file and label, ``--per-class`` items of each class (seeded), from the tuned
part of each dev file only (``benchmarks/sealed.py``: the sealed part stays unread). Kinds:
ExpertQA claims and WiCE pages (realistic claims), HaluEval and FaithDial (generated and
dialogue), ALCE (answer relevance) and MS MARCO (context relevance).

    make bench-judge JUDGE_ARGS="--config judge.toml"       # a config naming the judge
    python -m benchmarks.judge_accuracy --config judge.toml --per-class 5

Writes ``benchmarks/results/judge_accuracy.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.provenance import measured_on  # noqa: E402
from benchmarks.quality import (  # noqa: E402
    DEFAULT_DATA,
    PASSAGE_FILE,
    roc_auc,
    tasks_for,
)
from benchmarks.sealed import is_sealed  # noqa: E402
from evaluator.config import load_config  # noqa: E402
from evaluator.records import LogRecord  # noqa: E402
from evaluator.scorers.base import ItemResult, Outcome, Scorer, Usage  # noqa: E402
from evaluator.scorers.gates import apply_gates  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "judge_accuracy.json"
FILES = ("expertqa_claims", "wice", "halueval_qa", "faithdial_audit", "alce_utility",
         PASSAGE_FILE)
THRESHOLD = 0.5
BATCH = 8


def labelled_slice(data: Path, files: Sequence[str], per_class: int, seed: int,
                   ) -> list[tuple[str, LogRecord, dict[str, int]]]:
    """(file, record, {label name: 0/1}) for ``per_class`` items of each class of each label
    of each file, from the tuned part, in a seeded order."""
    now = datetime.now(UTC)
    out: list[tuple[str, LogRecord, dict[str, int]]] = []
    for file in files:
        rows = [json.loads(line) for line in (data / f"{file}.jsonl").read_text(
            encoding="utf-8").splitlines() if line.strip()]
        rows = [r for r in rows if isinstance(r, dict) and not is_sealed(r)]
        chosen: dict[str, dict[str, Any]] = {}
        rng = random.Random(f"{seed}:{file}")
        for label in sorted({t.label for t in tasks_for(file, rows)}):
            for cls in (1, 0):
                pool = [r for r in rows if r.get(label) is not None
                        and int(bool(r[label])) == cls]
                for r in rng.sample(pool, min(per_class, len(pool))):
                    chosen[str(r["id"])] = r
        for rid, r in chosen.items():
            contexts = [str(r.get("answer") or "")] if file == PASSAGE_FILE \
                else [str(c) for c in r.get("contexts") or ()]
            record = LogRecord(f"{file}:{rid}", now, str(r.get("question") or ""),
                               tuple(contexts), str(r.get("answer") or ""))
            labels = {k: int(bool(r[k])) for k in ("label_faithful", "label_relevant")
                      if r.get(k) is not None}
            out.append((file, record, labels))
    return out


def score_all(scorer: Scorer, records: Sequence[LogRecord]) -> tuple[list[ItemResult], Usage,
                                                                     float]:
    results: list[ItemResult] = []
    usage = Usage()
    started = time.monotonic()
    for i in range(0, len(records), BATCH):
        batch, used = scorer.score_gated(apply_gates(list(records[i:i + BATCH])))
        results += batch
        usage = usage + used
    return results, usage, time.monotonic() - started


def _figures(values: list[tuple[float, int]]) -> dict[str, Any]:
    if not values:
        return {"ok": 0, "auc": None, "accuracy": None}
    scores, labels = [v for v, _ in values], [y for _, y in values]
    auc = roc_auc(scores, labels)
    hits = sum((v >= THRESHOLD) == bool(y) for v, y in values)
    return {"ok": len(values), "auc": None if auc is None else round(auc, 3),
            "accuracy": round(hits / len(values), 3)}


def tally(slice_: Sequence[tuple[str, LogRecord, dict[str, int]]],
          results: dict[str, list[ItemResult]]) -> dict[str, dict[str, Any]]:
    """Per "file/metric": items, and per scorer its outcomes and figures."""
    rows: dict[str, dict[str, Any]] = {}
    for (file, _, labels), *per_scorer in zip(slice_, *results.values(), strict=True):
        tasks = tasks_for(file, [labels])
        for task in tasks:
            if task.label not in labels:
                continue
            row = rows.setdefault(f"{file}/{task.metric}", {"n": 0, "pos": 0, "by": {
                name: {"values": [], "outcomes": Counter()} for name in results}})
            row["n"] += 1
            row["pos"] += labels[task.label]
            for name, result in zip(results, per_scorer, strict=True):
                m = next((m for m in result.metrics if m.metric == task.metric), None)
                cell = row["by"][name]
                if m is None:
                    cell["outcomes"]["missing"] += 1
                elif m.outcome is Outcome.OK and m.value is not None:
                    cell["values"].append((float(m.value), labels[task.label]))
                    cell["outcomes"]["ok"] += 1
                else:
                    cell["outcomes"][f"{m.outcome.value}/{m.reason}"] += 1
    for row in rows.values():
        for cell in row["by"].values():
            cell.update(_figures(cell.pop("values")))
            cell["outcomes"] = dict(sorted(cell["outcomes"].items()))
    return rows


def format_table(rows: dict[str, dict[str, Any]], judge: str, usage: Usage, items: int,
                 seconds: float) -> str:
    def num(v: Any) -> str:
        return "-" if v is None else f"{v:.3f}"

    head = (f"{'file/metric':<44} {'n':>3} {'pos':>3}  {'parse fail':>10} {'other err':>9} "
            f"{'judge AUC':>9} {'judge acc':>9}  {'embedded AUC':>12} {'embedded acc':>12}")
    lines = [head, "-" * len(head)]
    for key, row in sorted(rows.items()):
        j, e = row["by"][judge], row["by"].get("embedded", {})
        parse = sum(n for k, n in j["outcomes"].items() if k.endswith("/unparseable"))
        other = sum(n for k, n in j["outcomes"].items()
                    if k.startswith("error/") and not k.endswith("/unparseable"))
        lines.append(f"{key:<44} {row['n']:>3} {row['pos']:>3}  {parse:>10} {other:>9} "
                     f"{num(j['auc']):>9} {num(j['accuracy']):>9}  {num(e.get('auc')):>12} "
                     f"{num(e.get('accuracy')):>12}")
    lines.append("")
    lines.append(f"judge {judge}: {items} items, {usage.judge_calls / items:.1f} calls, "
                 f"{usage.prompt_tokens / items:.0f} prompt + "
                 f"{usage.completion_tokens / items:.0f} completion tokens, "
                 f"{seconds / items:.1f} s per item; calls by status "
                 f"{dict(sorted(usage.judge_statuses.items()))}")
    return "\n".join(lines)


def run(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", "-c", required=True, help="a groundwatch config with [judge]")
    p.add_argument("--mode", choices=("compact", "ragas"), default=None,
                   help="the judge mode (default: the config's [scoring] judge)")
    p.add_argument("--data", type=Path,
                   default=Path(os.environ.get("GROUNDWATCH_DEV_DATA", str(DEFAULT_DATA))))
    p.add_argument("--files", default=",".join(FILES))
    p.add_argument("--per-class", type=int, default=5, help="items per class and label")
    p.add_argument("--seed", type=int, default=20)
    p.add_argument("--no-embedded", action="store_true", help="the judge only")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    from evaluator.judge.scorer import JudgeScorer
    from evaluator.scorers import build_scorer

    config = load_config(Path(args.config))
    mode = args.mode or config.scoring.judge or "compact"
    slice_ = labelled_slice(args.data, [f for f in args.files.split(",") if f],
                            args.per_class, args.seed)
    records = [r for _, r, _ in slice_]
    judge = JudgeScorer(config, mode)
    judge.warm_up()
    results: dict[str, list[ItemResult]] = {}
    try:
        results[mode], usage, seconds = score_all(judge, records)
    finally:
        judge.close()
    if not args.no_embedded:
        embedded = build_scorer(config, "embedded")
        try:
            results["embedded"] = score_all(embedded, records)[0]
        finally:
            embedded.close()
    rows = tally(slice_, results)
    print(format_table(rows, mode, usage, len(records), seconds))
    out = {"judge": {"mode": mode, "model": config.judge.model, "base_url": config.judge.base_url,
                     "items": len(records), "calls_per_item": round(usage.judge_calls
                                                                    / len(records), 2),
                     "prompt_tokens_per_item": round(usage.prompt_tokens / len(records), 1),
                     "completion_tokens_per_item": round(usage.completion_tokens
                                                         / len(records), 1),
                     "seconds_per_item": round(seconds / len(records), 2),
                     "calls_by_status": dict(usage.judge_statuses)},
           "slice": {"files": args.files.split(","), "per_class": args.per_class,
                     "seed": args.seed, "part": "tuned"},
           "rows": rows, "provenance": measured_on()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"# wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run())
