"""Test helpers: a real Prometheus server, and child processes that record groundwatch metrics.

``running_prometheus`` starts ``/usr/bin/prometheus`` scraping the given targets every second
and stops it afterwards; ``MetricsProcess`` is a separate Python process that sets up
multiprocess mode in a directory and records metrics on command, so tests never switch the
pytest process itself into multiprocess mode (prometheus_client fixes that choice at import).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_until(
    probe: Callable[[], T | None], *, timeout: float = 30.0, interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until it returns something other than None (or False); return that."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = probe()
        except (httpx.HTTPError, OSError, ValueError, KeyError) as exc:
            result, last_error = None, exc
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}"
                               + (f" (last error: {last_error!r})" if last_error else ""))
        time.sleep(interval)


def write_prometheus_config(
    path: Path,
    targets: Sequence[str],
    *,
    job: str = "groundwatch",
    scrape_interval: str = "1s",
    rule_files: Sequence[str | os.PathLike[str]] = (),
    alertmanagers: Sequence[str] = (),
) -> Path:
    """A minimal prometheus.yml scraping ``targets`` (``host:port``) at ``/metrics`` and
    sending alerts to ``alertmanagers`` (``host:port``)."""
    lines = [
        "global:",
        f"  scrape_interval: {scrape_interval}",
        f"  evaluation_interval: {scrape_interval}",
    ]
    if rule_files:
        lines.append("rule_files:")
        lines += [f"  - {json.dumps(str(Path(f).resolve()))}" for f in rule_files]
    if alertmanagers:
        lines += ["alerting:", "  alertmanagers:", "    - static_configs:",
                  f"        - targets: {json.dumps(list(alertmanagers))}"]
    lines += [
        "scrape_configs:",
        f"  - job_name: {json.dumps(job)}",
        "    metrics_path: /metrics",
        "    static_configs:",
        f"      - targets: {json.dumps(list(targets))}",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class PrometheusServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the ``result`` list of a vector answer."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        response.raise_for_status()
        body = response.json()
        if body.get("status") != "success":
            raise ValueError(f"query {expr!r} failed: {body}")
        return list(body["data"]["result"])

    def value(self, expr: str) -> float | None:
        """The value of a query that returns one series, or None when it returns none."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) > 1:
            raise ValueError(f"query {expr!r} returned {len(result)} series")
        return float(result[0]["value"][1])

    def wait_for_value(self, expr: str, expected: float, *, timeout: float = 30.0) -> float:
        """Poll until the single-series query ``expr`` equals ``expected``."""
        seen: list[float | None] = []

        def probe() -> float | None:
            value = self.value(expr)
            seen[:] = [value]
            return value if value == expected else None

        try:
            return wait_until(probe, timeout=timeout, what=f"{expr} == {expected}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; last value {seen[-1] if seen else None}; "
                               f"log tail:\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def _stop(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


def _start_on_free_port(name: str, argv: Callable[[str, int], list[str]], log_path: Path,
                        startup_timeout: float) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``argv(address, attempt)`` on a free loopback port and wait for its ``/-/ready``;
    try another port (up to 3) when the probed one was taken before the bind."""
    for attempt in range(3):
        address = f"127.0.0.1:{free_port()}"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(argv(address, attempt), stdout=log_file,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def ready(process: subprocess.Popen[bytes] = process, address: str = address,
                  ) -> bool | None:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n"
                                   + log_path.read_text(errors="replace")[-3000:])
            return httpx.get(f"http://{address}/-/ready", timeout=2).status_code == 200 or None

        try:
            wait_until(ready, timeout=startup_timeout, what=f"{name} /-/ready")
        except RuntimeError:
            _stop(process)
            if "address already in use" in log_path.read_text(errors="replace") and attempt < 2:
                continue
            raise
        except BaseException:
            _stop(process)
            raise
        return process, address
    raise AssertionError("unreachable")


@contextlib.contextmanager
def running_prometheus(
    workdir: Path,
    targets: Sequence[str],
    *,
    scrape_interval: str = "1s",
    rule_files: Sequence[str | os.PathLike[str]] = (),
    alertmanagers: Sequence[str] = (),
    startup_timeout: float = 30.0,
) -> Iterator[PrometheusServer]:
    """Run a real Prometheus scraping ``targets`` until the block exits; yields its handle.

    Everything it writes (config, TSDB, log) stays under ``workdir``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_prometheus_config(workdir / "prometheus.yml", targets,
                                     scrape_interval=scrape_interval, rule_files=rule_files,
                                     alertmanagers=alertmanagers)
    log_path = workdir / "prometheus.log"
    process, address = _start_on_free_port(
        "prometheus", lambda address, attempt: [
            PROMETHEUS, f"--config.file={config}",
            f"--storage.tsdb.path={workdir / f'tsdb{attempt}'}",
            f"--web.listen-address={address}"], log_path, startup_timeout)
    try:
        yield PrometheusServer(f"http://{address}", process, log_path)
    finally:
        _stop(process)


@contextlib.contextmanager
def running_alertmanager(workdir: Path, config: Path, *, startup_timeout: float = 30.0,
                         ) -> Iterator[str]:
    """Run a real Alertmanager (Debian's) on a free loopback port with ``config``; yields its
    ``host:port``. No cluster port: ``--cluster.listen-address=`` turns gossip off."""
    workdir.mkdir(parents=True, exist_ok=True)
    process, address = _start_on_free_port(
        "alertmanager", lambda address, attempt: [
            ALERTMANAGER, f"--config.file={config}",
            f"--storage.path={workdir / f'data{attempt}'}",
            f"--web.listen-address={address}", "--cluster.listen-address="],
        workdir / "alertmanager.log", startup_timeout)
    try:
        yield address
    finally:
        _stop(process)


# A child process that records metrics on command: one JSON object per stdin line, one "ok"
# (or "error: ...") per stdout line. It sets up multiprocess mode before importing anything that
# imports prometheus_client, exactly as a worker does.
_CHILD = r"""
import json, os, sys
from metrics.multiprocess import setup_multiprocess, mark_process_dead
setup_multiprocess(sys.argv[1], clean=False)
from datetime import datetime, UTC
from evaluator.config import MetricsConfig
from evaluator.records import LogRecord
from evaluator.scorers.base import MetricResult
from evaluator.verdicts import NewScore, RunVerdict, Verdicts, is_quality_failure
from metrics.registry import Metrics
m = Metrics(MetricsConfig.model_validate(json.loads(sys.argv[2])))
print(os.getpid(), flush=True)

def record(i, cmd):
    return LogRecord(
        request_id=f"{os.getpid()}-{i}", timestamp=datetime.fromtimestamp(cmd.get("ts", 0), UTC),
        question="q", contexts=(), answer="a", route=cmd.get("route"), model=cmd.get("model"),
        latency_ms=cmd.get("latency_ms"), status=cmd.get("status"), cost_usd=cmd.get("cost_usd"))

def written(scorer, scores=(), seconds=0.0, n_items=0):
    return Verdicts((RunVerdict(scorer, seconds, n_items, tuple(scores)),), (), ())

for line in sys.stdin:
    cmd = json.loads(line)
    op = cmd.pop("op")
    try:
        if op == "exit":
            mark_process_dead(os.getpid())
            print("ok", flush=True)
            break
        elif op == "log":
            m.sampler.observe_logs([record(i, cmd) for i in range(cmd.get("n", 1))],
                                   cmd.get("source", "app"))
        elif op == "result":
            r = (MetricResult.ok(cmd["metric"], cmd["value"]) if "value" in cmd
                 else MetricResult.not_applicable(cmd["metric"], "test"))
            log_ts = cmd.get("log_ts")
            score = NewScore(cmd.get("route"), cmd.get("model"), r,
                             is_quality_failure(r, cmd.get("threshold")),
                             None if log_ts is None else datetime.fromtimestamp(log_ts, UTC))
            m.scoring.observe_written(written(cmd["scorer"], [score]), now=cmd.get("now"))
        elif op == "latency":
            m.scoring.observe_written(written(cmd["scorer"], (), cmd["seconds"], cmd["n_items"]))
        else:
            target = m
            for part in op.split("."):
                target = getattr(target, part)
            target(**cmd)
        print("ok", flush=True)
    except Exception as exc:
        print(f"error: {type(exc).__name__}: {exc}", flush=True)
"""


class MetricsProcess:
    """A real process recording groundwatch metrics into ``directory``.

    ``call("log", n=3, route="chat")``, ``call("result", metric=..., scorer=..., value=...)``,
    ``call("latency", scorer=..., seconds=..., n_items=...)`` and
    ``call("judge.set_judge_up", judge=..., up=...)`` (any recorder method of
    :class:`metrics.registry.Metrics` by dotted name and keywords) run in the child and return
    once it has recorded them. ``exit()`` calls ``mark_process_dead`` there and waits for the exit.
    """

    def __init__(self, directory: Path, metrics_config: dict[str, Any] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(directory), json.dumps(metrics_config or {})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
        )
        self.pid = int(self._readline())

    def _readline(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=10)
            raise RuntimeError(f"metrics child exited with {self.process.returncode}")
        return line.strip()

    def call(self, op: str, **kwargs: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
        self.process.stdin.flush()
        answer = self._readline()
        if answer != "ok":
            raise RuntimeError(f"metrics child: {op}: {answer}")

    def exit(self) -> None:
        self.call("exit")
        self.close()

    def close(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()
        _stop(self.process)

    def __enter__(self) -> MetricsProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
