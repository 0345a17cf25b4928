"""Scoring backends, chosen by name in config (``[scoring] scorer``).

Each backend declares itself beside its code (``PLUGINS``, see :mod:`evaluator.plugins`);
this module builds the one named in config and adapts a team's own scorer (``module:Factory``,
with only ``score_batch``) to the full :class:`Scorer` protocol, so the rest of groundwatch
calls every scorer the same way.
"""

from __future__ import annotations

import importlib
import logging

from evaluator.config import Config
from evaluator.errors import ConfigError
from evaluator.plugins import UNKNOWN_ITEM_SECONDS, ScorerPlugin, scorer_plugins
from evaluator.scorers.base import (
    DETECTION_KINDS,
    METRICS,
    Detection,
    ForeignScorer,
    ItemResult,
    MetricResult,
    Outcome,
    Scorer,
    as_scorer,
)

log = logging.getLogger("groundwatch.judge")

#: The LLM judges (declared with ``judge=True``): as ``[scoring] scorer`` they score every
#: item, as ``[scoring] judge`` they are the cascade's second scorer.
JUDGES: tuple[str, ...] = tuple(name for name, p in scorer_plugins().items() if p.judge)


def item_seconds_estimate(name: str) -> float:
    """The pessimistic per-item time of the scorer ``name`` (its declaration's
    ``item_seconds``; a ``module:Factory`` scorer is taken to be an LLM judge)."""
    plugin = scorer_plugins().get(name)
    return plugin.item_seconds if plugin is not None else UNKNOWN_ITEM_SECONDS


def _plugin(name: str) -> ScorerPlugin | None:
    """The declaration of ``name``; a name with a colon is a factory already (a team's own
    scorer, or the fault-injecting test double) and gets an undeclared one."""
    if ":" in name:
        return ScorerPlugin(name=name, factory=name)
    return scorer_plugins().get(name)


def check_scorer_name(name: str, *, path: str | None = None) -> None:
    """Fail at start-up, not on the first task, when the configured scorer does not exist."""
    plugin = _plugin(name)
    problem = None
    if plugin is None:
        problem = f"unknown scorer {name!r}; valid: {', '.join(sorted(scorer_plugins()))}"
    elif missing := plugin.missing():
        problem = (f"scorer {name!r} needs {', '.join(missing)}, which is not installed: "
                   f"pip install 'groundwatch[{plugin.extra or name}]'")
    elif ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            problem = f"cannot import scorer module {module_name!r}: {exc}"
        except Exception as exc:  # an empty or relative name, or a module that fails to load
            problem = f"cannot import scorer module {module_name!r}: {type(exc).__name__}: {exc}"
        else:
            if not hasattr(getattr(module, attr, None), "from_config"):
                problem = f"{name!r} has no scorer factory with a from_config classmethod"
    if problem:
        raise ConfigError(problem, path=path, key="scoring.scorer")


def build_judge(config: Config) -> Scorer | None:
    """The cascade's judge (``scoring.judge`` on ``[judge]``'s endpoint), or None with one
    line saying why there is none."""
    mode = config.scoring.judge
    if not mode:
        return None
    if not config.judge.configured:
        log.info("judge: none configured (judge.base_url is empty): the cascade is off and "
                 "items get %s scores only", config.scoring.scorer)
        return None
    if config.scoring.scorer in JUDGES:
        return None  # the judge is the scorer already
    check_scorer_name(mode, path=config.path)
    return build_scorer(config, mode)


def build_scorer(config: Config, name: str | None = None) -> Scorer:
    """Build the backend named in config (or ``name``)."""
    name = name or config.scoring.scorer
    check_scorer_name(name, path=config.path)
    plugin = _plugin(name)
    assert plugin is not None
    return as_scorer(plugin.load().from_config(config))


__all__ = [
    "DETECTION_KINDS", "JUDGES", "METRICS", "Detection", "ForeignScorer",
    "ItemResult", "MetricResult", "Outcome", "Scorer", "build_judge", "build_scorer",
    "check_scorer_name", "item_seconds_estimate",
]
