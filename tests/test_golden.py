"""The judge's golden set: the file, one run and its drift, the claim, the scheduler, the CLI.

The runs use the lexical scorer as the "judge" (deterministic, no endpoint); a judge that
changed behind its name is the lexical scorer with its values shifted under the same name
and version. Store tests run on SQLite and on the real PostgreSQL (marker ``postgres``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from evaluator.config import Config, GoldenConfig
from evaluator.errors import ConfigError, GoldenRunError
from evaluator.judge.golden import (
    GoldenScheduler,
    format_golden,
    judge_version,
    load_golden,
    load_labelled,
    run_golden,
)
from evaluator.records import LogRecord
from evaluator.scorers.base import METRICS, ItemResult, MetricResult, Outcome
from evaluator.scorers.lexical import LexicalScorer
from evaluator.store import Store
from groundwatch.cli import main
from metrics.registry import Metrics
from tests.prom_helpers import wait_until

REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
VERSION = "lexical/1"

GOLDEN = [
    {"request_id": "refund", "question": "How long does a refund take?",
     "contexts": ["A refund takes five business days after the return arrives."],
     "answer": "A refund takes five business days.", "route": "billing"},
    {"question": "Which regions store backups?",
     "contexts": ["Backups are stored in two regions: eu-west and us-east.",
                  "Snapshots run nightly."],
     "answer": "Backups are stored in eu-west and us-east, and the moon."},
    {"request_id": "password", "question": "How do I reset my password?",
     "contexts": ["Open settings, choose security, then reset password."],
     "answer": "Choose security in settings and click reset password. Then wait a while."},
    {"request_id": "offtopic", "question": "What is the SLA for the API?",
     "contexts": ["Our cafeteria serves lunch from noon."],
     "answer": "The cafeteria serves lunch at noon."},
]


def write_golden(tmp_path: Path, lines: Sequence[Any], name: str = "golden.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n"
                            for line in lines), encoding="utf-8")
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store(db_url) as s:
        yield s


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(Config().metrics, multiprocess=False)


@pytest.fixture
def records(tmp_path: Path) -> list[LogRecord]:
    return load_golden(write_golden(tmp_path, GOLDEN))


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def runs(metrics: Metrics, result: str) -> float:
    return sample(metrics, "groundwatch_golden_runs_total", result=result) or 0.0


class ShiftedScorer:
    """The lexical scorer under the same name and version, every ok value moved by
    ``shift`` (clipped into [0, 1]): a judge model that changed behind its name."""

    def __init__(self, shift: float) -> None:
        self.inner = LexicalScorer()
        self.name, self.version = self.inner.name, self.inner.version
        self.shift = shift

    def score_batch(self, records: Sequence[LogRecord]) -> list[ItemResult]:
        return [dataclasses.replace(item, metrics=tuple(
            MetricResult.ok(m.metric, shifted(m.value, self.shift))
            if m.outcome is Outcome.OK and m.value is not None else m
            for m in item.metrics)) for item in self.inner.score_batch(records)]

    def warm_up(self) -> None:
        pass

    def close(self) -> None:
        pass


def shifted(value: float, shift: float) -> float:
    return min(1.0, max(0.0, value + shift))


class FailingScorer:
    name, version = "lexical", "1"

    def __init__(self, how: str = "raise") -> None:
        self.how = how
        self.calls = 0

    def score_batch(self, records: Sequence[LogRecord]) -> list[ItemResult]:
        self.calls += 1
        if self.how == "raise":
            raise ConnectionError("judge endpoint refused the connection")
        return [ItemResult(r.request_id, tuple(MetricResult.error(m, "timeout")
                                               for m in METRICS)) for r in records]


def lexical_values(records: Sequence[LogRecord]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for item in LexicalScorer().score_batch(records):
        for m in item.metrics:
            if m.value is not None:
                out.setdefault(item.request_id, {})[m.metric] = m.value
    return out


# -- the file -------------------------------------------------------------------------------

def test_load_golden_reads_items_with_defaults_and_skips_blank_lines(tmp_path: Path) -> None:
    path = write_golden(tmp_path, [GOLDEN[0], "", "   ", GOLDEN[1],
                                   {**GOLDEN[2], "route": None}])
    before = datetime.now(UTC)
    got = load_golden(path)
    assert [r.request_id for r in got] == ["refund", "golden-4", "password"]
    first = got[0]
    assert first.question == GOLDEN[0]["question"] and first.answer == GOLDEN[0]["answer"]
    assert first.contexts == tuple(GOLDEN[0]["contexts"]) and first.route == "billing"
    assert got[2].route is None
    assert all(r.timestamp.tzinfo is UTC and r.timestamp >= before for r in got)


@pytest.mark.parametrize(("line", "field", "problem"), [
    ('{"question": "q?", "contexts": [], "answer": ', None, "not JSON"),
    ('["question", "contexts", "answer"]', None, "a JSON object is needed, got list"),
    ({"question": "q?", "answer": "a"}, "contexts", "missing"),
    ({"contexts": ["c"], "answer": "a"}, "question", "missing"),
    ({"question": "q?", "contexts": "one passage", "answer": "a"}, "contexts",
     "must be a list of texts, got str"),
    ({"question": "q?", "contexts": ["c", 3], "answer": "a"}, "contexts",
     "item 1 must be text, got int"),
    ({"question": "q?", "contexts": ["c"], "answer": "  "}, "answer", "is empty"),
    ({"question": "q?", "contexts": ["c"], "answer": "a", "request_id": 7}, "request_id",
     "must be text, got int"),
    ({"question": "q?", "contexts": ["c"], "answer": "a", "contxts": []}, "contxts",
     "unknown field"),
])
def test_a_bad_line_is_an_error_naming_file_line_and_field(
        tmp_path: Path, line: Any, field: str | None, problem: str) -> None:
    path = write_golden(tmp_path, [GOLDEN[0], "", line, GOLDEN[2]])
    with pytest.raises(ConfigError) as caught:
        load_golden(path)
    err = caught.value
    assert err.path == str(path) and err.key == "judge.golden.path"
    message = str(err)
    assert f"file {path}" in message and "line 3" in message and problem in message
    if field is not None:
        assert f"field '{field}'" in message
    assert "\n" not in message


def test_duplicate_request_ids_are_an_error_naming_both_lines(tmp_path: Path) -> None:
    path = write_golden(tmp_path, [GOLDEN[0], GOLDEN[1], {**GOLDEN[2], "request_id": "refund"}])
    with pytest.raises(ConfigError, match=r"line 3, field 'request_id': 'refund' is already "
                                          r"the id of line 1"):
        load_golden(path)
    # A default id is an id like any other.
    path = write_golden(tmp_path, [GOLDEN[1], {**GOLDEN[0], "request_id": "golden-1"}])
    with pytest.raises(ConfigError, match=r"line 2, field 'request_id': 'golden-1'"):
        load_golden(path)


def test_a_missing_or_empty_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_golden(tmp_path / "nope.jsonl")
    with pytest.raises(ConfigError, match="holds no item"):
        load_golden(write_golden(tmp_path, ["", "  "]))
    (tmp_path / "latin1.jsonl").write_bytes(b'{"question": "caf\xe9?"}\n')
    with pytest.raises(ConfigError, match="line 1: not UTF-8"):
        load_golden(tmp_path / "latin1.jsonl")


# -- one run --------------------------------------------------------------------------------

def test_first_run_is_the_baseline_then_a_changed_judge_drifts(
        store: Store, metrics: Metrics, records: list[LogRecord]) -> None:
    base = lexical_values(records)
    first = run_golden(LexicalScorer(), records, store.golden, metrics, judge_version=VERSION, now=T0)
    assert first.n_items == 4 and first.n_errors == 0
    assert set(first.scores) == set(METRICS)
    for metric in METRICS:
        values = [v[metric] for v in base.values() if metric in v]
        assert first.scores[metric] == pytest.approx(sum(values) / len(values))
        assert first.counts[metric] == len(values)
        assert first.drift[metric] == 0.0
        assert sample(metrics, "groundwatch_golden_score", metric=metric) == \
            pytest.approx(first.scores[metric])
        assert sample(metrics, "groundwatch_golden_drift", metric=metric) == 0.0
    assert first.moved_most() == ()
    assert runs(metrics, "ok") == 1

    shift = -0.3  # clipped at 0: items near the bottom move less than 0.3
    later = T0 + timedelta(hours=1)
    second = run_golden(ShiftedScorer(shift), records, store.golden, metrics, judge_version=VERSION,
                        now=later)
    for metric in METRICS:
        moves = [abs(shifted(v[metric], shift) - v[metric]) for v in base.values()
                 if metric in v]
        expected = sum(moves) / len(moves)
        assert expected > 0
        assert second.drift[metric] == pytest.approx(expected)
        assert sample(metrics, "groundwatch_golden_drift", metric=metric) == \
            pytest.approx(expected)
        assert sample(metrics, "groundwatch_golden_score", metric=metric) == \
            pytest.approx(second.scores[metric])
    assert runs(metrics, "ok") == 2
    # Largest move first; each delta is now - baseline.
    sizes = [abs(d.delta) for d in second.deltas]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == pytest.approx(0.3)
    top = second.moved_most(5)
    assert len(top) == 5 and all(d.delta < 0 for d in top)

    stored = store.golden.golden_scores(VERSION)
    assert len(stored) == sum(len(v) for v in base.values())
    for (rid, metric), (baseline, last) in stored.items():
        assert baseline == pytest.approx(base[rid][metric])
        assert last == pytest.approx(shifted(base[rid][metric], shift))

    # The judge back as it was: no drift, and the baseline never moved.
    third = run_golden(LexicalScorer(), records, store.golden, metrics, judge_version=VERSION,
                       now=later + timedelta(hours=1))
    assert all(d == pytest.approx(0.0) for d in third.drift.values())
    assert all(b == pytest.approx(base[rid][m])
               for (rid, m), (b, _) in store.golden.golden_scores(VERSION).items())


def test_baselines_are_per_judge_version(store: Store, metrics: Metrics,
                                          records: list[LogRecord]) -> None:
    run_golden(LexicalScorer(), records, store.golden, metrics, judge_version=VERSION, now=T0)
    other = run_golden(ShiftedScorer(-0.3), records, store.golden, metrics,
                       judge_version="compact/compact:new-model", now=T0)
    assert all(d == 0.0 for d in other.drift.values())  # a new model: a new baseline
    assert judge_version(LexicalScorer()) == VERSION


def test_an_item_first_scored_later_gets_its_baseline_then(
        store: Store, metrics: Metrics, records: list[LogRecord]) -> None:
    run_golden(LexicalScorer(), records[:2], store.golden, metrics, judge_version=VERSION, now=T0)
    run = run_golden(ShiftedScorer(-0.3), records, store.golden, metrics, judge_version=VERSION,
                     now=T0 + timedelta(hours=1))
    moved_ids = {d.request_id for d in run.deltas if d.delta != 0}
    assert moved_ids <= {records[0].request_id, records[1].request_id}
    assert {rid for rid, _ in store.golden.golden_scores(VERSION)} == {r.request_id for r in records}


def test_a_scorer_that_raises_is_an_error_run(store: Store, metrics: Metrics,
                                              records: list[LogRecord]) -> None:
    with pytest.raises(ConnectionError):
        run_golden(FailingScorer("raise"), records, store.golden, metrics, judge_version=VERSION)
    assert runs(metrics, "error") == 1 and runs(metrics, "ok") == 0
    assert sample(metrics, "groundwatch_golden_score", metric="faithfulness") is None


def test_every_metric_in_error_is_an_error_run_and_stores_nothing(
        store: Store, metrics: Metrics, records: list[LogRecord]) -> None:
    with pytest.raises(GoldenRunError, match=r"no metric of the 4 golden items was scored by "
                                             r"lexical/1: errors timeout x16") as caught:
        run_golden(FailingScorer("errors"), records, store.golden, metrics, judge_version=VERSION)
    assert caught.value.errors == {"timeout": 16}
    assert runs(metrics, "error") == 1
    assert store.golden.golden_scores(VERSION) == {}


def test_some_errors_still_make_an_ok_run_over_what_was_scored(
        store: Store, metrics: Metrics, records: list[LogRecord]) -> None:
    class HalfBroken:
        name, version = "lexical", "1"

        def score_batch(self, records: Sequence[LogRecord]) -> list[ItemResult]:
            out = LexicalScorer().score_batch(records)
            return [ItemResult(r.request_id, tuple(MetricResult.error(m, "unparseable")
                                                   for m in METRICS)) if i == 0 else r
                    for i, r in enumerate(out)]

    run = run_golden(HalfBroken(), records, store.golden, metrics, judge_version=VERSION, now=T0)
    assert run.n_errors == 4 and runs(metrics, "ok") == 1
    assert records[0].request_id not in {rid for rid, _ in store.golden.golden_scores(VERSION)}


# -- the claim ------------------------------------------------------------------------------

def test_one_claim_wins_per_interval(store: Store) -> None:
    start = threading.Barrier(8)

    def claim() -> bool:
        start.wait(timeout=30)
        return store.golden.claim_golden_run("golden:x", 3600, T0)

    with ThreadPoolExecutor(8) as pool:
        results = [f.result(timeout=60) for f in [pool.submit(claim) for _ in range(8)]]
    assert results.count(True) == 1
    assert store.golden.claim_golden_run("golden:x", 3600, T0 + timedelta(seconds=3599)) is False
    assert store.golden.claim_golden_run("golden:x", 3600, T0 + timedelta(seconds=3600)) is True
    assert store.golden.claim_golden_run("golden:x", 3600, T0 + timedelta(seconds=3601)) is False
    # Another schedule has its own row.
    assert store.golden.claim_golden_run("golden:y", 3600, T0) is True


def test_claims_from_separate_processes_sharing_the_store(db_url: str) -> None:
    code = ("import sys; from datetime import datetime, UTC; from evaluator.store import Store;"
            "s = Store(sys.argv[1]); "
            "print(s.golden.claim_golden_run('golden:p', 600, datetime(2026, 11, 1, tzinfo=UTC)))")
    with Store(db_url):
        pass  # migrated once, before the race
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code, db_url], stdout=subprocess.PIPE,
                              text=True, env=env, cwd=REPO) for _ in range(4)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert sorted(outs) == ["False", "False", "False", "True"]


def test_a_claim_needs_a_positive_interval(store: Store) -> None:
    with pytest.raises(ValueError, match="positive"):
        store.golden.claim_golden_run("golden:x", 0)


# -- the scheduler --------------------------------------------------------------------------

def golden_config(tmp_path: Path, interval_s: float = 3600) -> GoldenConfig:
    return GoldenConfig(path=str(write_golden(tmp_path, GOLDEN)), interval_s=interval_s)


def test_the_scheduler_runs_once_soon_after_start_and_stops_cleanly(
        tmp_path: Path, store: Store, metrics: Metrics) -> None:
    scheduler = GoldenScheduler(golden_config(tmp_path), LexicalScorer(), store.golden, metrics)
    assert scheduler.poll_s == 30 and scheduler.name == "golden:lexical/1"
    scheduler.start()
    try:
        wait_until(lambda: runs(metrics, "ok") == 1, what="a golden run")
        assert scheduler.running
    finally:
        started = time.monotonic()
        scheduler.stop()
    assert time.monotonic() - started < 5  # woken, not waiting out its poll
    assert not scheduler.running
    assert len(store.golden.golden_scores(VERSION)) > 0
    # Another process starting now finds the run claimed for this interval.
    second = GoldenScheduler(golden_config(tmp_path), LexicalScorer(), store.golden, metrics)
    assert second.tick() is None
    assert runs(metrics, "ok") == 1


def test_a_failing_run_is_one_log_line_and_the_thread_goes_on(
        tmp_path: Path, store: Store, metrics: Metrics,
        caplog: pytest.LogCaptureFixture) -> None:
    scorer = FailingScorer("raise")
    scheduler = GoldenScheduler(golden_config(tmp_path, interval_s=10), scorer, store.golden, metrics)
    with caplog.at_level(logging.INFO, logger="groundwatch.golden"):
        scheduler.start()
        try:
            wait_until(lambda: runs(metrics, "error") == 1, what="a failed golden run")
            assert scheduler.running
        finally:
            scheduler.stop()
    failed = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failed) == 1 and failed[0].exc_info is None
    message = failed[0].getMessage()
    assert "ConnectionError: judge endpoint refused the connection" in message
    assert "next try in 10s" in message


def test_an_unreachable_store_is_said_once_and_the_run_waits(
        tmp_path: Path, metrics: Metrics, caplog: pytest.LogCaptureFixture) -> None:
    class DownStore:
        def claim_golden_run(self, *args: Any) -> bool:
            raise ConnectionRefusedError("no PostgreSQL on 127.0.0.1:1")

    scheduler = GoldenScheduler(golden_config(tmp_path), LexicalScorer(),
                                DownStore(), metrics)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="groundwatch.golden"):
        assert scheduler.tick() is None and scheduler.tick() is None
    assert len(caplog.records) == 1 and "cannot claim" in caplog.records[0].getMessage()
    assert runs(metrics, "ok") == runs(metrics, "error") == 0


def test_the_scheduler_reads_the_golden_file_at_construction(
        tmp_path: Path, store: Store, metrics: Metrics) -> None:
    bad = write_golden(tmp_path, ["{not json"], name="bad.jsonl")
    with pytest.raises(ConfigError, match="line 1: not JSON"):
        GoldenScheduler(GoldenConfig(path=str(bad)), LexicalScorer(), store.golden, metrics)
    with pytest.raises(ConfigError, match="off"):
        GoldenScheduler(GoldenConfig(), LexicalScorer(), store.golden, metrics)


# -- the CLI --------------------------------------------------------------------------------

def cli_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(f'[store]\nurl = "sqlite:///{tmp_path}/gw.db"\n'
                    f'[metrics]\nmultiproc_dir = "{tmp_path}/prom"\n' + extra,
                    encoding="utf-8")
    return path


def test_cli_without_a_golden_path_exits_2_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["golden", "--config", str(cli_config(tmp_path))]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert "judge.golden.path is empty" in err


def test_cli_without_a_judge_exits_2_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    golden = write_golden(tmp_path, GOLDEN)
    config = cli_config(tmp_path, f'[judge.golden]\npath = "{golden}"\n')
    assert main(["golden", "--config", str(config)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert "no judge is configured" in err and "judge.base_url" in err


def test_cli_with_a_bad_golden_file_exits_2_naming_the_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    golden = write_golden(tmp_path, [GOLDEN[0], {"question": "q?", "answer": "a"}])
    config = cli_config(tmp_path, f'[judge.golden]\npath = "{golden}"\n')
    assert main(["golden", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert f"file {golden}" in err and "line 2, field 'contexts': missing" in err


def test_cli_prints_the_table_and_the_items_that_moved(tmp_path: Path) -> None:
    # A process of its own (the command records into the metrics directory, which needs a
    # fresh prometheus_client), with the lexical scorer standing in for the judge: the first
    # run as it is, the second shifted.
    golden = write_golden(tmp_path, GOLDEN)
    config = cli_config(tmp_path, f'[judge.golden]\npath = "{golden}"\n')
    code = ("import sys; import evaluator.judge.golden as g; from tests.test_golden import "
            "ShiftedScorer; g.build_golden_judge = lambda c: ShiftedScorer(float(sys.argv[2]));"
            "from groundwatch.cli import main; sys.exit(main(['golden', '--config', sys.argv[1]]))")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GROUNDWATCH__")},
           "PYTHONPATH": str(REPO), "GROUNDWATCH_LOG_LEVEL": "WARNING"}

    def golden_cli(shift: float) -> str:
        done = subprocess.run([sys.executable, "-c", code, str(config), str(shift)],
                              capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        return done.stdout

    first = golden_cli(0.0)
    assert "golden set: 4 items, judge lexical/1, 0 metric error(s)" in first
    assert "no item moved from its baseline" in first
    rows = {line.split()[0]: line.split()[1:] for line in first.splitlines()
            if line.split()[:1] and line.split()[0] in METRICS}
    assert set(rows) == set(METRICS) and all(r[1] == "0.000" for r in rows.values())
    second = golden_cli(-0.3)
    moved = second.split("moved most (5 of 16 scores):")[1].strip().splitlines()
    assert len(moved) == 1 + 5  # the header and five items
    assert moved[0].split() == ["request_id", "metric", "baseline", "now", "delta"]
    assert moved[1].split()[-1] == "-0.300"
    assert list((tmp_path / "prom").glob("*.db"))  # the run joined the exporter's metrics


def test_the_golden_module_imports_neither_celery_nor_prometheus() -> None:
    code = ("import sys, evaluator.judge.golden; "
            "bad = [m for m in ('celery', 'prometheus_client', 'kombu') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# -- labels: accuracy against people --------------------------------------------------------

class RenamedScorer(ShiftedScorer):
    """A judge stand-in: the lexical scorer shifted, under another name."""

    def __init__(self, name: str, shift: float) -> None:
        super().__init__(shift)
        self.name = name


def test_labelled_golden_items_measure_judge_and_cheap_scorer_against_people(
        store: Store, metrics: Metrics, tmp_path: Path) -> None:
    """Each scorer's ok score on the label's side of the threshold (a label >= 0.5 passes):
    the judge and the cheap scorer on the same items, exported per scorer and metric."""
    lexical = lexical_values(load_golden(write_golden(tmp_path, GOLDEN)))
    # Label each item as the lexical scorer's faithfulness reads it at 0.5, except "refund",
    # labelled the other way: the cheap scorer then agrees on 3 of 4.
    labels = {rid: {"faithfulness": float((v["faithfulness"] >= 0.5) != (rid == "refund"))}
              for rid, v in lexical.items()}
    lines = [{**g, "labels": labels[g.get("request_id", f"golden-{i + 1}")]}
             for i, g in enumerate(GOLDEN)]
    path = write_golden(tmp_path, lines, "labelled.jsonl")
    scheduler = GoldenScheduler(GoldenConfig(path=str(path)), RenamedScorer("compact", -1.0),
                                store.golden, metrics, cheap=LexicalScorer(),
                                thresholds={"faithfulness": 0.5})
    run = scheduler.tick()
    assert run is not None
    by = {(a.scorer, a.metric): a for a in run.accuracy}
    assert set(by) == {("compact", "faithfulness"), ("lexical", "faithfulness")}
    cheap = by["lexical", "faithfulness"]
    assert (cheap.n, cheap.agree) == (4, 3)
    # The judge stand-in scores everything 0: it agrees exactly where the label is 0.
    judge = by["compact", "faithfulness"]
    assert judge.agree == sum(v["faithfulness"] < 0.5 for v in labels.values())
    assert sample(metrics, "groundwatch_golden_accuracy", scorer="lexical",
                  metric="faithfulness") == pytest.approx(0.75)
    assert sample(metrics, "groundwatch_golden_accuracy", scorer="compact",
                  metric="faithfulness") == pytest.approx(judge.accuracy)
    text = format_golden(run)
    assert "against the labels" in text and "lexical      faithfulness          0.750     4" \
        in text


def test_a_failing_cheap_scorer_leaves_only_its_accuracy_out(
        store: Store, metrics: Metrics, tmp_path: Path) -> None:
    class Broken(ShiftedScorer):
        name = "embedded"

        def score_batch(self, records: Sequence[LogRecord]) -> list[ItemResult]:
            raise RuntimeError("model file missing")

    lines = [{**g, "labels": {"faithfulness": 1}} for g in GOLDEN]
    items = load_labelled(write_golden(tmp_path, lines, "labelled.jsonl"))
    run = run_golden(LexicalScorer(), [i.record for i in items], store.golden, metrics,
                     judge_version=VERSION,
                     labels={i.record.request_id: i.labels for i in items},
                     cheap=Broken(0.0), thresholds={})
    # The adapter turns the raise into error outcomes: no ok value, so no accuracy for it;
    # the run itself is ok.
    assert [a.scorer for a in run.accuracy] == ["lexical"] and runs(metrics, "ok") == 1
