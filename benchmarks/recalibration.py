"""How far a calibration map fitted on a team's own labels (or its judge's verdicts) fixes
the cheap scorer's calibration, on pairs it was not fitted on.

``python -m benchmarks.recalibration`` (``make bench-recalibration``):

1. **synthetic** -- judge values j ~ U(0, 1) and a cheap scorer that reports j**2; the map
   (:func:`evaluator.calibration.fit.fit_one`, as the workers' refit fits it) is fitted on
   4,000 pairs and measured on 2,000 others: ECE of the raw and of the mapped values, and the
   mean |map(c) - sqrt(c)|. Twice: with the judge's values as targets, and with 0/1
   verdicts drawn from them (a judge that only says yes or no).
2. **dev data** -- per labelled dev file and metric (the file plays a route), the embedded
   scorer's values on the file's *tuned* part and their human labels fit the map, as
   ``groundwatch calibrate --labels`` does; ECE of the raw and of the mapped values and ROC-AUC
   are then measured on the file's *sealed* part (benchmarks/sealed.py), which the map never
   saw. The map over all files pooled (route ``*``) is measured the same way on each file.

Only aggregates of the sealed parts are computed and printed. Results: a table and
``benchmarks/results/recalibration.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.provenance import measured_on

# benchmarks.quality sets the offline variables (HF_HUB_OFFLINE, ...) as it is imported,
# before anything that reads them.
from benchmarks.quality import DEFAULT_DATA, score_labelled_file
from evaluator.calibration.fit import FitSettings, fit_one
from evaluator.calibration.isotonic import ece, many, roc_auc
from evaluator.calibration.maps import ALL_ROUTES, Pair
from evaluator.config import load_config
from evaluator.records import RowLimits
from evaluator.scorers import build_scorer

RESULTS = Path(__file__).resolve().parent / "results" / "recalibration.json"
SETTINGS = FitSettings()  # the [calibration] defaults: 50 pairs, band 0.15
T0 = datetime(2026, 12, 7, tzinfo=UTC)


def _fit(pairs: Sequence[Pair], route: str, metric: str, threshold: float) -> Any:
    return fit_one(pairs, scorer="bench", scorer_version="1", source="labels", route=route,
                   metric=metric, threshold=threshold, settings=SETTINGS, now=T0)


def synthetic(seed: int = 1) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, binary in (("judge_values", False), ("judge_verdicts", True)):
        rng = random.Random(seed)

        def draw(n: int, tag: str, rng: random.Random = rng, binary: bool = binary
                 ) -> list[Pair]:
            pairs = []
            for i in range(n):
                j = rng.random()
                pairs.append(Pair(f"{tag}{i}", "r", "faithfulness", j * j,
                                  float(rng.random() < j) if binary else j))
            return pairs

        fitted = _fit(draw(4000, "fit"), "r", "faithfulness", 0.5)
        held = draw(2000, "held")
        x = np.array([p.cheap for p in held])
        y = np.array([p.target for p in held])
        grid = np.linspace(0.01, 0.99, 99)
        out[kind] = {"fit_pairs": 4000, "held_pairs": 2000,
                     "ece_raw": round(ece(x, y), 4),
                     "ece_calibrated": round(ece(many(fitted.map, x), y), 4),
                     "mean_abs_error_vs_sqrt": round(float(
                         np.abs(many(fitted.map, grid) - np.sqrt(grid)).mean()), 4)}
    return out


def dev(data: Path, files: Sequence[str] | None, limit: int | None) -> dict[str, Any]:
    config = load_config(None)
    scorer = build_scorer(config, "embedded")
    thresholds = config.scoring.thresholds
    paths = sorted(data.glob("*.jsonl"))
    if files:
        paths = [p for p in paths if p.stem in files]
    per: dict[tuple[str, str], dict[str, list[Pair]]] = {}
    seconds = 0.0
    try:
        for path in paths:
            tallies, _, took = score_labelled_file(path, scorer, limit=limit, batch_size=64,
                                                   limits=RowLimits.of(config.source))
            seconds += took
            for metric, tally in tallies.items():
                parts: dict[str, list[Pair]] = {"tuned": [], "sealed": []}
                for i, (value, label, part) in enumerate(zip(
                        tally.scores, tally.labels, tally.parts, strict=True)):
                    parts[part].append(Pair(f"{path.stem}-{i}", path.stem, metric, value,
                                            float(label)))
                per[path.stem, metric] = parts
            print(f"# scored {path.stem} in {took:.0f}s", file=sys.stderr)
    finally:
        scorer.close()
    pooled: dict[str, Any] = {}
    for metric in sorted({m for _, m in per}):
        tuned = [p for (f, m), parts in per.items() if m == metric for p in parts["tuned"]]
        pooled[metric] = _fit(tuned, ALL_ROUTES, metric, thresholds.get(metric, 0.5))
    rows: dict[str, Any] = {}
    for (file, metric), parts in sorted(per.items()):
        sealed = parts["sealed"]
        if len(sealed) < 10:
            continue
        threshold = thresholds.get(metric, 0.5)
        own = _fit(parts["tuned"], file, metric, threshold)
        x = np.array([p.cheap for p in sealed])
        y = np.array([p.target for p in sealed])
        row = {"tuned_pairs": len(parts["tuned"]), "sealed_pairs": len(sealed),
               "sealed_pos_rate": round(float(y.mean()), 4),
               "sealed_mean_raw": round(float(x.mean()), 4),
               "sealed_auc_raw": _r(roc_auc(x, y >= 0.5)),
               "sealed_ece_raw": round(ece(x, y), 4),
               "fit_ece_raw": own.ece_raw, "fit_ece_map_out_of_fold": own.ece_calibrated,
               "map_usable": own.usable, "why": own.why}
        if own.map is not None:
            mapped = many(own.map, x)
            row.update(sealed_ece_map=round(ece(mapped, y), 4),
                       sealed_mean_map=round(float(mapped.mean()), 4),
                       sealed_auc_map=_r(roc_auc(mapped, y >= 0.5)))
        # What a deployment would report: the map's values where it applies, else raw.
        row["sealed_ece_as_applied"] = row["sealed_ece_map"] if own.usable else \
            row["sealed_ece_raw"]
        if pooled[metric].map is not None:
            row["sealed_ece_pooled_map"] = round(ece(many(pooled[metric].map, x), y), 4)
        rows.setdefault(file, {})[metric] = row
    return {"rows": rows, "scoring_seconds": round(seconds, 1)}


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def format_tables(result: dict[str, Any]) -> str:
    lines = ["synthetic (cheap = judge**2; fitted on 4,000 pairs, measured on 2,000 others)",
             f"{'targets':<16} {'ECE raw':>8} {'ECE map':>8} {'|map-sqrt|':>10}"]
    for kind, r in result["synthetic"].items():
        lines.append(f"{kind:<16} {r['ece_raw']:>8.4f} {r['ece_calibrated']:>8.4f} "
                     f"{r['mean_abs_error_vs_sqrt']:>10.4f}")
    if "dev" in result:
        lines += ["", "dev data: map fitted on the tuned part, measured on the sealed part",
                  f"{'file/metric':<44} {'fit n':>6} {'seal n':>6} {'pos':>5} {'mean':>5} "
                  f"{'AUC':>6} {'ECE raw':>8} {'ECE map':>8} {'applied':>8} {'pooled':>7}  "
                  "map (fit side: ECE raw / out of fold)"]
        flat = [(f"{file}/{metric}", r) for file, by_metric in result["dev"]["rows"].items()
                for metric, r in by_metric.items()]
        for key, r in flat:
            def f(v: Any, spec: str) -> str:
                return format(v, spec) if isinstance(v, float | int) else "-"
            lines.append(
                f"{key:<44} {r['tuned_pairs']:>6} {r['sealed_pairs']:>6} "
                f"{f(r['sealed_pos_rate'], '.2f'):>5} {f(r['sealed_mean_raw'], '.2f'):>5} "
                f"{f(r['sealed_auc_raw'], '.3f'):>6} {f(r['sealed_ece_raw'], '.4f'):>8} "
                f"{f(r.get('sealed_ece_map'), '.4f'):>8} "
                f"{f(r.get('sealed_ece_as_applied'), '.4f'):>8} "
                f"{f(r.get('sealed_ece_pooled_map'), '.4f'):>7}  "
                + ("applies" if r["map_usable"] else "raw kept")
                + f" ({f(r['fit_ece_raw'], '.3f')} / {f(r['fit_ece_map_out_of_fold'], '.3f')})")
    return "\n".join(lines)


def run(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recalibration",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("GROUNDWATCH_DEV_DATA",
                                                         str(DEFAULT_DATA)))
    parser.add_argument("--files", default=None, help="comma-separated file stems")
    parser.add_argument("--limit", type=int, default=None, help="items per file")
    parser.add_argument("--synthetic-only", action="store_true")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    started = time.monotonic()
    result: dict[str, Any] = {"synthetic": synthetic()}
    if not args.synthetic_only:
        data = Path(args.data)
        if not data.is_dir():
            print(f"no dev data at {data}", file=sys.stderr)
            return 2
        files = [f.strip() for f in args.files.split(",")] if args.files else None
        result["dev"] = dev(data, files, args.limit)
    result["provenance"] = measured_on()
    result["_meta"] = {"seconds": round(time.monotonic() - started, 1),
                       "settings": {"min_pairs": SETTINGS.min_pairs,
                                    "max_band": SETTINGS.max_band}}
    print(format_tables(result))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(run())
