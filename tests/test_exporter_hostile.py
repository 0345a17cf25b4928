"""The exporter against hostile clients, over raw sockets on a real server on a loopback port.

Unknown paths, bad methods, huge and malformed requests, slow and stalled clients, clients that
hang up mid-answer: each gets a 4xx/5xx or is dropped, the server keeps serving /metrics to
everyone else, and no handler thread outlives its connection.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from evaluator.config import DEFAULT_CONFIG, MetricsConfig, load_config
from metrics.exporter import Exporter
from tests.prom_helpers import wait_until

TIMEOUT_S = 1.0  # the exporter's request timeout in these tests


def _wait_for(condition: Callable[[], bool], deadline_s: float, what: str) -> None:
    wait_until(condition, timeout=deadline_s, interval=0.02, what=what)


def _handler_threads() -> int:
    return sum("process_request_thread" in t.name for t in threading.enumerate())


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[Exporter]:
    with Exporter(tmp_path / "prom", "127.0.0.1", 0, health=lambda: {"store": "ok"},
                  request_timeout_s=TIMEOUT_S) as exp:
        yield exp
    _wait_for(lambda: _handler_threads() == 0, 5, "handler threads end after stop()")


def _connect(port: int, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def _read_all(sock: socket.socket) -> bytes:
    out = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return out
        out += chunk


def _exchange(port: int, request: bytes) -> bytes:
    with _connect(port) as sock:
        sock.sendall(request)
        return _read_all(sock)


def _status(response: bytes) -> int:
    assert response.startswith(b"HTTP/1."), response[:200]
    return int(response.split(b" ", 2)[1])


def _head_and_body(response: bytes) -> tuple[bytes, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return head, body


def _scrape_ok(port: int) -> bool:
    response = _exchange(port, b"GET /metrics HTTP/1.0\r\n\r\n")
    return _status(response) == 200 and b"groundwatch_exporter_collect_errors_total" in response


@pytest.mark.parametrize("path", ["/", "/metricsx", "/metrics/../etc/passwd", "/%00", "/healthz/x",
                                  "http://evil.example/metrics", "*"])
def test_unknown_paths_are_404(exporter: Exporter, path: str) -> None:
    response = _exchange(exporter.port, f"GET {path} HTTP/1.0\r\n\r\n".encode())
    assert _status(response) == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_other_methods_are_405_with_allow(exporter: Exporter, method: str) -> None:
    response = _exchange(exporter.port, f"{method} /metrics HTTP/1.0\r\n\r\n".encode())
    assert _status(response) == 405
    assert b"\r\nAllow: GET, HEAD\r\n" in _head_and_body(response)[0]


def test_an_unknown_method_is_501(exporter: Exporter) -> None:
    assert _status(_exchange(exporter.port, b"BREW /metrics HTTP/1.0\r\n\r\n")) == 501


@pytest.mark.parametrize("path", ["/metrics", "/healthz"])
def test_head_answers_like_get_without_a_body(exporter: Exporter, path: str) -> None:
    got = _head_and_body(_exchange(exporter.port, f"GET {path} HTTP/1.0\r\n\r\n".encode()))
    head, body = _head_and_body(_exchange(exporter.port, f"HEAD {path} HTTP/1.0\r\n\r\n".encode()))
    assert _status(head) == 200
    assert body == b""
    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    assert length > 0
    # GET's own body (metrics may differ by a counter between the two; health may not).
    assert len(got[1]) > 0
    if path == "/healthz":
        assert length == len(got[1])


@pytest.mark.parametrize("request_bytes", [
    b"GET /metrics HTTP/1.0\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",   # one 100 KB header
    b"GET /" + b"a" * 100_000 + b" HTTP/1.0\r\n\r\n",                     # a 100 KB request line
    b"GET /metrics HTTP/1.0\r\n" + b"".join(                                # 90 KB in 1 KB headers
        b"X-%d: %s\r\n" % (i, b"b" * 1000) for i in range(90)) + b"\r\n",
    b"GET /metrics HTTP/1.0\r\n" + b"X: y\r\n" * 200 + b"\r\n",             # too many headers
], ids=["header-100k", "line-100k", "headers-90x1k", "headers-200"])
def test_huge_requests_get_a_4xx_and_the_server_keeps_serving(
        exporter: Exporter, request_bytes: bytes) -> None:
    status = _status(_exchange(exporter.port, request_bytes))
    assert status in (400, 414, 431)
    assert _scrape_ok(exporter.port)


@pytest.mark.parametrize("request_bytes,expected", [
    (b"\x00\xff\xfe\x80 garbage\r\n\r\n", 400),
    (b"GET /metrics HTTP/9.9\r\n\r\n", 505),
    (b"GET /metrics HTTP/abc\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.0 extra\r\n\r\n", 400),
    (b"GET /metr\x00ics HTTP/1.0\r\n\r\n", 404),
    (b"GET /metrics HTTP/1.0\r\nno colon here\r\n\r\n", 200),
    (b"GET /metrics HTTP/1.0\r\nX: \xff\xfe\r\n\r\n", 200),
    (b"GET /metrics HTTP/1.0\r\nAccept: \x00;;;q=abc, */*;q=-1\r\n\r\n", 200),
])
def test_malformed_requests_get_an_answer_not_a_crash(
        exporter: Exporter, request_bytes: bytes, expected: int) -> None:
    assert _status(_exchange(exporter.port, request_bytes)) == expected
    assert _scrape_ok(exporter.port)


def test_requests_that_end_early_are_closed_quietly(exporter: Exporter) -> None:
    for request_bytes in (b"", b"\r\n", b"\r\n\r\n", b"GET /metrics HTTP/1.0\r\nX: y"):
        with _connect(exporter.port) as sock:
            sock.sendall(request_bytes)
            sock.shutdown(socket.SHUT_WR)
            _read_all(sock)  # an answer or none; the server must simply close
    assert _scrape_ok(exporter.port)


def _stalled(port: int, n: int) -> list[socket.socket]:
    """``n`` clients that sent half a request and then nothing."""
    socks = []
    for _ in range(n):
        sock = _connect(port)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        socks.append(sock)
    return socks


def _closed_by_server(sock: socket.socket, within_s: float) -> bool:
    sock.settimeout(within_s)
    try:
        _read_all(sock)
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


def test_fifty_stalled_clients_are_timed_out_and_do_not_block_metrics(
        exporter: Exporter) -> None:
    before = _handler_threads()
    socks = _stalled(exporter.port, 50)
    try:
        _wait_for(lambda: _handler_threads() >= before + 50, 5, "50 connections accepted")
        started = time.monotonic()
        assert _scrape_ok(exporter.port)
        assert time.monotonic() - started < TIMEOUT_S / 2, "a scrape waited behind them"
        for sock in socks:
            assert _closed_by_server(sock, TIMEOUT_S + 3), "a stalled client was not dropped"
    finally:
        for sock in socks:
            sock.close()
    _wait_for(lambda: _handler_threads() <= before, 5, "no handler thread left behind")
    assert _scrape_ok(exporter.port)


def test_a_client_trickling_bytes_is_dropped_at_the_deadline(exporter: Exporter) -> None:
    """A per-recv timeout alone would keep this one forever: it never pauses long."""
    with _connect(exporter.port) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /metrics HTTP/1.0\r\n")
        closed = False
        while time.monotonic() - started < TIMEOUT_S + 3:
            try:
                sock.sendall(b"X")
            except ConnectionError:
                closed = True
                break
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable:  # the server answered or closed
                closed = True
                break
        assert closed, "the trickling client was never dropped"
        assert time.monotonic() - started < TIMEOUT_S + 1


def test_connections_beyond_the_limit_get_503_at_once(tmp_path: Path) -> None:
    with Exporter(tmp_path / "prom", "127.0.0.1", 0, request_timeout_s=TIMEOUT_S,
                  max_connections=4) as exp:
        socks = _stalled(exp.port, 4)
        try:
            _wait_for(lambda: _handler_threads() >= 4, 5, "4 connections accepted")
            started = time.monotonic()
            try:
                refused = _status(_exchange(exp.port, b"GET /metrics HTTP/1.0\r\n\r\n"))
            except ConnectionResetError:
                # The 503 is best effort: the server closes at once, with the request unread.
                refused = 503
            assert refused == 503
            assert time.monotonic() - started < TIMEOUT_S / 2
            assert _handler_threads() <= 4
            # Once the stalled ones time out, the slots are free again.
            _wait_for(lambda: _handler_threads() == 0, TIMEOUT_S + 3, "stalled clients dropped")
            assert _scrape_ok(exp.port)
        finally:
            for sock in socks:
                sock.close()


def test_stop_does_not_wait_for_or_leak_stalled_clients(tmp_path: Path) -> None:
    exp = Exporter(tmp_path / "prom", "127.0.0.1", 0, request_timeout_s=60)
    exp.start()
    socks = _stalled(exp.port, 10)
    try:
        _wait_for(lambda: _handler_threads() >= 10, 5, "10 connections accepted")
        started = time.monotonic()
        exp.stop()
        _wait_for(lambda: _handler_threads() == 0, 5, "handler threads end with stop()")
        assert time.monotonic() - started < 5
    finally:
        for sock in socks:
            sock.close()


def test_clients_that_reset_mid_answer_print_no_traceback(
        exporter: Exporter, capfd: pytest.CaptureFixture[str]) -> None:
    for _ in range(20):
        sock = _connect(exporter.port)
        # SO_LINGER 0: close() sends RST, so the server's write of the answer fails.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        sock.close()
    _wait_for(lambda: _handler_threads() == 0, 5, "handler threads end")
    assert _scrape_ok(exporter.port)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err[:2000]


def test_binds_loopback_by_default(tmp_path: Path) -> None:
    assert MetricsConfig().host == "127.0.0.1"
    shipped = load_config(DEFAULT_CONFIG, environ={})
    assert shipped.metrics.host == "127.0.0.1"
    with Exporter(tmp_path / "prom", port=0) as exp:
        assert exp.address[0] == "127.0.0.1"


def test_the_exporter_command_binds_the_configured_loopback_host(tmp_path: Path) -> None:
    """`groundwatch exporter` and `run` build their exporter with build_exporter."""
    from evaluator.store import Store
    from workers.app import make_celery
    from workers.exposition import build_exporter

    config = load_config(DEFAULT_CONFIG, environ={
        "GROUNDWATCH__STORE__URL": f"sqlite:///{tmp_path / 'store.db'}",
        "GROUNDWATCH__METRICS__MULTIPROC_DIR": str(tmp_path / "prom"),
    })
    store = Store.from_config(config.store)
    try:
        exp = build_exporter(config, store, make_celery(config), port=0)
        with exp:
            assert exp.address[0] == "127.0.0.1"
            assert _scrape_ok(exp.port)
    finally:
        store.close()
