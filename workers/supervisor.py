"""``groundwatch run`` keeps its worker processes running (issue 16, item 9).

Before this, a worker child that died (SIGKILL, the OOM killer, a crash) stayed ``<defunct>``:
``run`` never waited for it, logged nothing, restarted nothing, and went on sampling into a
queue nobody consumed; only the WorkerDown alert said so.

A :class:`Supervisor` watches its children from a thread, every ``poll_s``. A child that
ended is reaped at once (``Popen.poll`` waits for it: no zombie is left), logged in one line
(which child, its pid, its exit code or the signal that killed it), counted
(``groundwatch_process_restarts_total{role}``) and started again after a backoff
(``run.restart_backoff_s``, doubled for each restart still inside the window, at most
:data:`BACKOFF_CAP_S`). A child that dies more than ``run.max_restarts`` times within
``run.restart_window_s`` (all children together) is a crash loop that restarting does not fix
(a broken scorer, a store that refuses): the supervisor says so in one line and sets ``stop``,
and ``run`` stops everything and exits 1, so that whatever runs ``run`` (a container runtime,
systemd) sees the failure instead of a process that looks alive.

Restarting, with that limit, rather than exiting at the first death: one worker killed by the
OOM killer or by hand should cost a second of scoring, not the sampler and the exporter too
(``run`` holds all three); a death that keeps happening is not fixed by restarts, and then the
exit is the honest signal.

Shutdown is not a death: :meth:`Supervisor.close` stops watching before it stops the children
(SIGTERM, Celery's warm shutdown), and a restart waiting out its backoff is dropped once
``stop`` is set (a Ctrl-C reaches the children and ``run`` at the same moment).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from workers.children import stop_processes

log = logging.getLogger("groundwatch")

#: The longest wait before a restart, however many restarts came before it in the window.
BACKOFF_CAP_S = 30.0

Spawn = Callable[[str], "subprocess.Popen[bytes]"]


def describe_exit(code: int) -> str:
    """How a process ended, for a person: ``killed by SIGKILL`` or ``exited with code 3``."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen[bytes]
    restart_at: float | None = None  # monotonic time of the pending restart (it is dead)


class Supervisor:
    """Starts ``names`` with ``spawn(name)`` and keeps them running until :meth:`close`.

    ``on_restart(role)`` counts each restart (a metric); ``stop`` is set when the supervisor
    gives up, and :attr:`gave_up` then says why, in one line.
    """

    def __init__(self, spawn: Spawn, names: Sequence[str], stop: threading.Event, *,
                 role: str = "worker", max_restarts: int = 5, window_s: float = 300.0,
                 backoff_s: float = 1.0, on_restart: Callable[[str], None] | None = None,
                 poll_s: float = 0.2, clock: Callable[[], float] = time.monotonic) -> None:
        self._spawn = spawn
        self.role = role
        self.stop = stop
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.backoff_s = backoff_s
        self._on_restart = on_restart
        self._poll_s = poll_s
        self._clock = clock
        self._closing = threading.Event()
        self._lock = threading.Lock()  # the children, between the watcher and close()
        self._restarts: list[float] = []  # monotonic times of the restarts in the window
        self.restarts = 0  # restarts so far (logs and tests)
        self.gave_up: str | None = None
        self._children = [_Child(name, spawn(name)) for name in names]
        self._thread = threading.Thread(target=self._watch, name="groundwatch-supervisor",
                                        daemon=True)
        self._thread.start()

    @property
    def procs(self) -> list[subprocess.Popen[bytes]]:
        """The current process of each child (a dead one's until it is restarted)."""
        with self._lock:
            return [c.proc for c in self._children]

    def _watch(self) -> None:
        while not self._closing.wait(self._poll_s):
            try:
                self.check()
            except Exception:  # a spawn that failed: try again at the next poll
                log.exception("%s supervisor: could not restart a child", self.role)

    def check(self) -> None:
        """One round: reap the children that ended, restart those whose backoff is over."""
        with self._lock:
            for child in self._children:
                if self._closing.is_set() or self.stop.is_set():
                    return  # shutting down: an exit now is not a death
                if child.restart_at is None:
                    code = child.proc.poll()  # reaps it: no <defunct> left behind
                    if code is not None:
                        self._died(child, code)
                elif self._clock() >= child.restart_at:
                    self._restart(child)

    def _died(self, child: _Child, code: int) -> None:
        now = self._clock()
        self._restarts = [t for t in self._restarts if now - t < self.window_s]
        how = describe_exit(code)
        if len(self._restarts) >= self.max_restarts:
            self.gave_up = (
                f"{self.role} {child.name} (pid {child.proc.pid}) {how}, after "
                f"{len(self._restarts)} restart(s) within {self.window_s:g}s "
                f"(run.max_restarts = {self.max_restarts}, run.restart_window_s = "
                f"{self.window_s:g}): a crash loop; not restarting it, stopping `run` (exit 1)")
            log.error("%s", self.gave_up)
            self.stop.set()
            return
        delay = min(BACKOFF_CAP_S, self.backoff_s * 2 ** len(self._restarts))
        self._restarts.append(now)
        child.restart_at = now + delay
        log.error("%s %s (pid %d) %s; restarting it in %.1fs (restart %d of at most %d "
                  "within %gs)", self.role, child.name, child.proc.pid, how, delay,
                  len(self._restarts), self.max_restarts, self.window_s)

    def _restart(self, child: _Child) -> None:
        old = child.proc.pid
        child.proc = self._spawn(child.name)
        child.restart_at = None
        self.restarts += 1
        if self._on_restart is not None:
            try:
                self._on_restart(self.role)
            except Exception:  # metrics must not stop the supervision
                log.warning("could not count the restart", exc_info=True)
        log.warning("%s %s restarted: pid %d (was %d)", self.role, child.name,
                    child.proc.pid, old)

    def close(self, timeout_s: float = 20.0) -> None:
        """Stop watching (an exit from now on is the shutdown, not a death), then stop the
        children: SIGTERM, Celery's warm shutdown, SIGKILL after ``timeout_s``."""
        self._closing.set()
        self._thread.join(timeout=timeout_s)
        with self._lock:
            procs = [c.proc for c in self._children]
        stop_processes(procs, timeout_s=timeout_s)
