"""The sampler loop: source → policy → store → queue → cursor.

One iteration (:meth:`Sampler.step`):
1. take or renew the source's cursor lock (a second replica waits here);
2. read the next slice after the stored cursor (and, with a lookback, the rows committed late
   behind it that were not read before);
3. hold, without moving anything, when every row of the slice was rejected for the same field
   and reason: that is a mapping mistake in config, not bad rows (the log names the key);
4. decide every record (deterministic hash, then caps); a sampled record whose request id is
   already stored for another row is a duplicate, not an item;
5. store the sampled items as ``queued`` and enqueue them in batches;
6. store the rejections, then advance the cursor (with the ids it read, in one transaction);
7. only then count metrics.
A crash or a failed enqueue before step 6 leaves the cursor where it was: the slice is read
again and re-sent (the store and the scores are idempotent), never skipped, and since nothing
was counted yet, nothing is counted twice.
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
from typing import TYPE_CHECKING, Any

from evaluator.config import Config, load_config
from evaluator.errors import ConfigError, InvalidRecordError, LockHeldError
from evaluator.records import LogRecord
from evaluator.sampling import SamplingPolicy, Verdict
from evaluator.sources import build_source
from evaluator.sources.base import Source
from evaluator.store import Ledger, RecountRequest
from metrics.registry import Metrics
from workers.health import Status
from workers.recovery import describe_outage
from workers.tasks import TASK_NAME

if TYPE_CHECKING:
    from workers.health import Heartbeat

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
    # sampled records already sent and counted (a backfill's overlap with the live sampler,
    # or rows read again after `groundwatch cursor set` moved the cursor back)
    already_stored: int = 0
    done: bool = False  # backfill: the source has passed the end of the range
    late: int = 0  # rows read from the lookback window (committed late)
    dropped: int = 0  # optional fields left out of records
    held: bool = False  # the cursor was held: every row rejected for one field and reason
    by_reason: dict[str, int] = field(default_factory=dict)  # rejections
    # of the rejections, those the source reported from a look at the whole table (rows it
    # cannot read in order), not rows read
    reported: int = 0

    @property
    def idle(self) -> bool:
        return self.locked and self.rows == 0

    def add(self, step: StepResult) -> None:
        """Sum ``step`` into this result (running totals over a run)."""
        for name in ("rows", "sampled", "skipped", "capped", "rejected", "batches", "outside",
                     "already_stored", "late", "dropped", "reported"):
            setattr(self, name, getattr(self, name) + getattr(step, name))
        for totals, more in ((self.by_rule, step.by_rule), (self.by_reason, step.by_reason)):
            for key, n in more.items():
                totals[key] = totals.get(key, 0) + n
        self.done = self.done or step.done
        self.held = step.held

    def summary(self) -> str:
        """One line: what was read and what became of it."""
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.by_reason.items()))
        late = f", {self.late} committed late" if self.late else ""
        dropped = f"; {self.dropped} optional field(s) dropped" if self.dropped else ""
        return (f"read {self.rows} rows{late}: {self.sampled} sampled, {self.skipped} skipped "
                f"by the rate, {self.capped} capped, {self.rejected} rejected"
                f"{' (' + reasons + ')' if reasons else ''}{dropped}")


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


#: A backfill's source name is ``<live source>.backfill.<name>`` (workers/services.py).
BACKFILL_INFIX = ".backfill."


def live_source(name: str) -> str:
    """The live source a backfill of source ``name`` replays (``name`` itself when live)."""
    return name.split(BACKFILL_INFIX, 1)[0]


def changed_keys(old: Config, new: Config) -> list[str]:
    """The dotted keys whose values differ between two configs (secrets compared masked
    would hide a change, so they are compared by value)."""
    def flat(data: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(data, dict):
            out: dict[str, Any] = {}
            for key, value in data.items():
                out.update(flat(value, f"{prefix}{key}."))
            return out
        return {prefix[:-1]: data}

    def plain(config: Config) -> dict[str, Any]:
        return flat(config.model_dump(mode="python", by_alias=True, exclude={"path"},
                                      context=None, round_trip=False, warnings=False))

    a, b = plain(old), plain(new)
    return sorted(k for k in a.keys() | b.keys()
                  if _secret_value(a.get(k)) != _secret_value(b.get(k)))


def _secret_value(value: Any) -> Any:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Sampler:
    """Reads one source and feeds the queue. Not thread-safe: one loop per instance."""

    def __init__(
        self,
        config: Config,
        *,
        ledger: Ledger,
        source: Source,
        metrics: Metrics,
        enqueue: Enqueue,
        owner: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        backfill: Backfill | None = None,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.config = config
        # Beaten from run()'s own loop, never from a thread: a sampler stuck in a step must
        # stop beating (workers/health.py).
        self.heartbeat = heartbeat
        self.backfill = backfill
        self.ledger = ledger
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
        self._held: tuple[str, str] | None = None  # (field, reason) while the cursor is held
        self._restart_noted: set[str] = set()  # changed keys already logged as needing a restart

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
            self.metrics.sampler.observe_config_reload(ok=False)
            return False
        if new.sampling != self.config.sampling:
            self.policy = SamplingPolicy(new.sampling, self._clock)
            log.info("sampling config reloaded: default_rate=%s, %d rules",
                     new.sampling.default_rate, len(new.sampling.rules))
        for key in changed_keys(self.config, new):
            if not key.startswith("sampling.") and key not in self._restart_noted:
                self._restart_noted.add(key)
                log.warning("config %s: %s changed, which needs a restart of the sampler to "
                            "take effect; still running with the old value", self.config.path,
                            key)
        self.config = self.config.model_copy(update={"sampling": new.sampling})
        self.metrics.sampler.observe_config_reload(ok=True)
        return True

    # -- one iteration -------------------------------------------------------------------
    def step(self) -> StepResult:
        name = self.config.source.name
        ttl = self.config.sampler.lock_ttl_s
        now = self._clock()
        if self._locked_at is None or now - self._locked_at > ttl / 3:
            if not self.ledger.acquire_lock(name, self.owner, ttl):
                self._locked_at = None
                return StepResult(locked=False)
            self._locked_at = now
        cursor = self.ledger.get_cursor(name)
        recount = self._recount_request(name)
        batch = self.source.read(cursor, self.config.source.read_batch_rows,
                                 seen=lambda ids: self.ledger.read_ids(name, ids))
        result = StepResult(rows=batch.rows_read, late=batch.late, dropped=len(batch.dropped),
                            reported=batch.reported)
        self.metrics.sampler.set_source_audit(
            unplaceable=batch.unplaceable, missed=batch.missed, future=batch.future,
            pending=batch.pending, waiting=batch.waiting_transactions, source=name)
        recounted = recount if recount is not None and batch.recounted else None
        if batch.rows_read == 0 and not batch.rejections and not batch.records \
                and recounted is None:
            if batch.cursor is not None and batch.cursor != cursor:
                self._store_cursor(name, batch, [], None)
            return result
        if self._hold(batch):
            result.held = True
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
            elif decision.verdict is Verdict.CAPPED:
                capped.append(decision.rule)
            else:
                result.skipped += 1
        rejections = list(batch.rejections)
        counted = batch.records
        if self.backfill is not None and rejections:
            # Rows the live sampler (or this backfill, before a restart) rejected already
            # are neither stored nor counted again.
            rejections = self.ledger.new_rejections((live_source(name), name), rejections)
        if sampled and self.backfill is not None:
            stored = self.ledger.stored_item_ids([record.request_id for record, _ in sampled])
            result.already_stored = len(stored)
            sampled = [(record, rule) for record, rule in sampled
                       if record.request_id not in stored]
        elif sampled:
            sampled, duplicates, replayed = self._split_duplicates(name, sampled)
            result.already_stored = len(replayed)
            rejections += duplicates
            # Neither a duplicate nor a row counted when it was first read counts as traffic.
            gone = {d.row_ref for d in duplicates} | replayed
            if gone:
                counted = [r for r in batch.records if r.request_id not in gone]
        for _, rule in sampled:
            result.by_rule[rule] = result.by_rule.get(rule, 0) + 1
        result.sampled = len(sampled)
        result.capped = len(capped)
        result.rejected = len(rejections)
        for rejection in rejections:
            result.by_reason[rejection.reason] = result.by_reason.get(rejection.reason, 0) + 1

        if sampled:
            messages = [record.to_message() for record, _ in sampled]
            self.ledger.add_items(sampled, source=name, payloads=messages)
            result.batches = self._enqueue(messages)

        # The slice is durably queued: keep its rejections, then move the cursor. Counting
        # comes last, so a crash before the cursor moved counts nothing twice.
        if rejections:
            self.ledger.record_rejections(name, rejections)
        if batch.cursor is not None:
            self._store_cursor(name, batch, [record.request_id for record, _ in sampled],
                               recounted)
        self._count(counted, sampled, rejections, capped)
        self.metrics.sampler.observe_dropped_fields(batch.dropped)
        self.metrics.sampler.observe_late_rows(batch.late, source=name)
        self.metrics.sampler.observe_files_rewritten(batch.rewritten, source=name)
        return result

    def _store_cursor(self, name: str, batch: Any, committed: list[str],
                      recounted: RecountRequest | None) -> None:
        try:
            self.ledger.set_cursor(name, batch.cursor, owner=self.owner, read_ids=batch.read_ids,
                                   forget_read_before=batch.forget_read_before,
                                   committed=committed, recounted=recounted)
        except LockHeldError:
            # The lease ran out (a long pause) and another replica took over: what we
            # sent is harmless (idempotent), but we must take the lock again first.
            self._locked_at = None
            raise
        if recounted is not None:
            log.info("source %r: the missed-rows count was reset to 0 after %s read the "
                     "rows behind the cursor (requested %s)", name, recounted.by,
                     recounted.at.isoformat(timespec="seconds"))

    def _recount_request(self, name: str) -> RecountRequest | None:
        """A backfill's request that the live source count its missed rows afresh (see
        :meth:`Ledger.request_recount`), passed on to the source; one the source has no use
        for (it counts no missed rows) is cleared here."""
        if self.backfill is not None:
            return None
        request = self.ledger.recount_request(name)
        if request is None or self.source.recount():
            return request
        self.ledger.clear_recount(name, request)
        return None

    def _split_duplicates(self, source: str, sampled: list[tuple[LogRecord, str]]
                          ) -> tuple[list[tuple[LogRecord, str]], list[InvalidRecordError],
                                     set[str]]:
        """Split sampled records by what the store already holds under their request ids:
        (to send, duplicates, ids already sent and counted).

        * nothing: a new item;
        * the same row (source and log time), not committed: sent before the cursor could
          move (a crash, a failed enqueue), so never counted: send and count it now;
        * the same row, committed: read again (the cursor moved back with ``groundwatch cursor
          set``, a file rewritten in place, or the same line logged twice): already sent and
          counted, so neither sent nor counted again;
        * another row: a ``duplicate_id`` rejection.
        """
        origins = self.ledger.stored_item_origins([record.request_id for record, _ in sampled])
        if not origins:
            return sampled, [], set()
        kept: list[tuple[LogRecord, str]] = []
        duplicates: list[InvalidRecordError] = []
        replayed: set[str] = set()
        for record, rule in sampled:
            origin = origins.get(record.request_id)
            if origin is None:
                kept.append((record, rule))
            elif origin[:2] == (source, record.timestamp):
                if origin[2]:
                    replayed.add(record.request_id)
                else:
                    kept.append((record, rule))
            else:
                duplicates.append(InvalidRecordError(
                    "duplicate_id", field="request_id", row_ref=record.request_id,
                    detail=f"already stored from source {origin[0]!r} with log time "
                           f"{origin[1].isoformat()}; this row has "
                           f"{record.timestamp.isoformat()}"))
        return kept, duplicates, replayed

    def _hold(self, batch: Any) -> bool:
        """Whether to hold the cursor: every row of a full-enough read rejected for the same
        field and reason. Logs one error line naming the config key when the hold starts,
        and one line when it ends; the gauge says so meanwhile."""
        name = self.config.source.name
        minimum = self.config.sampler.hold_min_rows
        kinds = {(r.field, r.reason) for r in batch.rejections}
        uniform = (minimum > 0 and not batch.records and batch.rows_read >= minimum
                   and len(kinds) == 1 and len(batch.rejections) == batch.rows_read
                   and next(iter(kinds))[1] not in ("duplicate_id", "no_position", "incomplete",
                                                     "future_timestamp"))
        if uniform:
            fname, reason = next(iter(kinds))
            if self._held != (fname, reason):
                example = batch.rejections[0]
                column = getattr(self.config.source.columns, fname, fname)
                where = f" in {self.config.path}" if self.config.path else ""
                log.error(
                    "source %r: holding the cursor: all %d rows just read were rejected for "
                    "field %r (%s: %s, e.g. row %s); this is a mapping mistake, not bad rows: "
                    "check source.columns.%s (now %r)%s, or the source's format. Nothing is "
                    "skipped meanwhile; the read is retried every poll and resumes after a "
                    "fix (the sampling section reloads; other keys need a restart)",
                    name, batch.rows_read, fname, reason, example.detail, example.row_ref,
                    fname, column, where)
            self._held = (fname, reason)
            self.metrics.sampler.set_source_held(True, source=name)
            return True
        if self._held is not None:
            log.warning("source %r: reading again; the cursor is no longer held", name)
            self._held = None
        self.metrics.sampler.set_source_held(False, source=name)
        return False

    def _enqueue(self, messages: Sequence[dict[str, Any]]) -> int:
        size = self.config.sampler.enqueue_batch_size or self.config.broker.batch_size
        batches = 0
        for start in range(0, len(messages), size):
            chunk = list(messages[start:start + size])
            try:
                self.enqueue(chunk)
            except Exception:
                self.metrics.sampler.observe_enqueue_error()
                raise
            batches += 1
        return batches

    def _count(self, records: Sequence[LogRecord], sampled: Sequence[tuple[LogRecord, str]],
               rejections: Sequence[Any], capped: Sequence[str]) -> None:
        m = self.metrics.sampler
        source = self.config.source.name
        if self.backfill is None:  # a backfill re-reads rows the live sampler counted
            m.observe_logs(records, source=source)
            now = time.time()
            m.observe_take_lag((now - r.timestamp.timestamp() for r in records), source=source)
            for rejection in rejections:
                m.observe_unmapped(rejection.reason, source=source)
        m.observe_sampled((record.route, rule) for record, rule in sampled)
        for rule in capped:
            m.observe_capped(rule)

    # -- the loop ------------------------------------------------------------------------
    def describe(self) -> str:
        """The start line: the source, how it keeps its place, and where its cursor is."""
        src = self.config.source
        at = self.source.describe_cursor(self.ledger.get_cursor(src.name))
        return (f"sampler for source {src.name!r} ({self.source.describe()}); {at}; default rate "
                f"{self.config.sampling.default_rate:g}, {len(self.config.sampling.rules)} rule(s)")

    def run(self, stop: threading.Event, *, on_step: Callable[[StepResult], None] | None = None,
            until_idle: bool = False) -> StepResult:
        """Loop until ``stop`` is set (or, with ``until_idle``, until the source is caught up
        or held); return the totals. Logs a start line, a progress line every
        ``sampler.progress_every_s`` and a warning when the rejected share is high."""
        poll = self.config.source.poll_interval_s
        failures = 0
        totals = StepResult()
        window = StepResult()
        window_start = time.monotonic()
        try:
            log.info("%s", self.describe())
        except Exception:  # the start line must not be what stops a sampler
            log.warning("sampler for source %r: could not describe the cursor",
                        self.config.source.name, exc_info=True)
        try:
            while not stop.is_set():
                self._beat(totals, failures)
                self.maybe_reload()
                try:
                    result = self.step()
                    failures = 0
                except Exception as exc:
                    failures += 1
                    delay = min(60.0, poll * 2 ** min(failures, 6))
                    outage = describe_outage(exc, self.ledger)
                    if outage is not None:  # one line, not the same traceback every retry
                        log.error("sampler step failed (%d in a row): %s; next try in %.1fs",
                                  failures, outage, delay)
                    else:
                        log.exception("sampler step failed (%d in a row); next try in %.1fs",
                                      failures, delay)
                    self._wait(stop, delay, totals, failures)
                    continue
                totals.add(result)
                window.add(result)
                if on_step is not None:
                    on_step(result)
                every = self.config.sampler.progress_every_s
                if every and time.monotonic() - window_start >= every:
                    self._progress(window, time.monotonic() - window_start)
                    window, window_start = StepResult(), time.monotonic()
                if not result.locked:
                    log.info("source %r is locked by another sampler; waiting",
                             self.config.source.name)
                    self._wait(stop, min(poll, self.config.sampler.lock_ttl_s / 2), totals,
                               failures)
                elif result.done:
                    break
                elif result.idle or result.held:
                    if until_idle:
                        break
                    self._wait(stop, poll, totals, failures)
        finally:
            self.ledger.release_lock(self.config.source.name, self.owner)
        return totals

    def _beat(self, totals: StepResult, failures: int) -> None:
        """A heartbeat, at most once per ``[health] interval_s`` (a cheap no-op otherwise)."""
        if self.heartbeat is None or not self.heartbeat.due():
            return
        self.heartbeat.beat(Status({
            "source": self.config.source.name, "rows": totals.rows, "sampled": totals.sampled,
            "rejected": totals.rejected, "locked": self._locked_at is not None,
            "held": self._held is not None, "failures_in_a_row": failures}))

    def _wait(self, stop: threading.Event, seconds: float, totals: StepResult,
              failures: int) -> None:
        """``stop.wait(seconds)``, beating meanwhile: a backoff of a minute is not a death."""
        deadline = time.monotonic() + seconds
        step = self.heartbeat.interval_s if self.heartbeat is not None else seconds
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            stop.wait(min(left, step))
            self._beat(totals, failures)

    def _progress(self, window: StepResult, seconds: float) -> None:
        name = self.config.source.name
        log.info("source %r, last %.0fs: %s", name, seconds, window.summary())
        share = self.config.sampler.warn_reject_share
        if window.rows and window.rejected / window.rows > share:
            log.warning("source %r: %.1f%% of the rows read in the last %.0fs were rejected "
                        "(above sampler.warn_reject_share = %g): %s; see `groundwatch explain "
                        "ID` for a row, or the rejections in the store",
                        name, 100.0 * window.rejected / window.rows, seconds, share,
                        ", ".join(f"{k} {v}" for k, v in sorted(window.by_reason.items())))


def build_sampler(config: Config, ledger: Ledger, metrics: Metrics, enqueue: Enqueue,
                  *, owner: str | None = None, backfill: Backfill | None = None,
                  heartbeat: Heartbeat | None = None) -> Sampler:
    source = build_source(config)
    return Sampler(config, ledger=ledger, source=source, metrics=metrics, enqueue=enqueue,
                   owner=owner, backfill=backfill, heartbeat=heartbeat)


def celery_enqueue(app: Any, queue: str) -> Enqueue:
    """An :data:`Enqueue` that publishes one task per batch, retrying broker hiccups."""
    def enqueue(messages: list[dict[str, Any]]) -> None:
        app.send_task(TASK_NAME, args=(messages,), queue=queue, retry=True,
                      argsrepr=f"[<{len(messages)} records>]",
                      retry_policy={"max_retries": 5, "interval_start": 0.2,
                                    "interval_step": 0.5, "interval_max": 3.0})

    return enqueue

