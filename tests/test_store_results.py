"""The store's result writer (the task's part): scored batches and dead letters."""

from __future__ import annotations

import pytest
from sqlalchemy import event, func, select

from evaluator.scorers.base import METRICS, Detection, ItemResult, MetricResult, Outcome
from evaluator.store import UNSAMPLED, Store
from evaluator.store.models import scores
from tests.store_helpers import count, error_result, ok_result, record

# The fixtures db_url, clock and store.
pytest_plugins = ["tests.store_fixtures"]


def test_record_results_is_idempotent(store: Store) -> None:
    recs = {rid: record(rid) for rid in ("a", "b")}
    store.ledger.add_items([(r, "default") for r in recs.values()], source="app")
    batch = [ok_result("a", 0.9, explanation={"claims": ["x"]},
                       detections=(Detection("refusal", "said no"),)),
             ItemResult("b", (MetricResult.not_applicable("faithfulness", "no claims"),))]

    first = store.results.record_results(batch, recs, scorer="lexical", scorer_version="1")
    assert [(rid, m.metric) for rid, m in first] == \
        [("a", m) for m in METRICS] + [("b", "faithfulness")]
    assert first[0][1] == MetricResult.ok("faithfulness", 0.9)

    assert store.results.record_results(batch, recs, scorer="lexical", scorer_version="1") == []
    assert count(store, "gw_scores") == 5
    assert count(store, "gw_explanations") == 2
    assert store.queries.count_items_by_status() == {"queued": 0, "scored": 2, "failed": 0}

    # Another scorer version is a different score.
    assert len(store.results.record_results(batch, recs, scorer="lexical", scorer_version="2")) == 5

    (expl,) = [e for e in store.queries.explanations("a") if e.scorer_version == "1"]
    assert expl.body == {"claims": ["x"]}
    assert expl.detections == (Detection("refusal", "said no"),)
    row = store.queries.scores_for("b")[0]
    assert (row.outcome, row.value, row.reason, row.route, row.model) == \
        (Outcome.NOT_APPLICABLE, None, "no claims", "chat", "m1")


def test_an_error_is_replaced_by_a_real_score_but_not_the_reverse(store: Store) -> None:
    recs = {"a": record("a")}
    kw = {"scorer": "judge", "scorer_version": "1"}
    assert len(store.results.record_results([error_result("a")], recs, **kw)) == 4
    # A retry that errors again writes nothing new (nothing to count twice).
    assert store.results.record_results([error_result("a")], recs, **kw) == []

    written = store.results.record_results([ok_result("a", 0.8, explanation={"v": 2})], recs, **kw)
    assert [m for _, m in written] == [MetricResult.ok(m, 0.8) for m in METRICS]
    assert {r.outcome for r in store.queries.scores_for("a")} == {Outcome.OK}
    assert store.queries.explanations("a")[0].body == {"v": 2}

    assert store.results.record_results([error_result("a")], recs, **kw) == []
    assert {r.value for r in store.queries.scores_for("a")} == {0.8}


def test_record_results_creates_items_the_sampler_never_saw(store: Store) -> None:
    rec = record("direct")
    store.results.record_results([ok_result("direct")], {"direct": rec}, scorer="s", scorer_version="1")
    item = store.queries.item("direct")
    assert item is not None
    assert (item.status, item.source, item.rule) == ("scored", UNSAMPLED, UNSAMPLED)
    assert item.record() == rec


def test_record_results_needs_every_record(store: Store) -> None:
    with pytest.raises(ValueError, match="no record"):
        store.results.record_results([ok_result("a")], {}, scorer="s", scorer_version="1")


def test_a_large_batch_is_one_transaction(store: Store) -> None:
    recs = {f"r{i:04d}": record(f"r{i:04d}", minutes=i % 60) for i in range(1000)}
    store.ledger.add_items([(r, "default") for r in recs.values()], source="app")
    results = [ok_result(rid, (i % 11) / 10) for i, rid in enumerate(recs)]
    commits: list[object] = []

    def on_commit(conn: object) -> None:
        commits.append(conn)

    event.listen(store.engine, "commit", on_commit)
    try:
        written = store.results.record_results(results, recs, scorer="lexical", scorer_version="1")
    finally:
        event.remove(store.engine, "commit", on_commit)
    assert len(commits) == 1
    assert len(written) == 4000
    assert count(store, "gw_scores") == 4000
    assert store.queries.count_items_by_status() == {"queued": 0, "scored": 1000, "failed": 0}
    with store.engine.connect() as conn:
        assert conn.scalar(select(func.count()).where(scores.c.value == 1.0)) == 4 * 90


def test_record_failures_marks_unscored_items_failed(store: Store) -> None:
    recs = {rid: record(rid) for rid in ("a", "b")}
    store.ledger.add_items([(r, "default") for r in recs.values()], source="app")
    store.results.record_results([ok_result("a")], recs, scorer="s", scorer_version="1")
    store.results.record_failures(["a", "b"], stage="score", kind="unavailable", reason="judge down",
                          attempts=5, task_id="t-1")
    assert store.queries.count_items_by_status() == {"queued": 0, "scored": 1, "failed": 1}
    (failure,) = store.queries.failures("b")
    assert (failure.stage, failure.kind, failure.reason, failure.attempts, failure.task_id) == \
        ("score", "unavailable", "judge down", 5, "t-1")

    store.results.record_failures([], stage="enqueue", kind="broker", reason="x" * 10_000, attempts=1)
    latest = store.queries.failures(limit=1)[0]
    assert latest.request_id is None and len(latest.reason) == 4000
    assert len(store.queries.failures()) == 3
