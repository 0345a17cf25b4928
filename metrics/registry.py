"""Every groundwatch Prometheus metric, defined once, and the multiprocess set-up they need.

Processes of one host (Celery prefork children, thread or solo workers, the sampler, the
exporter) share one directory of memory-mapped files through prometheus_client's multiprocess
mode; the exporter merges the directory at scrape time, so a scrape shows the sum over every
process, including processes that have exited (their counter files stay).

The import-order rule
---------------------
``prometheus_client.values`` picks the class behind every metric value *once, when it is first
imported*: ``ValueClass = MultiProcessValue()`` if ``PROMETHEUS_MULTIPROC_DIR`` is set at that
moment, else an in-memory value that no other process can see. The directory itself is read
later, when a process opens its first file. So a process must:

1. call :func:`setup_multiprocess` before anything imports ``prometheus_client``;
2. then build its :class:`Metrics` (never at import time, never as a module-level singleton);
3. call :func:`mark_process_dead` with its pid when it exits.

This module and the rest of ``metrics/`` import prometheus_client only inside functions, so
importing them is always safe. :func:`setup_multiprocess` raises :class:`RuntimeError` when
prometheus_client was imported too early, and ``Metrics(config)`` raises when multiprocess mode
is not active, instead of silently exporting nothing.
"""

from __future__ import annotations

import glob
import importlib.metadata
import os
import platform
import re
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from evaluator.scorers.base import Outcome
from metrics.labels import LabelPolicy

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from evaluator.config import MetricsConfig
    from evaluator.records import LogRecord
    from evaluator.scorers.base import ItemResult, MetricResult, ScoredBatch, Written

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "groundwatch_"

# Computed by the exporter at scrape time (see metrics.exporter), not stored in the directory:
# a queue's depth is a property of the broker, not of any one process.
QUEUE_DEPTH = "groundwatch_queue_depth"
OLDEST_UNSCORED_AGE = "groundwatch_oldest_unscored_age_seconds"
EXPORTER_COLLECT_ERRORS = "groundwatch_exporter_collect_errors_total"

# Scores live in [0, 1]. Steps of 0.1 rather than 0.05: the series count is
# buckets × metric × scorer × route × model, so halving the buckets halves the biggest family.
# Exact threshold counting does not need buckets (quality_failures_total does it), and the mean
# (sum / count) is exact whatever the buckets. le="0.5" and le="0.3" coincide with the default
# thresholds, so the histogram can also answer "share at or below the threshold" for them.
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
# |cheap - judge| on one metric of one item.
DIFF_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
# Log time → score time. Healthy: seconds to a few minutes (poll interval + queue); backlog or
# backfill: hours; beyond a day the value is "a day or more", which is all an alert needs.
EVAL_LAG_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
# Per item: the lexical scorer takes well under a millisecond, the embedded one tens of
# milliseconds on CPU, an LLM judge seconds to a minute.
SCORER_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
)
# The app's own end-to-end latency: an LLM/RAG request takes from ~100 ms (cache, small model)
# to a couple of minutes (long generations, agent loops).
APP_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)


def _values_module() -> object | None:
    return sys.modules.get("prometheus_client.values")


def _value_class_is_multiprocess() -> bool | None:
    """True/False once prometheus_client is imported; None before."""
    values = _values_module()
    if values is None:
        return None
    return bool(getattr(values.ValueClass, "_multiprocess", False))  # type: ignore[attr-defined]


def setup_multiprocess(directory: str | os.PathLike[str], *, clean: bool) -> None:
    """Put this process (and the children it forks or spawns later) in multiprocess mode.

    Call it at process start, before any metric exists and before anything imports
    prometheus_client. ``clean=True`` deletes the ``*.db`` files left by an earlier run; only
    the process that owns the directory's lifecycle may pass it (the all-in-one runner, or the
    exporter when it starts before the workers), because it wipes the totals of processes
    still running. Raises :class:`RuntimeError` when prometheus_client was already imported
    without multiprocess mode, or set up with another directory.
    """
    path = os.path.abspath(os.fspath(directory))
    current = os.environ.get(ENV_VAR)
    state = _value_class_is_multiprocess()
    if state is False:
        raise RuntimeError(
            "prometheus_client was imported before metrics.registry.setup_multiprocess() ran, "
            "so this process records metrics in memory where the exporter cannot see them. "
            f"Call setup_multiprocess() (or set {ENV_VAR}) at process start, before importing "
            "anything that imports prometheus_client."
        )
    if state is True and current and os.path.abspath(current) != path:
        raise RuntimeError(
            f"this process already records metrics in {current!r}; it cannot switch to {path!r} "
            "(files already open stay where they are). Use one directory per host."
        )
    os.makedirs(path, exist_ok=True)
    if clean:
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    os.environ[ENV_VAR] = path


def multiprocess_dir() -> str | None:
    """The directory this process records into, or None when not in multiprocess mode."""
    directory = os.environ.get(ENV_VAR)
    if not directory or _value_class_is_multiprocess() is False:
        return None
    return directory


_IDENTIFIER: dict[int, str] = {}


def process_identifier() -> str:
    """Names this process's metric files: host and PID, not the PID alone.

    Containers of one compose stack that share the directory (a volume) each have their own
    PID namespace, so two of them would both be PID 7 and write the same file. Their hostnames
    differ. The name must not contain "_" (prometheus_client splits file names on it).
    """
    pid = os.getpid()
    cached = _IDENTIFIER.get(pid)
    if cached is None:  # once per process: prometheus_client calls this on every write
        host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "host"
        cached = _IDENTIFIER[pid] = f"{host}-{pid}"
    return cached


def _use_host_qualified_files() -> None:
    from prometheus_client import values

    if not getattr(values, "_groundwatch_identified", False):
        values.ValueClass = values.MultiProcessValue(process_identifier)
        values._groundwatch_identified = True  # type: ignore[attr-defined]


def mark_process_dead(pid: int | str | None = None,
                      directory: str | os.PathLike[str] | None = None) -> None:
    """Forget the ``live*`` gauges of an exited process (its counters and histograms stay).

    Call it from the exiting process (Celery's ``worker_process_shutdown``) or from a parent
    that saw the child die. ``pid`` is a :func:`process_identifier` (this process's when None;
    a bare PID is qualified with this host's name). ``directory`` defaults to this process's
    multiprocess directory.
    """
    if pid is None:
        pid = process_identifier()
    elif isinstance(pid, int):
        host = process_identifier().rsplit("-", 1)[0]
        pid = f"{host}-{pid}"
    path = os.fspath(directory) if directory is not None else os.environ.get(ENV_VAR)
    if not path:
        raise RuntimeError("no multiprocess directory: pass one or call setup_multiprocess()")
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)


def _epoch(ts: datetime | float) -> float:
    return ts.timestamp() if isinstance(ts, datetime) else float(ts)


def _version() -> str:
    try:
        return importlib.metadata.version("groundwatch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Metrics:
    """All groundwatch metrics of one process. Build one per process, at process start.

    ``multiprocess=True`` (the default) requires :func:`setup_multiprocess` to have run, so a
    forgotten set-up fails loudly instead of exporting nothing. ``multiprocess=False`` keeps the
    values in this process only, readable through :attr:`registry` (single-process tools and
    tests).

    The ``observe_*`` methods take raw route/model/kind values and apply the
    :class:`~metrics.labels.LabelPolicy`. They run per item on the hot path and never raise on
    odd input (negative costs or latencies are skipped, not counted).

    ``groundwatch_queue_depth`` and ``groundwatch_oldest_unscored_age_seconds`` are not here:
    the exporter computes them at scrape time (see :mod:`metrics.exporter`).
    """

    def __init__(self, config: MetricsConfig, *, multiprocess: bool = True) -> None:
        if multiprocess:
            directory = os.environ.get(ENV_VAR)
            if not directory or not os.path.isdir(directory):
                raise RuntimeError(
                    "Metrics(multiprocess=True) needs metrics.registry.setup_multiprocess(dir, "
                    "clean=...) to run first, at process start "
                    f"({ENV_VAR}={directory!r}). Pass multiprocess=False for in-process metrics."
                )
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        if multiprocess:
            _use_host_qualified_files()

        if bool(_value_class_is_multiprocess()) != multiprocess:
            raise RuntimeError(
                "prometheus_client was imported before setup_multiprocess() ran"
                if multiprocess
                else f"this process is in multiprocess mode ({ENV_VAR} was set when "
                "prometheus_client was imported); build Metrics with multiprocess=True"
            )
        self.multiprocess = multiprocess
        self.policy = LabelPolicy.from_config(config)
        # A private registry: never the global one, so two Metrics in one process (tests) do not
        # collide. In multiprocess mode it is not what gets served (the exporter merges the
        # directory); it still catches a metric defined twice.
        self.registry: CollectorRegistry = CollectorRegistry()
        r = self.registry
        p = PREFIX

        # --- quality -------------------------------------------------------------------------
        self.score = Histogram(
            p + "score", "Scores with outcome ok, in [0, 1].",
            ("metric", "scorer", "route", "model"), buckets=SCORE_BUCKETS, registry=r)
        self.score_outcomes = Counter(
            p + "score_outcomes_total",
            "Metric results by outcome (ok, not_applicable, error).",
            ("metric", "scorer", "outcome"), registry=r)
        # Per scorer: in a cascade the judge scores a share of the items chosen to lean
        # towards failures, so the quality alerts read the cheap scorer's count alone (the
        # denominator, groundwatch_score_count, is per scorer already).
        self.quality_failures = Counter(
            p + "quality_failures_total",
            "Ok scores below their configured threshold, by scorer.",
            ("metric", "scorer", "route"), registry=r)
        self.detections = Counter(
            p + "detections_total",
            "Failure modes found (no_relevant_context, out_of_scope, empty_answer, refusal).",
            ("kind", "route"), registry=r)

        # --- flow ----------------------------------------------------------------------------
        self.logs_seen = Counter(
            p + "logs_seen_total", "Log records read from a source.", ("source",), registry=r)
        self.items_sampled = Counter(
            p + "items_sampled_total", "Records the sampling policy selected.",
            ("route", "rule"), registry=r)
        self.items_rejected = Counter(
            p + "items_rejected_total", "Rows that could not be mapped onto a log record.",
            ("reason",), registry=r)
        self.items_capped = Counter(
            p + "items_capped_total",
            "Records the rate selected but a per-minute cap refused (not scored).",
            ("rule",), registry=r)
        self.eval_lag = Histogram(
            p + "eval_lag_seconds", "Time from the app's log timestamp to its score.",
            buckets=EVAL_LAG_BUCKETS, registry=r)
        self.scorer_latency = Histogram(
            p + "scorer_latency_seconds",
            "Scoring time per item (a batch's time divided evenly over its items).",
            ("scorer",), buckets=SCORER_LATENCY_BUCKETS, registry=r)
        self.scorer_truncations = Counter(
            p + "scorer_truncations_total",
            "Scorer inputs (question, answer, passages) cut to the configured size.",
            ("scorer",), registry=r)
        self.scorer_cache_lookups = Counter(
            p + "scorer_cache_lookups_total",
            "Lookups in the scorer's per-process cache (passage embeddings) by result.",
            ("scorer", "result"), registry=r)
        self.task_failures = Counter(
            p + "task_failures_total", "Scoring tasks that failed for good (dead letters).",
            ("kind",), registry=r)
        self.task_retries = Counter(
            p + "task_retries_total", "Scoring task retries after a transient error.",
            ("kind",), registry=r)
        self.enqueue_errors = Counter(
            p + "enqueue_errors_total", "Batches the sampler failed to enqueue.", registry=r)

        # --- the source, as the sampler reads it ---------------------------------------------
        self.fields_dropped = Counter(
            p + "fields_dropped_total",
            "Optional fields left out of a record because their value could not be read "
            "(the row was kept).", ("field", "reason"), registry=r)
        self.late_rows = Counter(
            p + "source_late_rows_total",
            "Rows read from the lookback window behind the cursor (committed late).",
            ("source",), registry=r)
        self.files_rewritten = Counter(
            p + "source_files_rewritten_total",
            "Source files found shrunk or rewritten in place, and read again from the start.",
            ("source",), registry=r)
        # livemax: the running sampler's last look; a dead sampler's value must not linger.
        self.unplaceable_rows = Gauge(
            p + "source_unplaceable_rows",
            "Rows the source cannot place in its order (NULL or unreadable timestamp or "
            "incrementing column, NULL request id): never read until fixed.",
            ("source",), multiprocess_mode="livemax", registry=r)
        self.missed_rows = Gauge(
            p + "source_missed_rows",
            "Rows at or behind the cursor that were never read (committed after the cursor "
            "passed them, beyond the lookback): read them with groundwatch backfill.",
            ("source",), multiprocess_mode="livemax", registry=r)
        self.future_rows = Gauge(
            p + "source_future_rows",
            "Rows whose timestamp is further in the future than source.sql.max_future: they "
            "wait for their time (a clock or time zone mistake, or garbage).",
            ("source",), multiprocess_mode="livemax", registry=r)
        self.source_held = Gauge(
            p + "source_held",
            "1 while the sampler holds its cursor because every row of a read was rejected "
            "for the same field and reason (a mapping mistake, see the sampler's log).",
            ("source",), multiprocess_mode="livemax", registry=r)

        # --- the watched app's own health, from its logs ------------------------------------
        self.app_requests = Counter(
            p + "app_requests_total", "Requests in the app's logs.", ("route", "model"),
            registry=r)
        self.app_errors = Counter(
            p + "app_errors_total", "Requests the app logged as errors.", ("route", "model"),
            registry=r)
        self.app_latency = Histogram(
            p + "app_latency_seconds", "The app's logged request latency.", ("route", "model"),
            buckets=APP_LATENCY_BUCKETS, registry=r)
        self.app_cost = Counter(
            p + "app_cost_usd_total", "The app's logged request cost in USD.", ("route", "model"),
            registry=r)

        # --- the LLM judge -------------------------------------------------------------------
        self.judge_requests = Counter(
            p + "judge_requests_total", "Calls to the judge endpoint by result.", ("status",),
            registry=r)
        self.judge_tokens = Counter(
            p + "judge_tokens_total", "Judge tokens used (kind = prompt | completion).",
            ("kind",), registry=r)
        self.judge_cost = Counter(
            p + "judge_cost_usd_total", "Judge spend in USD.", registry=r)
        self.budget_exhausted = Counter(
            p + "budget_exhausted_total", "Items the judge skipped because a budget was spent.",
            registry=r)
        # livemax: 1 while at least one *running* process reached the judge on its last call.
        # Plain max would keep a dead process's last 1 forever and hide an outage. Labelled by
        # judge so that processes without a judge (the sampler, a lexical-only worker) export
        # no series at all instead of an unlabelled 0 that would read as "judge down".
        self.judge_up = Gauge(
            p + "judge_up", "1 if the judge answered the last call of some live process.",
            ("judge",), multiprocess_mode="livemax", registry=r)
        self.judge_not_judged = Counter(
            p + "judge_not_judged_total",
            "Items picked for the judge but not judged (reason = budget | circuit_open).",
            ("judge", "reason"), registry=r)
        self.judge_redactions = Counter(
            p + "judge_redactions_total",
            "PII values replaced before text was sent to the judge, by kind.", ("kind",),
            registry=r)
        # The cascade: the judge against the cheap scorer on the items of the random share
        # (the low and band picks are chosen by the cheap score, so they would bias it).
        self.cascade_compared = Counter(
            p + "cascade_compared_total",
            "Random-share items both scorers scored, by whether they agree on the side of "
            "the metric's threshold (agree = yes | no).", ("metric", "agree"), registry=r)
        self.cascade_abs_diff = Histogram(
            p + "cascade_abs_diff",
            "|cheap - judge| per metric on the random-share items both scored.", ("metric",),
            buckets=DIFF_BUCKETS, registry=r)
        self.cascade_picked = Counter(
            p + "cascade_picked_total",
            "Items the cascade gave the judge, by why (random | low | band).", ("reason",),
            registry=r)
        # The golden set: the judge's mean score on it per run, and how far the run moved
        # from the first run (the baseline) on average per item. max: the newest run of any
        # process (runs are rare and set both gauges together).
        self.golden_score = Gauge(
            p + "golden_score", "The judge's mean score on the golden set, newest run.",
            ("metric",), multiprocess_mode="mostrecent", registry=r)
        self.golden_drift = Gauge(
            p + "golden_drift",
            "Mean |score - baseline score| per golden item at the newest run.", ("metric",),
            multiprocess_mode="mostrecent", registry=r)
        self.golden_runs = Counter(
            p + "golden_runs_total", "Golden-set runs by result (ok | error).", ("result",),
            registry=r)

        # --- self ----------------------------------------------------------------------------
        # livemax: one series per running (version, python); a rolling upgrade shows both, and
        # a version disappears when its last process is marked dead.
        self.build_info = Gauge(
            p + "build_info", "Always 1; labels say what is running.", ("version", "python"),
            multiprocess_mode="livemax", registry=r)
        self.config_reloads = Counter(
            p + "config_reloads_total", "Configuration reloads by result.", ("result",),
            registry=r)
        # max (not livemax): the newest ok score of any process, including processes that have
        # exited since; "the pipeline stalled" must not be confused with "a worker restarted".
        self.last_score_timestamp = Gauge(
            p + "last_score_timestamp_seconds", "Unix time of the newest ok score.",
            multiprocess_mode="max", registry=r)

        # --- batch duration against the broker's visibility timeout (workers) ---------------
        # A batch still running when the visibility timeout expires is handed to a second
        # worker; slow_batches_total counts those past half of it, exactly, as a warning.
        # The longest batch is a max gauge rather than a histogram: the question it answers is
        # "what must broker.visibility_timeout_s exceed", one number, and a histogram's top
        # bucket would only bound it (the per-item distribution is scorer_latency_seconds).
        # max (not livemax): a process that exited keeps its longest batch in the answer.
        self.slow_batches = Counter(
            p + "slow_batches_total",
            "Scoring batches that ran past half of broker.visibility_timeout_s.",
            ("scorer",), registry=r)
        self.batch_seconds_max = Gauge(
            p + "batch_seconds_max",
            "Longest scoring batch (task start to stored) of any process, in seconds.",
            ("scorer",), multiprocess_mode="max", registry=r)
        self._batch_max_seen: dict[str, float] = {}
        self._batch_max_lock = threading.Lock()  # threads pools: never set a lower max last

        # --- liveness (workers/health.py) --------------------------------------------------
        # The heartbeat's time, beside the Redis key: Prometheus sees a role go silent even
        # when Redis is what failed. max (not livemax): the newest beat of any process of the
        # role, exited ones included, so `time() - this` keeps growing after the last one died
        # instead of the series vanishing. A worker whose batch outlived the visibility
        # timeout stops moving it (workers/health.py).
        self.heartbeat_timestamp = Gauge(
            p + "heartbeat_timestamp_seconds",
            "Unix time of the newest heartbeat of a role (sampler, worker, exporter).",
            ("role",), multiprocess_mode="max", registry=r)

        self.build_info.labels(_version(), platform.python_version()).set(1)
        # Known label values start at 0 so that rate() and absent() see the series from the start.
        for result in ("ok", "error"):
            self.config_reloads.labels(result)
        for kind in ("prompt", "completion"):
            self.judge_tokens.labels(kind)

        # Label children cached per metric: .labels() validates and locks on every call, which
        # is a third of the cost of an observe_* call. The cache is bounded because every value
        # went through the label policy (or is a validated metric name or outcome).
        self._children: dict[object, dict[tuple[str, ...], Any]] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        cache = self._children.get(metric)
        if cache is None:
            cache = self._children.setdefault(metric, {})
        child = cache.get(values)
        if child is None:
            child = cache[values] = metric.labels(*values)
        return child

    @staticmethod
    def _observe_many(child: Any, values: list[float]) -> None:
        """``child.observe(v)`` for every v, with one write per touched bucket (not per value).
        Uses Histogram internals (_upper_bounds, _sum, _buckets) of prometheus_client."""
        if not values:
            return
        from bisect import bisect_left

        bounds = child._upper_bounds
        counts = [0] * len(bounds)
        for v in values:
            counts[bisect_left(bounds, v)] += 1
        child._sum.inc(sum(values))
        for i, n in enumerate(counts):
            if n:
                child._buckets[i].inc(n)

    def observe_logs(self, records: Any, source: str = "app") -> None:
        """:meth:`observe_log` for many records, aggregated: one write per series."""
        from collections import Counter, defaultdict

        value = self.policy.value
        requests: Counter[tuple[str, str]] = Counter()
        errors: Counter[tuple[str, str]] = Counter()
        cost: defaultdict[tuple[str, str], float] = defaultdict(float)
        latency: defaultdict[tuple[str, str], list[float]] = defaultdict(list)
        n = 0
        for record in records:
            n += 1
            key = (value("route", record.route), value("model", record.model))
            requests[key] += 1
            if record.status == "error" or (record.status is None and record.error):
                errors[key] += 1
            if record.latency_ms is not None and record.latency_ms >= 0:
                latency[key].append(record.latency_ms / 1000.0)
            if record.cost_usd is not None and record.cost_usd > 0:
                cost[key] += record.cost_usd
        if n:
            self._child(self.logs_seen, value("source", source)).inc(n)
        for key, k in requests.items():
            self._child(self.app_requests, *key).inc(k)
        for key, k in errors.items():
            self._child(self.app_errors, *key).inc(k)
        for key, vals in latency.items():
            self._observe_many(self._child(self.app_latency, *key), vals)
        for key, usd in cost.items():
            self._child(self.app_cost, *key).inc(usd)

    def observe_sampled_many(self, pairs: Any) -> None:
        from collections import Counter

        value = self.policy.value
        counts = Counter((value("route", route), value("rule", rule)) for route, rule in pairs)
        for key, k in counts.items():
            self._child(self.items_sampled, *key).inc(k)

    def observe_results_batch(self, rows: Any, scorer: str, thresholds: Mapping[str, float],
                              now: float) -> None:
        """:meth:`observe_result` for many (route, model, result, log_timestamp|None) rows,
        aggregated: one write per series and touched bucket."""
        from collections import Counter, defaultdict

        value = self.policy.value
        scorer_v = value("scorer", scorer)
        outcomes: Counter[tuple[str, str, str]] = Counter()
        failures: Counter[tuple[str, str, str]] = Counter()
        scores: defaultdict[tuple[str, ...], list[float]] = defaultdict(list)
        lags: list[float] = []
        any_ok = False
        for route, model, result, log_ts in rows:
            outcomes[(result.metric, scorer_v, result.outcome.value)] += 1
            if result.outcome is Outcome.OK and result.value is not None:
                route_v = value("route", route)
                scores[(result.metric, scorer_v, route_v, value("model", model))].append(
                    result.value)
                threshold = thresholds.get(result.metric)
                if threshold is not None and result.value < threshold:
                    failures[(result.metric, scorer_v, route_v)] += 1
                any_ok = True
            if log_ts is not None:
                lags.append(max(0.0, now - _epoch(log_ts)))
        for key, k in outcomes.items():
            self._child(self.score_outcomes, *key).inc(k)
        for score_key, vals in scores.items():
            self._observe_many(self._child(self.score, *score_key), vals)
        for key2, k in failures.items():
            self._child(self.quality_failures, *key2).inc(k)
        if any_ok:
            self.last_score_timestamp.set(now)
        self._observe_many(self.eval_lag, lags)

    # --- sampler ---------------------------------------------------------------------------

    def observe_log(self, record: LogRecord, source: str = "app") -> None:
        """A record read from ``source``: logs_seen plus the app_* metrics of its route/model."""
        value = self.policy.value
        self._child(self.logs_seen, value("source", source)).inc()
        route = value("route", record.route)
        model = value("model", record.model)
        self._child(self.app_requests, route, model).inc()
        if record.status == "error" or (record.status is None and record.error):
            self._child(self.app_errors, route, model).inc()
        latency_ms = record.latency_ms
        if latency_ms is not None and latency_ms >= 0:
            self._child(self.app_latency, route, model).observe(latency_ms / 1000.0)
        cost = record.cost_usd
        if cost is not None and cost > 0:
            self._child(self.app_cost, route, model).inc(cost)

    def observe_sampled(self, route: str | None, rule: str) -> None:
        """The sampling policy selected an item (``rule`` is the rule name or "default")."""
        value = self.policy.value
        self._child(self.items_sampled, value("route", route), value("rule", rule)).inc()

    def observe_rejected(self, reason: str) -> None:
        """A row was rejected (``InvalidRecordError.reason``)."""
        self._child(self.items_rejected, self.policy.value("reason", reason)).inc()

    def observe_unmapped(self, reason: str, source: str = "app") -> None:
        """A row was read but rejected: it counts as seen, and as rejected for ``reason``."""
        self._child(self.logs_seen, self.policy.value("source", source)).inc()
        self.observe_rejected(reason)

    def observe_dropped_fields(self, drops: Any) -> None:
        """Optional fields left out of records (:class:`~evaluator.records.FieldDrop`)."""
        from collections import Counter

        value = self.policy.value
        for (fname, reason), k in Counter((d.field, d.reason) for d in drops).items():
            self._child(self.fields_dropped, fname, value("reason", reason)).inc(k)

    def observe_late_rows(self, n: int, source: str = "app") -> None:
        if n:
            self._child(self.late_rows, self.policy.value("source", source)).inc(n)

    def observe_files_rewritten(self, n: int, source: str = "app") -> None:
        if n:
            self._child(self.files_rewritten, self.policy.value("source", source)).inc(n)

    def set_source_audit(self, *, unplaceable: int | None, missed: int | None,
                         future: int | None, source: str = "app") -> None:
        """The source's last look at the whole table; a figure it did not take is left as is."""
        value = self.policy.value("source", source)
        for gauge, n in ((self.unplaceable_rows, unplaceable), (self.missed_rows, missed),
                         (self.future_rows, future)):
            if n is not None:
                self._child(gauge, value).set(n)

    def set_source_held(self, held: bool, source: str = "app") -> None:
        self._child(self.source_held, self.policy.value("source", source)).set(1 if held else 0)

    def observe_capped(self, rule: str) -> None:
        """The rate selected a record but a per-minute cap refused it."""
        self._child(self.items_capped, self.policy.value("rule", rule)).inc()

    def observe_enqueue_error(self) -> None:
        self.enqueue_errors.inc()

    def observe_config_reload(self, ok: bool) -> None:
        self._child(self.config_reloads, "ok" if ok else "error").inc()

    # --- workers ---------------------------------------------------------------------------

    def observe_result(
        self,
        route: str | None,
        model: str | None,
        scorer: str,
        result: MetricResult,
        threshold: float | None,
        log_timestamp: datetime | float | None = None,
        now: float | None = None,
    ) -> None:
        """One metric result of one item.

        The outcome is always counted; the score histogram and ``last_score_timestamp`` only see
        ok outcomes; a quality failure is an ok value strictly below ``threshold``. Eval lag is
        observed when ``log_timestamp`` is given: pass it for one metric per item only, or use
        :meth:`observe_item`, which does that.
        """
        value = self.policy.value
        scorer_v = value("scorer", scorer)
        self._child(self.score_outcomes, result.metric, scorer_v, result.outcome.value).inc()
        if now is None:
            now = time.time()
        if result.outcome is Outcome.OK and result.value is not None:
            route_v = value("route", route)
            model_v = value("model", model)
            self._child(self.score, result.metric, scorer_v, route_v, model_v).observe(result.value)
            if threshold is not None and result.value < threshold:
                self._child(self.quality_failures, result.metric, scorer_v, route_v).inc()
            self.last_score_timestamp.set(now)
        if log_timestamp is not None:
            self.eval_lag.observe(max(0.0, now - _epoch(log_timestamp)))

    def observe_item(
        self,
        record: LogRecord,
        item: ItemResult,
        *,
        scorer: str,
        thresholds: Mapping[str, float],
        now: float | None = None,
    ) -> None:
        """Everything about one scored item: each metric result, its detections, one eval lag."""
        if now is None:
            now = time.time()
        for result in item.metrics:
            self.observe_result(record.route, record.model, scorer, result,
                                thresholds.get(result.metric), None, now)
        for detection in item.detections:
            self.observe_detection(detection.kind, record.route)
        self.eval_lag.observe(max(0.0, now - record.timestamp.timestamp()))

    def observe_detection(self, kind: str, route: str | None) -> None:
        value = self.policy.value
        self._child(self.detections, value("kind", kind), value("route", route)).inc()

    def observe_scorer_latency(self, scorer: str, seconds: float, n_items: int) -> None:
        """A batch of ``n_items`` took ``seconds``: each item is recorded with the mean time, so
        the histogram counts items and its quantiles are per-item times."""
        if n_items <= 0 or seconds < 0:
            return
        child = self._child(self.scorer_latency, self.policy.value("scorer", scorer))
        self._observe_many(child, [seconds / n_items] * n_items)

    def observe_usage(self, batch: ScoredBatch) -> None:
        """What each scorer's run of ``batch`` cost: its truncations, cache lookups and judge
        tokens and cost (work done, counted whether or not the store then takes the scores)."""
        for run in batch.runs:
            usage = run.usage
            scorer_v = self.policy.value("scorer", run.scorer)
            if usage.truncations > 0:
                self._child(self.scorer_truncations, scorer_v).inc(usage.truncations)
            for n, result in ((usage.cache_hits, "hit"), (usage.cache_misses, "miss")):
                if n > 0:
                    self._child(self.scorer_cache_lookups, scorer_v, result).inc(n)
            self.observe_judge_tokens(usage.prompt_tokens, usage.completion_tokens)
            self.observe_judge_cost(usage.cost_usd)
            for key, n in usage.counters.items():
                if n <= 0:
                    continue
                kind, _, value = key.partition(":")
                if kind == "call":
                    self._child(self.judge_requests, self.policy.value("status", value)).inc(n)
                elif kind == "not_judged":
                    self._child(self.judge_not_judged, scorer_v, value).inc(n)
                    if value == "budget":
                        self.budget_exhausted.inc(n)
                elif kind == "redacted":
                    self._child(self.judge_redactions, self.policy.value("kind", value)).inc(n)
            for reason in run.selection.values():
                self._child(self.cascade_picked, reason).inc()

    def observe_agreement(self, batch: ScoredBatch, written: Sequence[Written],
                          thresholds: Mapping[str, float]) -> None:
        """The cascade's judge against the cheap scorer (the first run) on the random share,
        for the judge's scores the store newly wrote (a re-delivered batch counts nothing)."""
        if len(batch.runs) < 2:
            return
        cheap = {item.request_id: {m.metric: m.value for m in item.metrics
                                   if m.value is not None} for item in batch.runs[0].items}
        new = {(w.scorer, w.request_id, w.result.metric) for w in written}
        for run in batch.runs[1:]:
            for item in run.items:
                if run.selection.get(item.request_id) != "random":
                    continue
                mine = cheap.get(item.request_id, {})
                for m in item.metrics:
                    if m.value is None or m.metric not in mine or \
                            (run.scorer, item.request_id, m.metric) not in new:
                        continue
                    other = mine[m.metric]
                    threshold = thresholds.get(m.metric, 0.5)
                    agree = (other >= threshold) == (m.value >= threshold)
                    self._child(self.cascade_compared, m.metric,
                                "yes" if agree else "no").inc()
                    self._child(self.cascade_abs_diff, m.metric).observe(abs(other - m.value))

    def set_golden(self, scores: Mapping[str, float], drift: Mapping[str, float]) -> None:
        for metric, value in scores.items():
            self._child(self.golden_score, metric).set(value)
        for metric, value in drift.items():
            self._child(self.golden_drift, metric).set(value)

    def observe_golden_run(self, result: str) -> None:
        """A golden-set run ended: ``ok``, or ``error`` (the judge raised, the store failed,
        or no metric of any item came back ``ok``); any other word counts as ``error``."""
        self._child(self.golden_runs, "ok" if result == "ok" else "error").inc()

    def observe_written(self, batch: ScoredBatch, written: Sequence[Written],
                        thresholds: Mapping[str, float], now: float | None = None) -> None:
        """The scores the store newly wrote for ``batch``: per scorer its latency (per item)
        and results (score, outcome, quality failures, eval lag once per item), and each newly
        scored item's detections once per kind. A batch delivered twice writes, and so counts,
        nothing the second time (the latency excepted: it is work done)."""
        now = time.time() if now is None else now
        records = batch.by_id
        fresh: set[str] = set()
        for run in batch.runs:
            self.observe_scorer_latency(run.scorer, run.usage.latency_s, len(run.items))
            rows = []
            for w in written:
                if w.scorer != run.scorer:
                    continue
                record = records[w.request_id]
                first = w.request_id not in fresh
                fresh.add(w.request_id)
                rows.append((record.route, record.model, w.result,
                             record.timestamp if first else None))
            self.observe_results_batch(rows, run.scorer, thresholds, now)
        self.observe_agreement(batch, written, thresholds)
        seen: set[tuple[str, str]] = set()
        for _, item in batch.results():
            if item.request_id not in fresh:
                continue
            for detection in item.detections:
                if (item.request_id, detection.kind) not in seen:
                    seen.add((item.request_id, detection.kind))
                    self.observe_detection(detection.kind, records[item.request_id].route)

    def observe_task_failure(self, kind: str) -> None:
        self._child(self.task_failures, self.policy.value("kind", kind)).inc()

    def observe_task_retry(self, kind: str) -> None:
        self._child(self.task_retries, self.policy.value("kind", kind)).inc()

    def observe_batch(self, scorer: str, seconds: float, *, slow: bool) -> None:
        """A scoring task took ``seconds``; ``slow`` when past half the visibility timeout."""
        scorer_v = self.policy.value("scorer", scorer)
        if slow:
            self._child(self.slow_batches, scorer_v).inc()
        with self._batch_max_lock:
            if seconds > self._batch_max_seen.get(scorer_v, -1.0):
                self._batch_max_seen[scorer_v] = seconds
                self._child(self.batch_seconds_max, scorer_v).set(seconds)

    # --- liveness --------------------------------------------------------------------------

    def set_heartbeat(self, role: str, at: float) -> None:
        """A process of ``role`` (sampler, worker, exporter: a fixed set) beat at ``at``."""
        self._child(self.heartbeat_timestamp, role).set(at)

    # --- judge -----------------------------------------------------------------------------

    def observe_judge_request(self, status: str) -> None:
        """One judge call: ``status`` is ok or an error kind (timeout, rate_limited, ...)."""
        self._child(self.judge_requests, self.policy.value("status", status)).inc()

    def observe_judge_tokens(self, prompt: int, completion: int) -> None:
        if prompt > 0:
            self._child(self.judge_tokens, "prompt").inc(prompt)
        if completion > 0:
            self._child(self.judge_tokens, "completion").inc(completion)

    def observe_judge_cost(self, usd: float) -> None:
        if usd > 0:
            self.judge_cost.inc(usd)

    def set_judge_up(self, judge: str, up: bool) -> None:
        self._child(self.judge_up, self.policy.value("judge", judge)).set(1 if up else 0)

    def observe_budget_exhausted(self, n_items: int = 1) -> None:
        if n_items > 0:
            self.budget_exhausted.inc(n_items)
