"""Liveness: heartbeats with a TTL and ``groundwatch health ROLE`` (workers/health.py).

The unit tests drive the heartbeat stores and the check directly, on the real Redis (test DB)
and on a folder. The integration tests start real sampler, worker and exporter processes, and
check that ``groundwatch health`` says they are alive, and no longer once they are stopped
(SIGTERM: the heartbeat is deleted at once) or killed (SIGKILL: it expires).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis

from evaluator import demo_traffic
from evaluator.config import load_config
from groundwatch.cli import build_parser
from tests.gw_helpers import (
    REDIS_HOST,
    REDIS_PORT,
    TEST_REDIS_DB,
    flush_test_redis,
    groundwatch_cmd,
    log_tail,
    parse_metrics,
    processes,
    snapshot,
    start,
    write_config,
)
from tests.prom_helpers import free_port, wait_until
from workers.health import (
    HEALTH_TTL_FACTOR,
    KEY_PREFIX,
    ROLES,
    Beat,
    FileBeats,
    Heartbeat,
    RedisBeats,
    Status,
    WorkerActivity,
    check,
    check_role,
    host_name,
    worker_status,
)

REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{TEST_REDIS_DB}"
INTERVAL_S = 1.0  # the processes' beat in the integration tests: a heartbeat lives 3 s


def _redis() -> redis.Redis:
    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=TEST_REDIS_DB)


# -- the pieces -----------------------------------------------------------------------------------
def test_beat_round_trips_and_garbage_is_no_beat() -> None:
    beat = Beat("worker", "h1", 42, 1000.0, 30.0, details={"items": 3})
    assert Beat.from_json(beat.to_json()) == beat
    for junk in (b"", b"[]", b"{}", b'{"role": "worker"}', b"\xff", b'{"role": "w", "host": '
                 b'"h", "pid": "x", "at": 1, "ttl_s": 1}'):
        assert Beat.from_json(junk) is None
    assert beat.alive(1029.9) and not beat.alive(1030.0)


def test_redis_beats_expire_by_ttl_and_are_kept_per_host_and_queue() -> None:
    flush_test_redis()
    beats, other_queue = RedisBeats(REDIS_URL, "q1"), RedisBeats(REDIS_URL, "q2")
    try:
        beats.write(Beat("worker", "h1", 1, time.time(), 30.0))
        beats.write(Beat("worker", "h2", 2, time.time(), 30.0))
        beats.write(Beat("sampler", "h1", 3, time.time(), 30.0))
        ttl_ms = _redis().pttl(f"{KEY_PREFIX}:q1:worker:h1:1")
        assert 0 < ttl_ms <= 30_000  # Redis itself forgets a killed process's beat
        assert {b.pid for b in beats.read("worker", "h1")} == {1}
        assert {b.pid for b in beats.read("worker", None)} == {1, 2}
        assert other_queue.read("worker", None) == []  # another deployment's queue
        assert check(beats, "worker", host="h1").ok
        assert not check(other_queue, "worker", host=None).ok
        beats.delete("worker", "h1", 1)
        report = check(beats, "worker", host="h1")
        assert not report.ok and "1 other host" in report.line
        assert check(beats, "worker", host=None).ok  # --any-host
    finally:
        beats.close()
        other_queue.close()
        flush_test_redis()


def test_file_beats_expire_by_their_own_time(tmp_path: Path) -> None:
    beats = FileBeats(tmp_path / "health")
    beats.write(Beat("sampler", "h1", 7, 1000.0, 3.0, details={"rows": 5}))
    assert check(beats, "sampler", host="h1", now=1002.0).ok
    report = check(beats, "sampler", host="h1", now=1003.5)
    assert not report.ok and "no live heartbeat on h1" in report.line
    assert not check(beats, "worker", host="h1", now=1002.0).ok
    beats.prune(now=1010.0)
    assert list((tmp_path / "health").iterdir()) == []


def test_an_unhealthy_beat_fails_the_check_and_says_why(tmp_path: Path) -> None:
    beats = FileBeats(tmp_path)
    beats.write(Beat("worker", "h1", 7, 1000.0, 30.0, healthy=False, problem="a batch has run"))
    report = check(beats, "worker", host="h1", now=1001.0)
    assert not report.ok and "unhealthy: a batch has run" in report.line


def test_heartbeat_beats_at_most_once_per_interval_and_sets_the_gauge(tmp_path: Path) -> None:
    seen: list[tuple[str, float]] = []
    hb = Heartbeat(FileBeats(tmp_path), "sampler", interval_s=60.0,
                   on_beat=lambda role, at: seen.append((role, at)))
    assert hb.ttl_s == 60.0 * HEALTH_TTL_FACTOR
    assert hb.beat(Status({"rows": 1}))
    assert not hb.beat(Status({"rows": 2}))  # within the interval: nothing written
    assert [b.details for b in FileBeats(tmp_path).read("sampler", host_name())] == [{"rows": 1}]
    assert hb.beat(Status(healthy=False, problem="stuck"), force=True)
    assert len(seen) == 1 and seen[0][0] == "sampler"  # an unhealthy beat leaves the gauge
    hb.stop()
    assert FileBeats(tmp_path).read("sampler", None) == []  # a clean stop deletes it
    with pytest.raises(ValueError, match="unknown role"):
        Heartbeat(FileBeats(tmp_path), "scheduler", interval_s=1.0)


def test_heartbeat_thread_beats_and_stops(tmp_path: Path) -> None:
    calls = threading.Event()

    def status() -> Status:
        calls.set()
        return Status({"n": 1})

    hb = Heartbeat(FileBeats(tmp_path), "exporter", interval_s=0.2)
    hb.start(status)
    try:
        wait_until(lambda: FileBeats(tmp_path).read("exporter", host_name()) or None,
                   timeout=10, what="a beat from the thread")
        first = FileBeats(tmp_path).read("exporter", host_name())[0].at
        wait_until(lambda: FileBeats(tmp_path).read("exporter", host_name())[0].at > first,
                   timeout=10, what="a second beat")
    finally:
        hb.stop()
    assert calls.is_set() and FileBeats(tmp_path).read("exporter", None) == []


def test_an_unreachable_redis_neither_raises_in_a_beat_nor_passes_the_check(
        tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    hb = Heartbeat(RedisBeats(url, "q"), "sampler", interval_s=1.0)
    assert hb.beat() is False
    hb.stop()
    config_path = tmp_path / "gw.toml"
    config_path.write_text(f'[broker]\nurl = "{url}"\n')
    report = check_role(load_config(config_path, environ={}), "sampler")
    assert not report.ok and "cannot read heartbeats" in report.line


def test_a_worker_whose_batch_outlived_the_visibility_timeout_is_unhealthy() -> None:
    activity = WorkerActivity()
    activity.task_done(25, at=990.0)
    ready = threading.Event()
    ready.set()
    ok = worker_status(activity, 400.0, ready, starts=lambda: [900.0], clock=lambda: 1000.0)
    assert ok.healthy and ok.details["running"] == 1 and ok.details["items"] == 25
    assert ok.details["last_task_at"] == 990.0 and ok.details["state"] == "ready"
    stuck = worker_status(activity, 400.0, ready, starts=lambda: [500.0, 900.0],
                          clock=lambda: 1000.0)
    assert not stuck.healthy and "500s" in (stuck.problem or "")


def test_the_cli_offers_exactly_the_roles() -> None:
    parser = build_parser()
    health = parser._subparsers._group_actions[0].choices["health"]  # type: ignore[union-attr]
    role = next(a for a in health._actions if a.dest == "role")
    assert tuple(role.choices) == ROLES


# -- real processes -------------------------------------------------------------------------------
def _config(tmp: Path, **kwargs: object) -> Path:
    path = write_config(tmp, **kwargs)  # type: ignore[arg-type]
    path.write_text(path.read_text() + f"\n[health]\ninterval_s = {INTERVAL_S}\n")
    demo_traffic.create_log_table(f"sqlite:///{tmp}/logs.db")
    demo_traffic.write_rows(f"sqlite:///{tmp}/logs.db", demo_traffic.make_rows(60, seed=3))
    return path


def _health(config: Path, role: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(groundwatch_cmd(config, "health", role, *extra), capture_output=True,
                          text=True, timeout=60)


def _healthy(config: Path, role: str) -> bool:
    result = _health(config, role)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0


def _keys(role: str) -> list[bytes]:
    return list(_redis().scan_iter(match=f"{KEY_PREFIX}:*:{role}:*"))


@pytest.mark.integration
def test_real_worker_and_sampler_are_alive_until_stopped_or_killed(tmp_path: Path) -> None:
    flush_test_redis()
    config = _config(tmp_path, port=free_port())
    logs = {name: tmp_path / f"{name}.log" for name in ("worker", "sampler", "exporter")}
    with processes() as procs:
        worker = start(procs, groundwatch_cmd(config, "worker", "--name", "hb@%h"),
                       logs["worker"])
        sampler = start(procs, groundwatch_cmd(config, "sampler"), logs["sampler"])
        exporter = start(procs, groundwatch_cmd(config, "exporter"), logs["exporter"])
        for role, proc in (("worker", worker), ("sampler", sampler), ("exporter", exporter)):
            def alive(role: str = role, proc: subprocess.Popen[bytes] = proc) -> bool:
                assert proc.poll() is None, log_tail(logs[role])
                return _healthy(config, role)
            wait_until(alive, timeout=90, what=f"`groundwatch health {role}` exits 0")
        ok = _health(config, "worker")
        assert ok.stdout.startswith("worker: alive: pid ") and host_name() in ok.stdout

        # The worker's beat counts what it did: the sampler's 60 rows, sampled, get scored.
        def scored() -> bool:
            keys = _keys("worker")
            beats = [Beat.from_json(raw) for raw in (_redis().mget(keys) if keys else []) if raw]
            return any(b is not None and b.details.get("items", 0) > 0 for b in beats)
        wait_until(scored, timeout=60, what="the worker's heartbeat counts items")

        # The gauge beside the key, for Prometheus, per role.
        parsed = parse_metrics(snapshot(tmp_path / "prom"))
        beats = {s[0]["role"]: s[1] for s in
                 parsed.get("groundwatch_heartbeat_timestamp_seconds", [])}
        assert set(beats) == {"worker", "sampler", "exporter"}
        assert all(abs(time.time() - at) < 60 for at in beats.values())

        # SIGTERM: a clean shutdown deletes the key at once, long before its TTL ran out.
        assert _keys("worker")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, log_tail(logs["worker"])
        assert _keys("worker") == []
        bad = _health(config, "worker")
        assert bad.returncode == 1 and bad.stdout.startswith("worker: no live heartbeat on ")
        exporter.send_signal(signal.SIGTERM)
        assert exporter.wait(timeout=60) == 0, log_tail(logs["exporter"])
        assert _keys("exporter") == [] and not _healthy(config, "exporter")

        # SIGKILL: nothing can delete the key; its TTL does the job.
        assert _healthy(config, "sampler")
        sampler.kill()
        sampler.wait(timeout=10)
        killed_at = time.monotonic()
        assert _keys("sampler"), "the key should outlive a SIGKILL until its TTL"
        wait_until(lambda: not _healthy(config, "sampler"), timeout=30,
                   what="`groundwatch health sampler` fails once the TTL ran out")
        assert time.monotonic() - killed_at <= INTERVAL_S * HEALTH_TTL_FACTOR + 30
        assert _keys("sampler") == []


@pytest.mark.integration
def test_filesystem_broker_worker_heartbeat_is_a_file_that_expires(tmp_path: Path) -> None:
    broker = tmp_path / "broker"
    (broker / "control").mkdir(parents=True)
    config = _config(tmp_path, broker_url=f"filesystem://{broker}")
    with processes() as procs:
        worker = start(procs, groundwatch_cmd(config, "worker"), tmp_path / "worker.log")

        def alive() -> bool:
            assert worker.poll() is None, log_tail(tmp_path / "worker.log")
            return _healthy(config, "worker")
        wait_until(alive, timeout=90, what="`groundwatch health worker` exits 0")
        files = list((broker / "health").glob("worker@*.json"))
        assert [f.name for f in files] == [f"worker@{host_name()}@{worker.pid}.json"]
        worker.kill()
        worker.wait(timeout=10)
        assert files[0].exists()  # a killed process leaves its file: its time expires it
        wait_until(lambda: not _healthy(config, "worker"), timeout=30,
                   what="the killed worker's heartbeat expires")
        assert _health(config, "worker", "--any-host").returncode == 1


@pytest.mark.integration
def test_prefork_worker_beats_from_its_main_process_and_counts_its_childrens_items(
        tmp_path: Path) -> None:
    flush_test_redis()
    config = _config(tmp_path, pool="prefork", concurrency=2)
    with processes() as procs:
        worker = start(procs, groundwatch_cmd(config, "worker", "--name", "pf@%h"),
                       tmp_path / "worker.log")
        sampler = start(procs, groundwatch_cmd(config, "sampler", "--until-idle"),
                        tmp_path / "sampler.log")
        assert sampler.wait(timeout=120) == 0, log_tail(tmp_path / "sampler.log")

        def counted() -> Beat | None:
            assert worker.poll() is None, log_tail(tmp_path / "worker.log")
            keys = _keys("worker")
            beats = [Beat.from_json(raw) for raw in (_redis().mget(keys) if keys else []) if raw]
            done = [b for b in beats if b is not None and b.details.get("items", 0) > 0]
            return done[0] if done else None
        beat = wait_until(counted, timeout=90, what="the prefork children's items in the beat")
        # One heartbeat, the main process's: the children score, the parent beats.
        assert beat.pid == worker.pid and len(_keys("worker")) == 1
        assert beat.details["state"] == "ready" and beat.details["last_task_at"]
        assert _healthy(config, "worker")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, log_tail(tmp_path / "worker.log")
        assert _keys("worker") == []
