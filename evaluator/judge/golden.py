"""The judge's golden set: a fixed set of items re-judged on a schedule, to see a judge change.

A hosted model can change behind the same name. Scoring the same items again and comparing
with the first run (the baseline) shows it: per metric, the run's mean score and its *drift*,
the mean over items of |this run's score - the baseline score|, exported as
``groundwatch_golden_score{metric}`` and ``groundwatch_golden_drift{metric}``.

- :func:`load_golden` reads the JSON Lines file (``judge.golden.path``); any bad line is a
  :class:`~evaluator.errors.ConfigError` naming the file, the line and the field, so a broken
  golden set stops the start instead of quietly shrinking.
- :func:`run_golden` scores it once, stores the values (the store keeps the first one of each
  item and metric as its baseline, per judge version) and sets the gauges.
- :class:`GoldenScheduler` runs it every ``judge.golden.interval_s`` from a daemon thread;
  every worker process may run one, and the store lets exactly one of them run per interval.
- :func:`build_golden_judge` builds the configured judge with its response cache off: a
  cached reply would hide the very change the golden set is there to see.

Baselines are kept per *judge version* (:func:`judge_version`: the scorer's name and version,
which for the LLM judge includes the model name), so a deliberate switch of model starts a
new baseline and only a silent change shows as drift. See docs/judge-golden.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from evaluator.errors import ConfigError, GoldenRunError
from evaluator.periodic import ClaimedJob, short
from evaluator.records import LogRecord
from evaluator.scorers import JUDGES, build_judge, build_scorer
from evaluator.scorers.base import METRICS, Outcome, ScoredBatch, Scorer
from evaluator.scoring import Scoring

if TYPE_CHECKING:
    from evaluator.config import Config, GoldenConfig
    from evaluator.store import GoldenStore

log = logging.getLogger("groundwatch.golden")

KEY = "judge.golden.path"
# A label at or above this is a pass; the side of a metric without a threshold, too.
LABEL_THRESHOLD = 0.5
FIELDS = ("request_id", "question", "contexts", "answer", "route", "labels")
# The store's column sizes (gw_golden_scores); longer values could not be stored.
MAX_REQUEST_ID_CHARS = 200
MAX_JUDGE_VERSION_CHARS = 200
# The most items listed in GoldenRun.deltas' display (the CLI's "moved most").
TOP_MOVED = 5


class _GoldenSink(Protocol):
    def set_golden(self, scores: Mapping[str, float], drift: Mapping[str, float]) -> None: ...

    def set_golden_accuracy(self, accuracy: Sequence[LabelAccuracy]) -> None: ...

    def observe_golden_run(self, result: str) -> None: ...


class GoldenMetrics(Protocol):
    """What a golden run reports to (``metrics.registry.Metrics``): the judge's work and spend
    like any batch's (``observe_usage``), and the run's result (``judge``)."""

    def observe_usage(self, batch: ScoredBatch) -> None: ...

    @property
    def judge(self) -> _GoldenSink: ...


# -- the file -----------------------------------------------------------------------------

def load_golden(path: str | os.PathLike[str], *, now: datetime | None = None
                ) -> list[LogRecord]:
    """The golden items of the JSON Lines file at ``path`` (relative to the working
    directory; ``~`` expanded).

    One JSON object per line: ``question`` (text), ``contexts`` (a list of texts, may be
    empty), ``answer`` (text), optionally ``request_id`` (default ``golden-<line number>``),
    ``route`` and ``labels`` (a person's verdict per metric: see :func:`load_labelled`).
    Blank lines are skipped. Raises :class:`ConfigError` (key ``judge.golden.path``, the file
    as its path) for a file that cannot be read, holds no item, or has a bad line: not JSON,
    not an object, an unknown, missing or mistyped field, or a request id seen before (both
    line numbers are named).
    """
    return [item.record for item in _load_items(path, KEY, now)]


@dataclass(frozen=True, slots=True)
class LabelledItem:
    """A golden or labelled item and the verdicts a person gave it: metric -> value in
    [0, 1] (1 = faithful, relevant, ...; a number between says how much)."""

    record: LogRecord
    labels: Mapping[str, float]


def load_labelled(path: str | os.PathLike[str], *, key: str | None = KEY,
                  require_labels: bool = False, now: datetime | None = None
                  ) -> list[LabelledItem]:
    """The items of a golden-set file with their ``labels``: an object of metric names
    (faithfulness, groundedness, answer_relevance, context_relevance) to a number in [0, 1]
    or true/false. With ``require_labels`` (``groundwatch calibrate --labels``) every line
    must carry at least one. Errors as :func:`load_golden`'s, under ``key``."""
    items = _load_items(path, key, now)
    if require_labels:
        for number, item in enumerate(items, start=1):
            if not item.labels:
                raise ConfigError(f"item {number} ({item.record.request_id}): no labels; each "
                                  "line needs \"labels\": {\"faithfulness\": 1, ...}",
                                  path=str(path), key=key)
    return items


def _load_items(path: str | os.PathLike[str], key: str | None, now: datetime | None
                ) -> list[LabelledItem]:
    shown = str(path)
    file = os.path.expanduser(shown)
    try:
        with open(file, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise ConfigError("the golden set file does not exist", path=shown, key=key) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a golden set file", path=shown, key=key) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the golden set: {exc.strerror or exc}", path=shown,
                          key=key) from None
    now = now or datetime.now(UTC)
    items: list[LabelledItem] = []
    seen: dict[str, int] = {}
    for number, line_bytes in enumerate(raw.splitlines(), start=1):
        if not line_bytes.strip():
            continue
        item = _parse_line(line_bytes, number, shown, now, key)
        rid = item.record.request_id
        if rid in seen:
            raise _bad_at(shown, number, "request_id",
                          f"{rid!r} is already the id of line {seen[rid]}", key)
        seen[rid] = number
        items.append(item)
    if not items:
        raise ConfigError("the golden set file holds no item", path=shown, key=key)
    return items


def _bad_at(path: str, number: int, field: str | None, problem: str,
            key: str | None = KEY) -> ConfigError:
    where = f"line {number}" + (f", field '{field}'" if field else "")
    return ConfigError(f"{where}: {problem}", path=path, key=key)


def _parse_line(line_bytes: bytes, number: int, path: str, now: datetime,
                key: str | None = KEY) -> LabelledItem:
    def _bad(path: str, number: int, field: str | None, problem: str) -> ConfigError:
        return _bad_at(path, number, field, problem, key)

    try:
        line = line_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(path, number, None, "not UTF-8 text") from None
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _bad(path, number, None, f"not JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise _bad(path, number, None, "not JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise _bad(path, number, None, f"a JSON object is needed, got {type(data).__name__}")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise _bad(path, number, unknown[0],
                   f"unknown field; valid: {', '.join(FIELDS)}")

    def text(name: str, *, required: bool) -> str | None:
        if name not in data or (data[name] is None and not required):
            if required:
                raise _bad(path, number, name, "missing")
            return None
        value = data[name]
        if not isinstance(value, str):
            raise _bad(path, number, name, f"must be text, got {type(value).__name__}")
        if not value.strip():
            raise _bad(path, number, name, "is empty")
        return value

    question = text("question", required=True)
    answer = text("answer", required=True)
    if "contexts" not in data:
        raise _bad(path, number, "contexts", "missing")
    contexts = data["contexts"]
    if not isinstance(contexts, list):
        raise _bad(path, number, "contexts",
                   f"must be a list of texts, got {type(contexts).__name__}")
    for i, passage in enumerate(contexts):
        if not isinstance(passage, str):
            raise _bad(path, number, "contexts",
                       f"item {i} must be text, got {type(passage).__name__}")
    request_id = text("request_id", required=False) or f"golden-{number}"
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        raise _bad(path, number, "request_id",
                   f"longer than {MAX_REQUEST_ID_CHARS} characters")
    assert question is not None and answer is not None
    record = LogRecord(request_id=request_id, timestamp=now, question=question,
                       contexts=tuple(contexts), answer=answer,
                       route=text("route", required=False))
    return LabelledItem(record, _labels(data.get("labels"), lambda field, problem: _bad(
        path, number, field, problem)))


def _labels(raw: object, bad: Callable[[str, str], ConfigError]) -> dict[str, float]:
    """``labels``: metric -> a number in [0, 1] or true/false."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise bad("labels", f"must be an object of metric: label, got {type(raw).__name__}")
    out: dict[str, float] = {}
    for metric, value in raw.items():
        if metric not in METRICS:
            raise bad("labels", f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
        if isinstance(value, bool):
            out[metric] = 1.0 if value else 0.0
        elif isinstance(value, int | float) and math.isfinite(value) and 0 <= value <= 1:
            out[metric] = float(value)
        else:
            raise bad("labels", f"{metric}: a label is a number in [0, 1] or true/false, "
                                f"got {value!r}")
    return out





# -- one run ------------------------------------------------------------------------------

def judge_version(scorer: Scorer) -> str:
    """The key the baselines are kept under: the scorer's name and version (the LLM judge's
    version names its mode and model, e.g. ``compact/compact:gpt-4o-mini``)."""
    return f"{scorer.name}/{scorer.version}"


@dataclass(frozen=True, slots=True)
class GoldenDelta:
    """How far one item's score of one metric moved from its baseline."""

    request_id: str
    metric: str
    baseline: float
    value: float

    @property
    def delta(self) -> float:
        return self.value - self.baseline


@dataclass(frozen=True, slots=True)
class LabelAccuracy:
    """How often one scorer's ``ok`` scores of one metric fall on the same side of the
    metric's threshold as the golden items' labels (a label of 0.5 or more is a pass)."""

    scorer: str
    metric: str
    n: int
    agree: int

    @property
    def accuracy(self) -> float:
        return self.agree / self.n if self.n else 0.0


def label_accuracy(scorer: str, values: Mapping[str, Mapping[str, float]],
                   labels: Mapping[str, Mapping[str, float]],
                   thresholds: Mapping[str, float]) -> list[LabelAccuracy]:
    """Per metric, ``scorer``'s agreement with the labels over the items that have both."""
    out = []
    for metric in METRICS:
        pairs = [(values[rid][metric], label[metric]) for rid, label in labels.items()
                 if metric in label and metric in values.get(rid, {})]
        if not pairs:
            continue
        threshold = thresholds.get(metric, LABEL_THRESHOLD)
        agree = sum((v >= threshold) == (lab >= LABEL_THRESHOLD) for v, lab in pairs)
        out.append(LabelAccuracy(scorer, metric, len(pairs), agree))
    return out


@dataclass(frozen=True, slots=True)
class GoldenRun:
    """One run of the golden set. ``scores``, ``drift`` and ``counts`` are per metric (the
    metrics at least one item got an ``ok`` value for): the mean score, the mean |score -
    baseline| over the items that have both, and the number of items scored. ``n_errors``
    counts the metric results that were ``error``; ``deltas`` lists every (item, metric) with a
    baseline, the largest move first."""

    judge_version: str
    at: datetime
    n_items: int
    n_errors: int
    scores: Mapping[str, float]
    drift: Mapping[str, float]
    counts: Mapping[str, int]
    deltas: tuple[GoldenDelta, ...]
    # Where golden items carry labels: the judge's and the cheap scorer's accuracy on them.
    accuracy: tuple[LabelAccuracy, ...] = ()

    def moved_most(self, n: int = TOP_MOVED) -> tuple[GoldenDelta, ...]:
        """The ``n`` items (and metrics) whose score moved furthest from the baseline."""
        return tuple(d for d in self.deltas if d.delta != 0.0)[:n]


def run_golden(scorer: Scorer, records: Sequence[LogRecord], store: GoldenStore,
               metrics: GoldenMetrics | None, *, judge_version: str,
               now: datetime | None = None,
               labels: Mapping[str, Mapping[str, float]] | None = None,
               cheap: Scorer | None = None,
               thresholds: Mapping[str, float] | None = None) -> GoldenRun:
    """Score ``records`` once with ``scorer``, store the ``ok`` values under
    ``judge_version`` (the first of each item and metric is its baseline), set the golden
    gauges and count the run.

    A run is an error, counted as ``result="error"`` and raised, when the scorer raises, the
    store fails, or not one metric of one item came back ``ok`` (:class:`GoldenRunError`, with
    the error kinds): a judge that is down must not look like a judge whose scores held.
    Anything less (some items or metrics in error) is an ``ok`` run over what was scored,
    with the errors in ``n_errors``.

    The records go through :class:`~evaluator.scoring.Scoring` as a batch does (the gates,
    then the scorer's ``score_gated``, or ``score_batch`` for a scorer that has only that), so
    the judge's calls, tokens and cost count in ``metrics``.
    ``now`` (default: the store's clock) stamps the stored values.

    Where items carry ``labels`` (request id -> metric -> label), the run also measures the
    judge's accuracy against them, and ``cheap``'s (the scorer that scores every item) on the
    same items, on the side of ``thresholds`` (:class:`LabelAccuracy`), exported as
    ``groundwatch_golden_accuracy{scorer,metric}``. The cheap scorer failing only leaves its
    accuracy out (a raise is logged in one line).
    """
    if not records:
        raise ValueError("run_golden needs at least one record")
    if not judge_version or len(judge_version) > MAX_JUDGE_VERSION_CHARS:
        raise ValueError(f"judge_version must have 1 to {MAX_JUDGE_VERSION_CHARS} characters, "
                         f"got {len(judge_version)}")
    try:
        batch = Scoring([scorer]).score(records)
        if metrics is not None:  # the judge's work and spend count like any batch's
            metrics.observe_usage(batch)
        values: dict[str, dict[str, float]] = {}
        errors: Counter[str] = Counter()
        for item in batch.runs[0].items:
            for m in item.metrics:
                if m.outcome is Outcome.OK and m.value is not None:
                    values.setdefault(item.request_id, {})[m.metric] = m.value
                elif m.outcome is Outcome.ERROR:
                    errors[m.reason or "internal"] += 1
        if not values:
            raise GoldenRunError(judge_version, len(records), errors)
        baselines = store.record_golden(judge_version, values, now)  # None: the store's clock
        run = _summarise(judge_version, now or datetime.now(UTC), len(records),
                         sum(errors.values()), values, baselines)
    except Exception:
        if metrics is not None:
            metrics.judge.observe_golden_run("error")
        raise
    if labels:
        run = dataclasses.replace(run, accuracy=tuple(_accuracy(
            scorer, values, records, labels, cheap, thresholds or {})))
    if metrics is not None:
        metrics.judge.set_golden(run.scores, run.drift)
        if run.accuracy:
            metrics.judge.set_golden_accuracy(run.accuracy)
        metrics.judge.observe_golden_run("ok")
    log.info("golden set: %d items judged by %s, %d errors; %s", run.n_items, judge_version,
             run.n_errors, ", ".join(f"{m} {run.scores[m]:.3f} (drift {run.drift[m]:.3f})"
                                     for m in run.scores))
    return run


def _accuracy(judge: Scorer, values: Mapping[str, Mapping[str, float]],
              records: Sequence[LogRecord], labels: Mapping[str, Mapping[str, float]],
              cheap: Scorer | None, thresholds: Mapping[str, float]) -> list[LabelAccuracy]:
    out = label_accuracy(judge.name, values, labels, thresholds)
    if cheap is None or cheap.name == judge.name:
        return out
    labelled = [r for r in records if r.request_id in labels]
    try:
        batch = Scoring([cheap]).score(labelled)
    except Exception as exc:
        log.warning("golden set: the cheap scorer %s could not score the labelled items: "
                    "%s: %s; its accuracy is left out", cheap.name, type(exc).__name__,
                    short(exc))
        return out
    cheap_values: dict[str, dict[str, float]] = {}
    for item in batch.runs[0].items:
        for m in item.metrics:
            if m.outcome is Outcome.OK and m.value is not None:
                cheap_values.setdefault(item.request_id, {})[m.metric] = m.value
    return out + label_accuracy(cheap.name, cheap_values, labels, thresholds)


def _summarise(version: str, at: datetime, n_items: int, n_errors: int,
               values: Mapping[str, Mapping[str, float]],
               baselines: Mapping[tuple[str, str], float]) -> GoldenRun:
    scores: dict[str, float] = {}
    drift: dict[str, float] = {}
    counts: dict[str, int] = {}
    deltas: list[GoldenDelta] = []
    for metric in METRICS:
        now_values = {rid: v[metric] for rid, v in values.items() if metric in v}
        if not now_values:
            continue
        scores[metric] = sum(now_values.values()) / len(now_values)
        counts[metric] = len(now_values)
        moved = [GoldenDelta(rid, metric, baselines[rid, metric], value)
                 for rid, value in now_values.items() if (rid, metric) in baselines]
        drift[metric] = (sum(abs(d.delta) for d in moved) / len(moved)) if moved else 0.0
        deltas.extend(moved)
    deltas.sort(key=lambda d: (-abs(d.delta), d.request_id, d.metric))
    return GoldenRun(version, at, n_items, n_errors, scores, drift, counts, tuple(deltas))


def format_golden(run: GoldenRun, *, top: int = TOP_MOVED) -> str:
    """The run as the CLI prints it: a row per metric, then the items that moved most."""
    lines = [f"golden set: {run.n_items} items, judge {run.judge_version}, "
             f"{run.n_errors} metric error(s)", "",
             f"{'metric':<18} {'mean':>6} {'drift':>6} {'n':>5}"]
    for metric, mean in run.scores.items():
        lines.append(f"{metric:<18} {mean:>6.3f} {run.drift[metric]:>6.3f} "
                     f"{run.counts[metric]:>5}")
    if run.accuracy:
        lines += ["", "against the labels (same side of the threshold):",
                  f"  {'scorer':<12} {'metric':<18} {'accuracy':>8} {'n':>5}"]
        for a in run.accuracy:
            lines.append(f"  {a.scorer:<12} {a.metric:<18} {a.accuracy:>8.3f} {a.n:>5}")
    moved = run.moved_most(top)
    lines.append("")
    if not moved:
        lines.append("no item moved from its baseline")
        return "\n".join(lines)
    width = max(len("request_id"), *(len(d.request_id) for d in moved))
    lines.append(f"moved most ({len(moved)} of {len(run.deltas)} scores):")
    lines.append(f"  {'request_id':<{width}} {'metric':<18} {'baseline':>8} {'now':>6} "
                 f"{'delta':>7}")
    for d in moved:
        lines.append(f"  {d.request_id:<{width}} {d.metric:<18} {d.baseline:>8.3f} "
                     f"{d.value:>6.3f} {d.delta:>+7.3f}")
    return "\n".join(lines)


# -- the judge and the schedule -----------------------------------------------------------

def build_golden_judge(config: Config) -> Scorer | None:
    """The judge the golden set is run with: the configured one (``scoring.scorer`` when it
    is ``ragas`` or ``compact``, else the cascade's ``scoring.judge`` on ``[judge]``'s
    endpoint) with its response cache off, or None when no judge is configured.

    The cache must be off: it answers a repeated (metric, model, prompt, inputs) from the
    first reply, which is exactly the comparison the golden set exists to make. Budgets,
    circuit breaker and redaction stay as configured."""
    uncached = config.model_copy(update={
        "judge": config.judge.model_copy(update={"cache_ttl_s": 0.0})})
    if config.scoring.scorer in JUDGES:
        return build_scorer(uncached)
    if not config.scoring.judge or not config.judge.configured:
        return None  # (build_judge would say so in a log line; the caller says it instead)
    return build_judge(uncached)


class GoldenScheduler:
    """Runs the golden set every ``config.interval_s`` from a daemon thread
    (:class:`~evaluator.periodic.ClaimedJob`).

    Every worker process may hold one: a run happens only in the process whose
    :meth:`evaluator.store.GoldenStore.claim_golden_run` succeeds, so there
    is one run per interval between them all. The thread looks every ``min(interval_s, 30)``
    seconds and tries at once on :meth:`start`, so a fresh deployment runs the set soon (if no
    other process ran it less than an interval ago). A failed run is logged in one line and
    counted (``groundwatch_golden_runs_total{result="error"}``); it waits for the next
    interval, it does not stop the thread.

    The golden file is read here, at construction: a bad line fails the process's start.
    Give it a judge from :func:`build_golden_judge` (cache off). Start it after a fork (in
    ``worker_process_init``), never before: a thread does not survive a fork.
    """

    def __init__(self, config: GoldenConfig, scorer: Scorer, store: GoldenStore,
                 metrics: GoldenMetrics | None, *, records: Sequence[LogRecord] | None = None,
                 name: str | None = None, stop_timeout_s: float = 10.0,
                 cheap: Scorer | None = None,
                 thresholds: Mapping[str, float] | None = None) -> None:
        if not config.path.strip() and records is None:
            raise ConfigError("the golden set is off (empty): nothing to schedule", key=KEY)
        self.config = config
        self.scorer = scorer
        self.store = store
        self.metrics = metrics
        self.cheap = cheap
        self.thresholds = dict(thresholds or {})
        items = [LabelledItem(r, {}) for r in records] if records is not None else \
            load_labelled(config.path)
        self.records = tuple(i.record for i in items)
        self.labels = {i.record.request_id: i.labels for i in items if i.labels}
        self.judge_version = judge_version(scorer)
        if len(self.judge_version) > MAX_JUDGE_VERSION_CHARS:
            raise ConfigError(f"the judge's version {self.judge_version[:60]!r}... is longer "
                              f"than {MAX_JUDGE_VERSION_CHARS} characters", key="judge.model")
        # One schedule per judge version: two deployments judging with different models on
        # one store each run their own golden set.
        self.name = name or f"golden:{self.judge_version}"
        self._job: ClaimedJob[GoldenRun] = ClaimedJob(
            self.name, config.interval_s, store.claim_golden_run, self._run,
            what=f"golden set ({len(self.records)} items by {self.judge_version})", log=log,
            store=store, stop_timeout_s=stop_timeout_s)
        self.poll_s = self._job.poll_s

    def _run(self) -> GoldenRun:
        return run_golden(self.scorer, self.records, self.store, self.metrics,
                          judge_version=self.judge_version, labels=self.labels,
                          cheap=self.cheap, thresholds=self.thresholds)

    def tick(self) -> GoldenRun | None:
        """Claim the run and, when this process got it, run it. Never raises: a failure is
        logged (one line) and counted. Returns the run, or None."""
        return self._job.tick()

    def start(self) -> None:
        """Start the thread (its first look at the schedule is immediate)."""
        self._job.start("groundwatch-golden")

    def stop(self) -> None:
        """Stop the thread, waiting at most ``stop_timeout_s`` for a run in progress (a judge
        call can take long; the daemon thread is then left to end with the process)."""
        self._job.stop()

    @property
    def running(self) -> bool:
        return self._job.running
