"""Child processes and signals: start a worker process, stop processes, stop on a signal.

Kept apart from :mod:`workers.process` and :mod:`workers.services`, which both use it, so
neither imports the other's module to reach these (the standard library only).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import IO, Any

from evaluator.config import ENV_PREFIX

log = logging.getLogger("groundwatch")


def stop_on_signals(stop: threading.Event) -> None:
    """Set ``stop`` on SIGTERM and SIGINT (main thread only)."""
    def handler(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def spawn_worker(config_path: str, *, env: dict[str, str] | None = None,
                 name: str | None = None, output: IO[bytes] | None = None,
                 ignore_overrides: bool = False) -> subprocess.Popen[bytes]:
    """Start ``groundwatch worker`` as a child process (same process group); its output goes
    to ``output`` (default: ours). ``ignore_overrides`` drops GROUNDWATCH__* variables, for a
    self-contained config such as the demo's."""
    cmd = [sys.executable, "-m", "groundwatch", "--config", config_path, "worker"]
    if name:
        cmd += ["--name", name]
    base = dict(os.environ)
    if ignore_overrides:
        base = {k: v for k, v in base.items() if not k.startswith(ENV_PREFIX)}
    return subprocess.Popen(cmd, env={**base, **(env or {})}, stdout=output,
                            stderr=subprocess.STDOUT if output is not None else None,
                            preexec_fn=_die_with_parent)


def _die_with_parent() -> None:
    """In the child before exec: ask Linux for SIGTERM when the parent dies, so a demo or
    `run` killed with SIGKILL leaves no orphan worker behind (a no-op elsewhere)."""
    if sys.platform != "linux":
        return
    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


# How long a worker has, after its worker.stop_grace_s, to hand its batch back, close its judge
# and its store and delete its heartbeat before it is killed.
STOP_MARGIN_S = 15.0


def stop_timeout_s(stop_grace_s: float) -> float:
    """How long to wait for a worker told to stop before killing it."""
    return stop_grace_s + STOP_MARGIN_S


def stop_processes(procs: list[subprocess.Popen[bytes]], timeout_s: float = 20.0) -> None:
    """SIGTERM (Celery's warm shutdown: finish the current batch, judge calls for at most
    worker.stop_grace_s), then SIGKILL after ``timeout_s`` (:func:`stop_timeout_s`)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
