"""The stop request a worker makes when told to stop, and the judge loop's bounded wait on it
(the worker-level behaviour, with a real Celery worker and judge server, is in
tests/test_judge_worker.py)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.signals import worker_process_shutdown, worker_shutdown, worker_shutting_down

from evaluator.config import load_config
from evaluator.judge.loop import JudgeLoop, StoppedWaiting
from evaluator.stopping import StopRequest
from workers.app import make_celery
from workers.tasks import guard_cold_stop


@pytest.fixture
def loop() -> Iterator[JudgeLoop]:
    judge_loop = JudgeLoop()
    yield judge_loop
    judge_loop.close()


def test_a_stop_request_starts_unset_and_only_ever_comes_closer() -> None:
    stop = StopRequest()
    assert not stop.requested and stop.remaining_s() is None and not stop.expired()
    stop.request(60.0)
    assert stop.requested and 59.0 < (stop.remaining_s() or 0) <= 60.0
    stop.request(120.0)  # a later, longer request does not push the deadline back
    assert (stop.remaining_s() or 0) <= 60.0
    stop.request(0.0)
    assert stop.expired() and stop.remaining_s() == 0.0


def test_a_forked_child_sees_the_stop_its_parent_asks_for_after_the_fork() -> None:
    stop = StopRequest()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: wait for the parent's request, say what it saw
        os.close(read)
        deadline = time.monotonic() + 10
        while not stop.requested and time.monotonic() < deadline:
            time.sleep(0.01)
        os.write(write, b"1" if stop.requested else b"0")
        os._exit(0)
    os.close(write)
    stop.request(5.0)
    try:
        assert os.read(read, 1) == b"1"
    finally:
        os.waitpid(pid, 0)
        os.close(read)


def test_the_loop_waits_as_long_as_it_takes_without_a_stop(loop: JudgeLoop) -> None:
    async def answer() -> int:
        await asyncio.sleep(0.6)  # longer than a poll: the wait goes round more than once
        return 42

    assert loop.run(answer(), stop=StopRequest()) == 42


def test_the_loop_cancels_its_work_when_the_stop_grace_runs_out(loop: JudgeLoop) -> None:
    cancelled = concurrent.futures.Future[bool]()

    async def slow_call() -> int:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set_result(True)
            raise
        return 1

    stop = StopRequest()
    stop.request(0.5)
    started = time.monotonic()
    with pytest.raises(StoppedWaiting) as caught:
        loop.run(slow_call(), stop=stop)
    waited = time.monotonic() - started
    assert 0.4 < waited < 5.0, waited  # the grace, not the call's 60 s
    assert 0.3 < caught.value.waited_s < 5.0
    assert cancelled.result(timeout=5)  # the call itself was cancelled on the loop


def test_work_that_ends_within_the_grace_returns_its_result(loop: JudgeLoop) -> None:
    async def quick() -> str:
        await asyncio.sleep(0.2)
        return "done"

    stop = StopRequest()
    stop.request(10.0)
    assert loop.run(quick(), stop=stop) == "done"


def test_a_loop_closed_under_a_stop_says_stopped_not_failed() -> None:
    judge_loop = JudgeLoop()

    started = threading.Event()

    async def slow_call() -> None:
        started.set()
        await asyncio.sleep(60)

    stop = StopRequest()
    stop.request(30.0)  # a long grace: it is the close that cuts the call
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(judge_loop.run, slow_call(), stop=stop)
        assert started.wait(10)
        judge_loop.close()
        with pytest.raises(StoppedWaiting):
            waiting.result(timeout=10)


def test_a_loop_closed_without_a_stop_is_not_explained_as_one() -> None:
    judge_loop = JudgeLoop()

    started = threading.Event()

    async def slow_call() -> None:
        started.set()
        await asyncio.sleep(60)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(judge_loop.run, slow_call(), stop=StopRequest())
        assert started.wait(10)
        judge_loop.close()
        with pytest.raises(concurrent.futures.CancelledError):
            waiting.result(timeout=10)


def test_a_prefork_childs_exit_does_not_stop_the_others_but_the_workers_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stop request is shared by every prefork child: a child that exits on its own
    (recycled, say) must not ask the others to cut their batches; the worker's own shutdown
    does ask (so a batch still waiting when the judge's loop closes is handed back, not
    recorded as failed)."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "prom"))
    (tmp_path / "prom").mkdir()
    path = tmp_path / "gw.toml"
    path.write_text(f'[broker]\nurl = "filesystem://{tmp_path}/broker"\n'
                    f'[store]\nurl = "sqlite:///{tmp_path}/gw.db"\n'
                    f'[metrics]\nmultiproc_dir = "{tmp_path}/prom"\n')
    app = make_celery(load_config(path, environ={}))
    worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)
    assert not app.runtime.stop.requested
    worker_shutdown.send(sender=None)
    assert app.runtime.stop.expired()


def _app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pool: str) -> object:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "prom"))
    (tmp_path / "prom").mkdir(exist_ok=True)
    path = tmp_path / f"{pool}.toml"
    path.write_text(f'[broker]\nurl = "filesystem://{tmp_path}/broker"\n'
                    f'[store]\nurl = "sqlite:///{tmp_path}/gw.db"\n'
                    f'[metrics]\nmultiproc_dir = "{tmp_path}/prom"\n'
                    f'[worker]\npool = "{pool}"\n')
    return make_celery(load_config(path, environ={}))


@pytest.mark.parametrize("pool", ["solo", "threads", "prefork"])
def test_a_cold_stop_asks_the_batches_to_stop_unless_celery_kills_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pool: str) -> None:
    """A cold stop (SIGQUIT, a second SIGTERM) asks the solo and threads pools' batches to
    hand back at once. Prefork children are killed by Celery and the main process says and
    counts their batches (guard_cold_stop): asked as well, a child that saw the request
    before the kill handed its batch back itself, and the batch was counted twice (the
    metric read 2 under load in CI)."""
    app = _app(tmp_path, monkeypatch, pool)
    stop = app.runtime.stop  # type: ignore[attr-defined]
    worker_shutting_down.send(sender=None, sig="SIGQUIT", how="Cold", exitcode=1)
    assert stop.requested is (pool != "prefork")
    warm = _app(tmp_path, monkeypatch, pool)
    worker_shutting_down.send(sender=None, sig="SIGTERM", how="Warm", exitcode=0)
    assert warm.runtime.stop.requested  # type: ignore[attr-defined]  # every pool: the grace


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_the_sigquit_guard_asks_for_the_stop_only_where_celery_cannot_kill(
        pool: str) -> None:
    previous = signal.getsignal(signal.SIGQUIT)
    called: list[int] = []
    signal.signal(signal.SIGQUIT, lambda signum, frame: called.append(signum))
    try:
        stop = StopRequest()
        guard_cold_stop(stop, pool, count_cut=None)
        handler = signal.getsignal(signal.SIGQUIT)
        assert callable(handler)
        handler(signal.SIGQUIT, None)
        assert called == [signal.SIGQUIT]  # Celery's own handler still runs
        assert stop.requested is (pool != "prefork")
    finally:
        signal.signal(signal.SIGQUIT, previous)
