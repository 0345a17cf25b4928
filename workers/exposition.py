"""The ``/metrics`` server wired to this deployment: the queue's depth from the broker, the
oldest unscored item from the store, ``/healthz`` from both, and the exporter's own heartbeat.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from evaluator.config import Config
from metrics.exporter import Exporter
from workers.health import Status


def queue_depth_probe(app: Any, queue: str) -> Callable[[], dict[str, int]]:
    """A callable returning the queue's message count, for the exporter's scrape."""
    def probe() -> dict[str, int]:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            channel = conn.default_channel
            try:
                ok = channel.queue_declare(queue=queue, passive=True)
            except Exception as exc:  # the queue does not exist until the first publish
                if "NOT_FOUND" in str(exc) or "not found" in str(exc).lower():
                    return {queue: 0}
                raise
            return {queue: int(ok.message_count)}

    return probe



def build_exporter(config: Config, store: Any, app: Any, *,
                   port: int | None = None) -> Exporter:
    """The exporter for ``config``, reading the queue from ``app``'s broker and the backlog
    from ``store``."""
    depth = queue_depth_probe(app, config.broker.queue)

    def oldest() -> float | None:
        ts = store.queries.oldest_unscored_sampled_at()
        return None if ts is None else max(0.0, (datetime.now(UTC) - ts).total_seconds())

    def health() -> dict[str, Any]:
        checks: dict[str, Any] = {}
        try:
            store.queries.count_items_by_status()
            checks["store"] = "ok"
        except Exception as exc:
            checks["store"] = f"error: {type(exc).__name__}"
        try:
            depth()
            checks["broker"] = "ok"
        except Exception as exc:
            checks["broker"] = f"error: {type(exc).__name__}"
        # The exporter itself is up and still serves what it can: a dependency that is down
        # makes it "degraded" (HTTP 503), with the failing check named beside it.
        checks["status"] = "ok" if all(v == "ok" for v in checks.values()) else "degraded"
        return checks

    return Exporter(config.metrics.multiproc_dir, config.metrics.host,
                    config.metrics.port if port is None else port,
                    queue_depth=depth, oldest_unscored=oldest, health=health)


def exporter_status(exporter: Any, timeout_s: float = 5.0) -> Callable[[], Any]:
    """The exporter's beat: healthy while its own HTTP server answers ``/livez`` (which touches
    neither the store nor the broker: a dependency that is down is /healthz's business)."""
    def status() -> Status:
        host, port = exporter.address
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        url = f"http://[{host}]:{port}/livez" if ":" in host else f"http://{host}:{port}/livez"
        started = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                code = response.status
        except (OSError, urllib.error.URLError) as exc:
            return Status({"port": port}, healthy=False,
                          problem=f"its HTTP server did not answer {url}: {exc}")
        return Status({"port": port, "livez": code,
                       "probe_ms": round(1000 * (time.monotonic() - started), 1)})

    return status
