"""The sampler loop: source → policy → store → queue → cursor.

One iteration (:meth:`Sampler.step`):
1. take or renew the source's cursor lock (a second replica waits here);
2. read the next slice after the stored cursor;
3. decide every record (deterministic hash, then caps);
4. store the sampled items as ``queued`` and enqueue them in batches;
5. only then store rejections, count metrics and advance the cursor.
A crash or a failed enqueue before step 5 leaves the cursor where it was: the slice is read
again and re-sent (the store and the scores are idempotent), never skipped.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from evaluator.config import Config, load_config
from evaluator.errors import ConfigError, LockHeldError
from evaluator.records import LogRecord
from evaluator.sampling import SamplingPolicy, Verdict
from evaluator.sources import build_source
from evaluator.sources.base import Source
from evaluator.store import Store
from metrics.registry import Metrics
from workers.recovery import describe_outage

log = logging.getLogger("groundwatch.sampler")

Enqueue = Callable[[list[dict[str, Any]]], None]


@dataclass
class StepResult:
    """What one iteration did (for logs, tests and the demo's progress line)."""

    locked: bool = True
    rows: int = 0
    sampled: int = 0
    skipped: int = 0
    capped: int = 0
    rejected: int = 0
    batches: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)
    outside: int = 0  # backfill: records outside the time range
    already_stored: int = 0  # backfill: sampled records that were already items
    done: bool = False  # backfill: the source has passed the end of the range

    @property
    def idle(self) -> bool:
        return self.locked and self.rows == 0

    def add(self, step: StepResult) -> None:
        """Sum ``step`` into this result (running totals over a run)."""
        for name in ("rows", "sampled", "skipped", "capped", "rejected", "batches", "outside",
                     "already_stored"):
            setattr(self, name, getattr(self, name) + getattr(step, name))
        for rule, n in step.by_rule.items():
            self.by_rule[rule] = self.by_rule.get(rule, 0) + n
        self.done = self.done or step.done


@dataclass(frozen=True)
class Backfill:
    """A one-off replay of rows the live sampler may already have read (``groundwatch
    backfill``): only records with ``since <= timestamp < until`` are decided, records already
    stored as items are not sent again, and the rows are not counted again in the app and
    log metrics (the live sampler counted them). It runs under its own source name, so the
    live cursor and lock are untouched, and stops at the first record at or after ``until``.
    """

    since: datetime | None = None
    until: datetime | None = None

    def contains(self, ts: datetime) -> bool:
        return (self.since is None or ts >= self.since) and (self.until is None or ts < self.until)

    def passed(self, ts: datetime) -> bool:
        return self.until is not None and ts >= self.until


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Sampler:
    """Reads one source and feeds the queue. Not thread-safe: one loop per instance."""

    def __init__(
        self,
        config: Config,
        *,
        store: Store,
        source: Source,
        metrics: Metrics,
        enqueue: Enqueue,
        owner: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        backfill: Backfill | None = None,
    ) -> None:
        self.config = config
        self.backfill = backfill
        self.store = store
        self.source = source
        self.metrics = metrics
        self.enqueue = enqueue
        self.owner = owner or default_owner()
        self.policy = SamplingPolicy(config.sampling, clock)
        self._clock = clock
        self._config_mtime = self._mtime()
        # When this sampler last took or renewed the cursor lock (clock seconds); renewing on
        # every slice cost ~1 s per 20k items, a third of the lease is plenty.
        self._locked_at: float | None = None

    # -- config reload -------------------------------------------------------------------
    def _mtime(self) -> float | None:
        if not self.config.path:
            return None
        try:
            return Path(self.config.path).stat().st_mtime
        except OSError:
            return None

    def maybe_reload(self) -> bool:
        """Re-read the config file if it changed; apply its sampling section.

        An invalid file is logged and counted, and the running policy stays.
        """
        mtime = self._mtime()
        if mtime is None or mtime == self._config_mtime:
            return False
        self._config_mtime = mtime
        try:
            new = load_config(self.config.path)
        except ConfigError as exc:
            log.error("config reload refused, keeping the running config: %s", exc)
            self.metrics.observe_config_reload(ok=False)
            return False
        if new.sampling != self.config.sampling:
            self.policy = SamplingPolicy(new.sampling, self._clock)
            log.info("sampling config reloaded: default_rate=%s, %d rules",
                     new.sampling.default_rate, len(new.sampling.rules))
        self.config = self.config.model_copy(update={"sampling": new.sampling})
        self.metrics.observe_config_reload(ok=True)
        return True

    # -- one iteration -------------------------------------------------------------------
    def step(self) -> StepResult:
        name = self.config.source.name
        ttl = self.config.sampler.lock_ttl_s
        now = self._clock()
        if self._locked_at is None or now - self._locked_at > ttl / 3:
            if not self.store.acquire_lock(name, self.owner, ttl):
                self._locked_at = None
                return StepResult(locked=False)
            self._locked_at = now
        cursor = self.store.get_cursor(name)
        batch = self.source.read(cursor, self.config.source.read_batch_rows)
        result = StepResult(rows=batch.rows_read, rejected=len(batch.rejections))
        if batch.rows_read == 0:
            return result

        records = batch.records
        if self.backfill is not None:
            records = [r for r in batch.records if self.backfill.contains(r.timestamp)]
            result.outside = len(batch.records) - len(records)
            result.done = any(self.backfill.passed(r.timestamp) for r in batch.records)
        sampled: list[tuple[LogRecord, str]] = []
        capped: list[str] = []
        for record in records:
            decision = self.policy.decide(record)
            if decision.verdict is Verdict.SAMPLED:
                sampled.append((record, decision.rule))
                result.by_rule[decision.rule] = result.by_rule.get(decision.rule, 0) + 1
            elif decision.verdict is Verdict.CAPPED:
                capped.append(decision.rule)
            else:
                result.skipped += 1
        if self.backfill is not None and sampled:
            stored = self.store.stored_item_ids([record.request_id for record, _ in sampled])
            result.already_stored = len(stored)
            sampled = [(record, rule) for record, rule in sampled
                       if record.request_id not in stored]
        result.sampled = len(sampled)
        result.capped = len(capped)

        if sampled:
            messages = [record.to_message() for record, _ in sampled]
            self.store.add_items(sampled, source=name, payloads=messages)
            result.batches = self._enqueue(messages)

        # The slice is durably queued: now it may count, and the cursor may move.
        if batch.rejections:
            self.store.record_rejections(name, batch.rejections)
        self._count(batch.records, sampled, batch.rejections, capped)
        if batch.cursor is not None:
            try:
                self.store.set_cursor(name, batch.cursor, owner=self.owner)
            except LockHeldError:
                # The lease ran out (a long pause) and another replica took over: what we
                # sent is harmless (idempotent), but we must take the lock again first.
                self._locked_at = None
                raise
        return result

    def _enqueue(self, messages: Sequence[dict[str, Any]]) -> int:
        size = self.config.sampler.enqueue_batch_size or self.config.broker.batch_size
        batches = 0
        for start in range(0, len(messages), size):
            chunk = list(messages[start:start + size])
            try:
                self.enqueue(chunk)
            except Exception:
                self.metrics.observe_enqueue_error()
                raise
            batches += 1
        return batches

    def _count(self, records: Sequence[LogRecord], sampled: Sequence[tuple[LogRecord, str]],
               rejections: Sequence[Any], capped: Sequence[str]) -> None:
        m = self.metrics
        source = self.config.source.name
        if self.backfill is None:  # a backfill re-reads rows the live sampler counted
            m.observe_logs(records, source=source)
            for rejection in rejections:
                m.observe_unmapped(rejection.reason, source=source)
        m.observe_sampled_many((record.route, rule) for record, rule in sampled)
        for rule in capped:
            m.observe_capped(rule)

    # -- the loop ------------------------------------------------------------------------
    def run(self, stop: threading.Event, *, on_step: Callable[[StepResult], None] | None = None,
            until_idle: bool = False) -> None:
        """Loop until ``stop`` is set (or, with ``until_idle``, until the source is caught up)."""
        poll = self.config.source.poll_interval_s
        failures = 0
        try:
            while not stop.is_set():
                self.maybe_reload()
                try:
                    result = self.step()
                    failures = 0
                except Exception as exc:
                    failures += 1
                    delay = min(60.0, poll * 2 ** min(failures, 6))
                    outage = describe_outage(exc, self.store)
                    if outage is not None:  # one line, not the same traceback every retry
                        log.error("sampler step failed (%d in a row): %s; next try in %.1fs",
                                  failures, outage, delay)
                    else:
                        log.exception("sampler step failed (%d in a row); next try in %.1fs",
                                      failures, delay)
                    stop.wait(delay)
                    continue
                if on_step is not None:
                    on_step(result)
                if not result.locked:
                    log.info("source %r is locked by another sampler; waiting",
                             self.config.source.name)
                    stop.wait(min(poll, self.config.sampler.lock_ttl_s / 2))
                elif result.done:
                    return
                elif result.idle:
                    if until_idle:
                        return
                    stop.wait(poll)
        finally:
            self.store.release_lock(self.config.source.name, self.owner)


def build_sampler(config: Config, store: Store, metrics: Metrics, enqueue: Enqueue,
                  *, owner: str | None = None, backfill: Backfill | None = None) -> Sampler:
    source = build_source(config)
    return Sampler(config, store=store, source=source, metrics=metrics, enqueue=enqueue,
                   owner=owner, backfill=backfill)


def celery_enqueue(app: Any, queue: str) -> Enqueue:
    """An :data:`Enqueue` that publishes one task per batch, retrying broker hiccups."""
    from workers.tasks import TASK_NAME

    def enqueue(messages: list[dict[str, Any]]) -> None:
        app.send_task(TASK_NAME, args=(messages,), queue=queue, retry=True,
                      argsrepr=f"[<{len(messages)} records>]",
                      retry_policy={"max_retries": 5, "interval_start": 0.2,
                                    "interval_step": 0.5, "interval_max": 3.0})

    return enqueue

