"""Scoring a JSONL file of records without the queue: a golden set, an export, a regression check
before a deploy (``groundwatch score``), and the scorer-quality benchmark built on it.

Input: one JSON object a line, in groundwatch's own field names (``request_id``, ``timestamp``,
``question``, ``contexts``, ``answer``, ...) or in the labelled dev-data schema, where ``id`` is
the request id and extra keys (``label_*``, ``source``, ``meta``) are ignored. Each line goes
through :func:`evaluator.records.map_row`, so a file is held to the same rules as a live source,
with two offline allowances:

* ``timestamp`` may be absent; it defaults to the start of the run (UTC).
* ``question`` may be blank: claim-checking sets have none. ``map_row`` rejects a blank question
  (right for live traffic, where it means a broken log row), so the line is mapped with a
  placeholder question, which validates every other field, and the record is then given back its
  empty question before scoring. The scorer sees ``question == ""`` (it answers
  ``not_applicable`` for the question-based metrics) and the output line says
  ``"question_absent": true``. A *missing* (or null) question is still an error: a misspelt key
  must not quietly score every line without its question.

Output: one dict per input line that is not blank, in input order, so the output lines up with
the input::

    {"id", "line", "metrics": {metric: {"value", "outcome", "reason"}},
     "detections": [{"kind", "detail"}], ["question_absent": true], ["explanation": {...}]}

A line that cannot be scored is *not* skipped: it becomes
``{"id": <its id or null>, "line": n, "error": {"reason", "field", "detail"}}`` and the run goes
on. Keeping it in the output (rather than only counting it) means a golden set's output always
has one line per item, and a diff between two runs shows a newly broken line where it is.

This module is pure domain: no Celery, no Prometheus, no store.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evaluator.errors import InvalidRecordError
from evaluator.records import LogRecord, RowLimits, map_row
from evaluator.scorers.base import ItemResult, Outcome, Scorer

DEFAULT_BATCH_SIZE = 64
DEFAULT_LIMITS = RowLimits()
# Only ever seen by map_row's validation; replaced by "" before the scorer sees the record.
_QUESTION_PLACEHOLDER = "(question absent)"

Prepare = Callable[[dict[str, Any]], dict[str, Any] | None]
"""Hook applied to each parsed line before mapping: return the (possibly changed) object, or
``None`` to leave the line out altogether (no output, not counted)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Progress:
    """Where a :func:`score_file` run is; passed to ``on_progress`` after every batch."""

    done: int
    total: int
    failed: int
    elapsed_s: float

    @property
    def items_per_s(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclasses.dataclass(slots=True)
class _Entry:
    line: int
    record: LogRecord | None  # None: ``out`` is already the error line
    out: dict[str, Any]


def is_failure(row: Mapping[str, Any]) -> bool:
    """An output line counts as failed when it could not be scored at all, or when the scorer
    answered ``error`` for one of its metrics: an outage must not pass as a clean run."""
    if "error" in row:
        return True
    return any(m.get("outcome") == Outcome.ERROR.value for m in row.get("metrics", {}).values())


@dataclasses.dataclass(slots=True)
class MetricSummary:
    """One metric over a scored file: the ``ok`` values, and how many were not."""
    values: list[float] = dataclasses.field(default_factory=list)
    errors: int = 0
    not_applicable: int = 0

    def share_below(self, threshold: float) -> float | None:
        """The share of the ``ok`` values below ``threshold`` (None: no value)."""
        if not self.values:
            return None
        return sum(v < threshold for v in self.values) / len(self.values)


@dataclasses.dataclass(slots=True)
class FileSummary:
    """What :func:`score_file`'s output lines add up to, per metric (``groundwatch score``'s
    closing table): fed one output line at a time with :meth:`add`."""
    metrics: dict[str, MetricSummary] = dataclasses.field(default_factory=dict)
    records: int = 0
    unscored: int = 0  # lines that could not be scored at all (``"error"``)

    def add(self, row: Mapping[str, Any]) -> None:
        self.records += 1
        if "error" in row:
            self.unscored += 1
            return
        for metric, result in row.get("metrics", {}).items():
            summary = self.metrics.setdefault(metric, MetricSummary())
            if result.get("outcome") == Outcome.ERROR.value:
                summary.errors += 1
            elif result.get("outcome") == Outcome.NOT_APPLICABLE.value:
                summary.not_applicable += 1
            elif result.get("value") is not None:
                summary.values.append(float(result["value"]))

    def lines(self, thresholds: Mapping[str, float]) -> list[str]:
        """A table: per metric n (``ok`` values), mean, share below its threshold, errors and
        not applicable; then the records that could not be scored."""
        out = [f"{'metric':<20} {'n':>6} {'mean':>6} {'below threshold':>18} {'errors':>7} "
               f"{'n/a':>6}"]
        for metric, m in sorted(self.metrics.items()):
            mean = f"{sum(m.values) / len(m.values):.3f}" if m.values else "-"
            threshold = thresholds.get(metric)
            share = None if threshold is None else m.share_below(threshold)
            below = ("-" if threshold is None else
                     f"{'-' if share is None else format(share, '.1%')} (< {threshold:g})")
            out.append(f"{metric:<20} {len(m.values):>6} {mean:>6} {below:>18} {m.errors:>7} "
                       f"{m.not_applicable:>6}")
        out.append(f"{self.records} record(s), {self.unscored} could not be scored")
        return out


def _raw_id(obj: Any) -> str | None:
    if not isinstance(obj, Mapping):
        return None
    raw = obj.get("request_id", obj.get("id"))
    return str(raw) if isinstance(raw, (str, int)) and not isinstance(raw, bool) else None


def _error_line(line: int, raw_id: str | None, reason: str, field: str | None,
                detail: str) -> dict[str, Any]:
    return {"id": raw_id, "line": line,
            "error": {"reason": reason, "field": field, "detail": detail}}


def parse_object(text: str, line: int) -> dict[str, Any]:
    """One JSONL line as an object; raises :class:`InvalidRecordError` (``bad_json`` or
    ``wrong_type``) otherwise."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRecordError("bad_json", field="line", row_ref=f"line {line}",
                                 detail=f"not valid JSON: {exc.msg}") from None
    if not isinstance(obj, dict):
        raise InvalidRecordError("wrong_type", field="line", row_ref=f"line {line}",
                                 detail=f"expected a JSON object, got {type(obj).__name__}")
    return obj


def to_record(obj: Mapping[str, Any], line: int, *, now: datetime,
              limits: RowLimits = DEFAULT_LIMITS) -> tuple[LogRecord, bool]:
    """Map one parsed line onto a :class:`LogRecord`; also says whether its question was blank.

    Raises :class:`InvalidRecordError` like :func:`map_row`.
    """
    columns = {"request_id": "id"} if "request_id" not in obj and "id" in obj else {}
    row = dict(obj)
    if row.get("timestamp") is None:
        row["timestamp"] = now
    question = row.get("question")
    absent = isinstance(question, str) and not question.strip()
    if absent:
        row["question"] = _QUESTION_PLACEHOLDER
    record = map_row(row, columns, limits=limits, position=f"line {line}")
    if absent:
        record = dataclasses.replace(record, question="")
    return record, absent


def result_to_dict(result: ItemResult, *, explain: bool = False) -> dict[str, Any]:
    """The JSON-safe output of one scored item (without ``id``/``line``)."""
    out: dict[str, Any] = {
        "metrics": {m.metric: {"value": m.value, "outcome": m.outcome.value, "reason": m.reason}
                    for m in result.metrics},
        "detections": [{"kind": d.kind, "detail": d.detail} for d in result.detections],
    }
    if explain:
        out["explanation"] = result.explanation.to_dict()
    return out


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8", errors="replace") as fh:
        for number, text in enumerate(fh, start=1):
            if text.strip():
                yield number, text


def _entry(line: int, text: str, *, prepare: Prepare | None, now: datetime,
           limits: RowLimits) -> _Entry | None:
    obj: dict[str, Any] | None = None
    try:
        obj = parse_object(text, line)
        if prepare is not None:
            prepared = prepare(obj)
            if prepared is None:
                return None
            obj = prepared
        record, absent = to_record(obj, line, now=now, limits=limits)
    except InvalidRecordError as exc:
        return _Entry(line, None, _error_line(line, _raw_id(obj), exc.reason, exc.field, exc.detail))
    out: dict[str, Any] = {"id": record.request_id, "line": line}
    if absent:
        out["question_absent"] = True
    return _Entry(line, record, out)


def count_items(path: str | Path, *, prepare: Prepare | None = None,
                limit: int | None = None) -> int:
    """How many output lines :func:`score_file` will yield for this file."""
    total = 0
    for line, text in _lines(Path(path)):
        if prepare is not None:
            try:
                if prepare(parse_object(text, line)) is None:
                    continue
            except InvalidRecordError:
                pass  # reported as an error line, so it counts
        total += 1
        if limit is not None and total >= limit:
            break
    return total


def score_file(
    path: str | Path,
    scorer: Scorer,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: Callable[[Progress], None] | None = None,
    explain: bool = False,
    prepare: Prepare | None = None,
    limit: int | None = None,
    limits: RowLimits = DEFAULT_LIMITS,
    now: datetime | None = None,
) -> Iterator[dict[str, Any]]:
    """Score every line of a JSONL file with ``scorer``, ``batch_size`` records per call.

    Yields one dict per non-blank line (see the module docstring), in input order, at most
    ``limit`` of them. The file is opened (and counted, for progress) before this returns, so a
    missing file raises :class:`FileNotFoundError` here, not on the first ``next()``.
    A scorer that raises for a whole batch turns each of its records into an error line
    (``scorer_failed``); the run goes on with the next batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    path = Path(path)
    total = count_items(path, prepare=prepare, limit=limit)
    return _score(path, scorer, total=total, batch_size=batch_size, on_progress=on_progress,
                  explain=explain, prepare=prepare, limit=limit, limits=limits,
                  now=now or datetime.now(UTC))


def _score(path: Path, scorer: Scorer, *, total: int, batch_size: int,
           on_progress: Callable[[Progress], None] | None, explain: bool,
           prepare: Prepare | None, limit: int | None, limits: RowLimits,
           now: datetime) -> Iterator[dict[str, Any]]:
    started = time.monotonic()
    done = failed = 0
    pending: list[_Entry] = []
    n_records = 0

    def flush() -> Iterator[dict[str, Any]]:
        nonlocal done, failed
        for row in _score_batch(pending, scorer, explain=explain):
            done += 1
            failed += is_failure(row)
            yield row
        if on_progress is not None and pending:
            on_progress(Progress(done, total, failed, time.monotonic() - started))

    emitted = 0
    for line, text in _lines(path):
        if limit is not None and emitted >= limit:
            break
        entry = _entry(line, text, prepare=prepare, now=now, limits=limits)
        if entry is None:
            continue
        emitted += 1
        pending.append(entry)
        n_records += entry.record is not None
        if n_records >= batch_size:
            yield from flush()
            pending, n_records = [], 0
    yield from flush()
    if on_progress is not None and done == 0:  # an empty file still gets its one report
        on_progress(Progress(0, total, 0, time.monotonic() - started))


def _score_batch(entries: Sequence[_Entry], scorer: Scorer, *,
                 explain: bool) -> Iterator[dict[str, Any]]:
    records = [e.record for e in entries if e.record is not None]
    results: list[ItemResult] | None = None
    problem = ""
    if records:
        try:
            results = scorer.score_batch(records)
        except Exception as exc:  # a failure of the whole backend: record it, go on
            problem = f"{type(exc).__name__}: {exc}"[:500]
        else:
            if len(results) != len(records):
                problem = (f"scorer {scorer.name!r} returned {len(results)} results "
                           f"for {len(records)} records")
                results = None
    it = iter(results or ())
    for e in entries:
        if e.record is None:
            yield e.out
        elif results is None:
            yield _error_line(e.line, e.record.request_id, "scorer_failed", None, problem)
        else:
            yield {**e.out, **result_to_dict(next(it), explain=explain)}
