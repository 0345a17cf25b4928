"""Each process's own health: what it runs (build info) and that it is alive (heartbeats)."""

from __future__ import annotations

import importlib.metadata
import platform
from typing import TYPE_CHECKING

from metrics.recorder import Recorder

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from metrics.labels import LabelPolicy


class HealthMetrics(Recorder):
    """Set once at start (build info), by ``workers.health`` (heartbeats) and by
    ``workers.supervisor`` (restarts)."""

    def __init__(self, registry: CollectorRegistry, policy: LabelPolicy) -> None:
        super().__init__(registry, policy)
        # livemax: one series per running (version, python); a rolling upgrade shows both, and
        # a version disappears when its last process is marked dead.
        self.build_info = self._gauge(
            "build_info", "Always 1; labels say what is running.", ("version", "python"),
            "livemax")
        # The heartbeat's time, beside the Redis key: Prometheus sees a role go silent even
        # when Redis is what failed. max (not livemax): the newest beat of any process of the
        # role, exited ones included, so `time() - this` keeps growing after the last one died
        # instead of the series vanishing. A worker whose batch outlived the visibility
        # timeout stops moving it (workers/health.py).
        self.heartbeat_timestamp = self._gauge(
            "heartbeat_timestamp_seconds",
            "Unix time of the newest heartbeat of a role (sampler, worker, exporter).",
            ("role",), "max")
        # `groundwatch run` restarting a child that died (workers/supervisor.py). role is a
        # fixed set (worker), so the label is bounded; a steady rise is a worker that keeps
        # dying, and `run` exits once it is a crash loop.
        self.process_restarts = self._counter(
            "process_restarts_total",
            "Child processes (role: worker) that `groundwatch run` restarted after they died.",
            ("role",))
        self.build_info.labels(_version(), platform.python_version()).set(1)

    def set_heartbeat(self, role: str, at: float) -> None:
        """A process of ``role`` (sampler, worker, exporter: a fixed set) beat at ``at``."""
        self._child(self.heartbeat_timestamp, role).set(at)


    def observe_restart(self, role: str) -> None:
        """`groundwatch run` restarted a child process of ``role`` that had died."""
        self._child(self.process_restarts, role).inc()


def _version() -> str:
    try:
        return importlib.metadata.version("groundwatch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
