"""The HTTP exporter: ``GET /metrics`` merges the multiprocess directory, ``GET /healthz``.

The exporter only *reads* the directory, so it does not need multiprocess mode itself and may
run in its own process or inside the all-in-one runner. Two gauges are computed at scrape time
from callables, because they describe the broker and the store rather than any one process:
``groundwatch_queue_depth{queue}`` and ``groundwatch_oldest_unscored_age_seconds``. A callable
that raises does not fail the scrape: its family is left out and
``groundwatch_exporter_collect_errors_total{what}`` counts the failure.

Like the rest of ``metrics/``, this module imports prometheus_client only inside functions (see
the import-order rule in :mod:`metrics.registry`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from metrics.registry import EXPORTER_COLLECT_ERRORS, OLDEST_UNSCORED_AGE, QUEUE_DEPTH

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

log = logging.getLogger(__name__)

QueueDepthFn = Callable[[], dict[str, int]]
OldestUnscoredFn = Callable[[], float | None]
HealthFn = Callable[[], dict[str, Any]]


class _ScrapeTimeCollector:
    """Yields the gauges computed when Prometheus scrapes (a prometheus_client Collector)."""

    def __init__(self, queue_depth: QueueDepthFn | None,
                 oldest_unscored: OldestUnscoredFn | None) -> None:
        self._queue_depth = queue_depth
        self._oldest_unscored = oldest_unscored
        self._errors = {"queue_depth": 0, "oldest_unscored": 0}
        self._lock = threading.Lock()

    def _failed(self, what: str) -> None:
        log.warning("exporter: %s callable failed during a scrape", what, exc_info=True)
        with self._lock:
            self._errors[what] += 1

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        if self._queue_depth is not None:
            try:
                depths = self._queue_depth()
                family = GaugeMetricFamily(
                    QUEUE_DEPTH, "Messages waiting in a broker queue.", labels=["queue"])
                for queue, depth in sorted(depths.items()):
                    family.add_metric([str(queue)], float(depth))
            except Exception:
                self._failed("queue_depth")
            else:
                yield family
        if self._oldest_unscored is not None:
            try:
                age = self._oldest_unscored()
                # None means nothing is waiting: the backlog is zero seconds old.
                family = GaugeMetricFamily(
                    OLDEST_UNSCORED_AGE,
                    "Seconds since the sampler took the oldest item not yet scored.",
                    value=0.0 if age is None else float(age))
            except Exception:
                self._failed("oldest_unscored")
            else:
                yield family
        errors = CounterMetricFamily(
            EXPORTER_COLLECT_ERRORS, "Scrape-time callables of the exporter that raised.",
            labels=["what"])
        with self._lock:
            counts = sorted(self._errors.items())
        for what, count in counts:
            errors.add_metric([what], count)
        yield errors


def _multiprocess_registry(registry_dir: str) -> CollectorRegistry:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=registry_dir)
    return registry


def snapshot_text(registry_dir: str | os.PathLike[str]) -> str:
    """The Prometheus text exposition of everything recorded in ``registry_dir`` right now."""
    from prometheus_client import generate_latest

    return generate_latest(_multiprocess_registry(os.fspath(registry_dir))).decode("utf-8")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Fail fast if another exporter holds the port, but allow a quick restart (TIME_WAIT).
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class Exporter:
    """Serves ``/metrics`` and ``/healthz`` from a background thread.

    ``health`` returns a dict of details; the exporter answers 200 with
    ``{"status": "ok", ...details}`` unless the dict's ``status`` is something other than
    ``"ok"`` or the callable raises, which gives 503.
    """

    def __init__(
        self,
        registry_dir: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = 9464,
        *,
        queue_depth: QueueDepthFn | None = None,
        oldest_unscored: OldestUnscoredFn | None = None,
        health: HealthFn | None = None,
    ) -> None:
        self.registry_dir = os.fspath(registry_dir)
        self.host = host
        self.port = port
        self._health = health
        self._scrape_time = _ScrapeTimeCollector(queue_depth, oldest_unscored)
        self._registry: CollectorRegistry | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> int:
        """Bind and serve in a daemon thread; returns the bound port (``port=0`` picks one)."""
        if self._server is not None:
            raise RuntimeError("exporter already started")
        os.makedirs(self.registry_dir, exist_ok=True)
        registry = _multiprocess_registry(self.registry_dir)
        registry.register(self._scrape_time)
        self._registry = registry
        server_cls = _Server6 if ":" in self.host else _Server
        server = server_cls((self.host, self.port), self._handler_class())
        self.port = server.server_address[1]
        self._server = server
        # A short poll interval only makes stop() quick; the wake-ups cost nothing measurable.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1},
            name=f"groundwatch-exporter:{self.port}", daemon=True)
        self._thread.start()
        log.info("exporter listening on %s (directory %s)", self.url, self.registry_dir)
        return self.port

    def stop(self) -> None:
        """Stop serving and release the port. Safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Exporter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition (body, content type) for an ``Accept`` header, as /metrics serves it."""
        from prometheus_client.exposition import choose_encoder

        if self._registry is None:
            raise RuntimeError("exporter not started")
        encoder, content_type = choose_encoder(accept)
        return encoder(self._registry), content_type

    def health(self) -> tuple[int, dict[str, Any]]:
        """The /healthz answer: (HTTP status, JSON body)."""
        try:
            details = dict(self._health()) if self._health is not None else {}
        except Exception as exc:
            log.warning("exporter: health callable failed", exc_info=True)
            return 503, {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:200]}
        details.setdefault("status", "ok")
        return (200 if details["status"] == "ok" else 503), details

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "groundwatch-exporter"

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    try:
                        body, content_type = exporter.render(self.headers.get("Accept", ""))
                    except Exception:
                        log.exception("exporter: collecting metrics failed")
                        self._send(500, b"collecting metrics failed\n", "text/plain")
                        return
                    self._send(200, body, content_type)
                elif path == "/healthz":
                    status, details = exporter.health()
                    body = json.dumps(details, default=str).encode("utf-8")
                    self._send(status, body, "application/json")
                else:
                    self._send(404, b"not found: try /metrics or /healthz\n", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("exporter: " + format, *args)

        return Handler
