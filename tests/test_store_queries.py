"""The store's read-only queries."""

from __future__ import annotations

from datetime import UTC

from evaluator.store import Store
from tests.store_helpers import FakeClock, ok_result, record

# The fixtures db_url, clock and store.
pytest_plugins = ["tests.store_fixtures"]


def test_oldest_unscored_counts_from_the_take_not_the_log_time(store: Store,
                                                                clock: FakeClock) -> None:
    # Finding 6 of issue 7: a table of 6-day-old rows showed a 513,308 s backlog. Age counts
    # from when the sampler stored the item; the log time is eval_lag's business.
    assert store.queries.oldest_unscored_sampled_at() is None
    recs = {r.request_id: r for r in (record("a", minutes=-9000), record("b", minutes=1),
                                      record("c", minutes=9))}
    store.ledger.add_items([(recs["a"], "default")], source="app")
    taken_first = clock.now
    clock.advance(30)
    store.ledger.add_items([(recs["b"], "default"), (recs["c"], "default")], source="app")
    assert store.queries.oldest_unscored_sampled_at() == taken_first
    store.results.record_results([ok_result("a")], recs, scorer="s", scorer_version="1")
    oldest = store.queries.oldest_unscored_sampled_at()
    assert oldest == clock.now and oldest is not None and oldest.tzinfo == UTC


def test_scores_filters(store: Store, clock: FakeClock) -> None:
    recs = {rid: record(rid) for rid in ("a", "b")}
    store.results.record_results([ok_result("a")], recs, scorer="lexical", scorer_version="1")
    clock.advance(60)
    store.results.record_results([ok_result("b")], recs, scorer="judge", scorer_version="1")
    assert len(store.queries.scores()) == 8
    assert {r.request_id for r in store.queries.scores(since=clock.now)} == {"b"}
    assert {r.request_id for r in store.queries.scores(scorer="lexical")} == {"a"}
    assert store.queries.scores(since=clock.now, scorer="lexical") == []
