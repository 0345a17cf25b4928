"""How often the embedded scorer names a fact of a claim that no passage contains, on
faithful and on unfaithful dev items, tuned part | sealed part (issue 17, atomic claims).

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/measure_facts.py [--files wice,...] [--out F]

``--out`` adds the files measured to ``F`` (``benchmarks/results/facts.json``), keeping the
others, so two processes can measure different files one after the other.

Per file and part: items scored, and among the items whose label is faithful and those whose
label is not, the share with any claim naming a fact no passage has (``fact_named``), and
with a *supported* claim naming one (``supported_claim_named``: what a "partly supported"
label would be). WiCE is also split by its raw
label (supported / partially_supported / not_supported). Totals only: no row is printed, so
the sealed part stays sealed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import calibrate as cb  # noqa: E402  (sets the offline environment before any model loads)

from benchmarks.provenance import measured_on  # noqa: E402
from benchmarks.sealed import is_sealed  # noqa: E402
from evaluator.config import EmbeddedConfig  # noqa: E402
from evaluator.scorers.embedded.scorer import EmbeddedScorer  # noqa: E402

CHUNK = 32


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", default=",".join(cb.FAITH_FILES))
    ap.add_argument("--max-items", type=int, default=600, help="per file and part (seeded)")
    ap.add_argument("--data", type=Path, default=cb.DATA)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    scorer = EmbeddedScorer(EmbeddedConfig())
    report: dict[str, Any] = {}
    for name in args.files.split(","):
        rows = [r for r in cb.load_rows(name, args.data) if r.get("label_faithful") is not None]
        for part in ("tuned", "sealed"):
            part_rows = [r for r in rows if is_sealed(r) == (part == "sealed")]
            if len(part_rows) > args.max_items:
                pick = np.random.default_rng(cb.SEED).choice(len(part_rows), args.max_items,
                                                             replace=False)
                part_rows = [part_rows[i] for i in sorted(pick)]
            tally: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
            for start in range(0, len(part_rows), CHUNK):
                chunk = part_rows[start:start + CHUNK]
                results = scorer.score_batch([cb.to_record(r, name) for r in chunk])
                for r, res in zip(chunk, results, strict=True):
                    claims = res.explanation.claims or ()
                    partly = any(c.supported and c.unsupported_facts for c in claims)
                    named = any(c.unsupported_facts for c in claims)
                    keys = ["faithful" if r["label_faithful"] else "unfaithful"]
                    raw = (r.get("meta") or {}).get("raw_label")
                    if name == "wice" and raw:
                        keys.append(f"raw:{raw}")
                    for key in keys:
                        tally[key][0] += 1
                        tally[key][1] += int(partly)
                        tally[key][2] += int(named)
            report.setdefault(name, {})[part] = {
                k: {"items": n, "supported_claim_named": round(p / n, 3), "fact_named": round(f / n, 3)}
                for k, (n, p, f) in sorted(tally.items())}
            print(name, part, json.dumps(report[name][part]), flush=True)
    if args.out:
        old = json.loads(args.out.read_text(encoding="utf-8")) if args.out.exists() else {}
        old.update(report)
        old["provenance"] = measured_on()
        old["settings"] = {"max_items": args.max_items}
        args.out.write_text(json.dumps(old, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
