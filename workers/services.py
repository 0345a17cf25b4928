"""The long-running processes, wired from config: worker, sampler, exporter, and all-in-one.

Each ``run_*`` function owns its process through one :class:`workers.process.ProcessContext`:
it sets up prometheus_client's multiprocess directory before any metric exists, builds the
resources the command needs, and releases them on the way out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from celery.signals import worker_ready

from evaluator.config import Config
from evaluator.scorers import check_scorer_name
from workers.children import spawn_worker, stop_on_signals
from workers.dependencies import require_dependencies
from workers.exposition import exporter_status
from workers.health import WorkerActivity, worker_status
from workers.process import ProcessContext
from workers.recovery import broker_loss_hook
from workers.sampler import BACKFILL_INFIX, Backfill, StepResult, live_source

log = logging.getLogger("groundwatch")


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
    require_dependencies(config)  # before Celery says "ready." and the heartbeat starts
    with ProcessContext(config) as process:
        app = process.celery
        start_worker_heartbeat(process)
        app.worker_main(worker_argv(config, name=name, loglevel=loglevel))


def start_worker_heartbeat(process: ProcessContext) -> Any:
    """The worker's heartbeat, beating from a thread of this (the main) process from now on,
    through the warm-up, until ``process`` closes. Started before Celery forks its prefork
    children, so that they share the activity counters."""
    app = process.celery
    activity = app.runtime.activity = WorkerActivity()
    ready = threading.Event()

    def on_ready(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            ready.set()

    worker_ready.connect(on_ready, weak=False)
    stuck_after_s = float(app.runtime.visibility_s)
    return process.heartbeat("worker", lambda: worker_status(activity, stuck_after_s, ready))


# -- exporter -------------------------------------------------------------------------------
def run_exporter(config: Config) -> None:
    require_dependencies(config)
    with ProcessContext(config, mark_dead=True) as process:
        exporter, port = process.exporter()
        log.info("exporter on http://%s:%d/metrics", config.metrics.host, port)
        process.heartbeat("exporter", exporter_status(exporter))
        stop = threading.Event()
        stop_on_signals(stop)
        stop.wait()


# -- sampler --------------------------------------------------------------------------------
def backfill_config(config: Config, name: str, rate: float | None = None) -> Config:
    """The config a backfill runs with: its own source name (so its own cursor and lock),
    optionally another default rate, and no reload (an edit of the file must not undo
    ``rate``)."""
    source = config.source.model_copy(update={"name": f"{config.source.name}{BACKFILL_INFIX}{name}"})
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
    config = backfill_config(config, name, rate)
    with ProcessContext(config) as process:
        store = process.store
        sampler = process.sampler(backfill=Backfill(since, until))
        # A first run starts at `since` in the database's own order (timestamp mode), instead
        # of reading the table from its start and dropping the rows before it.
        if since is not None and store.ledger.get_cursor(config.source.name) is None:
            start = sampler.source.backfill_start(since)
            if start is not None:
                store.ledger.reset_cursor(config.source.name, start)
        stop = stop or threading.Event()
        stop_on_signals(stop)
        running = StepResult()
        last: list[StepResult] = []

        def on_step(step: StepResult) -> None:
            running.add(step)
            last[:] = [step]
            if on_progress is not None:
                on_progress(running)

        totals = sampler.run(stop, until_idle=True, on_step=on_step)
        if last and (last[0].done or (last[0].idle and not stop.is_set())):
            # It read every row it was given (to `until`, or all that the table holds): the
            # live sampler may count the rows behind its cursor as read from now on.
            live = live_source(config.source.name)
            since_text = since.isoformat() if since is not None else "the start"
            store.ledger.request_recount(live, by=f"backfill {config.source.name!r} (from "
                                                   f"{since_text})")
            log.info("backfill %r ran to its end: the live sampler of %r resets its missed-rows "
                     "count on its next step", config.source.name, live)
        return totals


def run_sampler(config: Config, *, stop: threading.Event | None = None,
                until_idle: bool = False) -> StepResult:
    """Run the sampler until stopped (or caught up, with ``until_idle``); return its totals."""
    require_dependencies(config)
    with ProcessContext(config) as process:
        heartbeat = process.heartbeat("sampler")  # the sampler starts it
        sampler = process.sampler(heartbeat=heartbeat)
        stop = stop or threading.Event()
        stop_on_signals(stop)
        return sampler.run(stop, until_idle=until_idle,
                           on_step=broker_loss_hook(config, process.store.ledger, process.enqueue))


def run_all(config: Config, *, workers: int = 2) -> int:
    """Sampler in this process, ``workers`` worker processes (restarted when they die), and
    the exporter in a thread. Returns 0 after a stop (SIGTERM, SIGINT), 1 when a worker
    crash-loops (workers/supervisor.py)."""
    assert config.path is not None
    config_path = config.path
    require_dependencies(config)
    with ProcessContext(config, metrics="clean") as process:
        store = process.store
        stop = threading.Event()
        stop_on_signals(stop)
        exporter, port = process.exporter()
        # Registered after the exporter, so stopped before it: /metrics serves their shutdown.
        supervisor = process.supervised_workers(
            lambda name: spawn_worker(config_path, name=name),
            [f"gw{i}@%h" for i in range(workers)], stop)
        log.info("exporter on http://%s:%d/metrics; %d workers", config.metrics.host, port,
                 workers)
        # One process, two roles: each beats as itself (the workers beat on their own).
        process.heartbeat("exporter", exporter_status(exporter))
        sampler = process.sampler(heartbeat=process.heartbeat("sampler"))
        sampler.run(stop, on_step=broker_loss_hook(config, store.ledger, process.enqueue))
    return 1 if supervisor.gave_up else 0
