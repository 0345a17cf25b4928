"""Test doubles, shipped publicly so that users can fault-test their own deployment.

``FaultScorer`` scores like ``lexical`` but obeys a ``gw_fault`` key in a record's metadata:

- ``transient:N`` — raise :class:`TransientError` the first N times this process sees the item;
- ``crash`` — raise a plain exception (a permanent failure of the batch);
- ``item_error`` — return an ``error`` outcome for that item only;
- ``slow:MS`` — sleep MS milliseconds before scoring the batch.

``GROUNDWATCH_FAULT_WARM_UP_S`` (seconds, default 0) gives it a model to load, like the
embedded scorer's: ``warm_up()`` takes that long once per process, and a batch that finds the
scorer cold pays it first (the embedded encoder loads lazily the same way).

Select it with ``scorer = "evaluator.scorers.testing:FaultScorer"``. Never in production.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from evaluator.errors import TransientError
from evaluator.records import LogRecord
from evaluator.scorers.base import ItemResult, MetricResult, WholeBatchScorer
from evaluator.scorers.lexical import LexicalScorer

if TYPE_CHECKING:
    from evaluator.config import Config

log = logging.getLogger("groundwatch.worker")


class FaultScorer(WholeBatchScorer):
    name = "fault"
    version = "1"

    def __init__(self, warm_up_s: float = 0.0) -> None:
        self._inner = LexicalScorer()
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.warm_up_s = warm_up_s
        self._warm = threading.Event()
        self._warm_lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Config) -> FaultScorer:
        return cls(float(os.environ.get("GROUNDWATCH_FAULT_WARM_UP_S", "0") or 0))

    @property
    def warm(self) -> bool:
        return self._warm.is_set()

    def warm_up(self) -> None:
        with self._warm_lock:
            if not self._warm.is_set():
                log.info("fault scorer warming up for %.1fs", self.warm_up_s)
                time.sleep(self.warm_up_s)  # stands in for a model load
                self._warm.set()

    def score_batch(self, records: Sequence[LogRecord]) -> list[ItemResult]:
        self.warm_up()  # lazily, as a model would load on first use
        for record in records:
            fault = str(record.metadata.get("gw_fault", ""))
            if fault.startswith("slow:"):
                time.sleep(int(fault.split(":", 1)[1]) / 1000.0)
            elif fault.startswith("transient:"):
                with self._lock:
                    self._seen[record.request_id] += 1
                    attempt = self._seen[record.request_id]
                if attempt <= int(fault.split(":", 1)[1]):
                    raise TransientError("unavailable", f"scripted outage, attempt {attempt}")
            elif fault == "crash":
                raise RuntimeError(f"scripted crash on {record.request_id}")
        results = self._inner.score_batch(records)
        out = []
        for record, result in zip(records, results, strict=True):
            if record.metadata.get("gw_fault") == "item_error":
                result = ItemResult(record.request_id, tuple(
                    MetricResult.error(m.metric, "unparseable") for m in result.metrics))
            out.append(result)
        return out
