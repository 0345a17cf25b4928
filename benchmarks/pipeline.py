"""groundwatch's throughput against raw Celery + Redis, on real Redis and real worker processes.

``python -m benchmarks.pipeline`` (``make bench``) measures, with the same items, batch size and
worker layout:

* ``raw``: a no-op Celery task (one ``INCRBY`` of a Redis counter) fed batches of
  ``LogRecord.to_message()`` dicts, with the Celery settings of :func:`workers.app.make_celery`
  (copied from the app it builds), in real ``celery worker`` processes;
* ``pipeline noop``: demo log rows in a SQLite table → the real Sampler in this process
  (rate 1.0, caps off) → Redis → real ``groundwatch worker`` processes (scorer ``noop``) →
  store (SQLite, WAL) → Prometheus multiprocess metrics, timed from the sampler's start until
  the store shows every item scored;
* ``pipeline lexical``: the same with the ``lexical`` scorer.

* ``embedded``: the embedded scorer in this process (no Celery, no store): items/s of
  ``score_batch`` on a seeded mixture of short dev items (batches of 32, after a warm-up
  batch), the embeddings/s of the model runtime alone (tokenizer and forward pass) on the very
  texts the scorer encoded, the share of the scorer's time spent in the encoder, the
  passage-cache hit rate on demo traffic (which repeats documents) and the process RSS
  afterwards. Measured once, whatever
  ``--repeat``; with ``--profile`` also a cProfile of one pass (cold cache).

Workers are started, seen ``ready`` and warmed up with a few batches before any clock starts.
With ``--pools`` it also compares one item per task with batches, and four worker layouts.
``--breakdown`` splits the per-item cost of a worker (decode, score, store, metrics) in this
process. Results: a table on stdout and ``benchmarks/results/pipeline.json``.

Redis DB 12 is flushed at the start and at the end; every case uses its own queue.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.provenance import git_commit, measured_on

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "pipeline.json"
REDIS_URL = "redis://127.0.0.1:6379/12"
RAW_TASK = "gwbench.noop_batch"
RETRY_POLICY = {"max_retries": 5, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 3.0}
READY_TIMEOUT_S = 90.0
DRAIN_TIMEOUT_S = 600.0
DEV_DATA = Path(os.environ.get("GROUNDWATCH_DEV_DATA", "/work/shared/data/dev"))
EMBEDDED_SOURCES = ("expertqa_claims", "halueval_qa", "faithdial_audit", "begin")
EMBEDDED_MAX_CHARS = 2000  # question + answer + contexts: "short" items
EMBEDDED_BATCH = 32
BASELINE_CALIBRATION = Path(__file__).resolve().parent / "data" / \
    "embedded_baseline_calibration.json"
PIPELINE_CASES = ("raw", "noop", "lexical")

log = logging.getLogger("gwbench")


@dataclasses.dataclass(frozen=True)
class Layout:
    procs: int
    pool: str
    concurrency: int

    @property
    def label(self) -> str:
        return f"{self.procs}x {self.pool} c{self.concurrency}"


@dataclasses.dataclass
class Case:
    case: str
    items: int
    seconds: float
    layout: Layout
    batch_size: int
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self, raw_rate: float | None = None) -> dict[str, Any]:
        d = {"case": self.case, "items": self.items, "seconds": round(self.seconds, 3),
             "items_per_s": round(self.items_per_s, 1), "batch_size": self.batch_size,
             "worker_processes": self.layout.procs, "pool": self.layout.pool,
             "concurrency": self.layout.concurrency}
        if raw_rate:
            d["ratio_vs_raw"] = round(self.items_per_s / raw_rate, 3)
        d.update(self.extra)
        return d


# -- helpers ----------------------------------------------------------------------------------
def wait_for(pred: Callable[[], Any], *, what: str, timeout: float, poll: float,
             procs: Sequence[subprocess.Popen[bytes]] = (), logs: Sequence[Path] = ()) -> Any:
    """Poll ``pred`` until it returns something true; fail fast if a worker dies."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        for i, proc in enumerate(procs):
            if proc.poll() is not None:
                path = logs[i] if i < len(logs) else None
                tail = path.read_text(errors="replace")[-3000:] if path else ""
                raise RuntimeError(f"worker pid {proc.pid} exited with {proc.returncode} while "
                                   f"waiting for {what}\n{tail}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


def workers_ready(logs: Sequence[Path]) -> bool:
    """Celery logs ``<node> ready.`` once a worker consumes."""
    return all(p.exists() and b" ready." in p.read_bytes() for p in logs)


def chunks(seq: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [seq[i:i + size] for i in range(0, len(seq), size)]


def stop_procs(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    from workers.children import stop_processes

    stop_processes(list(procs), timeout_s=20.0)


def base_config(redis_url: str, queue: str, batch_size: int, layout: Layout) -> Any:
    from evaluator.config import Config

    c = Config()
    return c.model_copy(update={
        "broker": c.broker.model_copy(update={"url": c.broker.url.__class__(redis_url),
                                              "queue": queue, "batch_size": batch_size}),
        "worker": c.worker.model_copy(update={"pool": layout.pool,
                                              "concurrency": layout.concurrency}),
    })


def groundwatch_celery_conf(config: Any) -> dict[str, Any]:
    """The Celery settings groundwatch sets (everything make_celery changes from Celery's
    defaults), minus the broker URL and the routes of groundwatch's own task."""
    from celery.app.defaults import DEFAULTS

    from workers.app import make_celery

    app = make_celery(config)
    conf = {k: v for k, v in app.conf.items() if k in DEFAULTS and v != DEFAULTS[k]}
    for key in ("broker_url", "task_routes"):
        conf.pop(key, None)
    return json.loads(json.dumps(conf))  # JSON-safe, as it travels to the worker processes


# -- the raw Celery worker (a child process) ----------------------------------------------------
def raw_worker_main(spec_path: str, name: str) -> int:
    """A Celery worker whose only task counts its items in Redis: Celery + Redis, nothing else."""
    import redis
    from celery import Celery

    from evaluator.config import Config
    from workers.services import worker_argv

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = json.loads(Path(spec_path).read_text())
    app = Celery("gwbench", broker=spec["broker_url"], set_as_current=False)
    app.conf.update(spec["conf"])
    clients: dict[int, Any] = {}

    def client() -> Any:  # one client per process (prefork children fork after import)
        r = clients.get(os.getpid())
        if r is None:
            r = clients[os.getpid()] = redis.Redis.from_url(spec["broker_url"])
        return r

    @app.task(name=RAW_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def noop_batch(messages: list[dict[str, Any]]) -> None:
        client().incrby(spec["counter_key"], len(messages))

    c = Config()
    config = c.model_copy(update={
        "broker": c.broker.model_copy(update={"queue": spec["queue"]}),
        "worker": c.worker.model_copy(update={"pool": spec["pool"],
                                              "concurrency": spec["concurrency"]})})
    app.worker_main(worker_argv(config, name=name))
    return 0


# -- the benchmark --------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        import redis

        self.args = args
        self.redis_url = args.redis_url
        self.redis = redis.Redis.from_url(self.redis_url)
        self.run_id = uuid.uuid4().hex[:8]
        self.tmp = Path(tempfile.mkdtemp(prefix="gwbench-"))
        self.metrics_dir = self.tmp / "prometheus"
        self._counter = 0
        self.metrics: Any = None
        self.profiled = False
        self.schemas: list[str] = []

    # data -------------------------------------------------------------------------------------
    def prepare(self, n: int) -> None:
        """``n`` valid demo rows in the log table, and the same rows as records and messages.

        Rows that groundwatch would reject (the demo mixes a few in) are left out, so every
        case handles exactly ``n`` items.
        """
        from evaluator import demo_traffic
        from evaluator.errors import InvalidRecordError
        from evaluator.records import RowLimits, map_row

        def valid(count: int, seed: int) -> tuple[list[dict[str, Any]], list[Any]]:
            rows: list[dict[str, Any]] = []
            records: list[Any] = []
            for i, row in enumerate(demo_traffic.make_rows(int(count * 1.1) + 20, seed=seed)):
                try:
                    records.append(map_row(row, demo_traffic.COLUMNS, limits=RowLimits(),
                                           position=str(i)))
                except InvalidRecordError:
                    continue
                rows.append(row)
                if len(rows) == count:
                    break
            if len(rows) < count:
                raise RuntimeError(f"the demo traffic gave only {len(rows)} valid rows of {count}")
            return rows, records

        rows, self.records = valid(n, 7)  # the records the sampler will read, in order
        self._rows = rows
        self._log_dbs: dict[int, Path] = {}
        self.messages = [r.to_message() for r in self.records]
        self.warm_records = valid(2000, 99)[1]  # distinct request ids, for warm-ups only

    def log_db(self, n: int) -> Path:
        """A log table holding exactly the first ``n`` rows (one file per size)."""
        from evaluator import demo_traffic

        path = self._log_dbs.get(n)
        if path is None:
            path = self._log_dbs[n] = self.tmp / f"app_logs_{n}.db"
            url = f"sqlite:///{path}"
            demo_traffic.create_log_table(url)
            demo_traffic.write_rows(url, self._rows[:n])
        return path

    def _next(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    # raw Celery --------------------------------------------------------------------------------
    def run_raw(self, layout: Layout, n: int, batch_size: int, case: str) -> Case:
        from celery import Celery

        tag = self._next("raw")
        queue = f"gwbench.{self.run_id}.{tag}"
        key = f"gwbench:{self.run_id}:{tag}:done"
        case_dir = self.tmp / tag
        case_dir.mkdir()
        config = base_config(self.redis_url, queue, batch_size, layout)
        conf = groundwatch_celery_conf(config)
        spec = {"broker_url": self.redis_url, "conf": conf, "queue": queue, "counter_key": key,
                "pool": layout.pool, "concurrency": layout.concurrency}
        spec_path = case_dir / "spec.json"
        spec_path.write_text(json.dumps(spec))
        publisher = Celery("gwbench-pub", broker=self.redis_url, set_as_current=False)
        publisher.conf.update(conf)

        def publish(messages: Sequence[dict[str, Any]], size: int) -> None:
            for chunk in chunks(messages, size):
                publisher.send_task(RAW_TASK, args=(list(chunk),), queue=queue, retry=True,
                                    retry_policy=RETRY_POLICY)

        def done() -> int:
            return int(self.redis.get(key) or 0)

        logs = [case_dir / f"worker{i}.log" for i in range(layout.procs)]
        handles = [p.open("wb") for p in logs]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        procs = [subprocess.Popen(
            [sys.executable, "-m", "benchmarks.pipeline", "_raw-worker", "--spec", str(spec_path),
             "--name", f"gwbench-{tag}-{i}@%h"], cwd=ROOT, env=env, stdout=h,
            stderr=subprocess.STDOUT) for i, h in enumerate(handles)]
        try:
            wait_for(lambda: workers_ready(logs), what="raw workers ready", procs=procs,
                     logs=logs, timeout=READY_TIMEOUT_S, poll=0.1)
            warm = [r.to_message() for r in self.warm_records[:layout.procs * layout.concurrency
                                                               * 2 * min(batch_size, 20)]]
            publish(warm, min(batch_size, 20))
            wait_for(lambda: done() >= len(warm), what="raw warm-up", procs=procs, logs=logs,
                     timeout=READY_TIMEOUT_S, poll=0.01)
            self.redis.set(key, 0)
            messages = self.messages[:n]
            started = time.perf_counter()
            publish(messages, batch_size)
            published = time.perf_counter()
            wait_for(lambda: done() >= n, what=f"{n} raw items", procs=procs, logs=logs,
                     timeout=DRAIN_TIMEOUT_S, poll=0.005)
            elapsed = time.perf_counter() - started
        finally:
            stop_procs(procs)
            for h in handles:
                h.close()
        return Case(case, n, elapsed, layout, batch_size,
                    {"publish_seconds": round(published - started, 3)})

    # the groundwatch pipeline ------------------------------------------------------------------
    def store_url(self, case_dir: Path) -> str:
        """The case's own empty store: a SQLite file in ``case_dir``, or with ``--store-url``
        a new PostgreSQL schema (dropped at the end of the run)."""
        if not self.args.store_url:
            return f"sqlite:///{case_dir.as_posix()}/groundwatch.db"
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url
        from sqlalchemy.pool import NullPool

        base = make_url(self.args.store_url)
        schema = f"gwbench_{self.run_id}_{case_dir.name}".replace("-", "_")
        admin = create_engine(base, poolclass=NullPool)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        admin.dispose()
        self.schemas.append(schema)
        url = base.update_query_dict({"options": f"-csearch_path={schema}"})
        return url.render_as_string(hide_password=False)

    def drop_schemas(self) -> None:
        if not self.schemas:
            return
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        admin = create_engine(self.args.store_url, poolclass=NullPool)
        with admin.begin() as conn:
            for schema in self.schemas:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
        self.schemas.clear()

    def write_config(self, case_dir: Path, queue: str, scorer: str, layout: Layout,
                     batch_size: int, n: int) -> Path:
        from evaluator import demo_traffic

        columns = "\n".join(f'{k} = "{v}"' for k, v in demo_traffic.COLUMNS.items())
        path = case_dir / "groundwatch.toml"
        path.write_text(f"""\
# Written by benchmarks/pipeline.py for one benchmark case.
[store]
url = "{self.store_url(case_dir)}"
[broker]
url = "{self.redis_url}"
queue = "{queue}"
batch_size = {batch_size}
[source]
name = "bench"
kind = "sql"
poll_interval_s = 0.2
read_batch_rows = {self.args.read_batch_rows}
[source.sql]
url = "sqlite:///{self.log_db(n).as_posix()}"
table = "{demo_traffic.TABLE}"
[source.columns]
{columns}
[sampling]
salt = "bench"
default_rate = 1.0
max_items_per_minute = 0  # no cap
[scoring]
scorer = "{scorer}"
[worker]
pool = "{layout.pool}"
concurrency = {layout.concurrency}
[metrics]
multiproc_dir = "{self.metrics_dir.as_posix()}"
port = 0
""")
        return path

    def score_outcomes(self, scorer: str) -> float:
        from metrics.exporter import snapshot_text

        total = 0.0
        for line in snapshot_text(self.metrics_dir).splitlines():
            if line.startswith("groundwatch_score_outcomes_total{") and \
                    f'scorer="{scorer}"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def run_pipeline(self, scorer: str, layout: Layout, n: int, batch_size: int,
                     case: str) -> Case:
        from evaluator.config import load_config
        from evaluator.store import Store
        from workers.app import make_celery
        from workers.children import spawn_worker
        from workers.sampler import StepResult, build_sampler, celery_enqueue

        tag = self._next(scorer)
        queue = f"gwbench.{self.run_id}.{tag}"
        case_dir = self.tmp / tag
        case_dir.mkdir()
        path = self.write_config(case_dir, queue, scorer, layout, batch_size, n)
        config = load_config(path)
        store = Store.from_config(config.store)  # migrated here, before the workers start
        app = make_celery(config)
        enqueue = celery_enqueue(app, queue)
        metrics_before = self.score_outcomes(scorer)

        def finished() -> int:
            counts = store.queries.count_items_by_status()
            return counts["scored"] + counts["failed"]

        logs = [case_dir / f"worker{i}.log" for i in range(layout.procs)]
        handles = [p.open("wb") for p in logs]
        procs = [spawn_worker(str(path), name=f"gwbench-{tag}-{i}@%h", output=h)
                 for i, h in enumerate(handles)]
        try:
            wait_for(lambda: workers_ready(logs), what="groundwatch workers ready", procs=procs,
                     logs=logs, timeout=READY_TIMEOUT_S, poll=0.1)
            warm_size = min(batch_size, 20)
            warm = [r.to_message() for r in
                    self.warm_records[:layout.procs * layout.concurrency * 2 * warm_size]]
            for chunk in chunks(warm, warm_size):
                enqueue(list(chunk))
            wait_for(lambda: finished() >= len(warm), what="pipeline warm-up", procs=procs,
                     logs=logs, timeout=READY_TIMEOUT_S, poll=0.02)

            sampler = build_sampler(config, store.ledger, self.metrics, enqueue)
            timers = instrument_sampler(sampler)
            steps: list[StepResult] = []
            profiler = None
            if self.args.profile and scorer == "noop" and not self.profiled:
                import cProfile

                profiler = cProfile.Profile()
                self.profiled = True
            started = time.perf_counter()
            if profiler is not None:
                profiler.enable()
            sampler.run(threading.Event(), on_step=steps.append, until_idle=True)
            if profiler is not None:
                profiler.disable()
            sampled_at = time.perf_counter()
            target = len(warm) + n
            wait_for(lambda: finished() >= target, what=f"{n} items scored", procs=procs,
                     logs=logs, timeout=DRAIN_TIMEOUT_S, poll=0.02)
            elapsed = time.perf_counter() - started
            counts = store.queries.count_items_by_status()
        finally:
            stop_procs(procs)
            for h in handles:
                h.close()
            sampler_source = locals().get("sampler")
            if sampler_source is not None:
                sampler_source.source.close()
            store.close()
        if profiler is not None:
            import pstats

            print(f"\ncProfile of the sampler ({case}; times inflated by the profiler):")
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(25)
        sampled = sum(s.sampled for s in steps)
        outcomes = self.score_outcomes(scorer) - metrics_before
        sampler_s = sampled_at - started
        extra = {
            "sampled": sampled,
            "scored": counts["scored"] - len(warm),
            "failed": counts["failed"],
            "metrics_score_outcomes": int(outcomes),
            "metrics_ok": int(outcomes) == 4 * (n + len(warm)),
            "sampler_seconds": round(sampler_s, 3),
            "sampler_items_per_s": round(n / sampler_s, 1) if sampler_s > 0 else None,
            "sampler_breakdown_s": {k: round(v, 3) for k, v in timers.items()},
        }
        if sampled != n or counts["failed"]:
            log.warning("%s: sampled %d of %d, %d failed", case, sampled, n, counts["failed"])
        return Case(case, n, elapsed, layout, batch_size, extra)


def instrument_sampler(sampler: Any) -> dict[str, float]:
    """Wrap the sampler's stages with timers (a few perf_counter calls per step of 1000 rows).
    ``decide+rest`` is the step's time minus the named stages."""
    timers: dict[str, float] = {}

    def wrap(obj: Any, attr: str, label: str) -> None:
        inner = getattr(obj, attr)

        def timed(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return inner(*a, **kw)
            finally:
                timers[label] = timers.get(label, 0.0) + time.perf_counter() - t

        setattr(obj, attr, timed)

    wrap(sampler.source, "read", "source.read (SQL + map_row)")
    wrap(sampler.ledger, "add_items", "store.add_items")
    wrap(sampler, "_enqueue", "enqueue (to_message + publish)")
    wrap(sampler, "_count", "metrics (_count)")
    wrap(sampler.ledger, "acquire_lock", "store.acquire_lock")
    wrap(sampler.ledger, "get_cursor", "store.get_cursor")
    wrap(sampler.ledger, "set_cursor", "store.set_cursor")
    wrap(sampler, "step", "step total")
    return timers


# -- in-process breakdown of the worker's per-item cost ---------------------------------------
def worker_breakdown(bench: Bench, scorer: str, n: int, batch_size: int) -> dict[str, Any]:
    """decode → score → store → metrics of :func:`workers.tasks.score_and_record`, in this
    process, on batches of ``batch_size`` (no Celery, no contention). Microseconds per item."""
    from evaluator.config import load_config
    from workers.context import WorkerContext
    from workers.tasks import decode_messages, score_and_record

    case_dir = bench.tmp / bench._next(f"breakdown-{scorer}")
    case_dir.mkdir()
    layout = Layout(1, "solo", 1)
    config = load_config(bench.write_config(case_dir, "unused", scorer, layout, batch_size, n))
    ctx = WorkerContext.build(config)
    ctx.metrics = bench.metrics
    records = bench.records[:n]
    ctx.store.ledger.add_items([(r, "default") for r in records], source="bench")
    timers = {"decode": 0.0, "score": 0.0, "store": 0.0, "total": 0.0}

    def wrap(obj: Any, attr: str, label: str) -> None:
        inner = getattr(obj, attr)

        def timed(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return inner(*a, **kw)
            finally:
                timers[label] += time.perf_counter() - t

        setattr(obj, attr, timed)

    wrap(ctx.scorer, "score_batch", "score")
    wrap(ctx.store.results, "record_batch", "store")
    for chunk in chunks(bench.messages[:n], batch_size):
        t0 = time.perf_counter()
        recs, _bad = decode_messages(chunk)
        t1 = time.perf_counter()
        score_and_record(ctx, recs)
        t2 = time.perf_counter()
        timers["decode"] += t1 - t0
        timers["total"] += t2 - t0
    ctx.close()
    timers["metrics+glue"] = timers["total"] - timers["decode"] - timers["score"] - timers["store"]
    return {k: round(v / n * 1e6, 1) for k, v in timers.items()}


# -- the embedded scorer in this process -------------------------------------------------------
def dev_mixture(n: int, seed: int, data: Path = DEV_DATA) -> list[Any]:
    """``n`` short items drawn evenly (seeded) from :data:`EMBEDDED_SOURCES`, as records."""
    import random

    from evaluator.records import LogRecord

    rng = random.Random(seed)
    per_source = -(-n // len(EMBEDDED_SOURCES))
    now = datetime.now(UTC)
    picked: list[Any] = []
    for source in EMBEDDED_SOURCES:
        short = []
        with (data / f"{source}.jsonl").open(encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                contexts = tuple(str(c) for c in d.get("contexts") or ())
                question, answer = str(d.get("question") or ""), str(d.get("answer") or "")
                if len(question) + len(answer) + sum(map(len, contexts)) <= EMBEDDED_MAX_CHARS:
                    short.append(LogRecord(request_id=str(d["id"]), timestamp=now,
                                           question=question, contexts=contexts, answer=answer))
        picked.extend(rng.sample(short, min(per_source, len(short))))
    rng.shuffle(picked)
    return picked[:n]


def demo_records(n: int) -> list[Any]:
    from evaluator import demo_traffic
    from evaluator.errors import InvalidRecordError
    from evaluator.records import RowLimits, map_row

    records = []
    for i, row in enumerate(demo_traffic.make_rows(n)):
        try:
            records.append(map_row(row, demo_traffic.COLUMNS, limits=RowLimits(),
                                   position=str(i)))
        except InvalidRecordError:
            continue
    return records


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MB."""
    import resource

    fields: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = float(rest.split()[0]) / 1024.0  # kB
    except OSError:
        pass
    peak = fields.get("VmHWM", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    return fields.get("VmRSS", peak), peak


def run_embedded(n: int, *, profile: bool, seed: int = 13, baseline: bool = False) -> Case:
    """The embedded scorer's throughput, its model's ceiling and where its time goes.
    ``baseline``: with the calibration from before the contradiction cues (issue 10), the
    named baseline of ``make bench-quality``."""
    from evaluator.config import Config
    from evaluator.scorers.embedded.calibration import Calibration
    from evaluator.scorers.embedded.scorer import EmbeddedScorer

    bs = EMBEDDED_BATCH
    mixture = dev_mixture(n + bs, seed)
    warm, records = mixture[:bs], mixture[bs:]
    config = Config()
    scorer = (EmbeddedScorer(config.scoring.embedded, calibration=Calibration.load(
        BASELINE_CALIBRATION)) if baseline else EmbeddedScorer.from_config(config))
    enc = scorer.encoder
    load_started = time.perf_counter()
    scorer.score_batch(warm)  # loads the model; warms torch and the tokenizer
    warm_s = time.perf_counter() - load_started

    # (1) + (3): the scorer, with the texts it hands to the model recorded.
    texts: list[str] = []
    inner = enc.encode

    def recording(batch: Sequence[str]) -> Any:
        texts.extend(batch)
        return inner(batch)

    enc.encode = recording  # type: ignore[method-assign,assignment]
    encode0, forward0 = enc.encode_seconds, enc.forward_seconds
    hits0, misses0 = enc.cache_hits, enc.cache_misses
    started = time.perf_counter()
    for chunk in chunks(records, bs):
        scorer.score_batch(chunk)
    elapsed = time.perf_counter() - started
    del enc.encode
    encode_s = enc.encode_seconds - encode0
    forward_s = enc.forward_seconds - forward0
    dev_hits, dev_misses = enc.cache_hits - hits0, enc.cache_misses - misses0

    # (2): the same texts through the model's runtime alone (tokenize and forward pass, no
    # pooling or token weights), same batch size, sorted by length as the encoder does.
    runtime = enc.runtime
    ordered = sorted(texts, key=len)
    t = time.perf_counter()
    for chunk in chunks(ordered, bs):
        runtime.forward(runtime.tokenize(chunk))
    raw_s = time.perf_counter() - t

    # (4): demo traffic repeats its documents, as an app's retrieval does.
    demo = demo_records(300)
    hits0, misses0, cut0 = enc.cache_hits, enc.cache_misses, scorer.truncations
    t = time.perf_counter()
    for chunk in chunks(demo, bs):
        scorer.score_batch(chunk)
    demo_s = time.perf_counter() - t
    hits, misses = enc.cache_hits - hits0, enc.cache_misses - misses0

    # (5), and how much of it the passage cache holds
    rss, peak = rss_mb()
    with enc._cache_lock:
        cached = len(enc._cache)
        cache_mb = enc.cache_bytes / 2**20

    if profile:
        import cProfile
        import pstats

        enc.clear_cache()  # the measured pass started with these passages uncached
        profiler = cProfile.Profile()
        profiler.enable()
        for chunk in chunks(records, bs):
            scorer.score_batch(chunk)
        profiler.disable()
        print(f"\ncProfile of the embedded scorer, {len(records)} dev items (cold cache; "
              "times inflated by the profiler), by own time:")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(25)
    scorer.close()

    lookups = hits + misses
    extra = {
        "embedded_items_per_s": round(len(records) / elapsed, 1),
        "model_embeddings_per_s": round(len(texts) / raw_s, 1) if raw_s > 0 else None,
        "embedded_model_time_share": round(encode_s / elapsed, 3),
        "embedded_forward_time_share": round(forward_s / elapsed, 3),
        "embedded_cache_hit_rate": round(hits / lookups, 3) if lookups else None,
        "embedded_rss_mb": round(rss, 1),
        "embedded_peak_rss_mb": round(peak, 1),
        "embedded_detail": {
            "sources": list(EMBEDDED_SOURCES), "max_item_chars": EMBEDDED_MAX_CHARS,
            "seed": seed, "warmup_seconds_incl_model_load": round(warm_s, 3),
            "texts_encoded": len(texts),
            "scorer_embeddings_per_s": round(len(texts) / encode_s, 1) if encode_s else None,
            "encode_seconds": round(encode_s, 3), "forward_seconds": round(forward_s, 3),
            "raw_model_seconds": round(raw_s, 3),
            "dev_cache_hits": dev_hits, "dev_cache_misses": dev_misses,
            "demo_items": len(demo), "demo_items_per_s": round(len(demo) / demo_s, 1),
            "demo_cache_hits": hits, "demo_cache_misses": misses,
            "demo_truncations": scorer.truncations - cut0,
            "threads": scorer.settings.threads,
            "cache_entries": cached, "cache_mb": round(cache_mb, 1),
        },
    }
    name = "embedded-baseline" if baseline else "embedded"
    return Case(f"{name} (in-process score_batch)", len(records), elapsed,
                Layout(1, "in-process", 1), bs, extra)


# -- reporting --------------------------------------------------------------------------------
def median_case(cases: Sequence[Case]) -> Case:
    """The run with the median throughput (the lower middle one for an even count)."""
    ordered = sorted(cases, key=lambda c: c.items_per_s)
    return ordered[(len(ordered) - 1) // 2]


def print_table(title: str, rows: Sequence[dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(f"{'case':<34} {'layout':<16} {'batch':>5} {'items':>7} {'seconds':>8} "
          f"{'items/s':>9} {'vs raw':>7}")
    for r in rows:
        layout = f"{r['worker_processes']}x {r['pool']} c{r['concurrency']}"
        ratio = f"{r['ratio_vs_raw']:.2f}" if "ratio_vs_raw" in r else "-"
        print(f"{r['case']:<34} {layout:<16} {r['batch_size']:>5} {r['items']:>7} "
              f"{r['seconds']:>8.2f} {r['items_per_s']:>9.0f} {ratio:>7}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from evaluator.config import Config

    defaults = Config()
    p = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=20000, help="items per case (default 20000)")
    p.add_argument("--quick", action="store_true",
                   help="a small run: 2000 items, no pool comparison, no breakdown")
    p.add_argument("--batch-size", type=int, default=defaults.broker.batch_size)
    p.add_argument("--procs", type=int, default=2,
                   help="worker processes (default 2, as `groundwatch run`)")
    p.add_argument("--pool", default=defaults.worker.pool, choices=("solo", "threads", "prefork"))
    p.add_argument("--concurrency", type=int, default=defaults.worker.concurrency)
    p.add_argument("--read-batch-rows", type=int, default=defaults.source.read_batch_rows)
    p.add_argument("--pools", action=argparse.BooleanOptionalAction, default=None,
                   help="also compare one item per task vs batches and four worker layouts "
                        "(default: on, off with --quick)")
    p.add_argument("--pools-items", type=int, default=None,
                   help="items per layout in --pools (default: half of --items)")
    p.add_argument("--breakdown", action=argparse.BooleanOptionalAction, default=None,
                   help="in-process per-item cost of decode/score/store/metrics "
                        "(default: on, off with --quick)")
    p.add_argument("--repeat", type=int, default=None,
                   help="runs of each main case; the table shows the median "
                        "(default 3, 1 with --quick)")
    p.add_argument("--profile", action="store_true",
                   help="cProfile the sampler during the first noop case, and the embedded "
                        "scorer in an extra pass, and print the top")
    p.add_argument("--cases", default="raw,noop,lexical,embedded-baseline,embedded",
                   help="comma-separated subset of raw,noop,lexical,embedded")
    p.add_argument("--embedded-items", type=int, default=200,
                   help="dev items the embedded case scores (default 200)")
    p.add_argument("--store-url", default=None,
                   help="a PostgreSQL URL for groundwatch's store (each case gets a new schema, "
                        "dropped at the end); default: a SQLite file per case")
    p.add_argument("--redis-url", default=REDIS_URL)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--keep", action="store_true", help="keep the temp dir (worker logs, DBs)")
    args = p.parse_args(argv)
    if args.quick:
        args.items = min(args.items, 2000)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.pools is None:
        args.pools = not args.quick
    if args.breakdown is None:
        args.breakdown = not args.quick
    if args.pools_items is None:
        args.pools_items = max(args.batch_size, args.items // 2)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_raw-worker"]:
        p = argparse.ArgumentParser()
        p.add_argument("--spec", required=True)
        p.add_argument("--name", required=True)
        a = p.parse_args(argv[1:])
        return raw_worker_main(a.spec, a.name)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    bench = Bench(args)
    # Before anything imports prometheus_client: the sampler's metrics go to the same
    # multiprocess directory as the workers', as in a real deployment.
    from metrics.multiprocess import setup_multiprocess
    from metrics.registry import Metrics

    setup_multiprocess(bench.metrics_dir, clean=True)
    from evaluator.config import Config

    bench.metrics = Metrics(Config().metrics)
    layout = Layout(args.procs, args.pool, args.concurrency)
    n, bs = args.items, args.batch_size
    wanted = {c.strip() for c in args.cases.split(",") if c.strip()}
    # Redis and the demo log rows only serve the Celery cases (and pools, breakdown).
    uses_redis = bool(wanted & set(PIPELINE_CASES)) or args.pools or args.breakdown
    begun = time.monotonic()
    if uses_redis:
        bench.redis.flushdb()
    results: dict[str, Any] = {}
    main_rows: list[dict[str, Any]] = []
    pool_rows: list[dict[str, Any]] = []
    try:
        if uses_redis:
            bench.prepare(max(n, args.pools_items if args.pools else 0))
        print(f"groundwatch pipeline benchmark: {n} items, batch {bs}, {layout.label}, "
              f"{os.cpu_count()} CPUs, temp dir {bench.tmp}", flush=True)
        runs: dict[str, list[Case]] = {}
        names = {"raw": "raw celery (no-op task)", "noop": "pipeline noop",
                 "lexical": "pipeline lexical"}
        for rep in range(args.repeat):  # interleaved, so drifts in machine load hit all cases
            for key in PIPELINE_CASES:
                if key not in wanted:
                    continue
                if key == "raw":
                    c = bench.run_raw(layout, n, bs, names[key])
                else:
                    c = bench.run_pipeline(key, layout, n, bs, names[key])
                runs.setdefault(key, []).append(c)
                print(f"  run {rep + 1}/{args.repeat} {names[key]}: {c.items_per_s:.0f} items/s",
                      flush=True)
        medians = {key: median_case(cs) for key, cs in runs.items()}
        raw_rate = medians["raw"].items_per_s if "raw" in medians else None
        for key, c in medians.items():
            row = c.as_dict(raw_rate)
            row["runs_items_per_s"] = [round(x.items_per_s, 1) for x in runs[key]]
            main_rows.append(row)
            if key != "raw":
                results[f"pipeline_{key}_items_per_s"] = round(c.items_per_s, 1)
        if raw_rate:
            results["raw_celery_items_per_s"] = round(raw_rate, 1)
            for scorer in ("noop", "lexical"):
                if f"pipeline_{scorer}_items_per_s" in results:
                    results[f"{scorer}_vs_raw_ratio"] = round(
                        results[f"pipeline_{scorer}_items_per_s"] / raw_rate, 3)
        if "embedded-baseline" in wanted:
            b = run_embedded(args.embedded_items, profile=False, baseline=True)
            main_rows.append(b.as_dict())
            results["embedded_baseline_items_per_s"] = b.extra["embedded_items_per_s"]
            results["embedded_baseline_rss_mb"] = b.extra["embedded_rss_mb"]
            print(f"  embedded-baseline: {b.items_per_s:.1f} items/s", flush=True)
        if "embedded" in wanted:
            e = run_embedded(args.embedded_items, profile=args.profile)
            main_rows.append(e.as_dict())
            results.update({k: v for k, v in e.extra.items() if k.startswith(
                ("embedded_", "model_")) and k != "embedded_detail"})
            print(f"  embedded: {e.items_per_s:.1f} items/s", flush=True)
        print_table(f"main cases (median of {args.repeat} run(s); embedded: one run)",
                    main_rows)
        if "embedded" in wanted:
            d = e.extra["embedded_detail"]
            print(f"  embedded: {e.extra['embedded_items_per_s']} items/s; raw model "
                  f"{e.extra['model_embeddings_per_s']} embeddings/s vs "
                  f"{d['scorer_embeddings_per_s']} inside the scorer "
                  f"({d['texts_encoded']} texts); model time share "
                  f"{e.extra['embedded_model_time_share']} (forward pass alone "
                  f"{e.extra['embedded_forward_time_share']}); demo cache hit rate "
                  f"{e.extra['embedded_cache_hit_rate']}; RSS {e.extra['embedded_rss_mb']} MB "
                  f"(peak {e.extra['embedded_peak_rss_mb']}; passage cache {d['cache_mb']} MB "
                  f"in {d['cache_entries']} entries)")

        if args.breakdown:
            results["worker_breakdown_us_per_item"] = {
                s: worker_breakdown(bench, s, min(n, 5000), bs) for s in ("noop", "lexical")}
            print("\nworker cost per item in one process, no contention (microseconds):")
            for s, d in results["worker_breakdown_us_per_item"].items():
                print(f"  {s:<8} " + "  ".join(f"{k} {v}" for k, v in d.items()))

        if args.pools:
            pn = args.pools_items
            default_layout = Layout(2, "threads", 2)
            per_item_n = max(1, min(pn, 4000))
            c = bench.run_raw(default_layout, per_item_n, 1, "raw, one item per task")
            pool_rows.append(c.as_dict())
            layouts = [Layout(2, "solo", 1), Layout(2, "threads", 2), Layout(1, "threads", 2),
                       Layout(1, "prefork", 2)]
            for lay in layouts:
                r = bench.run_raw(lay, pn, bs, f"raw, batch {bs}")
                pool_rows.append(r.as_dict())
                print(f"  raw {lay.label}: {r.items_per_s:.0f} items/s", flush=True)
                c = bench.run_pipeline("noop", lay, pn, bs, f"pipeline noop, batch {bs}")
                pool_rows.append(c.as_dict(r.items_per_s))  # ratio to the same layout's raw
                print(f"  noop {lay.label}: {c.items_per_s:.0f} items/s", flush=True)
            print_table("worker layouts", pool_rows)
    finally:
        if uses_redis:
            bench.redis.flushdb()
        bench.drop_schemas()
        if args.keep:
            print(f"kept {bench.tmp}")
        else:
            shutil.rmtree(bench.tmp, ignore_errors=True)

    out = {
        **results,
        "items": n,
        "batch_size": bs,
        "pool": layout.pool,
        "worker_processes": layout.procs,
        "concurrency": layout.concurrency,
        "store": "postgresql" if args.store_url else "sqlite",
        "read_batch_rows": args.read_batch_rows,
        "repeat": args.repeat,
        "git_commit": git_commit(),
        "python_version": platform.python_version(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "command": "python -m benchmarks.pipeline " + " ".join(argv),
        "provenance": measured_on(),
        "wall_seconds": round(time.monotonic() - begun, 1),
        "cases": main_rows,
        "pools": pool_rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {args.out} in {out['wall_seconds']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
