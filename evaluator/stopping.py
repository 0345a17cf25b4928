"""A worker's request to stop, and how long work already running may still take.

A judge call against a slow model can take minutes; a worker told to stop (SIGTERM: Celery's
warm shutdown) would otherwise wait for its whole batch with no bound, and whatever stops it
harder (the supervisor's SIGKILL, the orchestrator's) leaves no account of the batch. The
worker asks, when the signal comes, for work to end within ``worker.stop_grace_s``; the judge
waits for its calls until then, cancels what is still running, and raises
:class:`~evaluator.errors.Stopping`, so the task can hand the batch back to the queue and say so.

The deadline lives in memory shared across a fork (like the prefork warm-up gate), so prefork
children, which Celery does not signal, see the request their main process received. It is a
``CLOCK_MONOTONIC`` time, the same clock in every process of the host.
"""

from __future__ import annotations

import contextvars
import multiprocessing
import time

# How often a wait looks at the request (seconds): a stop is noticed within this.
POLL_S = 0.25


class StopRequest:
    """Unset until :meth:`request`; then the time by which running work should have ended.
    Build it before a fork (the main process of a worker), never at import time."""

    def __init__(self) -> None:
        # 0.0: no stop asked for. One double, written by one signal handler: no lock needed.
        self._deadline = multiprocessing.get_context("fork").RawValue("d", 0.0)

    def request(self, grace_s: float) -> None:
        """Ask running work to end within ``grace_s`` seconds from now. A later request only
        ever brings the deadline closer (a second signal, or a cold shutdown after a warm one)."""
        deadline = time.monotonic() + max(0.0, grace_s)
        current = self._deadline.value
        if current == 0.0 or deadline < current:
            self._deadline.value = deadline

    @property
    def requested(self) -> bool:
        return self._deadline.value != 0.0

    def remaining_s(self) -> float | None:
        """Seconds left before the deadline (0 once it passed), or None with no stop asked."""
        deadline = self._deadline.value
        if deadline == 0.0:
            return None
        return max(0.0, deadline - time.monotonic())

    def expired(self) -> bool:
        remaining = self.remaining_s()
        return remaining is not None and remaining <= 0.0


# The stop request of the batch being scored (workers.tasks sets it through Scoring.score), read
# by a scorer that waits on something slow (the judge's calls). None: wait as long as it takes.
STOP: contextvars.ContextVar[StopRequest | None] = contextvars.ContextVar(
    "groundwatch_stop_request", default=None)
