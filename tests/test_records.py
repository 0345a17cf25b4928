"""Mapping the app's rows onto LogRecords, and rejecting what cannot be mapped."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from evaluator.errors import InvalidRecordError
from evaluator.records import FieldDrop, LogRecord, PassageInfo, RowLimits, map_row

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


# -- passages logged as objects (issue 16: every such row was rejected "item 0 is dict") ------
@pytest.mark.parametrize(("docs", "text"), [
    ('[{"text": "X is a thing.", "score": 0.82, "id": "doc-7"}]', "X is a thing."),
    ([{"page_content": "X is a thing.", "metadata": {"source": "kb/x.md"}}], "X is a thing."),
    ([{"content": "X is a thing."}], "X is a thing."),
    ([{"node": {"id_": "n1", "text": "X is a thing.", "metadata": {}}, "score": 0.5}],
     "X is a thing."),
    ([{"document": {"page_content": "X is a thing."}, "score": 0.5}], "X is a thing."),
], ids=["text-json-string", "langchain-document", "content", "llamaindex-node-with-score",
        "nested-document"])
def test_the_common_shapes_of_a_passage_object_map_without_config(docs: object,
                                                                  text: str) -> None:
    assert map_row(row(docs=docs), COLUMNS, limits=LIMITS, position="t:0").contexts == (text,)


def test_strings_and_objects_may_be_mixed_in_one_list() -> None:
    rec = map_row(row(docs=["a", {"text": "b"}, {"page_content": "c"}]), COLUMNS,
                  limits=LIMITS, position="t:0")
    assert rec.contexts == ("a", "b", "c")


def test_a_configured_text_key_reaches_into_nested_objects() -> None:
    limits = RowLimits(max_field_chars=200, max_contexts=3, context_text_key="chunk.body")
    rec = map_row(row(docs=[{"chunk": {"body": "X is a thing."}, "text": "not this"}]), COLUMNS,
                  limits=limits, position="t:0")
    assert rec.contexts == ("X is a thing.",)


def test_an_object_without_a_known_text_names_the_config_key_and_its_keys() -> None:
    with pytest.raises(InvalidRecordError) as info:
        map_row(row(docs=[{"body": "X", "score": 1}]), COLUMNS, limits=LIMITS, position="t:0")
    err = info.value
    assert (err.reason, err.field, err.row_ref) == ("bad_contexts", "contexts", "r1")
    assert "item 0 is an object with no text" in err.detail
    assert "set source.context_text_key" in err.detail and "its keys: body, score" in err.detail
    limits = RowLimits(max_field_chars=200, max_contexts=3, context_text_key="chunk.body")
    with pytest.raises(InvalidRecordError, match=r"no text at key 'chunk\.body'"):
        map_row(row(docs=[{"chunk": {"body": 3}}]), COLUMNS, limits=limits, position="t:0")


def test_an_objects_text_counts_against_the_size_limit() -> None:
    with pytest.raises(InvalidRecordError) as info:
        map_row(row(docs=[{"text": "x" * 201}]), COLUMNS, limits=LIMITS, position="t:0")
    assert info.value.reason == "oversized" and "item 0 has 201 characters" in info.value.detail


def test_the_text_key_comes_from_the_source_config() -> None:
    from evaluator.config import Config

    config = Config.model_validate({"source": {"context_text_key": "node.body"}})
    assert RowLimits.of(config.source).context_text_key == "node.body"
    with pytest.raises(ValueError, match="context_text_key"):
        Config.model_validate({"source": {"context_text_key": "a..b"}})


# -- what the retriever said of each passage (issue 16) --------------------------------------
def test_a_passages_score_id_and_source_are_kept_beside_its_text() -> None:
    docs = [
        {"text": "a", "score": 0.83, "id": "doc-17", "source": "handbook.pdf"},
        {"page_content": "b", "metadata": {"source": "kb/b.md", "id": 42, "score": "0.5"}},
        {"node": {"text": "c", "id_": "n-3", "metadata": {"file_name": "c.txt"}}, "score": 0.1},
    ]
    rec = map_row(row(docs=docs), COLUMNS, limits=RowLimits(max_contexts=5), position="t:0")
    assert rec.contexts == ("a", "b", "c")
    assert rec.passages == (PassageInfo(0.83, "doc-17", "handbook.pdf"),
                            PassageInfo(0.5, "42", "kb/b.md"), PassageInfo(0.1, "n-3", "c.txt"))
    # Through the queue and the store (the item's payload) and back.
    assert LogRecord.from_message(json.loads(json.dumps(rec.to_message()))) == rec
    mixed = map_row(row(docs=["plain", {"text": "t", "doc_id": "d1"}]), COLUMNS,
                    limits=LIMITS, position="t:0")
    assert mixed.passages == (None, PassageInfo(id="d1"))


def test_plain_passages_carry_nothing_new_and_old_messages_still_read() -> None:
    rec = map_row(row(docs=["a", {"text": "b"}]), COLUMNS, limits=LIMITS, position="t:0")
    assert rec.passages == ()
    message = rec.to_message()
    assert "passages" not in message  # a message of plain passages is as it was
    assert LogRecord.from_message(message) == rec


def test_an_unreadable_score_id_or_source_is_dropped_not_the_row() -> None:
    dropped: list[FieldDrop] = []
    docs = [{"text": "a", "score": "high", "id": "x" * 300, "source": "s.md"},
            {"text": "b", "score": True, "id": ["a"], "url": "https://x/b"},
            {"text": "c", "score": float("nan")}]
    rec = map_row(row(docs=docs), COLUMNS, limits=LIMITS, position="t:0", dropped=dropped)
    assert rec.contexts == ("a", "b", "c")
    assert rec.passages == (PassageInfo(source="s.md"), PassageInfo(source="https://x/b"), None)
    assert [(d.field, d.reason) for d in dropped] == [
        ("passages", "wrong_type"), ("passages", "oversized"), ("passages", "wrong_type"),
        ("passages", "wrong_type"), ("passages", "wrong_type")]
    assert dropped[0].detail == "passage 0 score: 'high' is not a number"
    assert dropped[1].detail.startswith("passage 0 id has 300 characters")
