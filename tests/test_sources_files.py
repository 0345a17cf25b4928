"""The files source on real JSON Lines (read line by line), Parquet and CSV files (read
through ``datasets``)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evaluator.config import ColumnMap, Config, load_config
from evaluator.errors import ConfigError
from evaluator.records import RowLimits
from evaluator.sources import build_source
from evaluator.sources.base import SourceBatch
from evaluator.sources.files import FileSource

APP_KEYS = ColumnMap(request_id="req_uuid", timestamp="created_at", question="user_question",
                     contexts="retrieved_docs", answer="llm_output", latency_ms="latency")
BASE = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def app_row(i: int, **overrides: Any) -> dict[str, Any]:
    row = {"req_uuid": f"r{i:03d}",
           "created_at": (BASE + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
           "user_question": f"question {i}?", "retrieved_docs": [f"p{i}a", f"p{i}b"],
           "llm_output": f"answer {i}", "route": "chat", "latency": 10.5 + i}
    row.update(overrides)
    return row


def write_jsonl(path: Path, rows: list[dict[str, Any]], *, mode: str = "w") -> None:
    with path.open(mode, encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def append_text(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(text)


@pytest.fixture
def make_source(tmp_path: Path) -> Iterator[Callable[..., FileSource]]:
    sources: list[FileSource] = []

    def make(paths: list[str] | None = None, fmt: str = "auto",
             limits: RowLimits | None = None) -> FileSource:
        source = FileSource("app", paths or [str(tmp_path / "*.jsonl")], fmt, APP_KEYS,
                            limits or RowLimits())
        sources.append(source)
        return source

    yield make
    for source in sources:
        source.close()


def drain(source: FileSource, cursor: Any, limit: int) -> tuple[list[SourceBatch], Any]:
    """Read until caught up, passing the cursor through JSON as the store would."""
    batches = []
    for _ in range(1000):
        batch = source.read(cursor, limit)
        assert batch.rows_read <= limit
        cursor = json.loads(json.dumps(batch.cursor))
        if batch.rows_read == 0:
            return batches, cursor
        batches.append(batch)
    raise AssertionError("source never caught up")


def ids(batches: list[SourceBatch]) -> list[str]:
    return [r.request_id for b in batches for r in b.records]


# -- JSON Lines ------------------------------------------------------------------------------
def test_jsonl_maps_keys_and_remembers_offsets(
        tmp_path: Path, make_source: Callable[..., FileSource]) -> None:
    log = tmp_path / "app.jsonl"
    write_jsonl(log, [app_row(i) for i in range(5)])
    source = make_source()

    first = source.read(None, 2)
    assert ids([first]) == ["r000", "r001"]
    record = first.records[0]
    assert record.timestamp == BASE and record.contexts == ("p0a", "p0b")
    assert record.question == "question 0?" and record.answer == "answer 0"
    assert record.latency_ms == 10.5 and record.route == "chat"
    entry = first.cursor["files"][str(log)]
    assert {k: entry[k] for k in ("rows", "size", "mtime", "done")} == {
        "rows": 2, "size": log.stat().st_size, "mtime": log.stat().st_mtime, "done": False}
    assert entry["head_len"] == log.stat().st_size and len(entry["head"]) == 32

    rest, cursor = drain(source, first.cursor, 2)
    assert ids(rest) == ["r002", "r003", "r004"]
    assert cursor["files"][str(log)]["rows"] == 5 and cursor["files"][str(log)]["done"]
    assert source.read(cursor, 10).rows_read == 0


def test_offsets_survive_a_new_instance_and_appends_resume(
        tmp_path: Path, make_source: Callable[..., FileSource]) -> None:
    log = tmp_path / "app.jsonl"
    write_jsonl(log, [app_row(i) for i in range(5)])
    first = make_source().read(None, 3)
    assert ids([first]) == ["r000", "r001", "r002"]

    cursor = json.loads(json.dumps(first.cursor))  # what the store kept across a restart
    rest, cursor = drain(make_source(), cursor, 10)
    assert ids(rest) == ["r003", "r004"]

    write_jsonl(log, [app_row(5), app_row(6)], mode="a")
    more, cursor = drain(make_source(), cursor, 10)
    assert ids(more) == ["r005", "r006"]
    assert cursor["files"][str(log)]["rows"] == 7


def test_malformed_json_line_is_rejected_and_the_rest_is_read(
        tmp_path: Path, make_source: Callable[..., FileSource]) -> None:
    log = tmp_path / "app.jsonl"
    write_jsonl(log, [app_row(0)])
    append_text(log, '{"req_uuid": "r001", "user_question": \n')  # line 2
    append_text(log, "\n")  # line 3: blank lines are not rows
    write_jsonl(log, [app_row(2)], mode="a")  # line 4
    append_text(log, "[1, 2]\n")  # line 5: JSON, but not an object
    write_jsonl(log, [app_row(4, user_question=None), app_row(5)], mode="a")  # lines 6, 7

    source = make_source()
    batches, cursor = drain(source, None, 2)
    assert ids(batches) == ["r000", "r002", "r005"]
    rejected = [(e.reason, e.field, e.row_ref) for b in batches for e in b.rejections]
    assert rejected == [("bad_json", "<line>", f"{log}:2"),
                        ("wrong_type", "<line>", f"{log}:5"),
                        ("missing_field", "question", "r004")]
    entry = cursor["files"][str(log)]
    assert {k: entry[k] for k in ("rows", "size", "mtime", "done")} == {
        "rows": 6, "size": log.stat().st_size, "mtime": log.stat().st_mtime, "done": True}

    # The malformed file still resumes where it stopped, in this instance and in a new one.
    write_jsonl(log, [app_row(6)], mode="a")
    assert ids(drain(source, cursor, 5)[0]) == ["r006"]
    assert ids(drain(make_source(), cursor, 5)[0]) == ["r006"]


def test_unterminated_last_line_waits_for_the_writer(
        tmp_path: Path, make_source: Callable[..., FileSource]) -> None:
    log = tmp_path / "app.jsonl"
    write_jsonl(log, [app_row(0)])
    line = json.dumps(app_row(1))
    append_text(log, line[:20])  # the app is half-way through writing line 2
    source = make_source()
    batches, cursor = drain(source, None, 10)
    assert ids(batches) == ["r000"] and not [e for b in batches for e in b.rejections]
    assert cursor["files"][str(log)]["rows"] == 1

    append_text(log, line[20:] + "\n")
    more, cursor = drain(source, cursor, 10)
    assert ids(more) == ["r001"] and more[0].rejections == []


def test_row_without_id_is_named_by_file_and_line(
        tmp_path: Path, make_source: Callable[..., FileSource]) -> None:
    log = tmp_path / "app.jsonl"
    write_jsonl(log, [app_row(0), app_row(1, req_uuid=None), app_row(2, req_uuid="  ")])
    batch = make_source().read(None, 10)
    assert ids([batch]) == ["r000"]
    assert [(e.reason, e.field, e.row_ref) for e in batch.rejections] == [
        ("missing_field", "request_id", f"{log}:2"), ("empty_field", "request_id", f"{log}:3")]


def test_new_files_matching_the_glob_are_picked_up_in_sorted_order(
        tmp_path: Path, make_source: Callable[..., FileSource]) -> None:
    write_jsonl(tmp_path / "b.jsonl", [app_row(10), app_row(11)])
    write_jsonl(tmp_path / "a.jsonl", [app_row(0)])
    (tmp_path / "notes.txt").write_text("not a log\n")
    source = make_source([str(tmp_path / "*")])
    batches, cursor = drain(source, None, 2)
    assert ids(batches) == ["r000", "r010", "r011"]
    assert sorted(cursor["files"]) == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]

    write_jsonl(tmp_path / "c.jsonl", [app_row(20)])
    more, cursor = drain(source, cursor, 2)
    assert ids(more) == ["r020"]
    assert len(cursor["files"]) == 3


def test_a_file_that_shrank_is_read_again(
        tmp_path: Path, make_source: Callable[..., FileSource]) -> None:
    log = tmp_path / "app.jsonl"
    write_jsonl(log, [app_row(i) for i in range(3)])
    source = make_source()
    _, cursor = drain(source, None, 10)
    write_jsonl(log, [app_row(7)])  # rotated with copytruncate, then one new line
    assert ids(drain(source, cursor, 10)[0]) == ["r007"]


def test_deleted_files_leave_the_cursor(
        tmp_path: Path, make_source: Callable[..., FileSource]) -> None:
    write_jsonl(tmp_path / "a.jsonl", [app_row(0)])
    write_jsonl(tmp_path / "b.jsonl", [app_row(1)])
    source = make_source()
    _, cursor = drain(source, None, 10)
    (tmp_path / "a.jsonl").unlink()
    write_jsonl(tmp_path / "b.jsonl", [app_row(2)], mode="a")
    _, cursor = drain(source, cursor, 10)
    assert list(cursor["files"]) == [str(tmp_path / "b.jsonl")]


# -- Parquet ---------------------------------------------------------------------------------
def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    table = pa.table({
        "req_uuid": pa.array([r["req_uuid"] for r in rows], pa.string()),
        "created_at": pa.array([BASE + timedelta(seconds=int(r["req_uuid"][1:])) for r in rows],
                               pa.timestamp("us", tz="UTC")),
        "user_question": pa.array([r["user_question"] for r in rows], pa.string()),
        "retrieved_docs": pa.array([r["retrieved_docs"] for r in rows], pa.list_(pa.string())),
        "llm_output": pa.array([r["llm_output"] for r in rows], pa.string()),
        "latency": pa.array([r["latency"] for r in rows], pa.float64()),
    })
    pq.write_table(table, path)


def test_parquet_slices_restart_and_growth(
        tmp_path: Path, make_source: Callable[..., FileSource]) -> None:
    log = tmp_path / "part-0.parquet"
    rows = [app_row(i) for i in range(5)]
    rows[2]["retrieved_docs"] = []
    rows[3]["user_question"] = ""
    write_parquet(log, rows)
    source = make_source([str(tmp_path / "*.parquet")])

    first = source.read(None, 2)
    assert ids([first]) == ["r000", "r001"]
    assert first.records[1].timestamp == BASE + timedelta(seconds=1)
    assert first.records[1].contexts == ("p1a", "p1b") and first.records[1].latency_ms == 11.5
    rest, cursor = drain(make_source([str(tmp_path / "*.parquet")]), first.cursor, 2)
    assert ids(rest) == ["r002", "r004"]
    assert rest[0].records[0].contexts == ()
    assert [(e.reason, e.field, e.row_ref) for b in rest for e in b.rejections] == [
        ("empty_field", "question", "r003")]

    # A Parquet file cannot be appended to: a writer replaces it with a longer one.
    write_parquet(log, [*rows, app_row(5), app_row(6)])
    more, _ = drain(source, cursor, 10)
    assert ids(more) == ["r005", "r006"]


# -- CSV -------------------------------------------------------------------------------------
def test_csv_text_fields_stay_text_and_numbers_are_numbers(
        tmp_path: Path, make_source: Callable[..., FileSource]) -> None:
    log = tmp_path / "export.csv"
    with log.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["req_uuid", "created_at", "user_question", "retrieved_docs",
                         "llm_output", "latency"])
        writer.writerow(["0042", "2024-05-01T12:00:00Z", "NA", '["a", "b"]', "yes", "12"])
        writer.writerow(["0043", "2024-05-01T12:00:01Z", "q?", "[oops", "no", "13.5"])
        writer.writerow(["0044", "2024-05-01T12:00:02Z", "q2?", "[]", "maybe", ""])
    source = make_source([str(tmp_path / "*.csv")])
    batch = source.read(None, 10)
    assert ids([batch]) == ["0042", "0044"]
    first, last = batch.records
    assert first.question == "NA" and first.contexts == ("a", "b") and first.latency_ms == 12.0
    assert first.timestamp == BASE and last.latency_ms is None
    assert [(e.reason, e.field, e.row_ref) for e in batch.rejections] == [
        ("bad_contexts", "contexts", "0043")]

    with log.open("a", newline="", encoding="utf-8") as f:
        csv.writer(f).writerow(["0045", "2024-05-01T12:00:03Z", "q3?", "[]", "ok", "1"])
    assert ids(drain(make_source([str(tmp_path / "*.csv")]), batch.cursor, 10)[0]) == ["0045"]


# -- configuration ---------------------------------------------------------------------------
def test_build_source_from_config(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "x.log", [app_row(0)])
    config = Config.model_validate({"source": {
        "kind": "files", "files": {"paths": [str(tmp_path / "*.log")], "format": "json"},
        "columns": APP_KEYS.model_dump()}})
    source = build_source(config)
    try:
        assert isinstance(source, FileSource)
        assert ids([source.read(None, 10)]) == ["r000"]
    finally:
        source.close()


def test_bad_settings_name_their_key() -> None:
    with pytest.raises(ConfigError) as info:
        FileSource("app", [], "auto")
    assert info.value.key == "source.files.paths"
    with pytest.raises(ConfigError) as info:
        FileSource("app", ["x"], "xml")
    assert info.value.key == "source.files.format"


def test_offline_and_no_cache_in_home(
        tmp_path: Path, make_source: Callable[..., FileSource]) -> None:
    write_parquet(tmp_path / "app.parquet", [app_row(0)])  # JSON Lines never use datasets
    source = make_source([str(tmp_path / "*.parquet")])
    assert ids([source.read(None, 10)]) == ["r000"]
    assert os.environ["HF_DATASETS_OFFLINE"] and os.environ["HF_HUB_OFFLINE"]
    cache = source._cache_dir
    assert cache is not None and os.path.isdir(cache)
    assert Path(cache).parent == Path(tempfile.gettempdir())  # not ~/.cache/huggingface
    source.close()
    assert not os.path.exists(cache)


def test_offsets_agree_when_a_clean_file_turns_malformed(
        tmp_path: Path, make_source: Callable[..., FileSource]) -> None:
    log = tmp_path / "app.jsonl"
    write_jsonl(log, [app_row(0)])
    append_text(log, "\n  \n")  # blank lines: not rows
    write_jsonl(log, [app_row(1), app_row(2)], mode="a")
    source = make_source()
    first = source.read(None, 2)
    assert ids([first]) == ["r000", "r001"]
    append_text(log, "not json\n")
    write_jsonl(log, [app_row(3)], mode="a")
    for reader in (source, make_source()):
        batches, _ = drain(reader, first.cursor, 10)
        assert ids(batches) == ["r002", "r003"]
        assert [e.row_ref for b in batches for e in b.rejections] == [f"{log}:6"]


def test_growing_jsonl_is_tailed_by_one_instance(
        tmp_path: Path, make_source: Callable[..., FileSource]) -> None:
    log = tmp_path / "app.jsonl"
    source = make_source()
    cursor = None
    seen: list[str] = []
    for i in range(6):
        write_jsonl(log, [app_row(2 * i), app_row(2 * i + 1)], mode="a")
        batches, cursor = drain(source, cursor, 3)
        seen += ids(batches)
    assert seen == [f"r{i:03d}" for i in range(12)]
    assert cursor["files"][str(log)]["rows"] == 12


def test_parquet_replaced_while_a_stream_is_open(
        tmp_path: Path, make_source: Callable[..., FileSource]) -> None:
    log = tmp_path / "part-0.parquet"
    rows = [app_row(i) for i in range(4)]
    write_parquet(log, rows)
    source = make_source([str(tmp_path / "*.parquet")])
    first = source.read(None, 2)  # leaves the stream open at row 2
    write_parquet(log, [*rows, app_row(4)])
    batches, _ = drain(source, first.cursor, 2)
    assert ids(batches) == ["r002", "r003", "r004"]


def test_a_file_rewritten_in_place_is_read_again_and_counted(
        tmp_path: Path, make_source: Callable[..., FileSource]) -> None:
    log = tmp_path / "app.jsonl"
    write_jsonl(log, [app_row(i) for i in range(3)])
    source = make_source()
    _, cursor = drain(source, None, 10)
    # Same name, same length, other rows: a shipper that rewrites its file. Before, a done
    # file of the same size was skipped: these rows were never read.
    text = log.read_text()
    log.write_text(text.replace("r000", "x000").replace("r001", "x001").replace("r002", "x002"))
    batches, cursor = drain(source, cursor, 10)
    assert ids(batches) == ["x000", "x001", "x002"]
    assert sum(b.rewritten for b in batches) == 1
    # Touched only: nothing is read again.
    os.utime(log)
    assert drain(source, cursor, 10)[0] == []


def test_a_huge_number_in_a_csv_cell_does_not_stall_the_file(
        tmp_path: Path, make_source: Callable[..., FileSource]) -> None:
    # Found by tests/test_properties.py: pandas inferred an integer column, Arrow overflowed on
    # a 300-digit number, and the whole file was "retried" forever with nothing read.
    log = tmp_path / "export.csv"
    with log.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["req_uuid", "created_at", "user_question", "retrieved_docs",
                         "llm_output", "latency"])
        writer.writerow(["r1", "1772366400", "q?", "[]", "a", str(10**300)])
        writer.writerow(["r2", "2026-03-01T12:00:01Z", "q?", "[]", "a", "5"])
        writer.writerow(["r3", "1772366402000", "q?", "[]", "a", "x" * 5000])
    batch = make_source([str(tmp_path / "*.csv")]).read(None, 10)
    assert [r.request_id for r in batch.records] == ["r1", "r2", "r3"]
    # Every cell is text in a CSV: epoch seconds and milliseconds as text are timestamps.
    assert batch.records[0].timestamp == datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert batch.records[2].timestamp == datetime(2026, 3, 1, 12, 0, 2, tzinfo=UTC)
    assert [(d.field, d.reason) for d in batch.dropped] == [("latency_ms", "wrong_type")]


def test_jsonl_passages_logged_as_objects_map_without_code(tmp_path: Path) -> None:
    # Issue 16: objects with their text under the common keys were rejected as bad_contexts.
    write_jsonl(tmp_path / "x.jsonl", [
        app_row(0, retrieved_docs=[{"text": "p0", "score": 0.8, "id": "d1"}]),
        app_row(1, retrieved_docs=[{"page_content": "p1", "metadata": {"page": 3}}]),
        app_row(2, retrieved_docs=[{"node": {"id_": "n", "text": "p2"}, "score": 0.1}, "p3"]),
    ])
    config = Config.model_validate({"source": {
        "kind": "files", "files": {"paths": [str(tmp_path / "*.jsonl")]},
        "columns": APP_KEYS.model_dump()}})
    source = build_source(config)
    try:
        batch = source.read(None, 10)
    finally:
        source.close()
    assert batch.rejections == []
    assert [r.contexts for r in batch.records] == [("p0",), ("p1",), ("p2", "p3")]


# -- rotation (issue 16, item 4; tests/test_files_rotation.py runs the real logrotate) -------
def test_a_renamed_file_is_read_to_its_end_under_its_new_name(
        tmp_path: Path, make_source: Callable[..., FileSource]) -> None:
    log = tmp_path / "app.jsonl"
    write_jsonl(log, [app_row(i) for i in range(3)])
    source = make_source([str(log)])
    _, cursor = drain(source, None, 10)
    # logrotate `create`: renamed, the app writes on to it, then a new file under the name.
    os.rename(log, tmp_path / "app.jsonl.1")
    write_jsonl(tmp_path / "app.jsonl.1", [app_row(3), app_row(4)], mode="a")
    write_jsonl(log, [app_row(10)])
    batches, cursor = drain(source, cursor, 10)
    assert ids(batches) == ["r003", "r004", "r010"]  # the rotated file first
    assert sum(b.rewritten for b in batches) == 0
    followed = cursor["files"][str(tmp_path / "app.jsonl.1")]
    assert followed["followed"] and followed["rows"] == 5
    # Done with once read to its end and unchanged for rotate_wait.
    quick = FileSource("app", [str(log)], "auto", APP_KEYS, rotate_wait_s=0.0)
    _, cursor = drain(quick, cursor, 10)
    assert list(cursor["files"]) == [str(log)]
    quick.close()


def test_a_copytruncate_copy_is_read_on_from_the_offset(
        tmp_path: Path, make_source: Callable[..., FileSource]) -> None:
    log = tmp_path / "app.jsonl"
    write_jsonl(log, [app_row(i) for i in range(3)])
    source = make_source([str(log)])
    _, cursor = drain(source, None, 10)
    # Written after our last read, then copied and truncated: only the copy holds them.
    write_jsonl(log, [app_row(3), app_row(4)], mode="a")
    shutil.copyfile(log, tmp_path / "app.jsonl.1")
    with log.open("r+") as f:
        f.truncate(0)
    write_jsonl(log, [app_row(10), app_row(11)], mode="a")
    batches, cursor = drain(source, cursor, 10)
    assert ids(batches) == ["r003", "r004", "r010", "r011"]
    assert sum(b.rewritten for b in batches) == 0


def test_a_glob_that_matches_the_rotations_reads_nothing_twice(
        tmp_path: Path, make_source: Callable[..., FileSource]) -> None:
    log = tmp_path / "app.jsonl"
    write_jsonl(log, [app_row(i) for i in range(3)])
    source = make_source([str(tmp_path / "app.jsonl*")])
    _, cursor = drain(source, None, 10)
    os.rename(log, tmp_path / "app.jsonl.1")  # matched by the glob: the same file
    write_jsonl(log, [app_row(10)])
    (tmp_path / "app.jsonl.2.gz").write_bytes(gzip.compress(b'{"req_uuid": "old"}\n'))
    shutil.copyfile(tmp_path / "app.jsonl.1", tmp_path / "copy.jsonl.3")  # a plain copy
    source.paths.append(str(tmp_path / "copy.jsonl*"))
    batches, cursor = drain(source, cursor, 10)
    assert ids(batches) == ["r010"] and not [e for b in batches for e in b.rejections]
    assert sorted(cursor["files"]) == [str(log), str(tmp_path / "app.jsonl.1")]


def test_a_cursor_keyed_by_path_is_migrated(
        tmp_path: Path, make_source: Callable[..., FileSource]) -> None:
    log = tmp_path / "app.jsonl"
    write_jsonl(log, [app_row(i) for i in range(3)])
    st = log.stat()
    old = {"files": {str(log): {"rows": 2, "size": st.st_size, "mtime": st.st_mtime,
                                "done": False, "head_len": st.st_size,
                                "head": _old_head(log)}}}
    # Rotated while the old version was stopped: the entry finds its file by its bytes.
    os.rename(log, tmp_path / "app.jsonl.1")
    write_jsonl(log, [app_row(10)])
    batches, cursor = drain(make_source([str(log)]), old, 10)
    assert ids(batches) == ["r002", "r010"]
    entry = cursor["files"][str(tmp_path / "app.jsonl.1")]
    assert entry["ino"] == (tmp_path / "app.jsonl.1").stat().st_ino and entry["offset"] > 0


def _old_head(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes()[:4096], digest_size=16).hexdigest()


def test_byte_offsets_are_exact_and_a_partial_line_waits(
        tmp_path: Path, make_source: Callable[..., FileSource]) -> None:
    log = tmp_path / "app.jsonl"
    write_jsonl(log, [app_row(0)])
    append_text(log, "12")  # "1234" being written: not rejected twice
    source = make_source()
    batches, cursor = drain(source, None, 10)
    assert ids(batches) == ["r000"] and not [e for b in batches for e in b.rejections]
    entry = cursor["files"][str(log)]
    assert entry["offset"] == len(json.dumps(app_row(0))) + 1 and entry["lines"] == 1
    append_text(log, "34\n")
    write_jsonl(log, [app_row(2)], mode="a")
    batches, cursor = drain(make_source(), cursor, 10)
    assert ids(batches) == ["r002"]
    assert [(e.reason, e.row_ref) for b in batches for e in b.rejections] == [
        ("wrong_type", f"{log}:2")]
    assert cursor["files"][str(log)]["offset"] == log.stat().st_size


def test_rotate_wait_is_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('[source]\nkind = "files"\n[source.files]\nrotate_wait = "90s"\n')
    assert load_config(path, environ={}).source.files.rotate_wait == 90.0
    path.write_text('[source]\nkind = "files"\n[source.files]\nrotate_wait = "soon"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert "source.files.rotate_wait" in str(info.value) and str(path) in str(info.value)
