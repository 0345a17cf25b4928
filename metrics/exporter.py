"""The HTTP exporter: ``GET /metrics`` merges the multiprocess directory, ``GET /healthz``
(the store and broker checked), ``GET /livez`` (this server answers).

The exporter only *reads* the directory, so it does not need multiprocess mode itself and may
run in its own process or inside the all-in-one runner. Two gauges are computed at scrape time
from callables, because they describe the broker and the store rather than any one process:
``groundwatch_queue_depth{queue}`` and ``groundwatch_oldest_unscored_age_seconds``. A callable
that raises does not fail the scrape: its family is left out and
``groundwatch_exporter_collect_errors_total{what}`` counts the failure.

The server is the standard library's, hardened for clients that misbehave (it binds 127.0.0.1
by default, but a scrape port is often opened wider): each connection serves one request and
must deliver its request head within ``request_timeout_s`` and ``_MAX_HEAD_BYTES`` (a slow or
stalled client is dropped, a huge one gets 431); at most ``max_connections`` are served at once,
each by its own thread, and one more is answered 503 at once rather than queued; only GET and
HEAD are allowed (405 otherwise); and a client that hangs up is logged at debug level, not
printed as a traceback.

Like the rest of ``metrics/``, this module imports prometheus_client only inside functions (see
the import-order rule in :mod:`metrics.multiprocess`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
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
        # import-order rule (metrics.multiprocess): prometheus_client loads late
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
    # import-order rule (metrics.multiprocess): prometheus_client loads late
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=registry_dir)
    return registry


def snapshot_text(registry_dir: str | os.PathLike[str]) -> str:
    """The Prometheus text exposition of everything recorded in ``registry_dir`` right now."""
    # import-order rule (metrics.multiprocess): prometheus_client loads late
    from prometheus_client import generate_latest

    return generate_latest(_multiprocess_registry(os.fspath(registry_dir))).decode("utf-8")


# The request line and headers of one request, together. A scrape sends well under 1 KiB; the
# standard library alone allows 64 KiB per line times 100 headers, 6.4 MiB per connection.
_MAX_HEAD_BYTES = 64 * 1024
# How long a finished connection waits for the client to hang up (see _Server.shutdown_request).
_LINGER_S = 0.5
_REFUSED = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n"
            b"Connection: close\r\n\r\n")


class _HeadTooLarge(Exception):
    """The client sent more than ``_MAX_HEAD_BYTES`` before its request was complete."""


class _HeadReader(io.RawIOBase):
    """The connection's read side, bounded by a deadline and a byte budget for the whole request.

    A socket timeout alone bounds each ``recv``, so a client sending a byte every few seconds
    would hold its thread forever; here every read waits only for what is left of the deadline.
    """

    def __init__(self, sock: socket.socket, deadline: float, write_timeout_s: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline
        self._write_timeout_s = write_timeout_s
        self._left = _MAX_HEAD_BYTES

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request not received in time")
        if self._left <= 0:
            raise _HeadTooLarge
        view = memoryview(buffer).cast("B")
        self._sock.settimeout(remaining)
        try:
            n = self._sock.recv_into(view[: min(len(view), self._left)])
        finally:
            # Writes get a fresh, full timeout, whatever the request took to arrive.
            self._sock.settimeout(self._write_timeout_s)
        self._left -= n
        return n


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Fail fast if another exporter holds the port, but allow a quick restart (TIME_WAIT).
    allow_reuse_address = True
    # socketserver's default backlog of 5 makes a burst of connections wait for SYN retries.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *,
                 max_connections: int) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        self._active: set[socket.socket] = set()
        self._active_lock = threading.Lock()
        self._last_refusal_log = 0.0
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Runs on the serving thread: it must never block, or one client would stall them all.
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        with self._active_lock:
            self._active.add(request)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._done(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done(request)

    def _done(self, request: Any) -> None:
        with self._active_lock:
            self._active.discard(request)
        self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        now = time.monotonic()
        if now - self._last_refusal_log > 60:
            self._last_refusal_log = now
            log.warning("exporter: every connection slot is busy; refusing connections with 503")
        with contextlib.suppress(OSError):
            request.setblocking(False)
            request.send(_REFUSED)
        self.close_request(request)

    def shutdown_request(self, request: Any) -> None:
        """Close after a lingering read, so that a client whose request was cut short (431)
        reads its answer instead of a connection reset (closing a socket with unread input
        sends RST, which can discard the answer before the client reads it)."""
        try:
            request.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + _LINGER_S
            drained = 0
            while drained < 1024 * 1024:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                request.settimeout(remaining)
                chunk = request.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:
            pass
        self.close_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("exporter: client %s went away: %r", client_address, exc)
        else:
            log.exception("exporter: request from %s failed", client_address)

    def server_close(self) -> None:
        super().server_close()
        # Wake the handler threads still waiting on a client, so stop() leaves none behind.
        with self._active_lock:
            active = list(self._active)
        for request in active:
            with contextlib.suppress(OSError):
                request.shutdown(socket.SHUT_RDWR)


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
        request_timeout_s: float = 10.0,
        max_connections: int = 64,
    ) -> None:
        if request_timeout_s <= 0 or max_connections < 1:
            raise ValueError("request_timeout_s must be > 0 and max_connections >= 1")
        self.registry_dir = os.fspath(registry_dir)
        self.host = host
        self.port = port
        # Prometheus's default scrape timeout is 10 s: a request slower than that is not a scrape.
        self.request_timeout_s = request_timeout_s
        self.max_connections = max_connections
        self._health = health
        self._scrape_time = _ScrapeTimeCollector(queue_depth, oldest_unscored)
        self._registry: CollectorRegistry | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the server is bound to."""
        if self._server is None:
            raise RuntimeError("exporter not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> int:
        """Bind and serve in a daemon thread; returns the bound port (``port=0`` picks one)."""
        if self._server is not None:
            raise RuntimeError("exporter already started")
        os.makedirs(self.registry_dir, exist_ok=True)
        registry = _multiprocess_registry(self.registry_dir)
        registry.register(self._scrape_time)
        self._registry = registry
        server_cls = _Server6 if ":" in self.host else _Server
        server = server_cls((self.host, self.port), self._handler_class(),
                            max_connections=self.max_connections)
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
        # import-order rule (metrics.multiprocess): prometheus_client loads late
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
        timeout_s = self.request_timeout_s

        class Handler(BaseHTTPRequestHandler):
            server_version = "groundwatch-exporter"
            # The stdlib answers a request it cannot parse as HTTP/0.9, with no status line.
            default_request_version = "HTTP/1.0"
            # Per socket operation; reading the request is bounded as a whole by _HeadReader.
            timeout = timeout_s

            def setup(self) -> None:
                super().setup()
                self.rfile.close()  # the stdlib's reader; ours adds the deadline and the budget
                self.rfile = io.BufferedReader(_HeadReader(
                    self.connection, time.monotonic() + timeout_s, timeout_s))

            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                except _HeadTooLarge:
                    for name in ("requestline", "request_version", "command"):
                        if not hasattr(self, name):
                            setattr(self, name, "")
                    self.close_connection = True
                    self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                                    f"Request head over {_MAX_HEAD_BYTES} bytes")

            def do_GET(self) -> None:
                self._respond(body_too=True)

            def do_HEAD(self) -> None:
                self._respond(body_too=False)

            def _not_allowed(self) -> None:
                self.close_connection = True
                self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
                self.send_header("Allow", "GET, HEAD")
                self.send_header("Content-Type", "text/plain")
                body = b"method not allowed: use GET or HEAD\n"
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed
            do_TRACE = do_CONNECT = _not_allowed

            def _respond(self, *, body_too: bool) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    try:
                        body, content_type = exporter.render(self.headers.get("Accept", ""))
                    except Exception:
                        log.exception("exporter: collecting metrics failed")
                        self._send(500, b"collecting metrics failed\n", "text/plain", body_too)
                        return
                    self._send(200, body, content_type, body_too)
                elif path == "/livez":
                    # Liveness only: this server answers. The exporter's heartbeat asks it
                    # (workers/health.py); dependencies are /healthz's business.
                    self._send(200, b"ok\n", "text/plain", body_too)
                elif path == "/healthz":
                    status, details = exporter.health()
                    body = json.dumps(details, default=str).encode("utf-8")
                    self._send(status, body, "application/json", body_too)
                else:
                    self._send(404, b"not found: try /metrics, /healthz or /livez\n", "text/plain",
                               body_too)

            def _send(self, status: int, body: bytes, content_type: str, body_too: bool) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body_too:
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("exporter: " + format, *args)

        return Handler
