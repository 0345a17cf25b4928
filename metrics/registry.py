"""The one private registry of a process, and the recorders that define every groundwatch
metric on it, each exactly once.

One module per producer (the prometheus_client split: registry, metrics, multiprocess):

- :mod:`metrics.sampler`: what the sampler read, sampled, rejected; the source; the app's health;
- :mod:`metrics.scoring`: the scores the workers wrote and what they mean, the scorers' work,
  the scoring tasks, the cascade's agreement;
- :mod:`metrics.judge`: the judge's calls and spend, ``judge_up``, the golden set;
- :mod:`metrics.calibration`: the calibration maps' refits and the agreement they measured;
- :mod:`metrics.health`: build info and heartbeats;
- :mod:`metrics.multiprocess`: the multiprocess set-up they all need (the import-order rule);
- :mod:`metrics.labels`: the label policy every label value passes through.

``groundwatch_queue_depth``, ``groundwatch_oldest_unscored_age_seconds`` and the exporter's own
error counter are not recorded by a process: the exporter computes them at scrape time (see
:mod:`metrics.exporter`); their names are here so that every name has one home.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from metrics.calibration import CalibrationMetrics
from metrics.health import HealthMetrics
from metrics.judge import JudgeMetrics
from metrics.labels import LabelPolicy
from metrics.multiprocess import require_mode
from metrics.sampler import SamplerMetrics
from metrics.scoring import ScoringMetrics

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from evaluator.config import MetricsConfig
    from evaluator.scorers.base import ScoredBatch

# Computed by the exporter at scrape time (see metrics.exporter), not stored in the directory:
# a queue's depth is a property of the broker, not of any one process.
QUEUE_DEPTH = "groundwatch_queue_depth"
OLDEST_UNSCORED_AGE = "groundwatch_oldest_unscored_age_seconds"
EXPORTER_COLLECT_ERRORS = "groundwatch_exporter_collect_errors_total"


class Metrics:
    """All groundwatch metrics of one process, as one recorder per producer. Build one per
    process, at process start.

    ``multiprocess=True`` (the default) requires
    :func:`~metrics.multiprocess.setup_multiprocess` to have run, so a forgotten set-up fails
    loudly instead of exporting nothing. ``multiprocess=False`` keeps the values in this
    process only, readable through :attr:`registry` (single-process tools and tests).
    """

    def __init__(self, config: MetricsConfig, *, multiprocess: bool = True) -> None:
        require_mode(multiprocess)
        from prometheus_client import CollectorRegistry  # import-order rule: metrics.multiprocess

        self.multiprocess = multiprocess
        self.policy = LabelPolicy.from_config(config)
        # A private registry: never the global one, so two Metrics in one process (tests) do not
        # collide. In multiprocess mode it is not what gets served (the exporter merges the
        # directory); it still catches a metric defined twice.
        self.registry: CollectorRegistry = CollectorRegistry()
        self.sampler = SamplerMetrics(self.registry, self.policy)
        self.scoring = ScoringMetrics(self.registry, self.policy)
        self.judge = JudgeMetrics(self.registry, self.policy)
        self.health = HealthMetrics(self.registry, self.policy)
        self.calibration = CalibrationMetrics(self.registry, self.policy)

    def observe_usage(self, batch: ScoredBatch) -> None:
        """What the scorers of ``batch`` did and spent, to the recorders that count each part:
        truncations and cache lookups (``scoring``), the judge's calls, tokens and cost
        (``judge``). Work done: counted whether or not the store then takes the scores."""
        self.scoring.observe_usage(batch)
        self.judge.observe_usage(batch)
