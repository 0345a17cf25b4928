"""prometheus_client's multiprocess mode, set up once per process: the directory, the
host-qualified file names, and marking an exited process dead.

Processes of one host (Celery prefork children, thread or solo workers, the sampler, the
exporter) share one directory of memory-mapped files; the exporter merges the directory at
scrape time, so a scrape shows the sum over every process, including processes that have
exited (their counter files stay).

The import-order rule
---------------------
``prometheus_client.values`` picks the class behind every metric value *once, when it is first
imported*: ``ValueClass = MultiProcessValue()`` if ``PROMETHEUS_MULTIPROC_DIR`` is set at that
moment, else an in-memory value that no other process can see. The directory itself is read
later, when a process opens its first file. So a process must:

1. call :func:`setup_multiprocess` before anything imports ``prometheus_client``;
2. then build its :class:`~metrics.registry.Metrics` (never at import time, never as a
   module-level singleton);
3. call :func:`mark_process_dead` with its pid when it exits.

This module and the rest of ``metrics/`` import prometheus_client only inside functions, so
importing them is always safe. :func:`setup_multiprocess` raises :class:`RuntimeError` when
prometheus_client was imported too early, and :func:`require_mode` (which ``Metrics`` calls)
raises when the mode a process asks for is not the one it is in, instead of silently exporting
nothing.
"""

from __future__ import annotations

import glob
import os
import re
import socket
import sys

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"


def _value_class_is_multiprocess() -> bool | None:
    """True/False once prometheus_client is imported; None before."""
    values = sys.modules.get("prometheus_client.values")
    if values is None:
        return None
    return bool(getattr(values.ValueClass, "_multiprocess", False))


def setup_multiprocess(directory: str | os.PathLike[str], *, clean: bool) -> None:
    """Put this process (and the children it forks or spawns later) in multiprocess mode.

    Call it at process start, before any metric exists and before anything imports
    prometheus_client. ``clean=True`` deletes the ``*.db`` files left by an earlier run; only
    the process that owns the directory's lifecycle may pass it (the all-in-one runner, or the
    exporter when it starts before the workers), because it wipes the totals of processes
    still running. Raises :class:`RuntimeError` when prometheus_client was already imported
    without multiprocess mode, or set up with another directory.
    """
    path = os.path.abspath(os.fspath(directory))
    current = os.environ.get(ENV_VAR)
    state = _value_class_is_multiprocess()
    if state is False:
        raise RuntimeError(
            "prometheus_client was imported before metrics.multiprocess.setup_multiprocess() "
            "ran, so this process records metrics in memory where the exporter cannot see them. "
            f"Call setup_multiprocess() (or set {ENV_VAR}) at process start, before importing "
            "anything that imports prometheus_client."
        )
    if state is True and current and os.path.abspath(current) != path:
        raise RuntimeError(
            f"this process already records metrics in {current!r}; it cannot switch to {path!r} "
            "(files already open stay where they are). Use one directory per host."
        )
    os.makedirs(path, exist_ok=True)
    if clean:
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    os.environ[ENV_VAR] = path


def multiprocess_dir() -> str | None:
    """The directory this process records into, or None when not in multiprocess mode."""
    directory = os.environ.get(ENV_VAR)
    if not directory or _value_class_is_multiprocess() is False:
        return None
    return directory


def require_mode(multiprocess: bool) -> None:
    """Check that this process records the way it asks to, before its first metric exists.

    ``multiprocess=True`` needs :func:`setup_multiprocess` to have run (a forgotten set-up
    must fail loudly, not export nothing) and switches prometheus_client to host-qualified
    file names; ``multiprocess=False`` needs a process that is not in multiprocess mode.
    """
    if multiprocess:
        directory = os.environ.get(ENV_VAR)
        if not directory or not os.path.isdir(directory):
            raise RuntimeError(
                "Metrics(multiprocess=True) needs metrics.multiprocess.setup_multiprocess(dir, "
                "clean=...) to run first, at process start "
                f"({ENV_VAR}={directory!r}). Pass multiprocess=False for in-process metrics."
            )
    # Importing prometheus_client here, once the directory is known to exist, is what fixes
    # this process's value class; the check below then reads the class it picked.
    import prometheus_client  # noqa: F401

    if multiprocess:
        _use_host_qualified_files()
    if bool(_value_class_is_multiprocess()) != multiprocess:
        raise RuntimeError(
            "prometheus_client was imported before setup_multiprocess() ran"
            if multiprocess
            else f"this process is in multiprocess mode ({ENV_VAR} was set when "
            "prometheus_client was imported); build Metrics with multiprocess=True"
        )


_IDENTIFIER: dict[int, str] = {}


def process_identifier() -> str:
    """Names this process's metric files: host and PID, not the PID alone.

    Containers of one compose stack that share the directory (a volume) each have their own
    PID namespace, so two of them would both be PID 7 and write the same file. Their hostnames
    differ. The name must not contain "_" (prometheus_client splits file names on it).
    """
    pid = os.getpid()
    cached = _IDENTIFIER.get(pid)
    if cached is None:  # once per process: prometheus_client calls this on every write
        host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "host"
        cached = _IDENTIFIER[pid] = f"{host}-{pid}"
    return cached


def _use_host_qualified_files() -> None:
    # Inside the function: importing prometheus_client is what the import-order rule forbids
    # before setup_multiprocess() has run.
    from prometheus_client import values

    if not getattr(values, "_groundwatch_identified", False):
        values.ValueClass = values.MultiProcessValue(process_identifier)
        values._groundwatch_identified = True  # type: ignore[attr-defined]


def mark_process_dead(pid: int | str | None = None,
                      directory: str | os.PathLike[str] | None = None) -> None:
    """Forget the ``live*`` gauges of an exited process (its counters and histograms stay).

    Call it from the exiting process (Celery's ``worker_process_shutdown``) or from a parent
    that saw the child die. ``pid`` is a :func:`process_identifier` (this process's when None;
    a bare PID is qualified with this host's name). ``directory`` defaults to this process's
    multiprocess directory.
    """
    if pid is None:
        pid = process_identifier()
    elif isinstance(pid, int):
        host = process_identifier().rsplit("-", 1)[0]
        pid = f"{host}-{pid}"
    path = os.fspath(directory) if directory is not None else os.environ.get(ENV_VAR)
    if not path:
        raise RuntimeError("no multiprocess directory: pass one or call setup_multiprocess()")
    from prometheus_client import multiprocess  # import-order rule: see the module docstring

    multiprocess.mark_process_dead(pid, path)
