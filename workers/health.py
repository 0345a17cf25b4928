"""Liveness of the long-running processes: a heartbeat with a TTL, after arq's health check.

Every sampler, worker and exporter process writes one heartbeat every ``[health] interval_s``:

- with a Redis broker, the key ``groundwatch:health:<queue>:<role>:<host>:<pid>`` holding JSON
  ``{role, host, pid, at, ttl_s, healthy, problem, details}``, with a TTL of
  :data:`HEALTH_TTL_FACTOR` beats (namespaced by queue, as arq namespaces its health-check key,
  so two deployments sharing a Redis do not vouch for each other);
- with the filesystem broker (the demo), a file ``<role>@<host>@<pid>.json`` in the broker
  folder's ``health/``, whose ``at + ttl_s`` is its expiry; with any other broker, the same
  files under ``metrics.multiproc_dir`` (a folder those processes already share);
- and, in every case, the gauge ``groundwatch_heartbeat_timestamp_seconds{role}``, so that
  Prometheus sees a role go silent even when Redis is what failed.

A clean stop deletes the heartbeat; a killed process's expires. ``groundwatch health ROLE``
(:func:`check_role`) exits 0 while at least one live, healthy heartbeat of ROLE exists on this
host (any host with ``--any-host``) and the store answers. A beat is unhealthy while the
process's store does not answer (:mod:`workers.dependencies`), and healthy again once it does.

Where each role beats from, so that a stuck process stops beating:

- the sampler from its own loop (:meth:`workers.sampler.Sampler.run`), at most once per
  interval, also while it waits or backs off: a sampler wedged in a step stops beating;
- a worker from a thread of its main process, so that a batch that takes minutes does not look
  like a dead worker; the thread reads Celery's own list of running tasks, and once a batch has
  run longer than the broker's visibility timeout (the broker has already handed it to another
  worker) the beat says so (``healthy: false``) and the gauge stops moving;
- the exporter from a thread that first asks the exporter's own HTTP server for ``/livez``:
  a server that no longer answers stops the beat.

Writing a heartbeat never raises: an unreachable Redis is logged once (and once more when it is
back), and the process carries on. This module imports neither Celery nor prometheus_client at
import time, so ``groundwatch health`` starts quickly (it loads SQLAlchemy and Redis's client:
it checks the store and reads the broker).
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from workers.dependencies import store_problem

if TYPE_CHECKING:
    from evaluator.config import Config

log = logging.getLogger("groundwatch.health")

ROLES = ("sampler", "worker", "exporter")
KEY_PREFIX = "groundwatch:health"
# A heartbeat outlives two missed beats and dies with the third (arq: interval + 1 s; a Python
# process under load misses a beat now and then, and a false "dead" restarts a container).
HEALTH_TTL_FACTOR = 3
# Redis calls of a beat or a check: a beat must never hold up its loop for long.
REDIS_TIMEOUT_S = 3.0
DEFAULT_FILESYSTEM_FOLDER = ".groundwatch/broker"


def filesystem_broker_folder(url: str) -> str:
    """The folder of a ``filesystem://`` broker URL (the demo's embedded broker)."""
    return url.removeprefix("filesystem://") or DEFAULT_FILESYSTEM_FOLDER


def host_name() -> str:
    """This host's name as heartbeats carry it (safe in a Redis key and a file name)."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "host"


@dataclass(frozen=True)
class Beat:
    """One heartbeat, as stored."""

    role: str
    host: str
    pid: int
    at: float  # Unix time of the beat
    ttl_s: float
    healthy: bool = True
    problem: str | None = None  # why not healthy
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str | bytes) -> Beat | None:
        """The beat, or None for anything that is not one (never raises)."""
        try:
            data = json.loads(text)
            return cls(role=str(data["role"]), host=str(data["host"]), pid=int(data["pid"]),
                       at=float(data["at"]), ttl_s=float(data["ttl_s"]),
                       healthy=bool(data.get("healthy", True)), problem=data.get("problem"),
                       details=dict(data.get("details") or {}))
        except (ValueError, TypeError, KeyError, AttributeError):
            return None

    def alive(self, now: float) -> bool:
        return now < self.at + self.ttl_s

    def describe(self, now: float) -> str:
        parts = [f"pid {self.pid} on {self.host}, beat {max(0.0, now - self.at):.1f}s ago"]
        for key, value in sorted(self.details.items()):
            if key == "last_task_at":
                value = "never" if not value else f"{max(0.0, now - float(value)):.1f}s ago"
            parts.append(f"{key} {value}")
        return ", ".join(parts)


class Beats(Protocol):
    """Where heartbeats are kept."""

    where: str  # for messages: the Redis address or the folder

    def write(self, beat: Beat) -> None: ...

    def delete(self, role: str, host: str, pid: int) -> None: ...

    def read(self, role: str, host: str | None) -> list[Beat]:
        """The stored beats of ``role`` on ``host`` (any host when None), expired or not."""
        ...

    def close(self) -> None: ...


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class RedisBeats:
    """Heartbeats as Redis keys with a TTL (Redis deletes a dead process's key)."""

    def __init__(self, url: str, queue: str) -> None:
        # Not at module level: `groundwatch health` must start quickly (see the docstring).
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_S,
                                           socket_connect_timeout=REDIS_TIMEOUT_S)
        self._prefix = f"{KEY_PREFIX}:{queue}"
        kwargs = self._redis.connection_pool.connection_kwargs
        self.where = (f"redis {kwargs.get('host', kwargs.get('path', '?'))}:"
                      f"{kwargs.get('port', '')}/{kwargs.get('db', 0)} ({self._prefix}:*)")

    def key(self, role: str, host: str, pid: int) -> str:
        return f"{self._prefix}:{role}:{host}:{pid}"

    def write(self, beat: Beat) -> None:
        self._redis.set(self.key(beat.role, beat.host, beat.pid), beat.to_json(),
                        px=max(1, int(beat.ttl_s * 1000)))

    def delete(self, role: str, host: str, pid: int) -> None:
        self._redis.delete(self.key(role, host, pid))

    def read(self, role: str, host: str | None) -> list[Beat]:
        pattern = (f"{_glob_escape(self._prefix)}:{_glob_escape(role)}:"
                   f"{_glob_escape(host) if host else '*'}:*")
        keys = list(self._redis.scan_iter(match=pattern, count=1000))
        if not keys:
            return []
        beats = (Beat.from_json(raw) for raw in self._redis.mget(keys) if raw is not None)
        return [b for b in beats if b is not None and b.role == role]

    def close(self) -> None:
        self._redis.close()


class FileBeats:
    """Heartbeats as JSON files in a folder; a beat's own ``at + ttl_s`` is its expiry."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.where = f"folder {self.folder}"

    def path(self, role: str, host: str, pid: int) -> Path:
        return self.folder / f"{role}@{host}@{pid}.json"

    def write(self, beat: Beat) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.path(beat.role, beat.host, beat.pid)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(beat.to_json(), encoding="utf-8")
        os.replace(tmp, target)  # a reader sees the old beat or the new one, never half

    def delete(self, role: str, host: str, pid: int) -> None:
        self.path(role, host, pid).unlink(missing_ok=True)

    def read(self, role: str, host: str | None) -> list[Beat]:
        beats = []
        for path in sorted(self.folder.glob(f"{role}@{host or '*'}@*.json")):
            try:
                beat = Beat.from_json(path.read_bytes())
            except OSError:  # deleted between the glob and the read: a clean stop
                continue
            if beat is not None and beat.role == role:
                beats.append(beat)
        return beats

    def prune(self, now: float) -> None:
        """Delete the files of beats that expired (processes killed on this host long ago)."""
        for path in self.folder.glob("*@*@*.json"):
            with contextlib.suppress(OSError):
                beat = Beat.from_json(path.read_bytes())
                if beat is not None and not beat.alive(now):
                    path.unlink()

    def close(self) -> None:
        pass


def beats_for(config: Config) -> Beats:
    """The heartbeat store of ``config``'s broker."""
    url = config.broker.url.get_secret_value()
    scheme = url.partition("://")[0]
    if scheme in ("redis", "rediss"):
        return RedisBeats(url, config.broker.queue)
    if scheme == "filesystem":
        return FileBeats(Path(filesystem_broker_folder(url)) / "health")
    return FileBeats(Path(config.metrics.multiproc_dir) / "health")


@dataclass(frozen=True)
class Status:
    """What a beat says about its process."""

    details: Mapping[str, Any] = field(default_factory=dict)
    healthy: bool = True
    problem: str | None = None


class Heartbeat:
    """One process's heartbeat for one role. :meth:`beat` and :meth:`stop` never raise."""

    def __init__(self, beats: Beats, role: str, *, interval_s: float,
                 on_beat: Callable[[str, float], None] | None = None,
                 clock: Callable[[], float] = time.time,
                 probe: Callable[[], str | None] | None = None) -> None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; valid: {', '.join(ROLES)}")
        self.beats = beats
        self.role = role
        self.interval_s = interval_s
        self.ttl_s = interval_s * HEALTH_TTL_FACTOR
        self.host = host_name()
        self.pid = os.getpid()
        self._on_beat = on_beat
        self._clock = clock
        # What this process depends on, checked before each beat: None while it answers, else
        # why not (workers.dependencies.store_problem); the beat is then unhealthy.
        self._probe = probe
        self._probe_failing: str | None = None
        self._last: float | None = None  # time.monotonic() of the last beat
        self._lock = threading.Lock()
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if isinstance(beats, FileBeats):
            with contextlib.suppress(OSError):
                beats.prune(clock())

    def due(self) -> bool:
        last = self._last
        return last is None or time.monotonic() - last >= self.interval_s

    def beat(self, status: Status | None = None, *, force: bool = False) -> bool:
        """Write a heartbeat unless one was written less than an interval ago (``force``:
        anyway). Returns whether one was written."""
        with self._lock:
            now_m = time.monotonic()
            if not force and self._last is not None and now_m - self._last < self.interval_s:
                return False
            self._last = now_m
        status = self._probed(status or Status())
        at = self._clock()
        if status.healthy and self._on_beat is not None:
            try:
                self._on_beat(self.role, at)
            except Exception:  # metrics must not stop a heartbeat
                log.warning("heartbeat: could not set the gauge", exc_info=True)
        beat = Beat(self.role, self.host, self.pid, at, self.ttl_s, status.healthy,
                    status.problem, dict(status.details))
        try:
            self.beats.write(beat)
        except Exception as exc:
            if not self._failing:
                log.warning("heartbeat (%s): cannot write to %s: %s: %s; still running, and "
                            "retrying every %gs", self.role, self.beats.where,
                            type(exc).__name__, exc, self.interval_s)
            self._failing = True
            return False
        if self._failing:
            log.info("heartbeat (%s): writing to %s again", self.role, self.beats.where)
            self._failing = False
        return True

    def _probed(self, status: Status) -> Status:
        """``status``, made unhealthy while the probe finds a problem (logged once per
        outage, and once more when it is over)."""
        if self._probe is None or not status.healthy:
            return status
        try:
            problem = self._probe()
        except Exception as exc:  # a probe must not stop the heartbeat
            problem = f"the dependency check failed: {type(exc).__name__}: {exc}"
        if problem is not None:
            if self._probe_failing is None:
                log.error("heartbeat (%s): %s; reporting unhealthy until it answers",
                          self.role, problem)
            self._probe_failing = problem
            return Status(status.details, healthy=False, problem=problem)
        if self._probe_failing is not None:
            log.info("heartbeat (%s): the store answers again; healthy", self.role)
            self._probe_failing = None
        return status

    def start(self, status: Callable[[], Status]) -> None:
        """Beat from a daemon thread, now and every interval, with what ``status()`` says."""
        if self._thread is not None:
            raise RuntimeError("heartbeat already started")

        def loop() -> None:
            while True:
                try:
                    current = status()
                except Exception as exc:
                    current = Status(healthy=False,
                                     problem=f"status check failed: {type(exc).__name__}: {exc}")
                self.beat(current, force=True)
                if self._stop.wait(self.interval_s):
                    return

        self._thread = threading.Thread(target=loop, name=f"groundwatch-heartbeat:{self.role}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and delete the heartbeat (a clean stop is not a death)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + REDIS_TIMEOUT_S * 2)
            self._thread = None
        try:
            self.beats.delete(self.role, self.host, self.pid)
        except Exception as exc:  # it expires by itself within ttl_s
            log.warning("heartbeat (%s): could not delete it from %s (%s); it expires in "
                        "%gs", self.role, self.beats.where, type(exc).__name__, self.ttl_s)
        with contextlib.suppress(Exception):
            self.beats.close()


def heartbeat_for(config: Config, role: str, metrics: Any | None = None) -> Heartbeat:
    """The heartbeat of ``role`` for this process, setting ``metrics``' gauge on each healthy
    beat, and unhealthy while the store does not answer."""
    return Heartbeat(beats_for(config), role, interval_s=config.health.interval_s,
                     on_beat=None if metrics is None else metrics.health.set_heartbeat,
                     probe=lambda: store_problem(config))


# -- the worker ---------------------------------------------------------------------------------
class WorkerActivity:
    """Batches and items a worker handled, and when its last batch ended, in memory shared
    with its prefork children (created before the fork; solo and threads pools share it
    anyway). Tasks call :meth:`task_done`; the main process's beat reads :meth:`snapshot`."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("fork")
        self._lock = ctx.Lock()
        self._batches = ctx.Value("q", 0, lock=False)
        self._items = ctx.Value("q", 0, lock=False)
        self._last = ctx.Value("d", 0.0, lock=False)

    def task_done(self, items: int, at: float | None = None) -> None:
        with self._lock:
            self._batches.value += 1
            self._items.value += items
            self._last.value = time.time() if at is None else at

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            last = self._last.value
            return {"batches": int(self._batches.value), "items": int(self._items.value),
                    "last_task_at": round(last, 3) if last else None}


def running_task_starts() -> list[float]:
    """Unix start times of the tasks this Celery worker process runs now (its own list, kept in
    the main process for every pool)."""
    from celery.worker import state  # Celery, only inside a worker (health stays light)

    for _ in range(5):  # a task starting or ending while we copy the set: copy again
        try:
            requests = list(state.active_requests)
        except RuntimeError:
            continue
        return [float(r.time_start) for r in requests if getattr(r, "time_start", None)]
    return []


def worker_status(activity: WorkerActivity, stuck_after_s: float, ready: threading.Event,
                  starts: Callable[[], list[float]] = running_task_starts,
                  clock: Callable[[], float] = time.time) -> Status:
    """A worker's beat: unhealthy once a batch has run past ``stuck_after_s`` (the broker's
    visibility timeout: the batch was already handed to another worker)."""
    now = clock()
    running = starts()
    oldest = max((now - t for t in running), default=0.0)
    details: dict[str, Any] = {"state": "ready" if ready.is_set() else "starting",
                               "running": len(running), "oldest_task_s": round(oldest, 1),
                               "stuck_after_s": stuck_after_s, **activity.snapshot()}
    if oldest > stuck_after_s:
        return Status(details, healthy=False,
                      problem=f"a batch has run {oldest:.0f}s, past the broker's visibility "
                              f"timeout ({stuck_after_s:g}s): it was handed to another worker, "
                              "and this one looks wedged")
    return Status(details)


# -- the check ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class HealthReport:
    ok: bool
    line: str


def check(beats: Beats, role: str, *, host: str | None,
          now: float | None = None) -> HealthReport:
    """Whether a live, healthy heartbeat of ``role`` exists on ``host`` (any host: None)."""
    now = time.time() if now is None else now
    live = [b for b in beats.read(role, host) if b.alive(now)]
    healthy = sorted((b for b in live if b.healthy), key=lambda b: b.at, reverse=True)
    if healthy:
        more = f" (+{len(healthy) - 1} more)" if len(healthy) > 1 else ""
        return HealthReport(True, f"{role}: alive: {healthy[0].describe(now)}{more}")
    if live:
        sick = max(live, key=lambda b: b.at)
        return HealthReport(False, f"{role}: unhealthy: {sick.problem}; {sick.describe(now)}")
    where = f"on {host}" if host else "on any host"
    line = f"{role}: no live heartbeat {where} in {beats.where}"
    if host is not None:
        elsewhere = {b.host for b in beats.read(role, None) if b.alive(now) and b.host != host}
        if elsewhere:
            line += f" (live on {len(elsewhere)} other host(s): --any-host counts them)"
    return HealthReport(False, line)


def check_role(config: Config, role: str, *, any_host: bool = False,
               probe: Callable[[], str | None] | None = None) -> HealthReport:
    """:func:`check` against ``config``'s broker; a broker that cannot be read is a failure,
    and so is a store that does not answer (``probe``, default
    :func:`workers.dependencies.store_problem`), however fresh the heartbeat: the beat may
    predate the outage by up to an interval."""
    beats = beats_for(config)
    try:
        report = check(beats, role, host=None if any_host else host_name())
    except Exception as exc:
        return HealthReport(False, f"{role}: cannot read heartbeats from {beats.where}: "
                                   f"{type(exc).__name__}: {exc}")
    finally:
        with contextlib.suppress(Exception):
            beats.close()
    if not report.ok:
        return report
    problem = (probe or (lambda: store_problem(config)))()
    if problem is not None:
        return HealthReport(False, f"{role}: unhealthy: {problem} (its heartbeat: "
                                   f"{report.line.partition(': alive: ')[2]})")
    return report
