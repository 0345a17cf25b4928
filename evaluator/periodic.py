"""A job that one process of many runs every interval: the golden set, the calibration refit.

Every worker process may hold a :class:`ClaimedJob`; it runs only in the process whose
``claim`` succeeds (the store's :meth:`~evaluator.store.GoldenStore.claim_golden_run`: one
conditional UPDATE per due time), so there is one run per interval between them all. The
thread looks every ``min(interval_s, 30)`` seconds and tries at once on :meth:`start`. A
failed run is logged in one line and waits for the next interval; a store that cannot be
reached is logged once until it answers again. Start it after a fork, never before: a
thread does not survive a fork.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

# The thread looks at the clock at least this often (seconds), so a stop, or a run that
# another process gave up, is noticed within it whatever the interval.
MAX_POLL_S = 30.0


class ClaimedJob(Generic[T]):
    """Runs ``run`` every ``interval_s`` in the one process whose ``claim(name, interval_s)``
    returns True. ``what`` names the job in log lines; ``store`` is shown when the claim
    fails."""

    def __init__(self, name: str, interval_s: float, claim: Callable[[str, float], bool],
                 run: Callable[[], T], *, what: str, log: logging.Logger, store: object,
                 stop_timeout_s: float = 10.0) -> None:
        self.name = name
        self.interval_s = interval_s
        self.poll_s = min(interval_s, MAX_POLL_S)
        self.stop_timeout_s = stop_timeout_s
        self._claim = claim
        self._run = run
        self._what = what
        self._log = log
        self._store = store
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._claim_failing = False

    def tick(self) -> T | None:
        """Claim the run and, when this process got it, run it. Never raises: a failure is
        logged (one line). Returns the run's result, or None."""
        try:
            claimed = self._claim(self.name, self.interval_s)
        except Exception as exc:
            if not self._claim_failing:
                self._log.warning("%s: cannot claim the run in %s: %s: %s; retrying every "
                                  "%gs", self._what, self._store, type(exc).__name__,
                                  short(exc), self.poll_s)
            self._claim_failing = True
            return None
        if self._claim_failing:
            self._log.info("%s: the store answers again", self._what)
            self._claim_failing = False
        if not claimed:
            return None
        try:
            return self._run()
        except Exception as exc:
            self._log.error("%s: the run failed: %s: %s; next try in %gs", self._what,
                            type(exc).__name__, short(exc), self.interval_s)
            return None

    def start(self, thread_name: str) -> None:
        """Start the thread (its first look at the schedule is immediate)."""
        if self._thread is not None:
            raise RuntimeError(f"the {self._what} scheduler is already started")
        self._stop.clear()

        def loop() -> None:
            while not self._stop.is_set():
                self.tick()
                if self._stop.wait(self.poll_s):
                    return

        self._thread = threading.Thread(target=loop, name=thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, waiting at most ``stop_timeout_s`` for a run in progress (the
        daemon thread is then left to end with the process)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return
        thread.join(timeout=self.stop_timeout_s)
        if thread.is_alive():
            self._log.warning("%s: a run still in progress after %gs; not waiting for it",
                              self._what, self.stop_timeout_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def short(exc: BaseException, limit: int = 300) -> str:
    """An exception's text on one line, at most ``limit`` characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
