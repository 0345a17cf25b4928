"""Mapping the app's rows onto LogRecords, and rejecting what cannot be mapped."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from evaluator.errors import InvalidRecordError
from evaluator.records import FieldDrop, LogRecord, RowLimits, map_row

COLUMNS = {"request_id": "rid", "timestamp": "ts", "question": "q", "contexts": "docs",
           "answer": "a", "latency_ms": "lat", "feedback": "thumbs"}
LIMITS = RowLimits(max_field_chars=200, max_contexts=3)


def row(**over: object) -> dict[str, object]:
    base: dict[str, object] = {"rid": "r1", "ts": "2026-11-01T10:00:00Z", "q": "What is X?",
                               "docs": '["X is a thing."]', "a": "X is a thing.", "lat": 120,
                               "thumbs": -1}
    base.update(over)
    return base


def test_maps_app_columns() -> None:
    rec = map_row(row(), COLUMNS, limits=LIMITS, position="t:0")
    assert rec.request_id == "r1"
    assert rec.timestamp == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert rec.contexts == ("X is a thing.",)
    assert rec.latency_ms == 120.0 and rec.feedback == -1


def test_contexts_as_array_and_numbers_as_epoch() -> None:
    rec = map_row(row(docs=["a", "b"], ts=1_700_000_000_000), COLUMNS, limits=LIMITS,
                  position="t:0")
    assert rec.contexts == ("a", "b")
    assert rec.timestamp.year == 2023


def test_empty_answer_is_kept_for_the_empty_answer_detector() -> None:
    assert map_row(row(a=""), COLUMNS, limits=LIMITS, position="t:0").answer == ""


@pytest.mark.parametrize(
    ("over", "reason", "field"),
    [
        ({"rid": None}, "missing_field", "request_id"),
        ({"rid": "  "}, "empty_field", "request_id"),
        ({"q": None}, "missing_field", "question"),
        ({"q": "   "}, "empty_field", "question"),
        ({"a": None}, "missing_field", "answer"),
        ({"a": 42}, "wrong_type", "answer"),
        ({"docs": "not json"}, "bad_contexts", "contexts"),
        ({"docs": '{"a": 1}'}, "bad_contexts", "contexts"),
        ({"docs": [1, 2]}, "bad_contexts", "contexts"),
        ({"docs": ["a", "b", "c", "d"]}, "oversized", "contexts"),
        ({"a": "x" * 201}, "oversized", "answer"),
        ({"ts": "yesterday"}, "bad_timestamp", "timestamp"),
        ({"ts": None}, "missing_field", "timestamp"),
    ],
)
def test_rejections_name_reason_field_and_row(over: dict[str, object], reason: str,
                                              field: str) -> None:
    with pytest.raises(InvalidRecordError) as info:
        map_row(row(**over), COLUMNS, limits=LIMITS, position="logs.jsonl:7")
    err = info.value
    assert (err.reason, err.field) == (reason, field)
    assert err.row_ref in ("r1", "logs.jsonl:7")
    assert field in str(err) and err.row_ref in str(err)


@pytest.mark.parametrize(
    ("over", "fname", "reason"),
    [
        ({"lat": "fast"}, "latency_ms", "wrong_type"),
        ({"lat": float("nan")}, "latency_ms", "wrong_type"),
        ({"thumbs": 5}, "feedback", "wrong_type"),
        ({"thumbs": True}, "feedback", "wrong_type"),
        ({"status": 99}, "status", "wrong_type"),
        ({"status": "x" * 201}, "status", "oversized"),
        ({"tokens": "12.5"}, "prompt_tokens", "wrong_type"),
        ({"meta": "{not json"}, "metadata", "bad_json"),
        ({"meta": "[1, 2]"}, "metadata", "wrong_type"),
    ],
)
def test_an_unreadable_optional_field_is_dropped_not_the_row(
        over: dict[str, object], fname: str, reason: str) -> None:
    columns = {**COLUMNS, "status": "status", "prompt_tokens": "tokens", "metadata": "meta"}
    dropped: list[FieldDrop] = []
    rec = map_row(row(**over), columns, limits=LIMITS, position="t:0", dropped=dropped)
    assert rec.request_id == "r1"
    assert getattr(rec, fname) in (None, {})
    assert [(d.field, d.reason, d.row_ref) for d in dropped] == [(fname, reason, "r1")]


@pytest.mark.parametrize(
    ("status", "expected"),
    [(200, "ok"), (302, "ok"), (404, "error"), (503, "error"), ("500", "error"),
     (" 201 ", "ok"), (200.0, "ok"), ("OK", "ok"), ("Error", "error"), ("timeout", "timeout"),
     ("", None), (None, None)],
)
def test_status_codes_are_normalised(status: object, expected: str | None) -> None:
    # An HTTP status code means ok/error without guessing: the app's error rate needs it.
    dropped: list[FieldDrop] = []
    rec = map_row(row(status=status), {**COLUMNS, "status": "status"}, limits=LIMITS,
                  position="t:0", dropped=dropped)
    assert rec.status == expected and dropped == []


def test_numeric_text_and_whole_floats_are_numbers() -> None:
    columns = {**COLUMNS, "prompt_tokens": "tokens", "cost_usd": "cost", "route": "route"}
    rec = map_row(row(lat=" 12.5 ", tokens="300", cost="0.002", thumbs="1", route=7),
                  columns, limits=LIMITS, position="t:0")
    assert (rec.latency_ms, rec.prompt_tokens, rec.cost_usd, rec.feedback) == (12.5, 300, 0.002, 1)
    assert map_row(row(tokens=300.0), columns, limits=LIMITS, position="t:0").prompt_tokens == 300
    assert rec.route == "7"


def test_message_round_trip() -> None:
    rec = map_row(row(), COLUMNS, limits=LIMITS, position="t:0")
    assert LogRecord.from_message(rec.to_message()) == rec
