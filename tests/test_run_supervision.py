"""``groundwatch run`` supervises its workers (issue 16, item 9; workers/supervisor.py).

A worker child SIGKILLed under a real ``run`` is reaped (no ``<defunct>``), logged, counted in
``groundwatch_process_restarts_total`` and started again, and SIGTERM still stops everything
cleanly (the crash-loop limit and the shutdown path: tests/test_supervisor.py).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from evaluator import demo_traffic
from tests.gw_helpers import (
    flush_test_redis,
    groundwatch_cmd,
    log_tail,
    parse_metrics,
    processes,
    start,
    total,
    write_config,
)
from tests.prom_helpers import free_port, wait_until


def _children(pid: int) -> list[int]:
    """The live (or zombie) child processes of ``pid`` (Linux /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _state(pid: int) -> str | None:
    """A process's state letter (Z: a zombie), or None once it is gone (reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return None


def _worker_children(pid: int) -> list[int]:
    workers = []
    for child in _children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"worker" in cmdline:
            workers.append(child)
    return workers


@pytest.mark.integration
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_run_restarts_a_killed_worker_logs_and_counts_it_and_leaves_no_zombie(
        tmp_path: Path) -> None:
    flush_test_redis()
    logs_url = f"sqlite:///{tmp_path}/logs.db"
    demo_traffic.create_log_table(logs_url)
    demo_traffic.write_rows(logs_url, demo_traffic.make_rows(20, seed=5))
    port = free_port()
    config = write_config(tmp_path, port=port)
    log = tmp_path / "run.log"
    with processes() as procs:
        runner = start(procs, groundwatch_cmd(config, "run", "--workers", "1"), log)

        def one_worker() -> int | None:
            assert runner.poll() is None, log_tail(log)
            found = _worker_children(runner.pid)
            return found[0] if len(found) == 1 else None
        first = wait_until(one_worker, timeout=60, what="`run` started its worker")
        wait_until(lambda: "exporter on http" in log.read_text(), timeout=60,
                   what="`run` serves /metrics")

        os.kill(first, signal.SIGKILL)

        def replaced() -> int | None:
            assert runner.poll() is None, log_tail(log)
            found = _worker_children(runner.pid)
            return found[0] if len(found) == 1 and found[0] != first else None
        second = wait_until(replaced, timeout=30, what="a new worker in place of the killed one")
        assert _state(first) is None, "the killed worker was not reaped (a zombie is left)"
        assert _state(second) not in (None, "Z")
        # The supervisor spawns the new worker, counts the restart, then logs it: the new
        # process can be seen before the line is written (a loaded CI host did).
        restarted = f"worker gw0@%h restarted: pid {second} (was {first})"
        wait_until(lambda: restarted in log.read_text(), timeout=30,
                   what="`run` logs the restart")
        text = log.read_text()
        assert f"worker gw0@%h (pid {first}) killed by SIGKILL; restarting it in" in text, text
        parsed = parse_metrics(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
        assert total(parsed, "groundwatch_process_restarts_total", role="worker") == 1

        # A stop is not a death: SIGTERM stops everything, with no restart on the way out.
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=60) == 0, log_tail(log)
        assert _state(second) is None
        assert log.read_text().count("restarting it in") == 1, log_tail(log)
    flush_test_redis()
