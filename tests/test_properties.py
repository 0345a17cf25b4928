"""Property-based tests: bad input never kills the sampler and never loses a row (issue 7).

``map_row`` is checked directly on any row dict; then the real :class:`Sampler` runs over a
real SQLite table (modes ``timestamp`` and ``incrementing``) and over JSON Lines and CSV files,
with rows appended between reads, and every row is accounted for.

How long these take is set by a profile: ``ci`` (the default, about half a minute in all) or
``thorough`` (``GROUNDWATCH_HYPOTHESIS_PROFILE=thorough``, ten times the examples).
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from evaluator.errors import InvalidRecordError
from evaluator.records import ALL_FIELDS, OPTIONAL_FIELDS, FieldDrop, LogRecord, RowLimits, map_row

os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

settings.register_profile("ci", deadline=None, derandomize=False, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])
settings.register_profile("thorough", parent=settings.get_profile("ci"))
PROFILE = os.environ.get("GROUNDWATCH_HYPOTHESIS_PROFILE", "ci")
SCALE = 10 if PROFILE == "thorough" else 1
settings.load_profile(PROFILE)


def examples(n: int) -> int:
    return n * SCALE


BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OFFSETS = [timezone(timedelta(minutes=m)) for m in range(-12 * 60, 14 * 60 + 1, 15)]

# -- values ---------------------------------------------------------------------------------

# Text that may hold anything, lone surrogates included (JSON may carry them as escapes).
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=30)
blank = st.sampled_from(["", " ", "\t", "\n ", "\u3000", "\x00"])
odd_numbers = st.one_of(
    st.integers(), st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.just(math.nan), st.just(math.inf),
    st.just(-math.inf), st.decimals(allow_nan=True), st.booleans())
number_text = st.sampled_from(["NaN", "nan", "inf", "-Infinity", "1e400", "12", " 7 ", "1.5",
                               "0x10", "²", "١٢٣", "-1", "1_000", "", "  "])
json_garbage = st.sampled_from([
    "[", "[\"a\", ", "{}", "{\"a\": [1, 2]}", "3", "-0.5", "\"text\"", "null", "true", "NaN",
    "[1, 2]", "[[\"nested\"]]", "[{\"text\": \"a\"}]", "[\"ok\", null]", "[\"\\ud800\"]",
    "{\"s\": \"\\udfff\"}", "{\"n\": NaN}", "{\"n\": Infinity}", "[" * 5000 + "]" * 5000,
    "{\"a\": " * 3000 + "1" + "}" * 3000, "[\"a\"] trailing", "\ufeff[\"bom\"]", "[] ",
])


def iso(when: datetime, offset: timezone | None, style: str) -> str:
    local = when.astimezone(offset) if offset is not None else when.replace(tzinfo=None)
    text = local.isoformat(sep=" " if style == "space" else "T")
    return text.replace("+00:00", "Z") if style == "z" else text


@st.composite
def instants(draw: Any, *, wide: bool) -> datetime:
    """A log time: near BASE, or (``wide``) anywhere a datetime reaches."""
    if wide and draw(st.booleans()):
        return draw(st.datetimes(timezones=st.just(UTC)))
    return BASE + timedelta(milliseconds=draw(st.integers(-7_200_000, 7_200_000)))


@st.composite
def timestamps(draw: Any, *, wide: bool = True) -> Any:
    when = draw(instants(wide=wide))
    kind = draw(st.sampled_from(["iso", "iso", "epoch_s", "epoch_ms", "epoch_text", "dt",
                                 "garbage"]))
    if kind == "iso":
        offset = draw(st.one_of(st.none(), st.sampled_from(OFFSETS)))
        return iso(when, offset, draw(st.sampled_from(["t", "space", "z"])))
    if kind == "epoch_s":
        s = when.timestamp()
        return draw(st.sampled_from([s, int(s)]))
    if kind == "epoch_ms":
        return int(when.timestamp() * 1000)
    if kind == "epoch_text":
        return str(int(when.timestamp()))
    if kind == "dt":
        return draw(st.sampled_from([when, when.replace(tzinfo=None),
                                     when.astimezone(draw(st.sampled_from(OFFSETS)))]))
    return draw(st.one_of(
        st.sampled_from(["yesterday-ish", "2026-13-01T00:00:00", "2026-02-30", "0000-01-01",
                         "2026-03-01T25:00:00Z", "2026-03-01T12:00:00+15:00", "1e12", "NaN",
                         "2026-03-01T12:00:00 PST", "", " ", "0001-01-01T00:00:00+01:00",
                         "9999-12-31T23:59:59-05:00", "\ud800"]),
        odd_numbers, any_text))


def values() -> st.SearchStrategy[Any]:
    """Anything a driver or a JSON parser could hand over for one field."""
    scalars = st.one_of(st.none(), any_text, blank, odd_numbers, number_text, json_garbage,
                        st.binary(max_size=12), st.dates(), st.datetimes(),
                        st.text(max_size=1).map(lambda c: c * 1500))
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
        max_leaves=6)


def field_values(fname: str) -> st.SearchStrategy[Any]:
    typical: dict[str, st.SearchStrategy[Any]] = {
        "request_id": st.one_of(st.text(min_size=1, max_size=8), st.integers()),
        "timestamp": timestamps(),
        "question": st.text(max_size=20),
        "answer": st.text(max_size=20),
        "contexts": st.one_of(st.lists(st.text(max_size=10), max_size=3),
                              st.lists(st.text(max_size=10), max_size=3).map(json.dumps),
                              st.lists(st.text(max_size=2), min_size=101, max_size=102)),
        "status": st.one_of(st.integers(90, 610), st.sampled_from(["ok", "ERROR", "200", "503"])),
        "latency_ms": st.one_of(st.floats(), number_text),
        "feedback": st.sampled_from([-1, 0, 1, 2, "1", "-1", 0.5, 1.0, True]),
        "metadata": st.one_of(st.dictionaries(st.text(max_size=4), values(), max_size=3),
                              json_garbage),
    }
    return st.one_of(typical.get(fname, values()), values())


@st.composite
def rows(draw: Any) -> dict[str, Any]:
    """A row with every field present, missing, typical or odd."""
    row: dict[str, Any] = {}
    for fname in ALL_FIELDS:
        if draw(st.integers(0, 9)) == 0:
            continue  # missing
        row[fname] = draw(field_values(fname))
    return row


# -- map_row --------------------------------------------------------------------------------

LIMITS = RowLimits(max_field_chars=1000, max_contexts=100)


def assert_strict_json(value: Any) -> None:
    """What the queue and the store need: strict JSON, valid UTF-8."""
    json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")


def check_record(record: LogRecord) -> None:
    assert isinstance(record.request_id, str) and record.request_id.strip() == record.request_id
    assert 0 < len(record.request_id) <= 200
    assert isinstance(record.timestamp, datetime) and record.timestamp.utcoffset() == timedelta(0)
    assert isinstance(record.question, str) and record.question.strip()
    assert isinstance(record.answer, str)
    assert isinstance(record.contexts, tuple) and all(isinstance(c, str) for c in record.contexts)
    assert len(record.contexts) <= LIMITS.max_contexts
    for text in (record.question, record.answer, *record.contexts):
        assert len(text) <= LIMITS.max_field_chars
    for name in ("route", "model", "app_version", "status", "error"):
        value = getattr(record, name)
        assert value is None or (isinstance(value, str) and len(value) <= LIMITS.max_field_chars)
    for name in ("latency_ms", "cost_usd"):
        value = getattr(record, name)
        assert value is None or (isinstance(value, float) and math.isfinite(value))
    for name in ("prompt_tokens", "completion_tokens"):
        value = getattr(record, name)
        assert value is None or (type(value) is int)
    assert record.feedback in (None, -1, 0, 1)
    assert isinstance(record.metadata, dict)
    assert len(json.dumps(record.metadata, allow_nan=False)) <= LIMITS.max_field_chars
    message = record.to_message()
    assert_strict_json(message)
    assert LogRecord.from_message(json.loads(json.dumps(message))).request_id == record.request_id


@settings(max_examples=examples(200))
@given(rows())
@example({"request_id": "a", "timestamp": 1e20, "question": "q", "contexts": [], "answer": ""})
@example({"request_id": "a", "timestamp": 10**400, "question": "q", "contexts": [], "answer": ""})
@example({"request_id": "a", "timestamp": -1e12, "question": "q", "contexts": [], "answer": ""})
@example({"request_id": "a", "timestamp": "0001-01-01T00:00:00+01:00", "question": "q",
          "contexts": [], "answer": ""})
@example({"request_id": "a", "timestamp": datetime(9999, 12, 31, 23, tzinfo=OFFSETS[0]),
          "question": "q", "contexts": [], "answer": ""})
@example({"request_id": 10**5000, "timestamp": "2026-03-01", "question": "q", "contexts": [],
          "answer": ""})
@example({"request_id": "a", "timestamp": "2026-03-01", "question": "q", "contexts": [],
          "answer": "", "latency_ms": 10**400, "status": 10**400, "feedback": 10**400,
          "route": 10**5000})
@example({"request_id": "a", "timestamp": "2026-03-01", "question": "q", "contexts": [],
          "answer": "", "status": "²"})
@example({"request_id": "a", "timestamp": "2026-03-01", "question": "q",
          "contexts": "[" * 5000, "answer": ""})
@example({"request_id": "a", "timestamp": "2026-03-01", "question": "q", "contexts": [],
          "answer": "", "metadata": "{\"a\": " * 3000})
@example({"request_id": "a\ud800", "timestamp": "2026-03-01", "question": "q\udfff",
          "contexts": ["\ud800"], "answer": "", "route": "\ud800",
          "metadata": {"k\ud800": "\udc00"}})
@example({"request_id": "a", "timestamp": "2026-03-01", "question": "q", "contexts": [],
          "answer": "", "metadata": {"n": math.nan, "big": "x" * 2000}})
@example({"request_id": "a", "timestamp": "2026-03-01", "question": "q", "contexts": [],
          "answer": "", "metadata": "{\"n\": NaN}"})
def test_map_row_returns_a_valid_record_or_a_known_rejection(row: dict[str, Any]) -> None:
    dropped: list[FieldDrop] = []
    try:
        record = map_row(row, {}, limits=LIMITS, position="row 1", dropped=dropped)
    except InvalidRecordError as err:
        assert err.reason in InvalidRecordError.REASONS
        assert err.field in ALL_FIELDS and err.row_ref and err.detail
        (err.row_ref + err.detail).encode("utf-8")  # the store keeps both
        return
    check_record(record)
    for drop in dropped:
        assert drop.field in OPTIONAL_FIELDS
        assert drop.reason in InvalidRecordError.REASONS - {"duplicate_id", "no_position"}
        assert getattr(record, drop.field) in (None, {})
