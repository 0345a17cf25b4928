"""``groundwatch check-config`` as a preflight, on real SQLite files, PostgreSQL and Redis.

Every broken case must give exit 2 and one line per problem naming the key and the file (or the
environment variable); a good config gives exit 0 and a summary. Nothing may be created: not
the source's SQLite file (the sampler's source is read-only too), not the store's, not the
store's schema.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from evaluator import demo_traffic
from evaluator.config import load_config
from evaluator.errors import ConfigError
from evaluator.sampling import sample_hash
from evaluator.sources import SourceNote, build_source
from evaluator.sources.engine import create_source_engine
from evaluator.sources.sql import SqlSource
from evaluator.store import Store
from groundwatch.cli import main
from groundwatch.preflight import _Checker, run_preflight
from tests.conftest import PG_URL
from tests.gw_helpers import REDIS_HOST, REDIS_PORT, TEST_REDIS_DB

REPO = Path(__file__).resolve().parent.parent
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{TEST_REDIS_DB}"
COLUMNS = "\n".join(f'{k} = "{v}"' for k, v in demo_traffic.COLUMNS.items())


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_db(tmp: Path, n: int = 20, **overrides: dict[str, Any]) -> str:
    """A SQLite log table of ``n`` demo rows; ``overrides`` maps a row index to new values."""
    url = f"sqlite:///{tmp / 'logs.db'}"
    demo_traffic.create_log_table(url)
    rows = demo_traffic.make_rows(n, seed=3)
    for index, values in overrides.items():
        rows[int(index)].update(values)
    demo_traffic.write_rows(url, rows)
    return url


def write_config(tmp: Path, *, source_url: str, store_url: str | None = None,
                 broker_url: str = REDIS_URL, table: str = demo_traffic.TABLE,
                 columns: str = COLUMNS, extra: str = "", sql: str = "") -> Path:
    store_url = store_url or f"sqlite:///{tmp / 'store' / 'gw.db'}"
    path = tmp / "gw.toml"
    path.write_text(f'[store]\nurl = "{store_url}"\n[broker]\nurl = "{broker_url}"\n'
                    f'[source.sql]\nurl = "{source_url}"\ntable = "{table}"\n{sql}'
                    f'[source.columns]\n{columns}\n{extra}')
    return path


def check(path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--config", str(path), "check-config", *args])
    out, err = capsys.readouterr()
    return code, out, err


def problems(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("problem: ")]


# -- read-only sources: never created ---------------------------------------------------------
@pytest.mark.parametrize("relative", ["missing.db", "no/such/dir/missing.db"])
def test_sqlsource_on_a_missing_file_raises_and_creates_nothing(tmp_path: Path,
                                                                relative: str) -> None:
    target = tmp_path / relative
    with pytest.raises(ConfigError) as info:
        SqlSource("app", f"sqlite:///{target}", "chat_logs")
    assert info.value.key == "source.sql.url"
    assert "source database file" in info.value.problem and "does not exist" in info.value.problem
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_sql_source_is_opened_read_only(tmp_path: Path) -> None:
    url = log_db(tmp_path, n=3)
    engine = create_source_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("select count(*) from chat_logs")).scalar() == 3
            with pytest.raises(Exception, match="readonly"):
                conn.execute(text("delete from chat_logs"))
    finally:
        engine.dispose()
    source = build_source(load_config(write_config(tmp_path, source_url=url), environ={}))
    try:
        assert source.read(None, 10).rows_read == 3
    finally:
        source.close()


def test_the_sampler_refuses_a_missing_source_file_and_leaves_none(tmp_path: Path) -> None:
    source = tmp_path / "absent" / "logs.db"
    (tmp_path / "prom").mkdir()
    cfg = write_config(tmp_path, source_url=f"sqlite:///{source}",
                       extra=f'[metrics]\nmultiproc_dir = "{tmp_path / "prom"}"\n')
    proc = subprocess.run([sys.executable, "-m", "groundwatch", "--config", str(cfg),
                           "sampler", "--until-idle"], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert any("source.sql.url" in line and "does not exist" in line for line in err)
    assert not source.parent.exists()


@pytest.mark.skipif(importlib.util.find_spec("pg8000") is not None,
                    reason="needs a driver that is not installed")
def test_a_missing_driver_names_the_package_to_install(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, source_url="postgresql+pg8000://postgres@127.0.0.1/test")
    code, _, err = check(cfg, capsys)
    assert code == 2
    [line] = [p for p in problems(err) if "source.sql.url" in p]
    assert "pip install 'pg8000'" in line and str(cfg) in line


# -- config validation ------------------------------------------------------------------------
def test_an_unknown_store_dialect_fails_at_load(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, source_url="sqlite:///x.db", store_url="sqlit:///x.db")
    code, out, err = check(cfg, capsys, "--offline")
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert "store.url" in err and str(cfg) in err and "unknown database dialect 'sqlit'" in err
    assert "sqlite" in err  # the list of valid dialects


def test_a_store_on_an_unsupported_database_fails_at_load(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, source_url="sqlite:///x.db", store_url="mysql://u@h/gw")
    with pytest.raises(ConfigError, match="runs on sqlite or postgresql"):
        load_config(cfg, environ={})


# -- the preflight on SQLite and Redis --------------------------------------------------------
def test_a_good_config_passes_and_creates_nothing(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    url = log_db(tmp_path)
    before = (tmp_path / "logs.db").read_bytes()
    cfg = write_config(tmp_path, source_url=url)
    code, out, err = check(cfg, capsys, "--show-config")
    assert code == 0, err
    assert err == ""
    head, _, body = out.partition("\n{")
    assert "valid" in head
    assert "read 20 sample row(s): 20 valid, 0 rejected" in head
    assert "does not exist yet: it is created and migrated at first start" in head
    assert f"broker: {REDIS_URL}: reachable" in head
    assert json.loads("{" + body)["source"]["sql"]["table"] == demo_traffic.TABLE
    assert not (tmp_path / "store").exists()
    assert (tmp_path / "logs.db").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gw.toml", "logs.db"]


def test_rejected_sample_rows_are_counted_by_field_and_reason(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = log_db(tmp_path, n=20, **{"3": {"retrieved_docs": '["cut'},
                                    "7": {"retrieved_docs": "{not json"},
                                    "11": {"user_question": ""}})
    cfg = write_config(tmp_path, source_url=url)
    code, out, err = check(cfg, capsys)
    assert code == 0, err  # a few broken rows are the log's problem, not the config's
    assert "read 20 sample row(s): 17 valid, 3 rejected" in out
    assert ("sample    20 row(s) read, 3 rejected (contexts/bad_contexts 2, "
            "question/empty_field 1)") in out
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.startswith("warning: ") for line in lines)
    assert ("key 'source.columns.contexts': 2 of 20 sampled row(s) would be rejected as "
            "bad_contexts (field 'contexts')") in lines[0]
    assert ("key 'source.columns.question': 1 of 20 sampled row(s) would be rejected as "
            "empty_field (field 'question'), e.g. row req-3-000011") in lines[1]


def _summary(out: str) -> dict[str, str]:
    """The summary block of check-config's output: what -> value."""
    block = out.partition("# summary")[2].splitlines()[1:]
    return dict(line.removeprefix("#").strip().split(None, 1) for line in block
                if line.startswith("#   "))


def test_would_be_sampled_counts_at_the_configured_rate(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Issue 18: at rate 0.2 check-config said all 200 sample rows "would be sampled".
    url = log_db(tmp_path, n=200)
    cfg = write_config(tmp_path, source_url=url, extra="[sampling]\ndefault_rate = 0.2\n")
    code, out, err = check(cfg, capsys)
    assert code == 0, err
    ids = [str(row[demo_traffic.COLUMNS["request_id"]])
           for row in demo_traffic.make_rows(200, seed=3)]
    expected = sum(sample_hash("groundwatch", i) < 0.2 for i in ids)  # the default salt
    assert 20 < expected < 80
    assert "200 would be sampled" not in out
    assert f"{expected} would be sampled at the configured rules and rates" in out
    assert _summary(out)["sample"].startswith(
        f"200 row(s) read, 0 rejected; {expected} would be sampled at the configured rules "
        f"and rates (default at 0.2: {expected} of 200;")
    assert _summary(out)["sampling"] == "default rate 0.2 (file)"


def test_the_summary_says_no_judge_when_none_is_configured(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Issue 18: check-config showed "judge": "ragas" (scoring.judge's default) while no judge
    # endpoint was configured, so no judge would ever run.
    cfg = write_config(tmp_path, source_url=log_db(tmp_path, n=5))
    code, out, err = check(cfg, capsys)
    assert code == 0, err
    assert _summary(out)["judge"] == "none (judge.base_url is empty: default)"
    assert "ragas" not in out


def test_the_summary_says_which_values_came_from_the_environment(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 18: check-config did not say which values came from environment overrides.
    url = log_db(tmp_path, n=5)
    cfg = write_config(tmp_path, source_url=url, broker_url="redis://127.0.0.1:1/0")
    monkeypatch.setenv("GROUNDWATCH__BROKER__URL", REDIS_URL)
    monkeypatch.setenv("GROUNDWATCH__SOURCE__NAME", "shop")
    code, out, err = check(cfg, capsys)
    assert code == 0, err
    summary = _summary(out)
    assert summary["broker"] == (f"{REDIS_URL} (env GROUNDWATCH__BROKER__URL), "
                                 "queue groundwatch.score (default)")
    assert summary["source"].startswith("shop (env GROUNDWATCH__SOURCE__NAME), kind sql "
                                        f"(default), {url} (file), table")
    assert summary["mode"].startswith("timestamp (default), lookback 60 s (default)")
    assert summary["cursor"] == ("none: the store does not exist yet, the sampler starts at "
                                 "the beginning of the source")


def test_the_whole_config_only_with_show_config(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Issue 18: ~200 lines of JSON config followed the findings on every run.
    cfg = write_config(tmp_path, source_url=log_db(tmp_path, n=5))
    code, out, err = check(cfg, capsys)
    assert code == 0, err
    assert "{" not in out and len(out.splitlines()) < 25
    code, out, _ = check(cfg, capsys, "--show-config")
    assert code == 0
    assert json.loads("{" + out.partition("\n{")[2])["source"]["name"] == "app"


def test_a_mapping_that_rejects_every_row_is_a_problem(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = log_db(tmp_path, n=5)
    columns = COLUMNS.replace('timestamp = "created_at"', 'timestamp = "endpoint"')
    code, out, err = check(write_config(tmp_path, source_url=url, columns=columns), capsys)
    assert code == 2 and out == ""
    [line] = problems(err)
    assert "key 'source.columns.timestamp'" in line
    assert "5 of 5 sampled row(s) would be rejected as no_position" in line


def test_sample_rows_is_a_bound(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, source_url=log_db(tmp_path, n=30))
    code, out, _ = check(cfg, capsys, "--sample-rows", "7")
    assert code == 0 and "read 7 sample row(s)" in out


def test_every_problem_gets_its_own_line(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    url = log_db(tmp_path, n=5)
    port = closed_port()
    (tmp_path / "a-file").write_text("")  # the store's "directory" is a file: cannot be made
    cfg = write_config(tmp_path, source_url=url,
                       columns=COLUMNS.replace("user_question", "user_questoin"),
                       store_url=f"sqlite:///{tmp_path / 'a-file' / 'sub' / 'gw.db'}",
                       broker_url=f"redis://127.0.0.1:{port}/0")
    started = time.monotonic()
    code, out, err = check(cfg, capsys)
    elapsed = time.monotonic() - started
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert lines == problems(err) and len(lines) == 3, err
    column, store, broker = lines
    assert f"file {cfg}, key 'source.columns.question'" in column
    assert "'user_questoin' is not in table 'chat_logs'" in column
    assert "key 'store.url'" in store and "not a writable directory" in store
    assert "key 'broker.url'" in broker and f"127.0.0.1:{port}" in broker
    assert "Connection refused" in broker
    assert elapsed < 10  # the broker check is bounded, not kombu's default retry loop


def test_a_source_file_in_a_missing_directory_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere" / "logs.db"
    code, _, err = check(write_config(tmp_path, source_url=f"sqlite:///{missing}"), capsys)
    assert code == 2 and "Traceback" not in err
    [line] = problems(err)
    assert f"file {tmp_path / 'gw.toml'}, key 'source.sql.url'" in line
    assert f"source database file '{missing}' does not exist" in line
    assert not missing.parent.exists()


def test_a_missing_table_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, source_url=log_db(tmp_path, n=1), table="chat_log")
    code, _, err = check(cfg, capsys)
    assert code == 2
    [line] = problems(err)
    assert "key 'source.sql.table'" in line and "'chat_log' does not exist" in line


def test_an_environment_override_is_named_instead_of_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_config(tmp_path, source_url=log_db(tmp_path, n=2))
    monkeypatch.setenv("GROUNDWATCH__BROKER__URL", f"redis://127.0.0.1:{closed_port()}/0")
    code, _, err = check(cfg, capsys)
    assert code == 2
    [line] = problems(err)
    assert line.startswith("problem: env GROUNDWATCH__BROKER__URL, key 'broker.url': ")
    assert str(cfg) not in line


def test_offline_connects_to_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    cfg = write_config(tmp_path, source_url=f"sqlite:///{tmp_path / 'nowhere' / 'logs.db'}",
                       store_url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/gw",
                       broker_url=f"redis://127.0.0.1:{port}/0")
    code, out, err = check(cfg, capsys, "--offline")
    assert code == 0, err
    assert "connections: skipped (--offline)" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gw.toml"]
    # ...while the scorer name is still checked offline.
    cfg.write_text(cfg.read_text() + '[scoring]\nscorer = "magic"\n')
    code, _, err = check(cfg, capsys, "--offline")
    assert code == 2 and "key 'scoring.scorer'" in err and "unknown scorer 'magic'" in err


def test_the_store_is_inspected_not_migrated(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    url = log_db(tmp_path, n=2)
    store_file = tmp_path / "empty-store.db"
    sqlite3.connect(store_file).close()  # exists, no schema
    cfg = write_config(tmp_path, source_url=url, store_url=f"sqlite:///{store_file}")
    code, out, err = check(cfg, capsys)
    assert code == 0, err
    revisions = len(list((Path(__file__).parent.parent / "evaluator" / "store" / "migrations"
                          / "versions").glob("0*.py")))
    assert f"reachable, not migrated yet: {revisions} migration(s) to head" in out
    engine = create_engine(f"sqlite:///{store_file}")
    assert inspect(engine).get_table_names() == []
    engine.dispose()
    assert _summary(out)["cursor"].startswith("none: the store is not migrated yet")
    Store(f"sqlite:///{store_file}").close()
    code, out, _ = check(cfg, capsys)
    assert code == 0 and "reachable, schema at head" in out
    assert _summary(out)["cursor"] == ("none stored for source 'app': the sampler starts at "
                                       "the beginning of the source")
    store = Store(f"sqlite:///{store_file}")
    assert store.ledger.acquire_lock("app", "t", 60)
    store.ledger.set_cursor("app", {"ts": "2026-01-01T00:00:00+00:00", "id": "r9"}, owner="t")
    store.close()
    code, out, _ = check(cfg, capsys)
    assert code == 0
    assert _summary(out)["cursor"] == ("stored for source 'app': "
                                       "{'ts': '2026-01-01T00:00:00+00:00', 'id': 'r9'}")


def test_a_files_source_must_match_a_file_and_is_sampled(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "gw.toml"
    logs = tmp_path / "logs"
    body = (f'[store]\nurl = "sqlite:///{tmp_path / "gw.db"}"\n[broker]\nurl = "{REDIS_URL}"\n'
            f'[source]\nkind = "files"\n[source.files]\npaths = ["{logs}/*.jsonl"]\n')
    cfg.write_text(body)
    code, _, err = check(cfg, capsys)
    assert code == 2
    [line] = problems(err)
    assert "key 'source.files.paths'" in line and "no file matches" in line
    logs.mkdir()
    good = {"request_id": "a", "timestamp": "2026-01-01T00:00:00Z", "question": "q?",
            "contexts": ["c"], "answer": "x"}
    (logs / "one.jsonl").write_text("".join(
        json.dumps(row) + "\n" for row in (good, {**good, "request_id": "b", "question": ""},
                                           {**good, "request_id": "c", "question": " "})))
    code, out, err = check(cfg, capsys)
    assert code == 2  # two of three rows rejected: over half the sample
    [line] = problems(err)
    assert "key 'source.columns.question': 2 of 3 sampled row(s) would be rejected" in line
    (logs / "two.jsonl").write_text("".join(json.dumps({**good, "request_id": f"d{i}"}) + "\n"
                                            for i in range(5)))
    code, out, err = check(cfg, capsys)
    assert code == 0, err
    assert "2 file(s) match" in out and "read 8 sample row(s): 6 valid, 2 rejected" in out
    assert err.startswith("warning: ") and "2 of 8 sampled row(s)" in err


class _NotesSource:
    """A source that only contributes notes (the hook, on its own)."""

    def preflight_notes(self) -> list[SourceNote | str]:
        return [SourceNote("mode 'timestamp' cannot be exact on text timestamps: use "
                           "'incrementing'", key="source.sql.mode"),
                SourceNote("the column is not indexed", problem=True),
                "a plain remark"]


def test_a_source_can_contribute_notes(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, source_url="sqlite:///x.db"), environ={})
    checker = _Checker(config, {})
    checker._source_notes(_NotesSource(), "source.sql.table")  # type: ignore[arg-type]
    lines = [f.line() for f in checker.report.findings]
    assert lines == [
        f"warning: file {config.path}, key 'source.sql.mode': mode 'timestamp' cannot be exact "
        "on text timestamps: use 'incrementing'",
        f"problem: file {config.path}, key 'source.sql.table': the column is not indexed",
        f"warning: file {config.path}, key 'source.sql.table': a plain remark",
    ]
    assert not checker.report.ok


# -- PostgreSQL ---------------------------------------------------------------------------------
@pytest.mark.postgres
@pytest.mark.integration
def test_postgres_databases_that_do_not_exist(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = f"gw_missing_{uuid.uuid4().hex[:10]}"
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    code, _, err = check(write_config(tmp_path, source_url=url, store_url=url), capsys)
    assert code == 2
    source, store = problems(err)
    assert "key 'source.sql.url'" in source and f'database "{name}" does not exist' in source
    assert "key 'store.url'" in store and f'database "{name}" does not exist' in store


@pytest.mark.postgres
@pytest.mark.integration
def test_postgres_column_that_does_not_exist_and_store_untouched(
        tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    demo_traffic.create_log_table(pg_url)
    demo_traffic.write_rows(pg_url, demo_traffic.make_rows(4, seed=5))
    columns = COLUMNS.replace('"llm_output"', '"llm_answer"')
    cfg = write_config(tmp_path, source_url=pg_url, store_url=pg_url, columns=columns)
    code, _, err = check(cfg, capsys)
    assert code == 2
    [line] = problems(err)
    assert "key 'source.columns.answer'" in line and "'llm_answer' is not in table" in line

    # transaction_wait 0: the sample must not wait on other tests' transactions in flight on
    # the same PostgreSQL cluster (the source waits for any of them).
    cfg = write_config(tmp_path, source_url=pg_url, store_url=pg_url,
                       sql='transaction_wait = "0s"\n')
    code, out, err = check(cfg, capsys)
    assert code == 0, err
    assert "read 4 sample row(s): 4 valid, 0 rejected" in out
    assert "reachable, not migrated yet" in out
    engine = create_engine(pg_url)
    assert inspect(engine).get_table_names() == [demo_traffic.TABLE]  # no store tables made
    engine.dispose()


# -- as a real process ------------------------------------------------------------------------
def test_check_config_as_a_process(tmp_path: Path) -> None:
    url = log_db(tmp_path, n=3)
    cfg = write_config(tmp_path, source_url=url)
    run = [sys.executable, "-m", "groundwatch", "--config", str(cfg), "check-config"]
    proc = subprocess.run(run, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "read 3 sample row(s)" in proc.stdout and "broker: " in proc.stdout
    write_config(tmp_path, source_url=url, table="nope",
                 broker_url=f"redis://127.0.0.1:{closed_port()}/0")
    proc = subprocess.run(run, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("problem: ") for line in lines), proc.stderr
    assert "source.sql.table" in lines[0] and "broker.url" in lines[1]


def test_run_preflight_is_usable_as_a_library(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, source_url=log_db(tmp_path, n=2)), environ={})
    report = run_preflight(config, environ={})
    assert report.ok and not report.findings
    assert any(line.startswith("broker: ") for line in report.checked)
