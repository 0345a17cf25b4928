"""The long-running processes, wired from config: worker, sampler, exporter, and all-in-one.

Each ``run_*`` function owns its process through one :class:`workers.process.ProcessContext`:
it sets up prometheus_client's multiprocess directory before any metric exists, builds the
resources the command needs, and releases them on the way out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

from evaluator.config import ENV_PREFIX, Config
from evaluator.scorers import check_scorer_name
from workers.process import ProcessContext

if TYPE_CHECKING:
    from workers.sampler import StepResult

log = logging.getLogger("groundwatch")


def stop_on_signals(stop: threading.Event) -> None:
    """Set ``stop`` on SIGTERM and SIGINT (main thread only)."""
    def handler(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


# -- worker ---------------------------------------------------------------------------------
def worker_argv(config: Config, *, name: str | None = None, loglevel: str = "INFO") -> list[str]:
    w = config.worker
    argv = ["worker", "--pool", w.pool, "--concurrency", str(w.concurrency),
            "--queues", config.broker.queue, "--loglevel", loglevel,
            "--without-gossip", "--without-mingle", "--without-heartbeat"]
    if name:
        argv += ["--hostname", name]
    return argv


def run_worker(config: Config, *, name: str | None = None, loglevel: str = "INFO") -> None:
    """Run a Celery worker in this process until it is told to stop."""
    check_scorer_name(config.scoring.scorer, path=config.path)
    with ProcessContext(config) as process:
        app = process.celery
        start_worker_heartbeat(process)
        app.worker_main(worker_argv(config, name=name, loglevel=loglevel))


def start_worker_heartbeat(process: ProcessContext) -> Any:
    """The worker's heartbeat, beating from a thread of this (the main) process from now on,
    through the warm-up, until ``process`` closes. Started before Celery forks its prefork
    children, so that they share the activity counters."""
    from celery.signals import worker_ready

    from workers.app import visibility_timeout
    from workers.health import WorkerActivity, worker_status

    app = process.celery
    activity = app.groundwatch_activity = WorkerActivity()
    ready = threading.Event()

    def on_ready(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            ready.set()

    worker_ready.connect(on_ready, weak=False)
    stuck_after_s = float(visibility_timeout(process.config))
    return process.heartbeat("worker", lambda: worker_status(activity, stuck_after_s, ready))


def spawn_worker(config_path: str, *, env: dict[str, str] | None = None,
                 name: str | None = None, output: IO[bytes] | None = None,
                 ignore_overrides: bool = False) -> subprocess.Popen[bytes]:
    """Start ``groundwatch worker`` as a child process (same process group); its output goes
    to ``output`` (default: ours). ``ignore_overrides`` drops GROUNDWATCH__* variables, for a
    self-contained config such as the demo's."""
    cmd = [sys.executable, "-m", "evaluator.cli", "--config", config_path, "worker"]
    if name:
        cmd += ["--name", name]
    base = dict(os.environ)
    if ignore_overrides:
        base = {k: v for k, v in base.items() if not k.startswith(ENV_PREFIX)}
    return subprocess.Popen(cmd, env={**base, **(env or {})}, stdout=output,
                            stderr=subprocess.STDOUT if output is not None else None,
                            preexec_fn=_die_with_parent)


def _die_with_parent() -> None:
    """In the child before exec: ask Linux for SIGTERM when the parent dies, so a demo or
    `run` killed with SIGKILL leaves no orphan worker behind (a no-op elsewhere)."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def stop_processes(procs: list[subprocess.Popen[bytes]], timeout_s: float = 20.0) -> None:
    """SIGTERM (Celery's warm shutdown: finish the current batch), then SIGKILL if needed."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


# -- broker helpers -------------------------------------------------------------------------
def queue_depth_probe(app: Any, queue: str) -> Callable[[], dict[str, int]]:
    """A callable returning the queue's message count, for the exporter's scrape."""
    def probe() -> dict[str, int]:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            channel = conn.default_channel
            try:
                ok = channel.queue_declare(queue=queue, passive=True)
            except Exception as exc:  # the queue does not exist until the first publish
                if "NOT_FOUND" in str(exc) or "not found" in str(exc).lower():
                    return {queue: 0}
                raise
            return {queue: int(ok.message_count)}

    return probe


# -- exporter -------------------------------------------------------------------------------
def build_exporter(config: Config, store: Any, app: Any, *, port: int | None = None) -> Any:
    from datetime import UTC, datetime

    from metrics.exporter import Exporter

    depth = queue_depth_probe(app, config.broker.queue)

    def oldest() -> float | None:
        ts = store.queries.oldest_unscored_sampled_at()
        return None if ts is None else max(0.0, (datetime.now(UTC) - ts).total_seconds())

    def health() -> dict[str, Any]:
        checks: dict[str, Any] = {}
        try:
            store.queries.count_items_by_status()
            checks["store"] = "ok"
        except Exception as exc:
            checks["store"] = f"error: {type(exc).__name__}"
        try:
            depth()
            checks["broker"] = "ok"
        except Exception as exc:
            checks["broker"] = f"error: {type(exc).__name__}"
        # The exporter itself is up and still serves what it can: a dependency that is down
        # makes it "degraded" (HTTP 503), with the failing check named beside it.
        checks["status"] = "ok" if all(v == "ok" for v in checks.values()) else "degraded"
        return checks

    return Exporter(config.metrics.multiproc_dir, config.metrics.host,
                    config.metrics.port if port is None else port,
                    queue_depth=depth, oldest_unscored=oldest, health=health)


def run_exporter(config: Config) -> None:
    with ProcessContext(config, mark_dead=True) as process:
        exporter, port = process.exporter()
        log.info("exporter on http://%s:%d/metrics", config.metrics.host, port)
        process.heartbeat("exporter", exporter_status(exporter))
        stop = threading.Event()
        stop_on_signals(stop)
        stop.wait()


def exporter_status(exporter: Any, timeout_s: float = 5.0) -> Callable[[], Any]:
    """The exporter's beat: healthy while its own HTTP server answers ``/livez`` (which touches
    neither the store nor the broker: a dependency that is down is /healthz's business)."""
    import urllib.error
    import urllib.request

    from workers.health import Status

    def status() -> Status:
        host, port = exporter.address
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        url = f"http://[{host}]:{port}/livez" if ":" in host else f"http://{host}:{port}/livez"
        started = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                code = response.status
        except (OSError, urllib.error.URLError) as exc:
            return Status({"port": port}, healthy=False,
                          problem=f"its HTTP server did not answer {url}: {exc}")
        return Status({"port": port, "livez": code,
                       "probe_ms": round(1000 * (time.monotonic() - started), 1)})

    return status


# -- sampler --------------------------------------------------------------------------------
def backfill_config(config: Config, name: str, rate: float | None = None) -> Config:
    """The config a backfill runs with: its own source name (so its own cursor and lock),
    optionally another default rate, and no reload (an edit of the file must not undo
    ``rate``)."""
    source = config.source.model_copy(update={"name": f"{config.source.name}.backfill.{name}"})
    sampling = (config.sampling if rate is None
                else config.sampling.model_copy(update={"default_rate": rate}))
    return config.model_copy(update={"source": source, "sampling": sampling, "path": None})


def run_backfill(config: Config, name: str, *, since: datetime | None = None,
                 until: datetime | None = None, rate: float | None = None,
                 stop: threading.Event | None = None,
                 on_progress: Callable[[StepResult], None] | None = None) -> StepResult:
    """Replay the source's rows in [since, until) once under the sampling policy (``rate``
    overrides its default rate), enqueue the sampled items not already stored, and return
    the totals (also given to ``on_progress`` after every step). Re-running the same
    ``name`` resumes where it stopped."""
    from workers.sampler import Backfill, StepResult

    config = backfill_config(config, name, rate)
    with ProcessContext(config) as process:
        store = process.store
        sampler = process.sampler(backfill=Backfill(since, until))
        # A first run starts at `since` in the database's own order (timestamp mode), instead
        # of reading the table from its start and dropping the rows before it.
        cursor_at = getattr(sampler.source, "cursor_at", None)
        if (since is not None and cursor_at is not None and config.source.kind == "sql"
                and config.source.sql.mode == "timestamp"
                and store.ledger.get_cursor(config.source.name) is None):
            store.ledger.reset_cursor(config.source.name, cursor_at(since))
        stop = stop or threading.Event()
        stop_on_signals(stop)
        running = StepResult()

        def on_step(step: StepResult) -> None:
            running.add(step)
            if on_progress is not None:
                on_progress(running)

        return sampler.run(stop, until_idle=True, on_step=on_step)


def run_sampler(config: Config, *, stop: threading.Event | None = None,
                until_idle: bool = False) -> StepResult:
    """Run the sampler until stopped (or caught up, with ``until_idle``); return its totals."""
    from workers.recovery import broker_loss_hook

    with ProcessContext(config) as process:
        heartbeat = process.heartbeat("sampler")  # the sampler starts it
        sampler = process.sampler(heartbeat=heartbeat)
        stop = stop or threading.Event()
        stop_on_signals(stop)
        return sampler.run(stop, until_idle=until_idle,
                           on_step=broker_loss_hook(config, process.store.ledger, process.enqueue))
