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
import contextlib
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


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

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coro`` on the loop from any other thread and return its result."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("JudgeLoop.run called from the loop's own thread")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout_s)
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
