"""Warm-up and the visibility timeout, without a worker: the scorers' ``warm_up`` and the
derived default of ``broker.visibility_timeout_s``. The worker-level behaviour (ready only
when warm, a batch never handed out twice) is in tests/test_pipeline.py."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from evaluator.config import load_config
from evaluator.records import LogRecord
from evaluator.scorers import Scorer, build_scorer
from evaluator.scorers.testing import FaultScorer
from workers.app import VISIBILITY_FLOOR_S, broker_options, visibility_timeout


def _config(tmp_path: Path, broker: str, scorer: str = "lexical") -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(f'[broker]\n{broker}\n[scoring]\nscorer = "{scorer}"\n')
    return path


def test_visibility_timeout_is_derived_from_scorer_and_batch_size(tmp_path: Path) -> None:
    lexical = load_config(_config(tmp_path, "batch_size = 100"), environ={})
    assert lexical.broker.visibility_timeout_s is None
    assert visibility_timeout(lexical) == VISIBILITY_FLOOR_S  # fast scorer: the floor
    embedded = load_config(_config(tmp_path, "batch_size = 100", "embedded"), environ={})
    assert visibility_timeout(embedded) == 400  # 1 s x 100 x 4
    big = load_config(_config(tmp_path, "batch_size = 1000", "embedded"), environ={})
    assert visibility_timeout(big) == 4000  # grows with the batch
    custom = load_config(_config(tmp_path, "batch_size = 100",
                                 "evaluator.scorers.testing:FaultScorer"), environ={})
    assert visibility_timeout(custom) == 4000  # unknown: priced like an LLM judge
    assert broker_options(embedded)["visibility_timeout"] == 400


def test_an_explicit_visibility_timeout_wins(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, "visibility_timeout_s = 45", "embedded"),
                         environ={})
    assert visibility_timeout(config) == 45
    options = broker_options(config)
    assert options["visibility_timeout"] == 45
    # kombu's sweep for a dead worker's unacked batch runs ~10 times per window.
    assert options["unacked_restore_interval"] * options["unacked_restore_throttle"] <= 5


@pytest.mark.parametrize("name", ["lexical", "noop"])
def test_warm_up_is_a_no_op_for_scorers_without_a_model(tmp_path: Path, name: str) -> None:
    scorer = build_scorer(load_config(_config(tmp_path, "", name), environ={}))
    assert isinstance(scorer, Scorer)
    started = time.perf_counter()
    scorer.warm_up()
    scorer.warm_up()
    assert time.perf_counter() - started < 1.0


def test_fault_scorer_loads_lazily_unless_warmed() -> None:
    cold = FaultScorer(warm_up_s=0.2)
    assert not cold.warm
    record = LogRecord("r", datetime.now(UTC), "q?", ("c",), "a")
    cold.score_batch([record])  # the first batch pays the "model load"
    assert cold.warm
    warmed = FaultScorer(warm_up_s=0.2)
    warmed.warm_up()
    assert warmed.warm


def test_embedded_warm_up_loads_the_model_and_leaves_no_trace(tmp_path: Path) -> None:
    scorer = build_scorer(load_config(_config(tmp_path, "", "embedded"), environ={}))
    encoder = scorer.encoder  # type: ignore[attr-defined]
    assert not encoder.loaded
    scorer.warm_up()
    assert encoder.loaded
    # The warm-up item is nobody's traffic: no counter moved, nothing left in the cache.
    assert (scorer.truncations, encoder.cache_hits,  # type: ignore[attr-defined]
            encoder.cache_misses) == (0, 0, 0)
    assert encoder.cache_bytes == 0
    scorer.close()
