"""What every recorder shares: its families on the one private registry, the label policy,
cached label children, and bulk histogram writes.

A recorder (:mod:`metrics.sampler`, :mod:`metrics.scoring`, :mod:`metrics.judge`,
:mod:`metrics.health`) defines the families one producer writes, each exactly once, and the
methods that producer calls. They never raise on odd input (negative costs or latencies are
skipped, not counted): metrics must not fail the work they count.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from metrics.labels import LabelPolicy

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

PREFIX = "groundwatch_"

# How the exporter merges a gauge over processes: max keeps exited processes' values (the
# newest beat, the longest batch), livemax forgets them (judge_up, build info, the source's
# last look), mostrecent takes the newest write (the golden run).
GaugeMode = Literal["max", "livemax", "mostrecent"]


class Recorder:
    """Base of the recorders: defines families on ``registry`` and caches their children.

    Build recorders through :class:`~metrics.registry.Metrics` only, after
    :func:`~metrics.multiprocess.require_mode`: a family is a value in a process's files from
    the moment it exists.
    """

    def __init__(self, registry: CollectorRegistry, policy: LabelPolicy) -> None:
        self.registry = registry
        self.policy = policy
        # Label children cached per family: .labels() validates and locks on every call, which
        # is a third of the cost of a recording. The cache is bounded because every value went
        # through the label policy (or is a validated metric name or outcome).
        self._children: dict[object, dict[tuple[str, ...], Any]] = {}

    # Families. prometheus_client is imported inside these (the import-order rule in
    # metrics.multiprocess); the name gets the groundwatch_ prefix.
    def _counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Any:
        from prometheus_client import Counter  # import-order rule: metrics.multiprocess

        return Counter(PREFIX + name, doc, tuple(labels), registry=self.registry)

    def _gauge(self, name: str, doc: str, labels: Sequence[str], mode: GaugeMode) -> Any:
        from prometheus_client import Gauge  # import-order rule: metrics.multiprocess

        return Gauge(PREFIX + name, doc, tuple(labels), multiprocess_mode=mode,
                     registry=self.registry)

    def _histogram(self, name: str, doc: str, labels: Sequence[str],
                   buckets: Sequence[float]) -> Any:
        from prometheus_client import Histogram  # import-order rule: metrics.multiprocess

        return Histogram(PREFIX + name, doc, tuple(labels), buckets=buckets,
                         registry=self.registry)

    def _child(self, family: Any, *values: str) -> Any:
        """``family.labels(*values)``, cached."""
        cache = self._children.get(family)
        if cache is None:
            cache = self._children.setdefault(family, {})
        child = cache.get(values)
        if child is None:
            child = cache[values] = family.labels(*values)
        return child

    @staticmethod
    def _observe_many(child: Any, values: Sequence[float]) -> None:
        """``child.observe(v)`` for every v, with one write per touched bucket (not per value).
        Uses Histogram internals (_upper_bounds, _sum, _buckets) of prometheus_client, which is
        why pyproject caps its version and tests/test_metrics_batch.py pins this to observe()."""
        if not values:
            return
        bounds = child._upper_bounds
        counts = [0] * len(bounds)
        for v in values:
            counts[bisect_left(bounds, v)] += 1
        child._sum.inc(sum(values))
        for i, n in enumerate(counts):
            if n:
                child._buckets[i].inc(n)
