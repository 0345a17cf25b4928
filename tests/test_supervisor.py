"""The supervisor of ``groundwatch run``'s workers on real, short-lived processes
(workers/supervisor.py; ``run`` itself: tests/test_run_supervision.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

from workers.supervisor import Supervisor, describe_exit


def _dies_at_once(code: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])


def test_a_child_that_keeps_dying_is_a_crash_loop_that_stops_the_supervision() -> None:
    stop = threading.Event()
    counted: list[str] = []
    supervisor = Supervisor(lambda name: _dies_at_once(3), ["w0"], stop, max_restarts=2,
                            window_s=60, backoff_s=0.01, poll_s=0.02, on_restart=counted.append)
    try:
        assert stop.wait(30), "the supervisor never gave up"
        assert supervisor.restarts == 2 and counted == ["worker", "worker"]
        assert supervisor.gave_up is not None
        assert "exited with code 3" in supervisor.gave_up
        assert "crash loop" in supervisor.gave_up and "run.max_restarts = 2" in supervisor.gave_up
    finally:
        supervisor.close(timeout_s=5)
    assert all(p.poll() is not None for p in supervisor.procs)


def test_closing_stops_children_without_restarting_them() -> None:
    stop = threading.Event()
    supervisor = Supervisor(
        lambda name: subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]),
        ["w0", "w1"], stop, backoff_s=0.0, poll_s=0.02)
    procs = supervisor.procs
    supervisor.close(timeout_s=10)
    assert [p.returncode for p in procs] == [-signal.SIGTERM, -signal.SIGTERM]
    assert supervisor.restarts == 0 and supervisor.gave_up is None and not stop.is_set()
    assert supervisor.procs == procs


def test_exits_are_described_by_signal_name_or_code() -> None:
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(0) == "exited with code 0"
