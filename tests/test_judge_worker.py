"""The cascade through a real Celery worker: the lexical scorer on every item, the ragas judge
(its real code path, over HTTP) on the pick, against the scripted OpenAI-protocol server that
this test starts on 127.0.0.1. Redis is the broker and holds the shared budget and cache."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from evaluator.records import LogRecord
from evaluator.store import Store
from tests.gw_helpers import (
    flush_test_redis,
    groundwatch_cmd,
    log_tail,
    parse_metrics,
    processes,
    snapshot,
    start,
    total,
    write_config,
)
from tests.judge_server import CHAT_PATH, EMBEDDINGS_PATH, JudgeServer, Reply
from tests.prom_helpers import wait_until
from tests.test_pipeline import enqueue_batches
from workers.children import STOP_MARGIN_S

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

KEY_VAR = "GW_TEST_JUDGE_KEY"
KEY = "sk-worker-test-0d9f8e7c6b5a4"


def message(i: int, faithful: bool = True) -> dict[str, Any]:
    answer = ("Deleted buckets are kept for 30 days." if faithful
              else "Deleted buckets are gone at once and cannot be restored.")
    return LogRecord(
        request_id=f"j{i:03d}", timestamp=datetime.now(UTC), route="docs",
        question=f"How long are deleted buckets kept? Ask jane{i}@example.com",
        contexts=("Deleted buckets are kept for 30 days, then purged.",), answer=answer,
    ).to_message()


def judge_section(url: str, **extra: Any) -> str:
    lines = ["[judge]", f'base_url = "{url}"', 'model = "stub-judge"',
             f'api_key_env = "{KEY_VAR}"', "timeout_s = 5", "max_concurrency = 4",
             "[judge.embeddings]", 'source = "openai"',
             "[judge.cascade]", f"share = {extra.pop('share', 1.0)}",
             "[judge.circuit]", f"failures = {extra.pop('failures', 5)}",
             f"cooldown_s = {extra.pop('cooldown_s', 60)}",
             "[judge.budget]", f"tokens_per_day = {extra.pop('tokens_per_day', 0)}",
             "usd_per_hour = 0",
             "[judge.prices.stub-judge]", "prompt = 0.5", "completion = 1.5",
             "[judge.prices.text-embedding-3-small]", "prompt = 0.5"]
    return "\n".join(lines) + "\n"


def configure(tmp_path: Path, url: str, **extra: Any) -> Path:
    path = write_config(tmp_path, scorer="lexical", batch_size=10, pool="threads",
                        concurrency=2)
    text = path.read_text().replace('[scoring]\nscorer = "lexical"',
                                    '[scoring]\nscorer = "lexical"\njudge = "ragas"')
    path.write_text(text + judge_section(url, **extra))
    return path


@pytest.fixture
def redis_db() -> Any:
    flush_test_redis()
    yield
    flush_test_redis()


def _by_scorer(store: Store) -> Counter[tuple[str, str]]:
    return Counter((s.scorer, s.outcome) for s in store.queries.scores())


def test_the_cascade_runs_in_a_real_worker_and_counts_everything(
        tmp_path: Path, redis_db: None) -> None:
    with JudgeServer() as server:
        config = configure(tmp_path, server.url)
        enqueue_batches(config, [[message(i, faithful=i % 2 == 0) for i in range(10)],
                                 [message(i) for i in range(10, 20)]])
        store = Store(f"sqlite:///{tmp_path}/gw.db")
        log = tmp_path / "w.log"
        with processes() as procs:
            start(procs, groundwatch_cmd(config, "worker"), log, env={KEY_VAR: KEY})

            def done() -> bool:
                counts = _by_scorer(store)
                return sum(n for (scorer, _), n in counts.items() if scorer == "ragas") == 80
            wait_until(done, timeout=120, what=f"judge scores: {log_tail(log)}")
            live = parse_metrics(snapshot(tmp_path / "prom"))  # judge_up is a live gauge
        assert total(live, "groundwatch_judge_up", judge="ragas") == 1
        counts = _by_scorer(store)
        assert counts[("lexical", "ok")] == 80 and counts[("ragas", "ok")] == 80
        assert store.queries.count_items_by_status()["scored"] == 20
        unfaithful = {s.request_id: s.value for s in store.queries.scores()
                      if s.scorer == "ragas" and s.metric == "faithfulness"}
        assert unfaithful["j001"] == 0.0 and unfaithful["j000"] == 1.0
        # 9 calls per item: 7 chat, 2 embeddings (answer relevance with strictness 1).
        # (Besides, each judge process asks GET /props once for the server's slots.)
        assert server.count(CHAT_PATH) == 20 * 7 and server.count(EMBEDDINGS_PATH) == 20 * 2
        parsed = parse_metrics(snapshot(tmp_path / "prom"))
        assert total(parsed, "groundwatch_judge_requests_total", status="ok") == 180
        prompt = server.usage_served["prompt_tokens"]
        completion = server.usage_served["completion_tokens"]
        assert total(parsed, "groundwatch_judge_tokens_total", kind="prompt") == prompt
        assert total(parsed, "groundwatch_judge_tokens_total", kind="completion") == completion
        assert total(parsed, "groundwatch_judge_cost_usd_total") == pytest.approx(
            (prompt * 0.5 + completion * 1.5) / 1000)
        assert total(parsed, "groundwatch_cascade_picked_total", reason="random") == 20
        assert total(parsed, "groundwatch_cascade_compared_total") > 0
        assert total(parsed, "groundwatch_judge_redactions_total", kind="email") >= 20
        assert total(parsed, "groundwatch_score_outcomes_total", scorer="ragas",
                     outcome="ok") == 80
        # The key went to the server as the bearer token, and into no log line.
        assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in server.requests)
        assert KEY not in log.read_text(errors="replace")
        assert "jane1@example.com" not in server.wire_text()
        store.close()


def test_a_judge_outage_keeps_the_cheap_scores_and_records_every_item(
        tmp_path: Path, redis_db: None) -> None:
    with JudgeServer() as server:
        server.default = Reply.status(500)
        config = configure(tmp_path, server.url, failures=3, cooldown_s=300)
        enqueue_batches(config, [[message(i) for i in range(10)],
                                 [message(i) for i in range(10, 20)]])
        store = Store(f"sqlite:///{tmp_path}/gw.db")
        log = tmp_path / "w.log"
        with processes() as procs:
            start(procs, groundwatch_cmd(config, "worker"), log, env={KEY_VAR: KEY})

            def done() -> bool:
                return sum(_by_scorer(store).values()) == 160
            wait_until(done, timeout=120, what=f"scores: {log_tail(log)}")
            live = parse_metrics(snapshot(tmp_path / "prom"))
        assert total(live, "groundwatch_judge_up", judge="ragas") == 0
        counts = _by_scorer(store)
        assert counts == {("lexical", "ok"): 80, ("ragas", "error"): 80}
        assert {s.reason for s in store.queries.scores() if s.scorer == "ragas"} == {"unavailable"}
        assert store.queries.count_items_by_status()["scored"] == 20
        # The circuit opened after 3 failed calls: what was sent is bounded by the calls in
        # flight then (4 per process) and their one retry each, not by 20 items x 7 prompts.
        assert server.count(CHAT_PATH) + server.count(EMBEDDINGS_PATH) <= 3 + 2 * 4
        parsed = parse_metrics(snapshot(tmp_path / "prom"))
        assert total(parsed, "groundwatch_judge_not_judged_total", reason="circuit_open") >= 15
        assert "judge circuit open" in log.read_text()
        store.close()


def test_a_budget_shared_in_redis_stops_the_judge_mid_run(tmp_path: Path,
                                                          redis_db: None) -> None:
    with JudgeServer() as server:
        # ~5k prompt tokens per item with ragas: 12k allows two or three items, then stops.
        config = configure(tmp_path, server.url, tokens_per_day=12_000)
        enqueue_batches(config, [[message(i) for i in range(10)]])
        store = Store(f"sqlite:///{tmp_path}/gw.db")
        log = tmp_path / "w.log"
        with processes() as procs:
            start(procs, groundwatch_cmd(config, "worker"), log, env={KEY_VAR: KEY})

            def done() -> bool:
                return sum(_by_scorer(store).values()) == 80
            wait_until(done, timeout=120, what=f"scores: {log_tail(log)}")
        judge_scores = [s for s in store.queries.scores() if s.scorer == "ragas"]
        assert {(s.outcome, s.reason) for s in judge_scores} == {("ok", None),
                                                                 ("error", "budget")}
        skipped = {s.request_id for s in judge_scores if s.reason == "budget"}
        fully = {s.request_id for s in judge_scores} - skipped
        # The item in flight when the limit was reached may be judged in part.
        assert len(fully) >= 2 and len(skipped) >= 6 and len(fully) + len(skipped) == 10
        parsed = parse_metrics(snapshot(tmp_path / "prom"))
        assert total(parsed, "groundwatch_budget_exhausted_total") == len(skipped)
        served = server.usage_served["prompt_tokens"] + server.usage_served["completion_tokens"]
        # Hard: what was spent past the limit is only what was in flight when it was reached.
        assert served < 12_000 + 4 * 1500
        store.close()


def test_a_silently_changed_judge_shows_as_golden_drift(tmp_path: Path, redis_db: None) -> None:
    golden = tmp_path / "golden.jsonl"
    golden.write_text("\n".join(json.dumps({
        "request_id": f"g{i}", "question": "How long are deleted buckets kept?",
        "contexts": ["Deleted buckets are kept for 30 days, then purged."],
        "answer": "Deleted buckets are kept for 30 days."}) for i in range(3)) + "\n")
    with JudgeServer() as server:
        config = configure(tmp_path, server.url)
        config.write_text(config.read_text().replace(
            "[judge.embeddings]", f'[judge.golden]\npath = "{golden}"\ninterval_s = 10\n'
                                  "[judge.embeddings]"))
        store = Store(f"sqlite:///{tmp_path}/gw.db")
        log = tmp_path / "w.log"
        with processes() as procs:
            start(procs, groundwatch_cmd(config, "worker"), log, env={KEY_VAR: KEY})

            def gauge(name: str) -> float:
                return total(parse_metrics(snapshot(tmp_path / "prom")), name,
                             metric="faithfulness")
            wait_until(lambda: gauge("groundwatch_golden_score") == 1.0, timeout=60,
                       what=f"the first golden run: {log_tail(log)}")
            assert gauge("groundwatch_golden_drift") == 0.0
            # The judge "changes" behind the same model name: every claim unsupported now.
            server.policy("NLIStatementOutput", lambda schema, messages: {"statements": [
                {"statement": "x", "reason": "changed", "verdict": 0}]})
            wait_until(lambda: gauge("groundwatch_golden_drift") == 1.0, timeout=60,
                       what=f"a second golden run: {log_tail(log)}")
            assert gauge("groundwatch_golden_score") == 0.0
        parsed = parse_metrics(snapshot(tmp_path / "prom"))
        assert total(parsed, "groundwatch_golden_runs_total", result="ok") >= 2
        store.close()


@pytest.mark.parametrize(("pool", "sig"), [("solo", "SIGTERM"), ("threads", "SIGTERM"),
                                          ("prefork", "SIGTERM"), ("solo", "SIGQUIT"),
                                          ("threads", "SIGQUIT"), ("prefork", "SIGQUIT")])
def test_a_worker_stopped_with_judge_calls_in_flight_hands_its_batch_back_in_bounded_time(
        tmp_path: Path, redis_db: None, pool: str, sig: str) -> None:
    with JudgeServer() as server:
        server.default = Reply.slow(30)  # slow but healthy: far past the stop's grace
        config = configure(tmp_path, server.url)
        text = config.read_text().replace('judge = "ragas"', 'judge = "compact"')
        text = text.replace('pool = "threads"\nconcurrency = 2',
                            f'pool = "{pool}"\nconcurrency = 1\nstop_grace_s = 2')
        config.write_text(text.replace("timeout_s = 5", "timeout_s = 120"))
        enqueue_batches(config, [[message(i) for i in range(10)]])
        store = Store(f"sqlite:///{tmp_path}/gw.db")
        log = tmp_path / "w.log"
        with processes() as procs:
            worker = start(procs, groundwatch_cmd(config, "worker"), log, env={KEY_VAR: KEY})
            wait_until(lambda: server.count(CHAT_PATH) >= 4, timeout=60,
                       what=f"judge calls in flight: {log_tail(log)}")
            worker.send_signal(getattr(signal, sig))
            stopped = time.monotonic()
            # Within the grace (2 s) and the time to hand back and close, not the calls' 30 s.
            worker.wait(timeout=STOP_MARGIN_S + 2)
            took = time.monotonic() - stopped
        text = log.read_text(errors="replace")
        assert took < STOP_MARGIN_S + 2, text[-3000:]
        assert "batch of 10" in text and "handed back to the queue" in text, text[-3000:]
        assert "failed for good" not in text and "Traceback" not in text, text[-3000:]
        # Nothing of it was stored: no scores, no dead letters; the items wait in the queue.
        assert store.queries.scores() == [] and store.queries.failures() == []
        parsed = parse_metrics(snapshot(tmp_path / "prom"))
        assert total(parsed, "groundwatch_task_retries_total", kind="worker_stopping") == 1
        # A second worker, with the judge answering now, scores the batch once, from the start.
        server.default = Reply.valid()
        server.clear()
        with processes() as procs:
            start(procs, groundwatch_cmd(config, "worker"), log, env={KEY_VAR: KEY})
            wait_until(lambda: store.queries.count_items_by_status().get("scored") == 10,
                       timeout=60, what=f"the batch scored again: {log_tail(log)}")
        counts = _by_scorer(store)
        assert counts[("compact", "ok")] == 40 and counts[("lexical", "ok")] == 40
        assert server.count(CHAT_PATH) == 10 and store.queries.failures() == []
        store.close()
