"""Per-process resources of a worker: the store, the scorer, the metrics.

Built in Celery's ``worker_process_init`` (prefork children) or ``worker_init`` (solo and
threads pools, whose tasks run in the main process), closed at shutdown. Never at import time:
an engine or a model built before a fork is shared, and broken, in every child.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

from evaluator.calibration.apply import Calibrator
from evaluator.calibration.refit import RefitScheduler
from evaluator.config import Config
from evaluator.judge.golden import GoldenScheduler, build_golden_judge
from evaluator.scorers import Scorer, build_judge, build_scorer
from evaluator.scoring import Scoring
from evaluator.store import Store
from metrics.registry import Metrics

log = logging.getLogger("groundwatch.worker")


@dataclass
class WorkerContext:
    config: Config
    store: Store
    scoring: Scoring
    metrics: Metrics
    pid: int
    # The golden set's re-judging thread (judge.golden.path set and a judge configured).
    golden: GoldenScheduler | None = None
    # The calibration maps' refit thread (a judge configured, [calibration] refit on).
    refit: RefitScheduler | None = None

    @property
    def scorer(self) -> Scorer:
        """The scorer that scores every item (``[scoring] scorer``)."""
        return self.scoring.primary

    @classmethod
    def build(cls, config: Config) -> WorkerContext:
        store = Store.from_config(config.store)
        built: list[Scorer] = []
        try:
            scorer = build_scorer(config)
            built.append(scorer)
            judge = build_judge(config)
            if judge is not None:
                built.append(judge)
            for s in built:
                _warm(s)
        except BaseException:
            for s in built:
                s.close()
            store.close()
            raise
        metrics = Metrics(config.metrics)
        golden = _golden_scheduler(config, store, metrics, scorer)
        refit = _refit_scheduler(config, store, metrics, scorer, judge)
        log.info("worker context ready", extra={"pid": os.getpid(), "scorer": scorer.name})
        scoring = Scoring([scorer], judge=judge, cascade=config.judge.cascade,
                          salt=config.sampling.salt.get_secret_value(),
                          calibrator=_calibrator(config, store, scorer))
        return cls(config, store, scoring, metrics, os.getpid(), golden, refit)

    def close(self) -> None:
        if self.refit is not None:
            self.refit.stop()
        if self.golden is not None:
            self.golden.stop()
            self.golden.scorer.close()
        try:
            for scorer in self.scoring.all_scorers:
                scorer.close()
        finally:
            self.store.close()


def _golden_scheduler(config: Config, store: Store, metrics: Metrics,
                      cheap: Scorer) -> GoldenScheduler | None:
    """The golden set's scheduler, started, with a judge of its own (its cache off), or None
    when there is no golden set or no judge. Every worker process holds one; the store's
    claim lets one of them run the set per interval. ``cheap`` (the worker's scorer of every
    item) is measured against the golden items' labels beside the judge."""
    if not config.judge.golden.path:
        return None
    judge = build_golden_judge(config)
    if judge is None:
        log.warning("judge.golden.path is set but no judge is configured: the golden set "
                    "is not run")
        return None
    try:
        _warm(judge)
        scheduler = GoldenScheduler(config.judge.golden, judge, store.golden, metrics,
                                    cheap=cheap, thresholds=config.scoring.thresholds)
    except BaseException:
        judge.close()
        raise
    scheduler.start()
    return scheduler


def _calibrator(config: Config, store: Store, scorer: Scorer) -> Calibrator | None:
    """The calibration maps of the scorer that scores every item, read from the store every
    ``[calibration] refresh_s`` (None with calibration off)."""
    if not config.calibration.enabled:
        return None
    return Calibrator(scorer.name, scorer.version,
                      lambda: store.calibration.newest_maps(scorer.name, scorer.version,
                                                            usable_only=True),
                      refresh_s=config.calibration.refresh_s)


def _refit_scheduler(config: Config, store: Store, metrics: Metrics, scorer: Scorer,
                     judge: Scorer | None) -> RefitScheduler | None:
    """The refit of the maps from the judge's pairs, started, or None without a judge beside
    the cheap scorer or with the refit off. Every worker process holds one; the store's claim
    lets one of them refit per interval."""
    if judge is None or not config.calibration.enabled or \
            config.calibration.refit_interval_s <= 0:
        return None
    scheduler = RefitScheduler(config.calibration, store.calibration, store.golden,
                               metrics.calibration, scorer=scorer.name,
                               scorer_version=scorer.version,
                               thresholds=config.scoring.thresholds)
    scheduler.start()
    return scheduler


def _warm(scorer: Scorer) -> None:
    """Warm before the worker takes a message: a model loaded by the first batch makes that
    batch outlive the visibility timeout, and Redis hands it to a second worker. A user's own
    scorer (module:Factory) may predate warm_up(): it then loads lazily."""
    started = time.perf_counter()
    scorer.warm_up()
    warm_s = time.perf_counter() - started
    log.info("scorer %s warm in %.2fs", scorer.name, warm_s,
             extra={"pid": os.getpid(), "scorer": scorer.name, "warm_up_s": warm_s})


class ContextHolder:
    """Holds one :class:`WorkerContext` per process for one Celery app.

    ``get()`` builds it lazily if no signal did (a task run by a pool whose start-up signal we
    did not see), and rebuilds it after a fork (the pid changed).
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self._ctx: WorkerContext | None = None
        self._lock = threading.Lock()

    def get(self) -> WorkerContext:
        ctx = self._ctx
        if ctx is not None and ctx.pid == os.getpid():
            return ctx
        with self._lock:
            if self._ctx is None or self._ctx.pid != os.getpid():
                self._ctx = WorkerContext.build(self.config)
            return self._ctx

    def close(self) -> None:
        with self._lock:
            if self._ctx is not None and self._ctx.pid == os.getpid():
                self._ctx.close()
            self._ctx = None
