"""End to end, with real parts only: an app log table in the app's own column names, the
sampler, a Celery worker process on the real Redis, the exporter, and a real Prometheus
scraping it. Counts must equal the deterministic sampling decision, row for row."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from evaluator import demo_traffic
from evaluator.sampling import sample_hash
from evaluator.store import Store
from tests.gw_helpers import (
    flush_test_redis,
    groundwatch_cmd,
    log_tail,
    parse_metrics,
    processes,
    start,
    total,
    write_config,
)
from tests.prom_helpers import free_port, running_prometheus, wait_until

pytestmark = pytest.mark.integration

N_ROWS = 400
BAD_ROWS = {17: ("retrieved_docs", "[1, 2]"), 101: ("user_question", None),
            230: ("llm_output", None)}


def expected_decisions(rows: list[dict[str, Any]], bad: Any = ()) -> dict[str, str]:
    """request id -> rule, computed from the raw rows with the documented rule order."""
    decided = {}
    for i, row in enumerate(rows):
        if i in bad:
            continue
        rid = str(row["req_uuid"])
        if row["thumbs"] == -1:
            decided[rid] = "thumbs_down"
        elif row["outcome"] == "error":
            decided[rid] = "errors"
        elif sample_hash("e2e", rid) < 0.5:
            decided[rid] = "default"
    return decided


def test_end_to_end(tmp_path: Path) -> None:
    flush_test_redis()
    rows = demo_traffic.make_rows(N_ROWS, seed=11)
    for i, (column, value) in BAD_ROWS.items():
        rows[i][column] = value
    logs_url = f"sqlite:///{tmp_path}/logs.db"
    demo_traffic.create_log_table(logs_url)
    demo_traffic.write_rows(logs_url, rows)
    expected = expected_decisions(rows, BAD_ROWS)
    port = free_port()
    config = write_config(tmp_path, rate=0.5, port=port)

    with processes() as procs:
        worker = start(procs, groundwatch_cmd(config, "worker", "--name", "e2e@%h"),
                       tmp_path / "worker.log")
        start(procs, groundwatch_cmd(config, "exporter"), tmp_path / "exporter.log")
        sampler = start(procs, groundwatch_cmd(config, "sampler", "--until-idle"),
                        tmp_path / "sampler.log")
        assert sampler.wait(timeout=120) == 0, log_tail(tmp_path / "sampler.log")

        store = Store(f"sqlite:///{tmp_path}/gw.db")
        try:
            def all_scored() -> bool:
                assert worker.poll() is None, log_tail(tmp_path / "worker.log")
                counts = store.queries.count_items_by_status()
                return counts["scored"] == len(expected) and counts["queued"] == 0
            wait_until(all_scored, timeout=120, what="every sampled item scored")

            # The store: exactly the sampled items, each with exactly one score per metric.
            scores = store.queries.scores()
            per_item = Counter((s.request_id, s.metric) for s in scores)
            assert {rid for rid, _ in per_item} == set(expected)
            assert set(per_item.values()) == {1}
            assert Counter(metric for _, metric in per_item) == {
                m: len(expected) for m in ("faithfulness", "groundedness", "answer_relevance",
                                           "context_relevance")}
            assert {(r.row_ref, r.field) for r in store.queries.rejections()} == {
                ("req-11-000017", "contexts"), ("req-11-000101", "question"),
                ("req-11-000230", "answer")}
        finally:
            store.close()

        # The exporter, over HTTP: counts equal the decisions row for row.
        def scrape() -> dict[str, Any] | None:
            parsed = parse_metrics(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
            done = total(parsed, "groundwatch_score_outcomes_total") == 4 * len(expected)
            return parsed if done else None
        m = wait_until(scrape, timeout=30, what="scores in /metrics")
        assert total(m, "groundwatch_logs_seen_total") == N_ROWS
        assert total(m, "groundwatch_items_rejected_total") == len(BAD_ROWS)
        assert total(m, "groundwatch_items_sampled_total") == len(expected)
        for rule, n in Counter(expected.values()).items():
            assert total(m, "groundwatch_items_sampled_total", rule=rule) == n
        assert total(m, "groundwatch_app_requests_total") == N_ROWS - len(BAD_ROWS)
        assert total(m, "groundwatch_eval_lag_seconds_count") == len(expected)
        assert total(m, "groundwatch_queue_depth") == 0
        assert "groundwatch_build_info" in m
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200

        # A real Prometheus scrapes the exporter and sees the same totals.
        with running_prometheus(tmp_path / "prometheus", [f"127.0.0.1:{port}"]) as prom:
            prom.wait_for_value("sum(groundwatch_items_sampled_total)", len(expected),
                                timeout=60)
            prom.wait_for_value("sum(groundwatch_score_outcomes_total)", 4 * len(expected),
                                timeout=30)
            assert prom.value("sum(groundwatch_logs_seen_total)") == N_ROWS
    flush_test_redis()


def test_run_all_in_one_scores_and_stops_cleanly(tmp_path: Path) -> None:
    flush_test_redis()
    rows = demo_traffic.make_rows(120, seed=5)
    logs_url = f"sqlite:///{tmp_path}/logs.db"
    demo_traffic.create_log_table(logs_url)
    demo_traffic.write_rows(logs_url, rows)
    expected = expected_decisions(rows)
    port = free_port()
    config = write_config(tmp_path, rate=0.5, port=port)
    with processes() as procs:
        runner = start(procs, groundwatch_cmd(config, "run", "--workers", "1"),
                       tmp_path / "run.log")
        store = Store(f"sqlite:///{tmp_path}/gw.db")
        try:
            wait_until(lambda: store.queries.count_items_by_status()["scored"] == len(expected),
                       timeout=120, what="all sampled items scored by `run`")
        finally:
            store.close()
        parsed = parse_metrics(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
        assert total(parsed, "groundwatch_items_sampled_total") == len(expected)
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=60) == 0, log_tail(tmp_path / "run.log")
    flush_test_redis()
