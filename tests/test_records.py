"""Mapping the app's rows onto LogRecords, and rejecting what cannot be mapped."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from evaluator.errors import InvalidRecordError
from evaluator.records import LogRecord, RowLimits, map_row

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
        ({"lat": "fast"}, "wrong_type", "latency_ms"),
        ({"thumbs": 5}, "wrong_type", "feedback"),
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


def test_message_round_trip() -> None:
    rec = map_row(row(), COLUMNS, limits=LIMITS, position="t:0")
    assert LogRecord.from_message(rec.to_message()) == rec
