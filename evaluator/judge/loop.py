"""One long-lived asyncio event loop per process, on a thread of its own.

ragas's sync ``score()`` calls ``asyncio.run`` per call: a new loop, a new HTTP connection
pool, and a client bound to a loop that is gone by the next call. The judge instead builds one
loop when its process starts (``warm_up``: after a prefork child is forked, never before) and
keeps it; Celery's task threads hand coroutines to it with :meth:`JudgeLoop.run` and wait for
the answer. Concurrency is then bounded per process by one semaphore on that loop, whatever
the pool (solo, threads or prefork) and its concurrency.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from evaluator.stopping import POLL_S, StopRequest

T = TypeVar("T")


class StoppedWaiting(Exception):
    """:meth:`JudgeLoop.run` gave up on its coroutine (cancelled) because the worker is
    stopping; ``waited_s``: how long it waited after it saw the stop asked for."""

    def __init__(self, waited_s: float) -> None:
        self.waited_s = waited_s
        super().__init__(f"cancelled {waited_s:.1f}s after the stop was asked for")


class JudgeLoop:
    def __init__(self, name: str = "groundwatch-judge") -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.pid == os.getpid()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None, *,
            stop: StopRequest | None = None) -> T:
        """Run ``coro`` on the loop from any other thread and return its result. With
        ``stop``: once its grace has run out (or the loop was closed under a stop), cancel
        ``coro`` and raise :class:`StoppedWaiting`."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("JudgeLoop.run called from the loop's own thread")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            if stop is None:
                return future.result(timeout_s)
            return _wait(future, stop)
        except TimeoutError:
            future.cancel()
            raise

    def close(self, timeout_s: float = 5.0) -> None:
        if not self._thread.is_alive():
            return

        async def _drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        with contextlib.suppress(Exception):  # a loop that will not drain is stopped anyway
            asyncio.run_coroutine_threadsafe(_drain(), self.loop).result(timeout_s)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self.loop.close()


def _wait(future: concurrent.futures.Future[T], stop: StopRequest) -> T:
    """``future``'s result, unless ``stop``'s grace runs out first (see :meth:`JudgeLoop.run`)."""
    seen: float | None = None  # when this wait first saw the stop asked for
    while True:
        remaining = stop.remaining_s()
        if remaining is not None and seen is None:
            seen = time.monotonic()
        try:
            return future.result(POLL_S if remaining is None else min(POLL_S, remaining))
        except (TimeoutError, concurrent.futures.CancelledError):
            pass  # not done yet, or cancelled (the loop closed): decided below
        except BaseException:  # the coroutine's own error, or one raised into the wait by a
            future.cancel()    # signal handler (a no-op once the future is done)
            raise
        if future.cancelled():
            if not stop.requested:  # cancelled by someone else: not ours to explain
                raise concurrent.futures.CancelledError()
        elif not stop.expired():
            continue
        # Cancels the coroutine on the loop (its calls unwind there; close() drains them).
        elif not future.cancel():  # it finished meanwhile
            return future.result()
        raise StoppedWaiting(max(0.0, time.monotonic() - (seen or time.monotonic())))
