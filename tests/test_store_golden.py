"""The store's golden-set part: baselines and run claims."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from evaluator.store import Store
from evaluator.store.models import golden_scores
from tests.store_helpers import T0, FakeClock

# The fixtures db_url, clock and store.
pytest_plugins = ["tests.store_fixtures"]


def test_record_golden_keeps_the_first_value_as_baseline(store: Store, clock: FakeClock) -> None:
    first = store.golden.record_golden("judge/1", {"a": {"faithfulness": 0.8, "groundedness": 0.6},
                                            "b": {"faithfulness": 0.4}})
    assert first == {("a", "faithfulness"): 0.8, ("a", "groundedness"): 0.6,
                     ("b", "faithfulness"): 0.4}
    clock.advance(60)
    again = store.golden.record_golden("judge/1", {"a": {"faithfulness": 0.1}, "c": {"faithfulness": 1}})
    # Only what was given comes back: the baseline of a, the first value of c.
    assert again == {("a", "faithfulness"): 0.8, ("c", "faithfulness"): 1.0}
    assert store.golden.golden_scores("judge/1") == {
        ("a", "faithfulness"): (0.8, 0.1), ("a", "groundedness"): (0.6, 0.6),
        ("b", "faithfulness"): (0.4, 0.4), ("c", "faithfulness"): (1.0, 1.0)}
    assert store.golden.golden_scores("judge/2") == {}
    assert store.golden.record_golden("judge/1", {}) == {}
    with store.engine.connect() as conn:
        row = conn.execute(select(golden_scores.c.baseline_at, golden_scores.c.last_at)
                           .where(golden_scores.c.request_id == "a",
                                  golden_scores.c.metric == "faithfulness")).one()
    assert tuple(row) == (T0, T0 + timedelta(seconds=60))  # the store's clock at each run


def test_a_golden_claim_uses_the_store_clock(store: Store, clock: FakeClock) -> None:
    assert store.golden.claim_golden_run("golden:j", 60) is True
    assert store.golden.claim_golden_run("golden:j", 60) is False
    clock.advance(59)
    assert store.golden.claim_golden_run("golden:j", 60) is False
    clock.advance(1)
    assert store.golden.claim_golden_run("golden:j", 60) is True
