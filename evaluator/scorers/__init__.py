"""Scoring backends, chosen by name in config (``[scoring] scorer``)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from evaluator.errors import ConfigError
from evaluator.scorers.base import (
    DETECTION_KINDS,
    METRICS,
    Detection,
    ItemResult,
    MetricResult,
    Outcome,
    Scorer,
)

if TYPE_CHECKING:
    from evaluator.config import Config

# name -> "module:factory"; a factory takes the Config and returns a Scorer. Imported lazily so
# that a light install never imports torch or ragas for a backend it does not use.
BACKENDS: dict[str, str] = {
    "lexical": "evaluator.scorers.lexical:LexicalScorer",
    "noop": "evaluator.scorers.noop:NoopScorer",
}


def check_scorer_name(name: str, *, path: str | None = None) -> None:
    if name not in BACKENDS:
        raise ConfigError(f"unknown scorer {name!r}; valid: {', '.join(sorted(BACKENDS))}",
                          path=path, key="scoring.scorer")


def build_scorer(config: Config, name: str | None = None) -> Scorer:
    """Build the backend named in config (or ``name``)."""
    name = name or config.scoring.scorer
    check_scorer_name(name, path=config.path)
    module_name, _, attr = BACKENDS[name].partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    scorer: Scorer = factory.from_config(config)
    return scorer


__all__ = [
    "BACKENDS", "DETECTION_KINDS", "METRICS", "Detection", "ItemResult", "MetricResult",
    "Outcome", "Scorer", "build_scorer", "check_scorer_name",
]
