"""Soak: groundwatch's real processes under a steady trickle of traffic for minutes.

``python -m benchmarks.soak`` (``make soak``; not in CI) writes the demo's config into a temp
dir, points it at Redis and a SQLite store with environment overrides (the way a deployment
would), and starts, as separate processes, one ``groundwatch sampler``, two ``groundwatch
worker`` and one ``groundwatch exporter``. A feeder thread in this process appends synthetic
rows (:mod:`evaluator.demo_traffic`, timestamped when written) to a SQLite log table at
``--rate`` rows/s for ``--duration`` seconds. Every ``--sample-every`` seconds it records the
queue depth (the exporter's ``groundwatch_queue_depth`` and Redis ``LLEN``), the store's
backlog and the RSS of every process (``/proc/PID/status`` VmRSS, prefork children included);
RSS is compared at the end with its value after warm-up (``--warmup-share`` of the run, but
not before the sampler's lookback window has filled) and in the middle.
After the feed it waits until every sampled item is scored, then stops everything.

It reports items/s scored, the lag from the take (``items.sampled_at``) to the score
(``scores.scored_at``), queue depth over time, errors (failures table,
``groundwatch_task_failures_total``, ERROR / Traceback lines in the process logs) and RSS
growth after warm-up, against the goals: RSS growth <= 10 % after warm-up, a bounded queue, no
errors, p95 lag < 5 s. Results: a table on stdout and ``benchmarks/results/soak.json``.

The demo's log is 4 rows/s of log time (rows 250 ms apart) replayed in seconds; the default
``--rate`` 20 rows/s is five times that, a small production app. Redis: ``--redis-url``
(default DB 13); only this run's queue is used and deleted at the end (no FLUSHDB).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from benchmarks.pipeline import workers_ready
from benchmarks.provenance import git_commit, measured_on

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "soak.json"
REDIS_URL = "redis://127.0.0.1:6379/13"
READY_TIMEOUT_S = 180.0
CHECKPOINTS = ("warmup", "middle", "end")
GOAL_RSS_GROWTH = 1.10
GOAL_P95_LAG_S = 5.0
# A log line that means something went wrong (Celery writes "ERROR/MainProcess", our CLI
# "ERROR groundwatch"); lower-case "error" is a rule and an outcome name, not a problem.
ERROR_LINE = re.compile(r"\bERROR\b|\bCRITICAL\b|^Traceback ")


# -- processes ---------------------------------------------------------------------------------
@dataclass
class Proc:
    role: str
    popen: subprocess.Popen[bytes]
    log: Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start(role: str, cmd: Sequence[str], log: Path, env: dict[str, str]) -> Proc:
    out: IO[bytes] = log.open("ab")
    try:
        popen = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, env=env,
                                 cwd=ROOT)
    finally:
        out.close()
    return Proc(role, popen, log)


def stop_all(procs: Sequence[Proc]) -> None:
    """SIGTERM (a worker's warm shutdown), then SIGKILL after 20 s; never leaves one running."""
    for p in procs:
        if p.popen.poll() is None:
            p.popen.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.popen.kill()
            p.popen.wait(timeout=5)


def rss_mb(pid: int) -> float | None:
    """VmRSS of ``pid`` in MiB, or None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (prefork children), from the ppid in /proc/*/stat."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in sorted(parents.get(todo.pop(), [])):
            out.append(child)
            todo.append(child)
    return out


def rss_snapshot(procs: Sequence[Proc]) -> dict[str, dict[str, Any]]:
    """{label: {pid, rss_mb}} for every process and its descendants (``worker1.child1``...)."""
    snap: dict[str, dict[str, Any]] = {}
    for p in procs:
        snap[p.role] = {"pid": p.popen.pid, "rss_mb": rss_mb(p.popen.pid)}
        for i, child in enumerate(descendants(p.popen.pid), 1):
            snap[f"{p.role}.child{i}"] = {"pid": child, "rss_mb": rss_mb(child)}
    return snap


# -- traffic -----------------------------------------------------------------------------------
class Feeder(threading.Thread):
    """Appends ``rows`` to the log table at ``rate`` rows/s, each timestamped when written."""

    def __init__(self, url: str, rows: list[dict[str, Any]], rate: float) -> None:
        super().__init__(name="soak-feeder", daemon=True)
        self.url, self.rows, self.rate = url, rows, rate
        self.stop = threading.Event()
        self.written = 0
        self.errors: list[str] = []

    def run(self) -> None:
        import sqlalchemy as sa

        from evaluator import demo_traffic

        engine = sa.create_engine(self.url)
        try:
            table = sa.Table(demo_traffic.TABLE, sa.MetaData(), autoload_with=engine)
            began = time.monotonic()
            while not self.stop.is_set() and self.written < len(self.rows):
                due = min(len(self.rows), int(self.rate * (time.monotonic() - began)))
                if due > self.written:
                    now = datetime.now(UTC)
                    chunk = [{**row, "created_at": now} for row in self.rows[self.written:due]]
                    try:
                        with engine.begin() as conn:
                            conn.execute(table.insert(), chunk)
                        self.written = due
                    except Exception as exc:  # counted as an error; the next tick retries
                        self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                self.stop.wait(0.1)
        finally:
            engine.dispose()


# -- measurements ------------------------------------------------------------------------------
def scrape(port: int) -> dict[str, float] | None:
    """Sums per sample name of the exporter's /metrics, or None if it did not answer."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            sums[s.name] = sums.get(s.name, 0.0) + float(s.value)
    return sums


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in [0, 100]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def lag_stats(values: Sequence[float]) -> dict[str, Any]:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 3)

    return {"n": len(values), "p50_s": r(percentile(values, 50)),
            "p95_s": r(percentile(values, 95)), "p99_s": r(percentile(values, 99)),
            "max_s": r(max(values) if values else None)}


def store_timings(store_url: str) -> list[tuple[datetime, datetime, datetime]]:
    """(log time, take, first score) of every scored item, read from the store's tables."""
    import sqlalchemy as sa

    from evaluator.store.models import items, scores

    engine = sa.create_engine(store_url)
    try:
        q = (sa.select(items.c.log_timestamp, items.c.sampled_at, sa.func.min(scores.c.scored_at))
             .join(scores, scores.c.request_id == items.c.request_id)
             .group_by(items.c.request_id, items.c.log_timestamp, items.c.sampled_at))
        with engine.connect() as conn:
            return [(a, b, c) for a, b, c in conn.execute(q)]
    finally:
        engine.dispose()


def failure_rows(store_url: str) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    from evaluator.store.models import failures

    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(failures.c.stage, failures.c.kind, failures.c.reason))
            return [{"stage": s, "kind": k, "reason": r[:200]} for s, k, r in rows]
    finally:
        engine.dispose()


def log_errors(procs: Sequence[Proc]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for p in procs:
        with contextlib.suppress(OSError):
            lines = [ln for ln in p.log.read_text(errors="replace").splitlines()
                     if ERROR_LINE.search(ln)]
            if lines:
                found[p.role] = lines
    return found


@dataclass
class Run:
    args: argparse.Namespace
    tmp: Path
    queue: str
    port: int
    procs: list[Proc] = field(default_factory=list)
    series: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    scrape_failures: int = 0

    @property
    def store_url(self) -> str:
        return f"sqlite:///{(self.tmp / 'groundwatch.db').as_posix()}"

    def alive(self) -> None:
        for p in self.procs:
            if p.popen.poll() is not None:
                tail = p.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{p.role} (pid {p.popen.pid}) exited with "
                                   f"{p.popen.returncode}\n{tail}")


def write_config(tmp: Path, scorer: str) -> Path:
    """The demo's own config file (its sampling policy, scope, batch size and poll interval);
    what differs for the soak comes from environment overrides, see :func:`overrides`."""
    from evaluator import demo_traffic
    from groundwatch.demo import DEMO_CONFIG

    columns = "\n".join(f'{k} = "{v}"' for k, v in demo_traffic.COLUMNS.items())
    path = tmp / "groundwatch.toml"
    path.write_text(DEMO_CONFIG.format(workdir=tmp.as_posix(), columns=columns, scorer=scorer))
    (tmp / "prometheus").mkdir()
    return path


def overrides(args: argparse.Namespace, queue: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROUNDWATCH__")}
    env.update({
        "GROUNDWATCH__BROKER__URL": args.redis_url,
        "GROUNDWATCH__BROKER__QUEUE": queue,
        "GROUNDWATCH__SOURCE__NAME": "soak",
        "GROUNDWATCH__WORKER__POOL": args.pool,
        "GROUNDWATCH__WORKER__CONCURRENCY": str(args.concurrency),
        "GROUNDWATCH__METRICS__PORT": str(port),
        "RAGAS_DO_NOT_TRACK": "true", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
    })
    return env


def wait_for(pred: Any, *, what: str, timeout: float, run: Run) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        run.alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def sample(run: Run, store: Any, redis_client: Any, t: float, feeder: Feeder) -> dict[str, Any]:
    metrics = scrape(run.port)
    if metrics is None:
        run.scrape_failures += 1
    counts = store.queries.count_items_by_status()
    point = {
        "t_s": round(t, 1),
        "rows_written": feeder.written,
        "queue_depth": None if metrics is None else metrics.get("groundwatch_queue_depth"),
        "llen": int(redis_client.llen(run.queue)),
        "backlog_items": counts.get("queued", 0),
        "scored": counts.get("scored", 0),
        "failed": counts.get("failed", 0),
        "rss_mb": {k: None if v["rss_mb"] is None else round(v["rss_mb"], 1)
                   for k, v in rss_snapshot(run.procs).items()},
    }
    run.series.append(point)
    return point


def soak(args: argparse.Namespace, run: Run) -> dict[str, Any]:
    import redis

    from evaluator import demo_traffic
    from evaluator.config import load_config
    from evaluator.store import Store

    config_path = write_config(run.tmp, args.scorer)
    env = overrides(args, run.queue, run.port)
    config = load_config(config_path, environ=env)
    store = Store.from_config(config.store)  # migrated before the processes start
    logs_url = f"sqlite:///{(run.tmp / 'app_logs.db').as_posix()}"
    demo_traffic.create_log_table(logs_url)
    n_rows = math.ceil(args.rate * args.duration)
    rows = demo_traffic.make_rows(n_rows, seed=args.seed)
    redis_client = redis.Redis.from_url(args.redis_url)
    redis_client.ping()

    def gw(*cmd: str) -> list[str]:
        return [sys.executable, "-m", "groundwatch", "--config", str(config_path), *cmd]

    workers = [start(f"worker{i}", gw("worker", "--name", f"soak{i}@%h"),
                     run.tmp / f"worker{i}.log", env) for i in (1, 2)]
    run.procs += workers
    run.procs.append(start("exporter", gw("exporter"), run.tmp / "exporter.log", env))
    wait_for(lambda: workers_ready([w.log for w in workers]), what="workers ready",
             timeout=READY_TIMEOUT_S, run=run)
    wait_for(lambda: scrape(run.port) is not None, what="the exporter", timeout=60, run=run)
    run.procs.insert(0, start("sampler", gw("sampler"), run.tmp / "sampler.log", env))

    feeder = Feeder(logs_url, rows, args.rate)
    print(f"soak: {args.duration:.0f}s at {args.rate:g} rows/s, scorer {args.scorer}, 2 workers "
          f"({args.pool} c{args.concurrency}), queue {run.queue} on {args.redis_url}, "
          f"temp dir {run.tmp}", flush=True)
    began, wall_began = time.monotonic(), datetime.now(UTC)
    feeder.start()
    # The sampler re-reads the lookback window (60 s by default) on every poll, so its memory
    # grows until the window is full of rows: the RSS baseline is taken after that.
    window = config.source.sql.lookback_s + 2 * config.source.poll_interval_s
    warm = min(0.5 * args.duration, max(args.warmup_share * args.duration, window))
    marks = {"warmup": warm, "middle": (warm + args.duration) / 2, "end": args.duration}
    try:
        tick = 0.0
        while True:
            now = time.monotonic() - began
            if now >= tick:
                point = sample(run, store, redis_client, now, feeder)
                for name, at in marks.items():
                    if name not in run.checkpoints and now >= at - 0.5:
                        run.checkpoints[name] = {"t_s": round(now, 1),
                                                 **rss_snapshot(run.procs)}
                print(f"  t={now:6.1f}s rows {point['rows_written']:6d} scored "
                      f"{point['scored']:6d} backlog {point['backlog_items']:4d} queue "
                      f"{point['queue_depth']} llen {point['llen']}", flush=True)
                if now >= args.duration - 0.5:
                    break
                tick = min(args.duration, tick + args.sample_every)
            run.alive()
            time.sleep(min(0.2, max(0.0, tick - (time.monotonic() - began))))
    finally:
        feeder.stop.set()
        feeder.join(timeout=30)
    fed_s = time.monotonic() - began

    # Drain: the sampler has read every row (logs seen = rows written), nothing is queued.
    drain_began = time.monotonic()

    def drained() -> bool:
        m = scrape(run.port) or {}
        counts = store.queries.count_items_by_status()
        return (m.get("groundwatch_logs_seen_total", 0) >= feeder.written
                and counts.get("queued", 0) == 0)
    wait_for(drained, what="every row read and every sampled item scored",
             timeout=args.drain_timeout, run=run)
    drain_s = time.monotonic() - drain_began
    final = scrape(run.port) or {}
    counts = store.queries.count_items_by_status()
    store.close()
    stop_all(run.procs)

    timings = store_timings(run.store_url)
    take_to_score = [(c - b).total_seconds() for _, b, c in timings]
    log_to_score = [(c - a).total_seconds() for a, _, c in timings]
    scored_at = [(c - wall_began).total_seconds() for _, _, c in timings]
    warm_at = run.checkpoints["warmup"]["t_s"]
    # Items/s in the steady state: scores written between the warm-up mark and the feed's end.
    steady = [t for t in scored_at if warm_at <= t <= fed_s]
    steady_rate = len(steady) / max(1e-9, fed_s - warm_at)

    failures = failure_rows(run.store_url)
    errors_in_logs = log_errors(run.procs)
    task_failures = final.get("groundwatch_task_failures_total", 0.0)
    errors = (len(failures) + int(task_failures) + sum(map(len, errors_in_logs.values()))
              + len(feeder.errors))

    rss: dict[str, dict[str, Any]] = {}
    for label in run.checkpoints["warmup"]:
        if label == "t_s":
            continue
        per = {c: run.checkpoints[c].get(label, {}) for c in CHECKPOINTS}
        w, e = per["warmup"].get("rss_mb"), per["end"].get("rss_mb")
        rss[label] = {"pid": per["warmup"].get("pid"),
                      **{f"{c}_mb": None if per[c].get("rss_mb") is None
                         else round(per[c]["rss_mb"], 1) for c in CHECKPOINTS},
                      "growth_ratio": round(e / w, 3) if w and e else None}
    growth = max((r["growth_ratio"] for r in rss.values() if r["growth_ratio"]), default=None)

    after = [p for p in run.series if p["t_s"] >= warm_at]
    depths = [p["llen"] for p in after]
    backlog = [p["backlog_items"] for p in after]
    third = max(1, len(backlog) // 3)
    # Bounded: the backlog does not climb over the run (the last third's mean is within one
    # batch of the first third's) and the queue emptied once the feed stopped.
    batch = config.broker.batch_size
    first_mean = sum(backlog[:third]) / third
    last_mean = sum(backlog[-third:]) / third
    bounded = last_mean <= first_mean + batch and counts.get("queued", 0) == 0
    take = lag_stats(take_to_score)
    result = {
        "items_per_s": round(steady_rate, 2),
        "p50_lag_s": take["p50_s"],
        "p95_lag_s": take["p95_s"],
        "errors": errors,
        "rss_growth_ratio": growth,
        "goals": {
            "rss_growth_le_10pct": growth is not None and growth <= GOAL_RSS_GROWTH,
            "queue_bounded": bounded,
            "no_errors": errors == 0,
            "p95_lag_lt_5s": take["p95_s"] is not None and take["p95_s"] < GOAL_P95_LAG_S,
        },
        "rows_written": feeder.written,
        "rows_per_s": round(feeder.written / fed_s, 2),
        "items_sampled": int(final.get("groundwatch_items_sampled_total", 0)),
        "items_scored": counts.get("scored", 0),
        "items_failed": counts.get("failed", 0),
        "rows_rejected": int(final.get("groundwatch_items_rejected_total", 0)),
        "items_scored_overall_per_s": round(len(scored_at) / fed_s, 2),
        "lag_take_to_score": take,
        "lag_log_to_score": lag_stats(log_to_score),
        "queue": {"max_llen_after_warmup": max(depths, default=0),
                  "max_backlog_items_after_warmup": max(backlog, default=0),
                  "backlog_mean_first_third": round(first_mean, 2),
                  "backlog_mean_last_third": round(last_mean, 2),
                  "queued_after_drain": counts.get("queued", 0), "bounded": bounded},
        "error_detail": {"failures_table": failures[:20], "failures_table_rows": len(failures),
                         "task_failures_total": task_failures,
                         "log_error_lines": {k: len(v) for k, v in errors_in_logs.items()},
                         "log_error_examples": {k: v[:5] for k, v in errors_in_logs.items()},
                         "feeder_errors": feeder.errors[:10],
                         "exporter_scrape_failures": run.scrape_failures},
        "rss": rss,
        "checkpoints_s": {c: run.checkpoints[c]["t_s"] for c in CHECKPOINTS},
        "drain_s": round(drain_s, 1),
        "series": run.series,
    }
    result["passed"] = all(result["goals"].values())
    return result


def print_table(r: dict[str, Any]) -> None:
    ok = {True: "ok", False: "MISSED"}
    g = r["goals"]
    print("\nsoak results")
    print(f"  rows written            {r['rows_written']} ({r['rows_per_s']} rows/s)")
    print(f"  items sampled / scored  {r['items_sampled']} / {r['items_scored']} "
          f"(failed {r['items_failed']}, rows rejected {r['rows_rejected']})")
    print(f"  items/s scored          {r['items_per_s']} after warm-up")
    lt = r["lag_take_to_score"]
    print(f"  lag take -> score       p50 {lt['p50_s']}s  p95 {lt['p95_s']}s  p99 {lt['p99_s']}s "
          f"max {lt['max_s']}s  [{ok[g['p95_lag_lt_5s']]}: p95 < {GOAL_P95_LAG_S:g}s]")
    ll = r["lag_log_to_score"]
    print(f"  lag log -> score        p50 {ll['p50_s']}s  p95 {ll['p95_s']}s (includes the poll)")
    q = r["queue"]
    print(f"  queue after warm-up     max LLEN {q['max_llen_after_warmup']}, max backlog "
          f"{q['max_backlog_items_after_warmup']} items, backlog mean first/last third "
          f"{q['backlog_mean_first_third']}/{q['backlog_mean_last_third']}  "
          f"[{ok[g['queue_bounded']]}: bounded]")
    print(f"  errors                  {r['errors']}  [{ok[g['no_errors']]}]  "
          f"{json.dumps(r['error_detail']['log_error_lines'])}")
    print(f"  {'process':<22}{'pid':>8}{'warm-up MB':>12}{'middle MB':>11}{'end MB':>9}"
          f"{'end/warm':>10}")
    for label, v in r["rss"].items():
        print(f"  {label:<22}{v['pid']:>8}{v['warmup_mb']!s:>12}{v['middle_mb']!s:>11}"
              f"{v['end_mb']!s:>9}{v['growth_ratio']!s:>10}")
    print(f"  RSS growth (max)        {r['rss_growth_ratio']}  "
          f"[{ok[g['rss_growth_le_10pct']]}: <= {GOAL_RSS_GROWTH:g}]")
    print(f"  drained in {r['drain_s']}s after the feed; all goals "
          f"{'met' if r['passed'] else 'NOT met'}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=300.0, help="seconds of feed (300)")
    p.add_argument("--rate", type=float, default=20.0, help="log rows per second (20)")
    p.add_argument("--scorer", default="lexical", help="lexical (default) or embedded")
    p.add_argument("--pool", default="solo", help="worker pool (solo, the shipped default)")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--redis-url", default=REDIS_URL)
    p.add_argument("--sample-every", type=float, default=5.0,
                   help="seconds between queue/RSS samples (5)")
    p.add_argument("--warmup-share", type=float, default=0.2,
                   help="share of the run before the RSS baseline is taken (0.2), at least "
                        "the source's lookback window and at most half the run")
    p.add_argument("--drain-timeout", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, store)")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.rate <= 0 or args.sample_every <= 0:
        p.error("--duration, --rate and --sample-every must be positive")
    if not 0 < args.warmup_share < 0.6:
        p.error("--warmup-share must be in (0, 0.6)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="gwsoak-"))
    run = Run(args, tmp, queue=f"gwsoak.{uuid.uuid4().hex[:8]}", port=free_port())
    began = time.monotonic()
    try:
        result = soak(args, run)
    finally:
        stop_all(run.procs)
        with contextlib.suppress(Exception):
            import redis

            redis.Redis.from_url(args.redis_url).delete(run.queue)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    result["settings"] = {
        "duration_s": args.duration, "rate_rows_per_s": args.rate, "scorer": args.scorer,
        "worker_processes": 2, "pool": args.pool, "concurrency": args.concurrency,
        "config": "the demo's (groundwatch/demo.py DEMO_CONFIG) with environment overrides",
        "store": "sqlite", "sample_every_s": args.sample_every,
        "warmup_share": args.warmup_share, "redis_url": args.redis_url,
        "git_commit": git_commit(), "python_version": platform.python_version(),
        "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.soak " + " ".join(sys.argv[1:] if argv is None
                                                           else argv),
        "wall_seconds": round(time.monotonic() - began, 1),
    }
    result["provenance"] = measured_on()
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
