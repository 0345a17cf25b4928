"""The log record: what groundwatch knows about one request of the watched app.

Sources map their own column or key names onto :class:`LogRecord` with :func:`map_row`. Every
way a *required* field can fail raises :class:`~evaluator.errors.InvalidRecordError` naming the
row and the field, so the sampler can store and count the rejection and go on. An *optional*
field never costs the row: a value whose meaning is certain is normalised (an HTTP status code
becomes ok/error, a numeric string a number), and one that is not is dropped from the record
and reported as a :class:`FieldDrop`, which the sampler counts by field and reason.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from evaluator.config import SourceConfig
from evaluator.errors import InvalidRecordError

REQUIRED_FIELDS = ("request_id", "timestamp", "question", "contexts", "answer")
OPTIONAL_FIELDS = (
    "route", "model", "app_version", "latency_ms", "status", "error", "prompt_tokens",
    "completion_tokens", "cost_usd", "feedback", "metadata",
)
ALL_FIELDS = REQUIRED_FIELDS + OPTIONAL_FIELDS


@dataclass(frozen=True, slots=True)
class PassageInfo:
    """What the retriever said of one passage logged as an object, beside its text: its own
    score (a number), an id and a source (a file, URL or title), each when it gave one."""

    score: float | None = None
    id: str | None = None
    source: str | None = None

    def to_message(self) -> dict[str, Any]:
        return {"score": self.score, "id": self.id, "source": self.source}

    @classmethod
    def from_message(cls, d: Mapping[str, Any] | None) -> PassageInfo | None:
        if not d:
            return None
        score = d.get("score")
        return cls(None if score is None else float(score), d.get("id"), d.get("source"))

    def describe(self) -> str:
        """``id doc-17, retriever score 0.830, source handbook.pdf`` (what is known)."""
        parts = [f"id {self.id}" if self.id is not None else "",
                 f"retriever score {self.score:.3f}" if self.score is not None else "",
                 f"source {self.source}" if self.source is not None else ""]
        return ", ".join(p for p in parts if p)


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One request/response of the watched app, in groundwatch's own field names."""

    request_id: str
    timestamp: datetime  # always timezone-aware UTC
    question: str
    contexts: tuple[str, ...]
    answer: str
    route: str | None = None
    model: str | None = None
    app_version: str | None = None
    latency_ms: float | None = None
    status: str | None = None
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    feedback: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: Per passage of ``contexts`` (same order), what the retriever said of it (None for a
    #: passage logged as plain text); empty when no passage said anything.
    passages: tuple[PassageInfo | None, ...] = ()

    def to_message(self) -> dict[str, Any]:
        """A JSON-safe dict for the queue; :meth:`from_message` is its inverse."""
        d = {name: getattr(self, name) for name in ALL_FIELDS}
        d["timestamp"] = self.timestamp.timestamp()
        d["contexts"] = list(self.contexts)
        d["metadata"] = dict(self.metadata)
        if self.passages:  # absent otherwise: a message of plain passages is as it was
            d["passages"] = [None if p is None else p.to_message() for p in self.passages]
        return d

    @classmethod
    def from_message(cls, d: Mapping[str, Any]) -> LogRecord:
        """The record of a :meth:`to_message` dict, also of one written before a field
        existed (a message still queued, an item stored, across an upgrade)."""
        kwargs = dict(d)
        kwargs["timestamp"] = datetime.fromtimestamp(float(d["timestamp"]), tz=UTC)
        kwargs["contexts"] = tuple(d["contexts"])
        kwargs["metadata"] = dict(d.get("metadata") or {})
        known = {k: v for k, v in kwargs.items() if k in ALL_FIELDS}
        return cls(**known, passages=tuple(PassageInfo.from_message(p)
                                           for p in d.get("passages") or ()))


@dataclass(frozen=True, slots=True)
class RowLimits:
    """How a row is read: bounds on what it may carry (a row beyond them is rejected as
    ``oversized``), and where a passage logged as an object keeps its text."""

    max_field_chars: int = 100_000
    max_contexts: int = 100
    #: A passage logged as an object: the key (or dotted path, ``node.text``) of its text;
    #: "" tries :data:`CONTEXT_TEXT_KEYS`, then the same inside :data:`CONTEXT_NESTED_KEYS`.
    context_text_key: str = ""

    @classmethod
    def of(cls, source: SourceConfig) -> RowLimits:
        """The reading rules of a ``[source]`` section."""
        return cls(max_field_chars=source.max_field_chars, max_contexts=source.max_contexts,
                   context_text_key=source.context_text_key)


@dataclass(frozen=True, slots=True)
class FieldDrop:
    """An optional field left out of a record because its value could not be read."""

    field: str
    reason: str  # an InvalidRecordError reason: wrong_type, oversized, bad_json
    row_ref: str
    detail: str


def _reject(reason: str, fname: str, row_ref: str, detail: str) -> InvalidRecordError:
    return InvalidRecordError(reason, field=fname, row_ref=row_ref, detail=detail)


# Lone UTF-16 surrogates: JSON text may carry them ("\ud800"), but no UTF-8 database or file
# can store them, so one would fail every write of the slice holding it.
_SURROGATE = re.compile("[\ud800-\udfff]")
# An integer of more digits than this is no id, count or code; str() of a huge one raises.
_MAX_INT_BITS = 700  # about 210 decimal digits


def _valid_text(value: str) -> str:
    """``value`` with lone surrogates replaced by U+FFFD, as bytes that are not UTF-8 are."""
    return _SURROGATE.sub("\ufffd", value) if _SURROGATE.search(value) else value


def _decoded(value: Any, fname: str, row_ref: str) -> Any:
    """``value`` as text when it is bytes (SQLite lets a TEXT column hold a BLOB): strict
    UTF-8, since a guess at another encoding would score garbled text as the app's own."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        return value
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _reject("wrong_type", fname, row_ref,
                      f"{len(value)} bytes that are not valid UTF-8 text (byte "
                      f"0x{bytes(value)[exc.start]:02x} at offset {exc.start})") from None


def _loads(text: str) -> Any:
    """``json.loads``, with nesting too deep for the parser reported as invalid JSON."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text[:100], 0) from None


def _utc(dt: datetime, fname: str, row_ref: str) -> datetime:
    try:
        return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    except OverflowError:  # year 1 east of UTC, year 9999 west of it
        raise _reject("bad_timestamp", fname, row_ref, f"{dt.isoformat()} is out of range") from None


# Epoch seconds or milliseconds written as text (every CSV cell is text).
_EPOCH_TEXT = re.compile(r"[0-9]{1,16}(?:\.[0-9]{1,9})?")


def parse_timestamp(value: Any, *, row_ref: str = "?", fname: str = "timestamp") -> datetime:
    """Accept datetimes (naive ones are taken as UTC), ISO-8601 text and epoch seconds or
    milliseconds, as numbers or as plain numeric text."""
    if isinstance(value, datetime):
        return _utc(value, fname, row_ref)
    if isinstance(value, bool):
        raise _reject("bad_timestamp", fname, row_ref, "a boolean is not a timestamp")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise _reject("bad_timestamp", fname, row_ref, f"{value!r} is not finite")
        # Milliseconds since the epoch are common in app logs; seconds would be year > 5000.
        try:
            seconds = value / 1000.0 if value > 1e11 else float(value)
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):  # beyond what a datetime or time_t holds
            raise _reject("bad_timestamp", fname, row_ref,
                          f"{str(value)[:40]} is out of range as epoch seconds or milliseconds"
                          ) from None
    if isinstance(value, str):
        text = value.strip()
        if _EPOCH_TEXT.fullmatch(text):  # a CSV cell, or a number written as text: epoch
            return parse_timestamp(float(text) if "." in text else int(text), row_ref=row_ref,
                                   fname=fname)
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise _reject("bad_timestamp", fname, row_ref, f"{text[:40]!r} is not ISO-8601") from None
        return _utc(dt, fname, row_ref)
    raise _reject("bad_timestamp", fname, row_ref, f"type {type(value).__name__} is not a timestamp")


def _text(value: Any, fname: str, row_ref: str, limits: RowLimits, *, required: bool) -> str | None:
    value = _decoded(value, fname, row_ref)
    if value is None:
        if required:
            raise _reject("missing_field", fname, row_ref, "no value")
        return None
    if not isinstance(value, str):
        raise _reject("wrong_type", fname, row_ref, f"expected text, got {type(value).__name__}")
    if len(value) > limits.max_field_chars:
        raise _reject("oversized", fname, row_ref,
                      f"{len(value)} characters > limit {limits.max_field_chars}")
    return _valid_text(value)


#: Where the common shapes of a retrieved passage keep its text, tried in this order: most apps
#: and LlamaIndex's ``TextNode`` (``text``), LangChain's ``Document`` (``page_content``, beside
#: ``metadata``), chat-style and Haystack documents (``content``).
CONTEXT_TEXT_KEYS = ("text", "page_content", "content")
#: Where a passage nests its node: LlamaIndex's ``NodeWithScore`` is ``{"node": {...}, "score"}``.
CONTEXT_NESTED_KEYS = ("node", "document")


def _known_text(passage: Mapping[str, Any], depth: int = 0) -> str | None:
    for key in CONTEXT_TEXT_KEYS:
        if isinstance(passage.get(key), str):
            return str(passage[key])
    for key in CONTEXT_NESTED_KEYS:
        inner = passage.get(key)
        if depth < 2 and isinstance(inner, Mapping):
            found = _known_text(inner, depth + 1)
            if found is not None:
                return found
    return None


def _at_path(passage: Mapping[str, Any], path: str) -> Any:
    value: Any = passage
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


#: Where a passage logged as an object keeps what the retriever said of it, tried key by key
#: in this order, each first on the passage, then in its ``metadata``, then in its nested node
#: (:data:`CONTEXT_NESTED_KEYS`) and that node's ``metadata``: LlamaIndex's ``NodeWithScore``
#: has ``score`` beside ``node.id_``; LangChain's ``Document`` has ``id`` and
#: ``metadata.source``.
PASSAGE_SCORE_KEYS = ("score", "relevance_score", "similarity")
PASSAGE_ID_KEYS = ("id", "id_", "doc_id", "document_id", "chunk_id", "node_id")
PASSAGE_SOURCE_KEYS = ("source", "url", "file_path", "file_name", "title")
#: Bounds on a passage's id and source: beyond them the value is dropped, not cut (a cut id
#: names another passage).
MAX_PASSAGE_ID_CHARS = 200
MAX_PASSAGE_SOURCE_CHARS = 500


def _scopes(passage: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = [passage]
    for key in CONTEXT_NESTED_KEYS:
        if isinstance(passage.get(key), Mapping):
            found.append(passage[key])
    return [m for scope in found
            for m in (scope, scope.get("metadata")) if isinstance(m, Mapping)]


def _first(scopes: list[Mapping[str, Any]], keys: tuple[str, ...]) -> tuple[str, Any]:
    for key in keys:
        for scope in scopes:
            if scope.get(key) is not None:
                return key, scope[key]
    return "", None


def _passage_label(value: Any, what: str, limit: int, row_ref: str) -> str:
    value = _decoded(value, "passages", row_ref)
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > _MAX_INT_BITS:
            raise _reject("oversized", "passages", row_ref, f"{what}: a {value.bit_length()}-bit "
                          "integer")
        value = str(value)
    if not isinstance(value, str):
        raise _reject("wrong_type", "passages", row_ref,
                      f"{what} is {type(value).__name__}, not text")
    value = _valid_text(value).strip()
    if len(value) > limit:
        raise _reject("oversized", "passages", row_ref,
                      f"{what} has {len(value)} characters > limit {limit}")
    return value


def _passage_info(passage: Any, i: int, row_ref: str,
                  dropped: list[FieldDrop] | None) -> PassageInfo | None:
    """What the retriever said of passage ``i``; a value that cannot be read is left out and
    reported in ``dropped`` (the passage and the row are kept)."""
    if not isinstance(passage, Mapping):
        return None
    scopes = _scopes(passage)
    found: dict[str, Any] = {}
    for name, keys, read in (
            ("score", PASSAGE_SCORE_KEYS, lambda v, what: _number(v, "passages", row_ref, float)),
            ("id", PASSAGE_ID_KEYS,
             lambda v, what: _passage_label(v, what, MAX_PASSAGE_ID_CHARS, row_ref) or None),
            ("source", PASSAGE_SOURCE_KEYS,
             lambda v, what: _passage_label(v, what, MAX_PASSAGE_SOURCE_CHARS, row_ref) or None)):
        key, value = _first(scopes, keys)
        if value is None:
            continue
        try:
            found[name] = read(value, f"passage {i} {key}")
        except InvalidRecordError as err:
            if dropped is not None:
                detail = err.detail if err.detail.startswith("passage") else \
                    f"passage {i} {key}: {err.detail}"
                dropped.append(FieldDrop("passages", err.reason, row_ref, detail))
    info = PassageInfo(**found)
    return info if info != PassageInfo() else None


def _passage_text(passage: Any, i: int, fname: str, row_ref: str, text_key: str) -> str:
    """A passage's text: a string as it is, an object's text by ``text_key`` or by the keys
    of the common shapes (what else it says is read by :func:`_passage_info`)."""
    if isinstance(passage, str):
        return passage
    if not isinstance(passage, Mapping):
        raise _reject("bad_contexts", fname, row_ref,
                      f"item {i} is {type(passage).__name__}, not a string")
    text = _at_path(passage, text_key) if text_key else _known_text(passage)
    if isinstance(text, str):
        return text
    where = (f"key {text_key!r} (source.context_text_key)" if text_key else
             f"any of the keys {', '.join(CONTEXT_TEXT_KEYS)}, nor inside "
             f"{' or '.join(CONTEXT_NESTED_KEYS)}: set source.context_text_key")
    keys = ", ".join(sorted(str(k) for k in passage)[:8])
    raise _reject("bad_contexts", fname, row_ref,
                  f"item {i} is an object with no text at {where} (its keys: {keys})")


def _contexts(value: Any, fname: str, row_ref: str, limits: RowLimits,
              dropped: list[FieldDrop] | None = None
              ) -> tuple[tuple[str, ...], tuple[PassageInfo | None, ...]]:
    if value is None:
        raise _reject("missing_field", fname, row_ref, "no value")
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        try:
            value = _loads(value) if value.strip() else None
        except json.JSONDecodeError as exc:
            raise _reject("bad_contexts", fname, row_ref, f"not valid JSON: {exc.msg}") from None
        if value is None:
            raise _reject("bad_contexts", fname, row_ref, "empty text is not a JSON list")
    if hasattr(value, "tolist"):  # numpy / arrow arrays from Parquet
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise _reject("bad_contexts", fname, row_ref,
                      f"expected a list of strings, got {type(value).__name__}")
    if len(value) > limits.max_contexts:
        raise _reject("oversized", fname, row_ref,
                      f"{len(value)} passages > limit {limits.max_contexts}")
    texts = [_passage_text(passage, i, fname, row_ref, limits.context_text_key)
             for i, passage in enumerate(value)]
    for i, text in enumerate(texts):
        if len(text) > limits.max_field_chars:
            raise _reject("oversized", fname, row_ref,
                          f"item {i} has {len(text)} characters > limit {limits.max_field_chars}")
    infos = tuple(_passage_info(passage, i, row_ref, dropped) for i, passage in enumerate(value))
    return (tuple(_valid_text(text) for text in texts),
            infos if any(info is not None for info in infos) else ())


def _number(value: Any, fname: str, row_ref: str, kind: type) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _reject("wrong_type", fname, row_ref, "a boolean is not a number")
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
    if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
        raise _reject("wrong_type", fname, row_ref, f"a {value.bit_length()}-bit integer")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise _reject("wrong_type", fname, row_ref, f"{str(value)[:40]!r} is not a number") from None
    if not math.isfinite(number):
        raise _reject("wrong_type", fname, row_ref, f"{str(value)[:40]!r} is not finite")
    if kind is int:
        if not number.is_integer():
            raise _reject("wrong_type", fname, row_ref, f"{str(value)[:40]!r} is not a whole number")
        return int(number)
    return number


# What an HTTP status code means for the app's own error rate: 1xx-3xx answered, 4xx-5xx not.
def _status(value: Any, fname: str, row_ref: str, limits: RowLimits) -> str | None:
    """``ok``/``error`` from an HTTP status code (as a number or numeric text); other text is
    kept, lower-cased (``ok``, ``error``, ``timeout``, ...)."""
    value = _decoded(value, fname, row_ref)
    if value is None:
        return None
    if isinstance(value, bool):
        raise _reject("wrong_type", fname, row_ref, "a boolean is not a status")
    code: float | None = None
    if isinstance(value, int) and not 100 <= value <= 599:  # also ints too large for a float
        raise _reject("wrong_type", fname, row_ref, f"{str(value)[:40]} is not an HTTP status code")
    if isinstance(value, (int, float)):
        code = float(value)
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        # isdigit alone also admits '²', which float() refuses.
        code = float(value.strip())
    if code is not None:
        if not (math.isfinite(code) and code.is_integer() and 100 <= code <= 599):
            raise _reject("wrong_type", fname, row_ref, f"{value!r} is not an HTTP status code")
        return "ok" if code < 400 else "error"
    text = _text(value, fname, row_ref, limits, required=False)
    text = text.strip().lower() if text else None
    return text or None


def _metadata(value: Any, fname: str, row_ref: str, limits: RowLimits) -> dict[str, Any]:
    value = _decoded(value, fname, row_ref)
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        if len(value) > limits.max_field_chars:
            raise _reject("oversized", fname, row_ref,
                          f"{len(value)} characters > limit {limits.max_field_chars}")
        try:
            value = _loads(value)
        except json.JSONDecodeError as exc:
            raise _reject("bad_json", fname, row_ref, f"not valid JSON: {exc.msg}") from None
    if not isinstance(value, Mapping):
        raise _reject("wrong_type", fname, row_ref, f"expected an object, got {type(value).__name__}")
    # The metadata travels as JSON (the queue, the store's payload column): it must be strict
    # JSON (PostgreSQL refuses NaN), valid UTF-8, and as bounded as any other field.
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise _reject("wrong_type", fname, row_ref, f"not JSON data: {str(exc)[:80]}") from None
    if len(text) > limits.max_field_chars:
        raise _reject("oversized", fname, row_ref,
                      f"{len(text)} characters as JSON > limit {limits.max_field_chars}")
    return dict(json.loads(_valid_text(text))) if _SURROGATE.search(text) else dict(value)


def map_row(
    row: Mapping[str, Any],
    columns: Mapping[str, str],
    *,
    limits: RowLimits,
    position: str,
    dropped: list[FieldDrop] | None = None,
) -> LogRecord:
    """Map one source row onto a :class:`LogRecord`.

    ``columns`` maps groundwatch field names to the app's column names (a field absent from it
    keeps its own name). ``position`` names the row when it has no usable request id (a file and
    line, or a table and offset). Raises :class:`InvalidRecordError` on the first problem found
    in a required field; optional fields that cannot be read are left out of the record and
    appended to ``dropped``.
    """

    def get(fname: str) -> Any:
        return row.get(columns.get(fname, fname))

    # Not decoded: a BLOB request id is compared as a BLOB by the source's order and lookback,
    # so it is rejected (wrong_type) rather than read as text it is not stored as.
    raw_id = get("request_id")
    if isinstance(raw_id, int) and not isinstance(raw_id, bool) \
            and raw_id.bit_length() > _MAX_INT_BITS:
        raise _reject("oversized", "request_id", position, f"a {raw_id.bit_length()}-bit integer")
    if isinstance(raw_id, str):
        raw_id = _valid_text(raw_id)
    row_ref = (str(raw_id)[:200] if isinstance(raw_id, (str, int)) and str(raw_id).strip()
               else position)
    if raw_id is None:
        raise _reject("missing_field", "request_id", row_ref, "no value")
    if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool):
        raise _reject("wrong_type", "request_id", row_ref, f"got {type(raw_id).__name__}")
    request_id = str(raw_id).strip()
    if not request_id:
        raise _reject("empty_field", "request_id", row_ref, "blank")
    if len(request_id) > 200:
        raise _reject("oversized", "request_id", row_ref, f"{len(request_id)} characters > 200")

    raw_ts = get("timestamp")
    if raw_ts is None:
        raise _reject("missing_field", "timestamp", row_ref, "no value")
    timestamp = parse_timestamp(raw_ts, row_ref=row_ref)

    question = _text(get("question"), "question", row_ref, limits, required=True)
    answer = _text(get("answer"), "answer", row_ref, limits, required=True)
    assert question is not None and answer is not None
    if not question.strip():
        raise _reject("empty_field", "question", row_ref, "blank")
    contexts, passages = _contexts(get("contexts"), "contexts", row_ref, limits, dropped)

    optional: dict[str, Any] = {}
    for fname, read in _OPTIONAL_READERS.items():
        try:
            optional[fname] = read(get(fname), fname, row_ref, limits)
        except InvalidRecordError as err:
            # An optional field never costs the row: leave it out, and say so.
            if dropped is not None:
                dropped.append(FieldDrop(err.field, err.reason, err.row_ref, err.detail))
    return LogRecord(request_id=request_id, timestamp=timestamp, question=question,
                     contexts=contexts, answer=answer, passages=passages, **optional)


def _label_text(value: Any, fname: str, row_ref: str, limits: RowLimits) -> str | None:
    """Text, or a whole number read as its text (a numeric route or version is no guess)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > _MAX_INT_BITS:
            raise _reject("oversized", fname, row_ref, f"a {value.bit_length()}-bit integer")
        value = str(value)
    return _text(value, fname, row_ref, limits, required=False)


def _feedback(value: Any, fname: str, row_ref: str, limits: RowLimits) -> int | None:
    feedback = _number(value, fname, row_ref, int)
    if feedback is not None and feedback not in (-1, 0, 1):
        raise _reject("wrong_type", fname, row_ref, f"{feedback} is not -1, 0 or 1")
    return feedback


_OPTIONAL_READERS: dict[str, Callable[[Any, str, str, RowLimits], Any]] = {
    "route": _label_text,
    "model": _label_text,
    "app_version": _label_text,
    "latency_ms": lambda v, f, r, _: _number(v, f, r, float),
    "status": _status,
    "error": lambda v, f, r, lim: _text(v, f, r, lim, required=False),
    "prompt_tokens": lambda v, f, r, _: _number(v, f, r, int),
    "completion_tokens": lambda v, f, r, _: _number(v, f, r, int),
    "cost_usd": lambda v, f, r, _: _number(v, f, r, float),
    "feedback": _feedback,
    "metadata": _metadata,
}
