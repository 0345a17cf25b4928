"""How well each scorer separates good from bad items, on the labelled dev data.

``python -m benchmarks.quality`` (``make bench-quality``) scores every labelled item of
``/work/shared/data/dev/*.jsonl`` (``--data`` or ``$GROUNDWATCH_DEV_DATA``) with each scorer of
``--scorers`` (default ``lexical,embedded``) through :func:`evaluator.offline.score_file`, and
reports ROC-AUC per file and metric, the scorers side by side:

* ``faithfulness`` and ``groundedness`` against ``label_faithful``, in every file where it is set;
* ``answer_relevance`` against ``label_relevant``, in every file where it is set, except
* ``context_relevance_msmarco``, where ``label_relevant`` says whether the *passage* is relevant
  and the ``answer`` field holds that passage: there records are built with
  ``contexts=[answer]`` and ``context_relevance`` is measured against ``label_relevant``.

Only items labelled for at least one of their file's metrics are scored; an item counts for a
metric only when it carries that metric's label.

Items whose outcome is not ``ok`` (``not_applicable``: e.g. no contexts, no question, a refusal;
``error``; or a line the row limits reject) have no score. They are **left out of the AUC** and
reported as *coverage* (share of labelled items with an ``ok`` score) next to it. Scoring them
as 0.0 would mix two questions (does the scorer answer? does its answer rank items well?) into
one number and would let a scorer gain AUC by abstaining on exactly the hard items; reporting
both numbers keeps each honest. Compare two scorers' AUCs only with their coverage in view.

ROC-AUC is the Mann-Whitney statistic with average ranks for ties (a tie between a positive and
a negative counts one half), computed with numpy. It is ``null`` when the ok items of a metric do
not contain both classes.

A scorer that cannot be built (not registered, not installed, no model) is reported with the
reason and skipped. Results: a table on stdout and ``benchmarks/results/quality.json``::

    {"<scorer>": {"<file>": {"<metric>": auc | null}},
     "_counts": {"<scorer>": {"<file>": {"<metric>": {"n", "ok", "pos", "neg", "coverage",
                                                      "not_ok": {outcome/reason: k}}}}},
     "_meta": {...}}

Keys starting with ``_`` are not scorers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

for _name, _value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"),
                      ("RAGAS_DO_NOT_TRACK", "true"), ("TOKENIZERS_PARALLELISM", "false")):
    os.environ.setdefault(_name, _value)

from evaluator.config import Config, load_config  # noqa: E402
from evaluator.errors import ConfigError  # noqa: E402
from evaluator.offline import score_file  # noqa: E402
from evaluator.records import RowLimits  # noqa: E402
from evaluator.scorers import Scorer, build_scorer  # noqa: E402

DEFAULT_DATA = Path("/work/shared/data/dev")
RESULTS = Path(__file__).resolve().parent / "results" / "quality.json"
DEFAULT_SCORERS = "lexical,embedded"
# The file whose `answer` is a retrieved passage and whose label is the passage's relevance.
PASSAGE_FILE = "context_relevance_msmarco"
LABELS = ("label_faithful", "label_relevant")


# -- ROC-AUC --------------------------------------------------------------------------------
def roc_auc(scores: Sequence[float], labels: Sequence[int | bool]) -> float | None:
    """ROC-AUC of ``scores`` against binary ``labels`` (Mann-Whitney U with average ranks for
    ties). ``None`` when either class is empty. Raises ``ValueError`` on non-finite scores or
    mismatched lengths."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels).astype(bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D and the same length, "
                         f"got {s.shape} and {y.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # 1-based rank of each distinct value's last occurrence
    average_rank = last - (counts - 1) / 2.0
    ranks = average_rank[inverse]
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


# -- what to measure in which file ----------------------------------------------------------
@dataclass(frozen=True)
class Task:
    metric: str
    label: str


def tasks_for(file: str, rows: Sequence[dict[str, Any]]) -> list[Task]:
    """The (metric, label) pairs measured on one file, from which labels it carries."""
    if file == PASSAGE_FILE:
        return [Task("context_relevance", "label_relevant")]
    has = {label for label in LABELS if any(r.get(label) is not None for r in rows)}
    tasks = []
    if "label_faithful" in has:
        tasks += [Task("faithfulness", "label_faithful"), Task("groundedness", "label_faithful")]
    if "label_relevant" in has:
        tasks.append(Task("answer_relevance", "label_relevant"))
    return tasks


def _read_labelled(path: Path) -> list[dict[str, Any]]:
    """Each non-blank line's labels, in order (a line that is not a JSON object has none)."""
    rows = []
    with path.open(encoding="utf-8", errors="replace") as fh:
        for text in fh:
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError:
                obj = None
            rows.append({k: obj.get(k) for k in LABELS} if isinstance(obj, dict) else {})
    return rows


# -- one scorer on one file -----------------------------------------------------------------
@dataclass
class MetricTally:
    n: int = 0
    n_pos: int = 0  # positives among all labelled items, scored or not
    scores: list[float] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    not_ok: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        pos = sum(self.labels)
        return {"n": self.n, "n_pos": self.n_pos, "ok": len(self.scores), "pos": pos,
                "neg": len(self.labels) - pos,
                "coverage": round(len(self.scores) / self.n, 4) if self.n else None,
                "not_ok": dict(sorted(self.not_ok.items()))}


def score_labelled_file(path: Path, scorer: Scorer, *, limit: int | None, batch_size: int,
                        limits: RowLimits) -> tuple[dict[str, MetricTally], int, float]:
    """Tallies per metric, items scored and seconds taken, for one scorer on one file."""
    file = path.stem
    labels_by_line = _read_labelled(path)
    tasks = tasks_for(file, labels_by_line)
    if not tasks:
        return {}, 0, 0.0
    wanted = {t.label for t in tasks}

    def prepare(obj: dict[str, Any]) -> dict[str, Any] | None:
        if all(obj.get(label) is None for label in wanted):
            return None
        if file == PASSAGE_FILE:
            return {**obj, "contexts": [obj.get("answer") or ""]}
        return obj

    # score_file's `line` is the physical line number; map it to the labels of that line.
    with path.open(encoding="utf-8", errors="replace") as fh:
        physical = [n for n, text in enumerate(fh, start=1) if text.strip()]
    line_labels = dict(zip(physical, labels_by_line, strict=True))

    tallies = {t.metric: MetricTally() for t in tasks}
    started = time.monotonic()
    items = 0
    for row in score_file(path, scorer, batch_size=batch_size, prepare=prepare, limit=limit,
                          limits=limits):
        items += 1
        labels = line_labels.get(row["line"], {})
        for task in tasks:
            label = labels.get(task.label)
            if label is None:
                continue
            tally = tallies[task.metric]
            tally.n += 1
            tally.n_pos += bool(label)
            if "error" in row:
                tally.not_ok[f"unscored/{row['error']['reason']}"] += 1
                continue
            result = row["metrics"].get(task.metric)
            if result is None:
                tally.not_ok["missing"] += 1
            elif result["outcome"] != "ok":
                tally.not_ok[f"{result['outcome']}/{result['reason']}"] += 1
            else:
                tally.scores.append(float(result["value"]))
                tally.labels.append(int(bool(label)))
    return tallies, items, time.monotonic() - started


# -- the run --------------------------------------------------------------------------------
def build_scorers(config: Config, names: Sequence[str]) -> dict[str, Scorer]:
    scorers: dict[str, Scorer] = {}
    for name in names:
        try:
            scorers[name] = build_scorer(config, name)
        except Exception as exc:  # any reason a backend cannot start: say it, measure the rest
            print(f"# skipping scorer {name!r}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return scorers


def format_table(results: dict[str, Any], counts: dict[str, Any], scorers: Sequence[str],
                 files: Sequence[str]) -> str:
    head = f"{'file':<27} {'metric':<18} {'n':>5} {'pos/neg':>10}"
    head += "".join(f"  {name + ' AUC (cov)':>22}" for name in scorers)
    lines = [head, "-" * len(head)]
    for file in files:
        metrics: list[str] = []
        for name in scorers:
            metrics += [m for m in counts[name].get(file, {}) if m not in metrics]
        for metric in metrics:
            first = counts[scorers[0]].get(file, {}).get(metric, {})
            n, pos = first.get("n", 0), first.get("n_pos", 0)
            line = f"{file:<27} {metric:<18} {n:>5} {pos:>4}/{n - pos:<5}"
            for name in scorers:
                auc = results[name].get(file, {}).get(metric)
                c = counts[name].get(file, {}).get(metric, {})
                cov = c.get("coverage")
                shown = "   -  " if auc is None else f"{auc:6.3f}"
                cov_s = "  -  " if cov is None else f"{100 * cov:4.0f}%"
                line += f"  {shown:>15} ({cov_s})"
            lines.append(line)
    return "\n".join(lines)


def run(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("GROUNDWATCH_DEV_DATA", str(DEFAULT_DATA)),
                        help="directory of labelled *.jsonl (default: $GROUNDWATCH_DEV_DATA or "
                             f"{DEFAULT_DATA})")
    parser.add_argument("--scorers", default=DEFAULT_SCORERS,
                        help=f"comma-separated scorer names (default {DEFAULT_SCORERS})")
    parser.add_argument("--files", default=None,
                        help="comma-separated file stems to keep (default: all)")
    parser.add_argument("--limit", type=int, default=None,
                        help="score at most N labelled items per file (quick runs)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--config", "-c", default=None, help="groundwatch config file")
    parser.add_argument("--out", default=str(RESULTS), help=f"results JSON (default {RESULTS})")
    args = parser.parse_args(argv)

    data = Path(args.data)
    paths = sorted(data.glob("*.jsonl")) if data.is_dir() else []
    if args.files:
        keep = {f.strip() for f in args.files.split(",") if f.strip()}
        unknown = keep - {p.stem for p in paths}
        if unknown:
            print(f"no such file(s) in {data}: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        paths = [p for p in paths if p.stem in keep]
    if not paths:
        print(f"no labelled *.jsonl in {data}", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    limits = RowLimits(config.source.max_field_chars, config.source.max_contexts)
    names = [n.strip() for n in args.scorers.split(",") if n.strip()]
    scorers = build_scorers(config, names)
    if not scorers:
        print("no scorer could be built", file=sys.stderr)
        return 2

    results: dict[str, Any] = {}
    counts: dict[str, Any] = {}
    timing: dict[str, Any] = {}
    try:
        for name, scorer in scorers.items():
            results[name], counts[name], timing[name] = {}, {}, {}
            for path in paths:
                tallies, items, seconds = score_labelled_file(
                    path, scorer, limit=args.limit, batch_size=args.batch_size, limits=limits)
                if not tallies:
                    continue
                results[name][path.stem] = {m: _rounded(roc_auc(t.scores, t.labels))
                                            for m, t in tallies.items()}
                counts[name][path.stem] = {m: t.summary() for m, t in tallies.items()}
                timing[name][path.stem] = {"items": items, "seconds": round(seconds, 3)}
                print(f"# {name} {path.stem}: {items} items in {seconds:.1f}s", file=sys.stderr)
    finally:
        for scorer in scorers.values():
            scorer.close()

    built = list(scorers)
    files = [p.stem for p in paths if any(p.stem in counts[n] for n in built)]
    print(format_table(results, counts, built, files))
    report: dict[str, Any] = dict(results)
    report["_counts"] = counts
    report["_meta"] = {
        "data": str(data), "files": files, "limit": args.limit,
        "scorers": {n: getattr(s, "version", None) for n, s in scorers.items()},
        "skipped": [n for n in names if n not in scorers],
        "timing": timing, "python": platform.python_version(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "auc_on": "ok items only; coverage = ok / labelled",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"# wrote {out}", file=sys.stderr)
    return 0


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


if __name__ == "__main__":
    sys.exit(run())
