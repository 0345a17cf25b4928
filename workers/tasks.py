"""The scoring task: load, score, record. Thin and idempotent.

- The scorer's per-item problems are ``error`` outcomes inside the results and are stored like
  any score (an outage is visible as errors, never as low quality).
- A :class:`TransientError` or a broker connection problem retries the whole batch with
  exponential backoff and full jitter, up to ``worker.max_retries``. A store that cannot be
  reached retries without a limit (backoff capped at ``worker.retry_backoff_max_s``): the
  store is where both the scores and the dead letter would go, so the batch waits for it.
- Anything else, or retries exhausted, becomes a recorded failure for each item of the batch:
  no item disappears.
- Metrics are counted from what the store newly wrote, so a batch re-delivered after a worker
  died counts once.
"""

from __future__ import annotations

import logging
import multiprocessing
import random
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.exceptions
from celery import Celery, Task, bootsteps
from celery.exceptions import Reject
from celery.signals import (
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)
from celery.worker import state as celery_state
from sqlalchemy.exc import DBAPIError, OperationalError

from evaluator.config import Config
from evaluator.errors import Stopping, TransientError
from evaluator.records import LogRecord
from evaluator.stopping import StopRequest
from evaluator.verdicts import Verdicts
from metrics.multiprocess import mark_process_dead
from metrics.registry import Metrics
from workers.context import ContextHolder, WorkerContext

if TYPE_CHECKING:
    from workers.health import WorkerActivity

log = logging.getLogger("groundwatch.worker")

TASK_NAME = "groundwatch.score_batch"
# How long a worker waits for its scorer to load before it takes work anyway (and says so).
# The embedded model loads in seconds; ten minutes covers a cold disk on a busy host. It is
# also Celery's worker_proc_alive_timeout: a prefork child still warming is not killed.
WARM_UP_TIMEOUT_S = 600.0


class WarmPoolGate:
    """Counts prefork children whose scorer is warm, in memory shared across the fork.

    Celery's main process says "ready" and starts reserving messages as soon as it has forked
    its children, while they are still in ``worker_process_init`` loading the model; a
    reserved message's visibility clock runs meanwhile. The :class:`WaitForWarmPool` consumer
    step holds the consumer's event loop (nothing is fetched before it runs) until every child
    has counted itself here. Needs the fork start method (Celery's default on Linux)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self._warm = multiprocessing.get_context("fork").Value("i", 0)

    def child_warm(self) -> None:
        with self._warm.get_lock():
            self._warm.value += 1

    @property
    def warm(self) -> int:
        return int(self._warm.value)

    def wait(self, timeout_s: float) -> bool:
        """Block until every child is warm (a respawned child counts again: ``>=``)."""
        deadline = time.monotonic() + timeout_s
        while self.warm < self.expected:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


@dataclass
class TaskRuntime:
    """What the scoring task of one Celery app runs with, typed (arq's per-process ``ctx``):
    the config, the per-process contexts, the visibility timeout a batch is timed against,
    the stop request, the prefork pool's warm-up gate (set in the main process at
    ``worker_init``) and the worker's activity counters for its heartbeat (set by
    ``groundwatch worker``)."""

    config: Config
    contexts: ContextHolder
    visibility_s: float
    # Set when the worker is told to stop (worker_shutting_down), read by the batches still
    # running, in this process or in a prefork child (shared across the fork).
    stop: StopRequest
    warm_gate: WarmPoolGate | None = None
    activity: WorkerActivity | None = None


class GroundwatchCelery(Celery):
    """A Celery app that carries its task's :class:`TaskRuntime` (``make_celery`` sets it)."""

    runtime: TaskRuntime


class WaitForWarmPool(bootsteps.StartStopStep):
    """Consumer step: with a prefork pool, start consuming only once every child is warm.

    It requires the Tasks step and so starts before the event loop (Celery starts that last),
    hence before the first message is fetched and before ``worker_ready``."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        gate = c.app.runtime.warm_gate
        if gate is None:
            return
        started = time.monotonic()
        if gate.wait(WARM_UP_TIMEOUT_S):
            log.info("%d pool processes warm in %.2fs", gate.warm, time.monotonic() - started)
        else:
            log.error("only %d of %d pool processes warmed up within %.0fs; consuming anyway "
                      "(see the worker log for the scorer's error)", gate.warm, gate.expected,
                      WARM_UP_TIMEOUT_S)


def backoff_delay(retries: int, base_s: float, cap_s: float,
                  retry_after_s: float | None = None) -> float:
    """Exponential backoff with full jitter; never sooner than a server's Retry-After."""
    # min(retries, 60): a store outage retries without a limit, and 2.0 * 2**1024 overflows.
    delay = random.uniform(0.0, min(cap_s, base_s * (2 ** min(retries, 60))))
    return max(delay, retry_after_s or 0.0)


def _is_transient(exc: BaseException) -> str | None:
    """The kind of a retryable error, or None."""
    if isinstance(exc, TransientError):
        return exc.kind
    if isinstance(exc, OperationalError):
        return "store_unavailable"
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return "store_unavailable"
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return "broker_unavailable"
    return None


def decode_messages(messages: Sequence[Any]) -> tuple[list[LogRecord], list[tuple[str, str]]]:
    """Records from task messages; malformed ones as (request id or position, problem)."""
    records: list[LogRecord] = []
    bad: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        try:
            records.append(LogRecord.from_message(message))
        except Exception as exc:  # a message we cannot read must not sink the batch
            ref = message.get("request_id") if isinstance(message, Mapping) else None
            bad.append((str(ref or f"message[{i}]"), f"{type(exc).__name__}: {exc}"))
    return records, bad


def score_and_record(ctx: WorkerContext, records: Sequence[LogRecord], *,
                     final_attempt: bool = True, stop: StopRequest | None = None) -> int:
    """Load → score → store → observe: score ``records``, store the results, count them;
    returns the number of scores newly written. ``final_attempt``: the task will not retry
    (a rate-limited judge then records errors instead of raising). ``stop``: the worker's
    stop request (the judge's calls are cut once its grace has run out).

    Raises what the scorers or the store raise; the task decides whether to retry.
    """
    if not records:
        return 0
    try:
        batch = ctx.scoring.score(records, final_attempt=final_attempt, stop=stop)
    finally:
        observe_judge_up(ctx)
    try:  # the scorers' usage (truncations, cache lookups, tokens): work done, stored or not
        ctx.metrics.observe_usage(batch)
    except Exception:  # metrics must not fail the batch
        log.warning("could not record the scorers' usage", exc_info=True)
    written = ctx.store.results.record_batch(batch)
    # Count only what the store newly wrote: a re-delivered batch writes, and counts, nothing.
    ctx.metrics.scoring.observe_written(
        Verdicts.of(batch, written, ctx.config.scoring.thresholds))
    return len(written)


# The start of the reason of a batch handed back (Celery's Reject), so that the filter below
# knows it.
HANDED_BACK = "worker stopping: "


class QuietHandBack(logging.Filter):
    """Celery logs every rejected task at WARNING with a traceback; for a batch a stopping
    worker hands back (:func:`hand_back`, which says what happened in a line of its own) the
    traceback would read as a crash. Keeps Celery's line, drops its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        data = getattr(record, "data", None)
        if isinstance(data, dict) and data.get("description") == "rejected" \
                and HANDED_BACK in str(data.get("exc", "")):
            record.exc_info = None
            record.exc_text = None
        return True


def hand_back(ctx: WorkerContext, task_id: str | None, n_items: int,
              exc: BaseException) -> None:
    """Give a batch the stopping worker did not finish back to the queue (rejected and
    requeued: the broker delivers it again, to another worker, which scores it from the
    start; what this worker stored of it, if anything, is not stored twice), say so, count
    it, and raise Celery's :class:`Reject`."""
    try:
        ctx.metrics.scoring.observe_task_retry("worker_stopping")
    except Exception:  # metrics must not keep the batch from going back
        log.warning("could not count the batch handed back", exc_info=True)
    detail = str(exc) if isinstance(exc, Stopping) else f"{type(exc).__name__}: {exc}"
    log.warning("worker stopping: batch of %d (task %s) not finished (%s); handed back to "
                "the queue, for the next worker to score from the start (no failure "
                "recorded, no score stored twice)", n_items, task_id, detail[:500],
                extra={"task_id": task_id, "items": n_items})
    raise Reject(f"{HANDED_BACK}{detail[:200]}", requeue=True) from exc


def guard_cold_stop(stop: StopRequest, pool: str,
                    count_cut: Callable[[int], None] | None = None) -> None:
    """Wrap Celery's SIGQUIT handler (its cold shutdown), in the main process once the worker
    is up. Celery tells the worker it is shutting down only after it has tried to kill the
    running tasks, which the solo and threads pools cannot do: its handler raises
    NotImplementedError into the running batch (solo), which then read as a batch failed for
    good, or into the worker's loop (threads), which then waited for the batch with no
    bound. The wrapper asks for the stop first, with no grace: the judge's calls are cut at
    once and the batch is handed back. A prefork child is killed by Celery and cannot say so:
    the wrapper says which batches go back to the queue (unacknowledged, restored by Celery)
    and gives their number to ``count_cut`` (:func:`ask_cold_stop` does not ask them)."""
    previous = signal.getsignal(signal.SIGQUIT)
    if not callable(previous) or getattr(previous, "groundwatch_stop", False):
        return

    def on_sigquit(signum: int, frame: Any) -> None:
        ask_cold_stop(stop, pool)
        if pool == "prefork":
            cut = _say_cut_in_children()
            if cut and count_cut is not None:
                try:
                    count_cut(cut)
                except Exception:  # metrics must not keep the worker from stopping
                    log.warning("could not count the batches handed back", exc_info=True)
        try:
            previous(signum, frame)
        except NotImplementedError:  # solo and threads: Celery cannot kill a running task
            log.info("cold stop: the %s pool cannot kill a running batch; its judge calls "
                     "are cut instead and it is handed back", pool)

    on_sigquit.groundwatch_stop = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGQUIT, on_sigquit)


def ask_cold_stop(stop: StopRequest, pool: str) -> None:
    """A cold stop (SIGQUIT, a second SIGTERM) asks the running batches to hand back at once,
    except in prefork children: Celery kills them and :func:`guard_cold_stop` says and counts
    their batches. Asked as well, a child that saw the request before the kill reached it
    handed its batch back itself, and the batch was said and counted twice (seen under load:
    the metric read 2)."""
    if pool != "prefork":
        stop.request(0.0)


def _say_cut_in_children() -> int:
    """The account of the batches a cold stop kills in prefork children; how many."""
    counted = 0
    for request in list(celery_state.active_requests):  # Celery's own bookkeeping
        messages = request.args[0] if request.args else ()
        log.warning("worker stopping (cold): batch of %d (task %s) cut in its pool process; "
                "handed back to the queue (unacknowledged: Celery restores it), for the next "
                "worker to score from the start (no failure recorded, no score stored twice)",
                len(messages), request.id, extra={"task_id": request.id})
        counted += 1
    return counted


def observe_judge_up(ctx: WorkerContext) -> None:
    """``groundwatch_judge_up`` of each judge that has made a call in this process."""
    for scorer in ctx.scoring.all_scorers:
        up = scorer.judge_up
        if up is not None:
            try:
                ctx.metrics.judge.set_judge_up(scorer.name, up)
            except Exception:  # metrics must not fail the batch
                log.warning("could not record judge_up", exc_info=True)


def observe_batch_time(ctx: WorkerContext, seconds: float, n_messages: int,
                       visibility_s: float) -> None:
    """Count a batch's time against the visibility timeout; warn past half of it, when a
    little more would have the broker hand the batch to a second worker."""
    slow = seconds > visibility_s / 2
    try:
        ctx.metrics.scoring.observe_batch(ctx.scorer.name, seconds, slow=slow)
    except Exception:  # metrics must not fail a stored batch
        log.warning("could not record the batch time", exc_info=True)
    if slow:
        log.warning("a batch of %d took %.1fs, over half of broker.visibility_timeout_s "
                    "(%.0fs): past it the broker hands the batch to another worker and it is "
                    "scored twice; raise broker.visibility_timeout_s or lower "
                    "broker.batch_size", n_messages, seconds, visibility_s,
                    extra={"batch_seconds": seconds, "visibility_timeout_s": visibility_s})


def register(app: GroundwatchCelery, config: Config, visibility_s: float) -> TaskRuntime:
    """Register the task and the per-process signals on ``app``; return the runtime they
    share (``make_celery`` puts it on ``app.runtime``)."""
    holder = ContextHolder(config)
    runtime = TaskRuntime(config, holder, visibility_s, StopRequest())
    wcfg = config.worker

    @app.task(bind=True, name=TASK_NAME, acks_late=True, reject_on_worker_lost=True,
              max_retries=None, ignore_result=True)  # the limit is decided below
    def score_batch(self: Task, messages: list[dict[str, Any]]) -> dict[str, int]:
        ctx = holder.get()
        started = time.monotonic()
        try:
            return _score_batch(self, ctx, messages)
        finally:
            observe_batch_time(ctx, time.monotonic() - started, len(messages), visibility_s)
            if runtime.activity is not None:  # for the heartbeat (workers/health.py)
                runtime.activity.task_done(len(messages))

    def _score_batch(self: Task, ctx: WorkerContext,
                     messages: list[dict[str, Any]]) -> dict[str, int]:
        records, bad = decode_messages(messages)
        attempts = self.request.retries + 1
        if bad:
            for ref, problem in bad:
                ctx.store.results.record_failures([ref], stage="decode", kind="bad_message",
                                          reason=problem, attempts=attempts,
                                          task_id=self.request.id)
            for _ in bad:
                ctx.metrics.scoring.observe_task_failure("bad_message")
        try:
            written = score_and_record(
                ctx, records, final_attempt=self.request.retries >= wcfg.max_retries,
                stop=runtime.stop)
        except Exception as exc:
            ids = [r.request_id for r in records]
            if isinstance(exc, Stopping) or runtime.stop.requested:
                # Cut by the stop (or failing while the process is torn down under it):
                # nothing of the batch was stored, so it goes back whole, not as failures.
                hand_back(ctx, self.request.id, len(ids), exc)
            kind = _is_transient(exc)
            if kind is not None and (self.request.retries < wcfg.max_retries
                                     or kind == "store_unavailable"):
                delay = backoff_delay(self.request.retries, wcfg.retry_backoff_s,
                                      wcfg.retry_backoff_max_s,
                                      getattr(exc, "retry_after_s", None))
                ctx.metrics.scoring.observe_task_retry(kind)
                log.warning("batch of %d will retry in %.1fs: %s", len(ids), delay, exc)
                raise self.retry(exc=exc, countdown=delay) from exc
            kind = kind or "internal"
            log.exception("batch of %d failed for good (%s)", len(ids), kind)
            ctx.store.results.record_failures(ids, stage="score", kind=kind,
                                      reason=f"{type(exc).__name__}: {exc}"[:2000],
                                      attempts=attempts, task_id=self.request.id)
            for _ in ids:
                ctx.metrics.scoring.observe_task_failure(kind)
            return {"scored": 0, "failed": len(ids) + len(bad)}
        return {"scored": written, "failed": len(bad)}

    # Per-process set-up, warm-up included, before the worker takes a message. prefork
    # children get worker_process_init (and count themselves warm for WaitForWarmPool); solo
    # and threads pools run tasks in the main process, which gets worker_init, before Celery
    # starts its consumer and says "ready".
    app.steps["consumer"].add(WaitForWarmPool)

    def _on_process_init(**_: Any) -> None:
        holder.get()
        gate = runtime.warm_gate
        if gate is not None:
            gate.child_warm()

    def _on_main_init(**_: Any) -> None:
        if wcfg.pool == "prefork":
            runtime.warm_gate = WarmPoolGate(wcfg.concurrency)
        else:
            holder.get()

    def _on_shutting_down(how: str = "Warm", **_: Any) -> None:
        # Celery's signal handler, in the main process: a warm stop lets running judge calls
        # go on for stop_grace_s, a cold one (SIGQUIT, a second SIGTERM) none.
        if how == "Warm":
            runtime.stop.request(wcfg.stop_grace_s)
        else:
            ask_cold_stop(runtime.stop, wcfg.pool)

    def count_cut(n: int) -> None:
        # A prefork main process holds no worker context (no scorer): metrics of its own.
        scoring = Metrics(config.metrics).scoring
        for _ in range(n):
            scoring.observe_task_retry("worker_stopping")

    def _on_ready(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            try:
                guard_cold_stop(runtime.stop, wcfg.pool, count_cut)
            except ValueError:  # not the main thread: Celery's handler stays as it is
                log.warning("could not guard the cold stop (SIGQUIT)", exc_info=True)

    def _on_process_shutdown(**_: Any) -> None:
        # A prefork child's exit (also a recycled child's, while the others work on): the
        # stop request is shared by every child, so it is not touched here.
        holder.close()
        mark_process_dead()

    def _on_shutdown(**_: Any) -> None:
        runtime.stop.request(0.0)  # anything still waiting gives up before the close
        _on_process_shutdown()

    worker_process_init.connect(_on_process_init, weak=False)
    worker_init.connect(_on_main_init, weak=False)
    worker_process_shutdown.connect(_on_process_shutdown, weak=False)
    worker_shutdown.connect(_on_shutdown, weak=False)
    worker_shutting_down.connect(_on_shutting_down, weak=False)
    worker_ready.connect(_on_ready, weak=False)
    trace_log = logging.getLogger("celery.app.trace")
    if not any(isinstance(f, QuietHandBack) for f in trace_log.filters):
        trace_log.addFilter(QuietHandBack())
    return runtime
