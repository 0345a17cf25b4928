"""The sampler's metrics: what it read from the source, what it sampled, rejected or capped,
how the source looks, and the watched app's own health taken from the logs it read."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from metrics.recorder import Recorder

#: Seconds: healthy is the poll interval plus the settle delay (30 s by default); a backfill or
#: a held cursor, hours.
TAKE_LAG_BUCKETS = (1, 5, 15, 30, 45, 60, 120, 300, 600, 1800, 3600, 14400, 86400)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from evaluator.records import FieldDrop, LogRecord
    from metrics.labels import LabelPolicy

# The app's own end-to-end latency: an LLM/RAG request takes from ~100 ms (cache, small model)
# to a couple of minutes (long generations, agent loops).
APP_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)


class SamplerMetrics(Recorder):
    """Recorded by ``workers.sampler``: one call per read, aggregated (one write per series)."""

    def __init__(self, registry: CollectorRegistry, policy: LabelPolicy) -> None:
        super().__init__(registry, policy)
        self._define_flow()
        self._define_source()
        self._define_app()
        self.config_reloads = self._counter(
            "config_reloads_total", "Configuration reloads by result.", ("result",))
        # Known label values start at 0 so that rate() and absent() see the series from the start.
        for result in ("ok", "error"):
            self.config_reloads.labels(result)

    def _define_flow(self) -> None:
        self.logs_seen = self._counter(
            "logs_seen_total", "Log records read from a source.", ("source",))
        self.items_sampled = self._counter(
            "items_sampled_total", "Records the sampling policy selected.", ("route", "rule"))
        self.items_rejected = self._counter(
            "items_rejected_total", "Rows that could not be mapped onto a log record.",
            ("reason",))
        self.items_capped = self._counter(
            "items_capped_total",
            "Records the rate selected but a per-minute cap refused (not scored).", ("rule",))
        self.enqueue_errors = self._counter(
            "enqueue_errors_total", "Batches the sampler failed to enqueue.")

    def _define_source(self) -> None:
        self.fields_dropped = self._counter(
            "fields_dropped_total",
            "Optional fields left out of a record because their value could not be read "
            "(the row was kept).", ("field", "reason"))
        self.late_rows = self._counter(
            "source_late_rows_total",
            "Rows read from the lookback window behind the cursor (committed late).",
            ("source",))
        self.files_rewritten = self._counter(
            "source_files_rewritten_total",
            "Source files found shrunk or rewritten in place, and read again from the start.",
            ("source",))
        # livemax: the running sampler's last look; a dead sampler's value must not linger.
        self.unplaceable_rows = self._gauge(
            "source_unplaceable_rows",
            "Rows the source cannot place in its order (NULL or unreadable timestamp or "
            "incrementing column, NULL request id): never read until fixed.",
            ("source",), "livemax")
        self.missed_rows = self._gauge(
            "source_missed_rows",
            "Rows at or behind the cursor that were never read (committed after the cursor "
            "passed them, beyond the lookback): read them with groundwatch backfill.",
            ("source",), "livemax")
        self.future_rows = self._gauge(
            "source_future_rows",
            "Rows whose timestamp is further in the future than source.sql.max_future (a "
            "clock or time zone mistake, or garbage): each is rejected future_timestamp once "
            "and never read.",
            ("source",), "livemax")
        self.pending_rows = self._gauge(
            "source_pending_rows",
            "Rows read while a required field was still missing, read again until the app "
            "completes them or source.sql.complete_within passes (then rejected incomplete).",
            ("source",), "livemax")
        self.waiting_transactions = self._gauge(
            "source_waiting_transactions",
            "Transactions in flight that the source's reads wait for (PostgreSQL): rows "
            "after the oldest one's first write are read once it ends.",
            ("source",), "livemax")
        self.take_lag = self._histogram(
            "source_take_lag_seconds",
            "Time from a row's log timestamp to the sampler's decision on it: the poll "
            "interval plus source.sql.settle, and longer while a transaction before it is open.",
            ("source",), TAKE_LAG_BUCKETS)
        self.source_held = self._gauge(
            "source_held",
            "1 while the sampler holds its cursor because every row of a read was rejected "
            "for the same field and reason (a mapping mistake, see the sampler's log).",
            ("source",), "livemax")

    def _define_app(self) -> None:
        # The watched app's own health, from its logs; route and model are optional labels.
        self.app_requests = self._counter(
            "app_requests_total", "Requests in the app's logs.", ("route", "model"))
        self.app_errors = self._counter(
            "app_errors_total", "Requests the app logged as errors.", ("route", "model"))
        self.app_latency = self._histogram(
            "app_latency_seconds", "The app's logged request latency.", ("route", "model"),
            APP_LATENCY_BUCKETS)
        self.app_cost = self._counter(
            "app_cost_usd_total", "The app's logged request cost in USD.", ("route", "model"))

    def observe_logs(self, records: Iterable[LogRecord], source: str = "app") -> None:
        """Records read from ``source``: logs_seen plus the app_* metrics of their route and
        model (an error is ``status == "error"``, or an ``error`` with no status; negative
        latencies and costs are skipped), one write per series."""
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

    def observe_sampled(self, pairs: Iterable[tuple[str | None, str]]) -> None:
        """The sampling policy selected items: (route, rule) pairs, ``rule`` the rule's name
        or "default"."""
        value = self.policy.value
        counts = Counter((value("route", route), value("rule", rule)) for route, rule in pairs)
        for key, k in counts.items():
            self._child(self.items_sampled, *key).inc(k)

    def observe_take_lag(self, lags: Iterable[float], source: str = "app") -> None:
        """Seconds from each decided row's log time to its decision."""
        child = self._child(self.take_lag, self.policy.value("source", source))
        for lag in lags:
            child.observe(max(0.0, lag))

    def observe_unmapped(self, reason: str, source: str = "app") -> None:
        """A row was read but rejected (``InvalidRecordError.reason``): it counts as seen, and
        as rejected for ``reason``."""
        value = self.policy.value
        self._child(self.logs_seen, value("source", source)).inc()
        self._child(self.items_rejected, value("reason", reason)).inc()

    def observe_dropped_fields(self, drops: Iterable[FieldDrop]) -> None:
        """Optional fields left out of records (:class:`~evaluator.records.FieldDrop`)."""
        value = self.policy.value
        for (fname, reason), k in Counter((d.field, d.reason) for d in drops).items():
            self._child(self.fields_dropped, fname, value("reason", reason)).inc(k)

    def observe_late_rows(self, n: int, source: str = "app") -> None:
        """``n`` rows read from the lookback window behind the cursor."""
        if n:
            self._child(self.late_rows, self.policy.value("source", source)).inc(n)

    def observe_files_rewritten(self, n: int, source: str = "app") -> None:
        """``n`` source files found shrunk or rewritten in place."""
        if n:
            self._child(self.files_rewritten, self.policy.value("source", source)).inc(n)

    def set_source_audit(self, *, unplaceable: int | None, missed: int | None,
                         future: int | None, pending: int | None = None,
                         waiting: int | None = None, source: str = "app") -> None:
        """The source's last look at the whole table, and at what its reads wait for; a
        figure it did not take is left as is."""
        value = self.policy.value("source", source)
        for gauge, n in ((self.unplaceable_rows, unplaceable), (self.missed_rows, missed),
                         (self.future_rows, future), (self.pending_rows, pending),
                         (self.waiting_transactions, waiting)):
            if n is not None:
                self._child(gauge, value).set(n)

    def set_source_held(self, held: bool, source: str = "app") -> None:
        """Whether the sampler holds its cursor on ``source`` (every row of a read rejected)."""
        self._child(self.source_held, self.policy.value("source", source)).set(1 if held else 0)

    def observe_capped(self, rule: str) -> None:
        """The rate selected a record but a per-minute cap refused it."""
        self._child(self.items_capped, self.policy.value("rule", rule)).inc()

    def observe_enqueue_error(self) -> None:
        """A batch could not be enqueued."""
        self.enqueue_errors.inc()

    def observe_config_reload(self, ok: bool) -> None:
        """A configuration reload ended, well or not."""
        self._child(self.config_reloads, "ok" if ok else "error").inc()
