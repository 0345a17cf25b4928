"""The files source through real log rotation (issue 16, item 4): Debian's logrotate, forced
with its own state file, rotating a JSON Lines file that a writer thread appends to.

Each scenario recomputes every written row's deterministic sampling decision and compares it
with what the sampler stored, sent and counted: no row lost, none counted twice, no rejection
stored twice. ``create``: the file is renamed and the app writes on to the renamed file for a
moment before it reopens its log; ``copytruncate``: the file is copied and truncated under an
app that never reopens.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from evaluator.config import load_config
from evaluator.records import RowLimits, map_row
from evaluator.sampling import SamplingPolicy, Verdict
from evaluator.store import Store
from metrics.registry import Metrics
from workers.sampler import build_sampler

LOGROTATE = shutil.which("logrotate") or (
    "/usr/sbin/logrotate" if os.access("/usr/sbin/logrotate", os.X_OK) else None)
pytestmark = pytest.mark.skipif(LOGROTATE is None, reason="logrotate is not installed")

BASE = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
LINES_PER_S = 150
ROTATIONS = 4
ROTATE_EVERY_S = 0.9
REOPEN_AFTER_S = 0.25
POLL_S = 0.2  # create mode: the app writes on to the renamed file this long

CONFIG = """
[store]
url = "sqlite:///{tmp}/gw.db"
[source]
name = "app"
kind = "files"
read_batch_rows = 100
[source.files]
paths = ["{glob}"]
format = "{fmt}"
[sampling]
default_rate = 0.5
max_items_per_minute = 0
"""

LOGROTATE_CONF = """
{log} {{
    rotate 20
    {mode}
    compress
    delaycompress
    missingok
}}
"""


def good_row(i: int) -> dict[str, Any]:
    return {"request_id": f"req-{i:05d}",
            "timestamp": (BASE + timedelta(milliseconds=i)).isoformat(),
            "question": f"How do I do {i}?", "contexts": [f"Step {i} is documented."],
            "answer": f"Do step {i}.", "route": "chat"}


def line_for(i: int) -> tuple[str, str]:
    """Line ``i`` of the log and what it is: ``good``, ``bad_json``, ``wrong_type`` or
    ``missing_field`` (a row without its question: rejected under its request id)."""
    if i % 41 == 7:
        return f'{{"request_id": "req-{i:05d}", "question": \n', "bad_json"
    if i % 53 == 11:
        return f"[{i}, 2]\n", "wrong_type"
    if i % 37 == 5:
        row = good_row(i)
        del row["question"]
        return json.dumps(row) + "\n", "missing_field"
    return json.dumps(good_row(i)) + "\n", "good"


class Writer(threading.Thread):
    """The app: appends lines through the rotations. In ``create`` mode it notices the
    rename, writes on to the renamed file for ``REOPEN_AFTER_S``, then reopens its log."""

    def __init__(self, log: Path, mode: str) -> None:
        super().__init__(daemon=True)
        self.log, self.mode = log, mode
        self.stop = threading.Event()
        self.written = 0
        self.reopened = 0

    def run(self) -> None:
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        renamed_at: float | None = None
        try:
            while not self.stop.is_set():
                line, _ = line_for(self.written)
                os.write(fd, line.encode())
                self.written += 1
                if self.mode == "create":
                    now = time.monotonic()
                    if renamed_at is None and not self._still_the_log(fd):
                        renamed_at = now
                    elif renamed_at is not None and now - renamed_at >= REOPEN_AFTER_S:
                        os.close(fd)
                        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                        renamed_at = None
                        self.reopened += 1
                time.sleep(1 / LINES_PER_S)
        finally:
            os.close(fd)

    def _still_the_log(self, fd: int) -> bool:
        try:
            st = os.stat(self.log)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino)


def lines_in(directory: Path) -> set[str]:
    """Every line the log files hold after the run, compressed rotations included."""
    found: set[str] = set()
    for path in directory.iterdir():
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        found.update(line.decode() + "\n" for line in data.split(b"\n") if line)
    return found


@dataclass
class Figures:
    """One scenario's count. ``not_in_files``: rows written between logrotate's copy and its
    truncation (copytruncate), in no file afterwards: the sampler may or may not have read
    them before they went. ``lost``: rows sampled by the policy, kept in a file, not sent."""

    written: int
    not_in_files: int
    expected_sampled: int
    expected_in_files: int
    stored: int
    sent: int
    lost: int
    sent_twice: int
    counted_sampled: int
    logs_seen: int
    bad_lines: int
    bad_in_files: int
    rejections_stored: int

    def line(self, name: str) -> str:
        return (f"{name}: rows written {self.written} (in no file after the rotations "
                f"{self.not_in_files}), expected sampled {self.expected_sampled} (in files "
                f"{self.expected_in_files}), stored {self.stored}, lost {self.lost}, sent "
                f"twice {self.sent_twice}, items_sampled_total {self.counted_sampled}, "
                f"logs_seen {self.logs_seen}, bad lines {self.bad_lines} (in files "
                f"{self.bad_in_files}), rejections stored {self.rejections_stored}")


def metric_total(metrics: Metrics, name: str) -> float:
    return sum(s.value for fam in metrics.registry.collect() for s in fam.samples
               if s.name == name)


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "logs"
    directory.mkdir(mode=0o755)
    yield directory


def run_scenario(tmp_path: Path, logs: Path, mode: str, glob: str, fmt: str) -> Figures:
    log = logs / "app.jsonl"
    log.touch()
    conf = tmp_path / "logrotate.conf"
    conf.write_text(LOGROTATE_CONF.format(log=log, mode=mode))
    config_path = tmp_path / "gw.toml"
    config_path.write_text(CONFIG.format(tmp=tmp_path, glob=glob, fmt=fmt))
    config = load_config(config_path, environ={})
    store = Store.from_config(config.store)
    metrics = Metrics(config.metrics, multiprocess=False)
    queue: list[dict[str, Any]] = []
    sampler = build_sampler(config, store.ledger, metrics, queue.extend)

    writer = Writer(log, mode)
    stop_sampler = threading.Event()
    errors: list[BaseException] = []

    def poll() -> None:
        try:
            while not stop_sampler.is_set():
                sampler.step()
                # Polls further apart than lines are written, as a sampler does (5 s by
                # default): the app is ahead of the reader when logrotate comes.
                time.sleep(POLL_S)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    poller = threading.Thread(target=poll, daemon=True)
    writer.start()
    poller.start()
    try:
        for _ in range(ROTATIONS):
            time.sleep(ROTATE_EVERY_S)
            subprocess.run([LOGROTATE or "logrotate", "-f", "-s", str(tmp_path / "state"),
                            str(conf)], check=True, capture_output=True, timeout=30)
        time.sleep(REOPEN_AFTER_S + 0.3)
    finally:
        writer.stop.set()
        writer.join(10)
        time.sleep(0.2)
        stop_sampler.set()
        poller.join(30)
    assert not errors, errors
    for _ in range(200):  # caught up with what is left
        if sampler.step().idle:
            break

    policy = SamplingPolicy(config.sampling)
    expected: set[str] = set()
    kept_ids: set[str] = set()
    bad = bad_kept = 0
    # copytruncate loses the lines written between logrotate's copy and its truncation: they
    # are in neither file (logrotate(8) says so), and counted apart.
    kept = lines_in(logs)
    for i in range(writer.written):
        line, kind = line_for(i)
        if kind != "good":
            bad += 1
            bad_kept += line in kept
            continue
        record = map_row(json.loads(line), config.source.columns.model_dump(),
                         limits=RowLimits.of(config.source), position=f"line {i}")
        if policy.decide(record).verdict is Verdict.SAMPLED:
            expected.add(record.request_id)
            if line in kept:
                kept_ids.add(record.request_id)
    sent = [m["request_id"] for m in queue]
    stored = sum(store.queries.count_items_by_status().values())
    figures = Figures(
        written=writer.written,
        not_in_files=sum(line_for(i)[0] not in kept for i in range(writer.written)),
        expected_sampled=len(expected), expected_in_files=len(kept_ids), stored=stored,
        sent=len(sent), lost=len(kept_ids - set(sent)), sent_twice=len(sent) - len(set(sent)),
        counted_sampled=int(metric_total(metrics, "groundwatch_items_sampled_total")),
        logs_seen=int(metric_total(metrics, "groundwatch_logs_seen_total")),
        bad_lines=bad, bad_in_files=bad_kept,
        rejections_stored=len(store.queries.rejections(limit=100_000)))
    print(figures.line(f"{mode} {glob.rsplit('/', 1)[-1]}"))
    assert set(sent) <= expected  # nothing sampled that should not be
    store.close()
    return figures


def check(figures: Figures) -> None:
    assert figures.written > 300
    assert figures.lost == 0
    assert figures.sent_twice == 0
    assert figures.stored == figures.counted_sampled == figures.sent
    # Every row a file still holds was read, and none twice (the rows logrotate dropped may
    # have been read before they went).
    assert figures.written - figures.not_in_files <= figures.logs_seen <= figures.written
    assert figures.bad_in_files <= figures.rejections_stored <= figures.bad_lines


@pytest.mark.parametrize("mode", ["create", "copytruncate"])
def test_rotation_loses_nothing_and_reads_nothing_twice(
        tmp_path: Path, logs: Path, mode: str) -> None:
    # The glob the docs give names the live file only; rotated files are followed by inode
    # (create) or found by their first bytes (copytruncate).
    check(run_scenario(tmp_path, logs, mode, str(logs / "*.jsonl"), "auto"))


@pytest.mark.parametrize("mode", ["create", "copytruncate"])
def test_a_glob_matching_the_rotations_reads_each_row_once(
        tmp_path: Path, logs: Path, mode: str) -> None:
    # app.jsonl* also matches app.jsonl.1 (the same file, renamed, or the copy) and the
    # compressed app.jsonl.2.gz: recognised, or never read.
    check(run_scenario(tmp_path, logs, mode, str(logs / "app.jsonl*"), "json"))
