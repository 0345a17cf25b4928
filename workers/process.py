"""What one groundwatch process holds, built in one place and closed in reverse order.

Every command (worker, sampler, backfill, exporter, run, demo, and the CLI's store commands)
opens a :class:`ProcessContext`: it sets up prometheus_client's multiprocess directory before
any metric exists (when the process exports metrics), then builds what the command asks for
(the store, the Celery app, the sampler, the exporter, heartbeats, worker processes) the first
time it is asked, and on exit closes all of it, last built first, and marks the process dead
for the metrics directory where it wrote metrics (after arq's ``Worker``, which owns the
start-up and shutdown of everything its process holds).

Importing this module imports neither celery nor prometheus_client: each resource imports its
own module when first built, so ``groundwatch explain`` or ``report`` never loads them.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from evaluator.config import Config
from evaluator.sources import Source, build_source
from evaluator.store import Store
from metrics.multiprocess import mark_process_dead, setup_multiprocess
from workers.children import stop_processes, stop_timeout_s
from workers.dependencies import open_store
from workers.supervisor import Supervisor

if TYPE_CHECKING:
    from metrics.exporter import Exporter
    from metrics.registry import Metrics
    from workers.health import Heartbeat, Status
    from workers.sampler import Backfill, Enqueue, Sampler

log = logging.getLogger("groundwatch")


class ProcessContext:
    """The resources of one process. ``metrics`` is None for a process that exports no
    metrics (the CLI's store commands), ``"clean"`` for one that owns the metrics directory
    and empties it first (``run``, ``demo``), ``"keep"`` for one of several processes that
    share it. ``mark_dead`` tells prometheus_client's multiprocess mode, on exit, that this
    process's live gauges are gone (the exporter, and a worker's own signal handler, do)."""

    def __init__(self, config: Config, *, metrics: str | None = "keep",
                 mark_dead: bool = False) -> None:
        if metrics not in (None, "keep", "clean"):
            raise ValueError(f"metrics must be None, 'keep' or 'clean', not {metrics!r}")
        self.config = config
        self._metrics_mode = metrics
        self._mark_dead = mark_dead
        self._stack = contextlib.ExitStack()
        self._store: Store | None = None
        self._metrics: Metrics | None = None
        self._app: Any = None
        self._enqueue: Enqueue | None = None

    # -- lifetime ---------------------------------------------------------------------------
    def __enter__(self) -> ProcessContext:
        if self._metrics_mode is not None:
            setup_multiprocess(self.config.metrics.multiproc_dir,
                               clean=self._metrics_mode == "clean")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close everything built, last built first; idempotent."""
        try:
            self._stack.close()
        finally:
            if self._mark_dead:
                mark_process_dead()
                self._mark_dead = False

    def on_close(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on close (in reverse order of registration, with the rest)."""
        self._stack.callback(callback)

    # -- resources --------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        if self._store is None:
            # One line naming store.url (not a traceback) when it cannot be opened.
            self._store = open_store(self.config)
            self._stack.callback(self._store.close)
        return self._store

    @property
    def metrics(self) -> Metrics:
        if self._metrics_mode is None:
            raise RuntimeError("this ProcessContext was opened with metrics=None")
        if self._metrics is None:
            # prometheus_client: after setup_multiprocess (metrics.multiprocess), and never
            # for the store commands, which export nothing.
            from metrics.registry import Metrics

            self._metrics = Metrics(self.config.metrics)
        return self._metrics

    @property
    def celery(self) -> Any:
        """The Celery app (the broker's client; a worker's app registers the task)."""
        if self._app is None:
            # Celery: only the processes that talk to the broker load it, never `report`.
            from workers.app import make_celery

            self._app = make_celery(self.config)
        return self._app

    @property
    def enqueue(self) -> Enqueue:
        if self._enqueue is None:
            from workers.sampler import celery_enqueue  # Celery, as for `celery` above

            self._enqueue = celery_enqueue(self.celery, self.config.broker.queue)
        return self._enqueue

    def source(self) -> Source:
        """The configured log source, closed on exit (a sampler builds its own)."""
        source = build_source(self.config)
        self._stack.callback(source.close)
        return source

    def sampler(self, *, heartbeat: Heartbeat | None = None,
                backfill: Backfill | None = None) -> Sampler:
        """A sampler on this process's store, metrics and broker; its source closes on exit."""
        from workers.sampler import build_sampler  # Celery, as for `celery` above

        sampler = build_sampler(self.config, self.store.ledger, self.metrics, self.enqueue,
                                heartbeat=heartbeat, backfill=backfill)
        self._stack.callback(sampler.source.close)
        return sampler

    def heartbeat(self, role: str, status: Callable[[], Status] | None = None) -> Heartbeat:
        """The heartbeat of ``role``, started now when ``status`` is given; stops on exit."""
        from workers.health import heartbeat_for  # Redis's client, for the roles that beat

        beat = heartbeat_for(self.config, role, self.metrics)
        if status is not None:
            beat.start(status)
        self._stack.callback(beat.stop)
        return beat

    def exporter(self, *, port: int | None = None) -> tuple[Exporter, int]:
        """The /metrics server, started; stops on exit. Returns it and its port."""
        # The exporter loads prometheus_client's exposition and HTTP server: only the
        # processes that serve /metrics import them.
        from workers.exposition import build_exporter

        exporter = build_exporter(self.config, self.store, self.celery, port=port)
        bound = exporter.start()
        self._stack.callback(exporter.stop)
        return exporter, bound

    def workers(self, procs: Sequence[subprocess.Popen[bytes]]) -> None:
        """Worker processes this process started: stopped (warm shutdown) on exit."""
        self._stack.callback(stop_processes, list(procs),
                             stop_timeout_s(self.config.worker.stop_grace_s))

    def supervised_workers(self, spawn: Callable[[str], subprocess.Popen[bytes]],
                           names: Sequence[str], stop: threading.Event) -> Supervisor:
        """Worker processes started with ``spawn(name)`` and restarted when they die (``[run]``
        limits, counted in this process's metrics); ``stop`` is set if they crash-loop. On
        exit: no more restarts, then stopped (warm shutdown)."""
        run = self.config.run
        supervisor = Supervisor(spawn, names, stop, role="worker", max_restarts=run.max_restarts,
                                window_s=run.restart_window_s, backoff_s=run.restart_backoff_s,
                                on_restart=self.metrics.health.observe_restart)
        self._stack.callback(supervisor.close, stop_timeout_s(self.config.worker.stop_grace_s))
        return supervisor
