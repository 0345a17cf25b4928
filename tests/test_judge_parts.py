"""The judge's parts that need no server: circuit breaker, Retry-After, budgets (in memory and
in the real Redis), the response cache, the cascade's pick, the compact judge's parsing."""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from evaluator.config import Config, JudgeBudgetConfig, JudgeCascadeConfig, load_config
from evaluator.judge.calls import (
    CallLog,
    CircuitBreaker,
    Permit,
    looks_unparseable,
    retry_after_seconds,
)
from evaluator.judge.compact import Judgement, Unparseable, outcomes, parse, quote_found
from evaluator.judge.scorer import _not_judged
from evaluator.judge.shared import Budget, MemoryState, RedisState, ResponseCache
from evaluator.judge.types import JudgeInput
from evaluator.records import LogRecord
from evaluator.scorers.base import ItemResult, MetricResult, ScorerRun, Usage, WholeBatchScorer
from evaluator.scorers.explanation import Verdict
from evaluator.scorers.gates import apply_gates
from evaluator.scorers.lexical import LexicalScorer
from evaluator.scoring import Scoring
from tests.gw_helpers import REDIS_HOST, REDIS_PORT, TEST_REDIS_DB

NOW = datetime(2026, 12, 1, tzinfo=UTC)


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_the_circuit_opens_after_n_failures_lets_one_trial_through_and_closes() -> None:
    clock = Clock(0.0)
    circuit = CircuitBreaker(3, 10.0, clock=clock)
    for _ in range(2):
        permit = circuit.allow()
        assert permit is not None
        circuit.failure(permit)
    assert circuit.state == "closed"
    circuit.failure(Permit(0))
    assert circuit.state == "open" and not circuit.allow()
    clock.t = 9.9
    assert not circuit.allow()
    clock.t = 10.0
    assert circuit.state == "half_open"
    trial = circuit.allow()         # the one trial
    assert trial is not None and trial.trial
    assert not circuit.allow()      # no second while it runs
    circuit.failure(trial)          # the trial failed: open again for a full cool-down
    assert circuit.state == "open"
    clock.t = 20.0
    trial = circuit.allow()
    assert trial is not None
    circuit.success(trial)
    assert circuit.state == "closed" and circuit.allow() and circuit.last_ok is True
    assert circuit.opened_total == 1


def test_only_the_trial_closes_or_reopens_the_circuit() -> None:
    """Issue 20: the circuit closed 18 s into a 60 s cool-down because a reply to a call
    sent before it opened counted as the trial."""
    clock = Clock(0.0)
    circuit = CircuitBreaker(2, 60.0, clock=clock)
    slow = circuit.allow()  # a call in flight while others fail
    assert slow is not None
    for _ in range(2):
        circuit.failure(circuit.allow() or Permit(0))
    assert circuit.state == "open"
    clock.t = 18.0
    circuit.success(slow)  # its reply comes late: not the trial
    assert circuit.state == "open" and not circuit.allow()
    circuit.failure(slow)  # nor does an old call's failure restart the cool-down
    clock.t = 60.0
    trial = circuit.allow()
    assert trial is not None and trial.trial
    circuit.success(slow)  # still not the trial, even half-open
    assert circuit.state == "half_open" and not circuit.allow()
    circuit.success(trial)
    assert circuit.state == "closed"


def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    circuit = CircuitBreaker(2, 10.0, clock=Clock(0.0))
    circuit.failure(Permit(0))
    circuit.success(Permit(0))
    circuit.failure(Permit(0))
    assert circuit.state == "closed"


def test_retry_after_reads_seconds_and_http_dates() -> None:
    import httpx

    assert retry_after_seconds(httpx.Headers({"Retry-After": "3"})) == 3.0
    assert retry_after_seconds(httpx.Headers({"Retry-After": "1.5"})) == 1.5
    assert retry_after_seconds(httpx.Headers({})) is None
    assert retry_after_seconds(httpx.Headers({"Retry-After": "soon"})) is None
    date = "Wed, 21 Oct 2015 07:28:10 GMT"
    assert retry_after_seconds(httpx.Headers({"Retry-After": date}),
                               now=1445412480.0) == pytest.approx(10.0)
    assert retry_after_seconds(httpx.Headers({"Retry-After": "-5"})) == 0.0


def _chat(content: str, finish: str = "stop") -> dict[str, object]:
    return {"choices": [{"message": {"content": content}, "finish_reason": finish}]}


def test_replies_that_are_not_a_json_object_are_unparseable() -> None:
    assert not looks_unparseable(_chat('{"rating": 2}'))
    assert not looks_unparseable(_chat('```json\n{"rating": 2}\n```'))
    assert looks_unparseable(_chat("Sure! The verdict is supported."))
    assert looks_unparseable(_chat('{"rating": '))
    assert looks_unparseable(_chat('{"rating": 2}', finish="length"))
    assert looks_unparseable(_chat("[1, 2]"))
    assert not looks_unparseable({"data": [{"embedding": [0.1]}]})  # embeddings: no text


@pytest.mark.parametrize("state", ["memory", "redis"])
def test_budgets_are_hard_per_window_and_shared(state: str) -> None:
    clock = Clock()
    if state == "redis":
        url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{TEST_REDIS_DB}"
        redis.Redis.from_url(url).flushdb()
        one, two = RedisState(url), RedisState(url)  # two worker processes, one Redis
    else:
        one = two = MemoryState(clock=clock)
    config = JudgeBudgetConfig(tokens_per_day=1000, usd_per_hour=0.5)
    a, b = Budget(config, one, clock=clock), Budget(config, two, clock=clock)
    assert a.exhausted() is None
    a.spend(600, 0.1)
    b.spend(300, 0.1)
    assert a.exhausted() is None and b.exhausted() is None
    b.spend(100, 0.0)                      # 1000 tokens today: spent, for both
    assert a.exhausted() == "judge.budget.tokens_per_day"
    assert b.exhausted() == "judge.budget.tokens_per_day"
    clock.t += 86400                       # the next UTC day: tokens free again
    assert a.exhausted() is None
    a.spend(10, 0.5)                       # but this hour's dollars are spent
    assert b.exhausted() == "judge.budget.usd_per_hour"
    clock.t += 3600
    assert b.exhausted() is None
    if state == "redis":
        one.close()
        two.close()


def test_an_unreadable_budget_counts_as_spent() -> None:
    # Nothing listens on port 1: the budget cannot be read, so the judge must not be called.
    budget = Budget(JudgeBudgetConfig(), RedisState("redis://127.0.0.1:1/0", timeout_s=0.2))
    assert budget.exhausted() == "judge.budget (unreadable)"


def test_zero_means_no_limit() -> None:
    budget = Budget(JudgeBudgetConfig(tokens_per_day=0, usd_per_hour=0), MemoryState())
    budget.spend(10**9, 10**6)
    assert budget.exhausted() is None


def test_the_cache_key_covers_metric_model_prompt_version_and_inputs() -> None:
    cache = ResponseCache(MemoryState(), 60)
    base = ("faithfulness", "m", "v1", ["q", "a", ["c"]])
    keys = {cache.key(*base), cache.key("groundedness", *base[1:]),
            cache.key(base[0], "m2", *base[2:]), cache.key(*base[:2], "v2", base[3]),
            cache.key(*base[:3], ["q", "a", ["c", "d"]])}
    assert len(keys) == 5
    cache.put(cache.key(*base), {"outcome": "ok", "value": 0.5})
    assert cache.get(cache.key(*base)) == {"outcome": "ok", "value": 0.5}
    off = ResponseCache(MemoryState(), 0)
    off.put("k", {"x": 1})
    assert off.get("k") is None


def _records(n: int) -> list[LogRecord]:
    return [LogRecord(request_id=f"r{i}", timestamp=NOW, question="How long must passwords be?",
                      contexts=("Passwords must be at least 12 characters long.",),
                      answer="Passwords must be at least 12 characters long.")
            for i in range(n)]


class FixedScorer(WholeBatchScorer):
    """A cheap scorer whose faithfulness is given per request id."""

    name, version = "cheap", "1"

    def __init__(self, values: dict[str, float]) -> None:
        self.values = values

    def score_gated(self, gated):  # type: ignore[no-untyped-def]
        return [ItemResult(g.record.request_id,
                           (MetricResult.ok("faithfulness", self.values[g.record.request_id]),))
                for g in gated], Usage()


def test_the_cascade_picks_the_random_share_stably_plus_low_and_band_items() -> None:
    records = _records(2000)
    cascade = JudgeCascadeConfig(share=0.1, low=0.3, band=(0.45, 0.55))
    scoring = Scoring([LexicalScorer()], judge=LexicalScorer(), cascade=cascade, salt="s")
    share = sum(scoring.in_share(r.request_id) for r in records) / len(records)
    assert 0.08 < share < 0.12
    again = Scoring([LexicalScorer()], judge=LexicalScorer(), cascade=cascade, salt="s")
    assert [again.in_share(r.request_id) for r in records[:200]] == \
        [scoring.in_share(r.request_id) for r in records[:200]]
    other_salt = Scoring([LexicalScorer()], judge=LexicalScorer(), cascade=cascade, salt="t")
    assert [other_salt.in_share(r.request_id) for r in records[:200]] != \
        [scoring.in_share(r.request_id) for r in records[:200]]

    values = {r.request_id: (0.1, 0.5, 0.9)[i % 3] for i, r in enumerate(records)}
    cheap = FixedScorer(values)
    gated = apply_gates(records)
    run = ScorerRun("cheap", "1", tuple(cheap.score_gated(gated)[0]))
    picked = dict((g.record.request_id, why) for g, why in scoring.pick(run, gated))
    for r in records:
        rid = r.request_id
        if scoring.in_share(rid):
            assert picked[rid] == "random"
        elif values[rid] == 0.1:
            assert picked[rid] == "low"
        elif values[rid] == 0.5:
            assert picked[rid] == "band"
        else:
            assert rid not in picked


def test_the_judge_run_covers_only_the_picked_items_and_says_why() -> None:
    records = _records(50)
    cascade = JudgeCascadeConfig(share=0.0, low=0.3, band=(0.45, 0.55))
    values = {r.request_id: (0.1 if i < 5 else 0.9) for i, r in enumerate(records)}
    scoring = Scoring([FixedScorer(values)], judge=LexicalScorer(), cascade=cascade)
    batch = scoring.score(records)
    cheap, judge = batch.runs
    assert len(cheap.items) == 50
    assert [i.request_id for i in judge.items] == [f"r{i}" for i in range(5)]
    assert set(judge.selection.values()) == {"low"}


def test_no_judge_no_second_run() -> None:
    batch = Scoring([LexicalScorer()]).score(_records(3))
    assert len(batch.runs) == 1


ITEM = JudgeInput("How long must passwords be?", "Passwords can be any length. Reset by mail.",
                  ("Passwords must be at least 12 characters long.",
                   "You can reset your password by e-mail."))


def test_compact_values_are_computed_and_quotes_are_checked() -> None:
    judgement = Judgement.model_validate({
        "claims": [
            {"claim": "Passwords can be any length.", "verdict": "contradicted", "passage": 1,
             "quote": "at least 12 characters long"},
            {"claim": "Reset by mail.", "verdict": "supported", "passage": 2,
             "quote": "reset your password by e-mail"},
            {"claim": "Reset is instant.", "verdict": "supported", "passage": 2,
             "quote": "resets are instant"},   # a quote the passage does not contain
        ],
        "answer_rating": 2, "noncommittal": False, "context_rating": 1})
    out = outcomes(judgement, ITEM)
    assert out["faithfulness"].value == pytest.approx(2 / 3)
    assert out["groundedness"].value == pytest.approx(1 / 3)  # only the real quote counts
    assert out["answer_relevance"].value == 1.0
    assert out["context_relevance"].value == 0.5
    claims = out["faithfulness"].claims
    assert claims is not None
    assert [c.verdict for c in claims] == [Verdict.CONTRADICTED, Verdict.SUPPORTED,
                                           Verdict.SUPPORTED]
    assert claims[2].reason == "the quote is not in the passage cited"
    assert claims[0].evidence_context == 0


def test_a_judgement_not_about_the_item_is_unparseable() -> None:
    """Issue 20: a small model's nonsense ("claim 'cai', quote 'quote'") is no judgement."""
    from evaluator.judge.compact import check

    def judged(*claims: tuple[str, str, int | None, str]) -> Judgement:
        return Judgement.model_validate({
            "claims": [{"claim": c, "verdict": v, "passage": p, "quote": q}
                       for c, v, p, q in claims],
            "answer_rating": 1, "noncommittal": False, "context_rating": 1})

    with pytest.raises(Unparseable, match=r"claims are not the answer's.*'cai'"):
        check(judged(("cai", "supported", 1, "")), ITEM)
    with pytest.raises(Unparseable, match="quotes are not in the passage"):
        check(judged(("Reset by mail.", "supported", 2, "quote"),
                     ("Passwords can be any length.", "contradicted", 1, "quote quote")), ITEM)
    # The example above holds: its claims are the answer's, two of its three quotes real.
    check(Judgement.model_validate({
        "claims": [{"claim": "Passwords can be any length.", "verdict": "contradicted",
                    "passage": 1, "quote": "at least 12 characters long"},
                   {"claim": "Reset by mail.", "verdict": "supported", "passage": 2,
                    "quote": "reset your password by e-mail"},
                   {"claim": "Reset is instant.", "verdict": "supported", "passage": 2,
                    "quote": "resets are instant"}],
        "answer_rating": 2, "noncommittal": False, "context_rating": 1}), ITEM)
    check(judged(), ITEM)  # no claims: nothing to check (faithfulness is not applicable)


def test_compact_no_claims_is_nan_and_noncommittal_is_zero() -> None:
    out = outcomes(Judgement.model_validate({"claims": [], "answer_rating": 2,
                                             "noncommittal": True, "context_rating": 0}), ITEM)
    assert math.isnan(out["faithfulness"].value)
    assert out["faithfulness"].empty_reason == "no_claims"
    assert out["answer_relevance"].value == 0.0


@pytest.mark.parametrize("text", ["Sure, supported.", '{"claims": []}',
                                  '{"claims": [], "answer_rating": 7, "context_rating": 1}',
                                  '{"claims": [{"claim": "x", "verdict": "maybe"}], '
                                  '"answer_rating": 1, "context_rating": 1}'])
def test_compact_rejects_what_does_not_validate(text: str) -> None:
    with pytest.raises(Unparseable):
        parse(text)


def test_compact_accepts_a_fenced_block() -> None:
    parsed = parse('```json\n{"claims": [], "answer_rating": 1, "context_rating": 2}\n```')
    assert parsed.context_rating == 2


def test_quotes_are_compared_with_case_and_spacing_folded() -> None:
    assert quote_found("AT LEAST  12 characters", "Passwords must be at least 12 characters.")
    assert not quote_found("", "anything")
    assert not quote_found("at most 12", "at least 12")


def test_the_judge_config_names_a_variable_not_a_key() -> None:
    from evaluator.config import load_config
    from evaluator.errors import ConfigError

    with pytest.raises(ConfigError, match="NAME of an environment variable"):
        load_config(None, environ={"GROUNDWATCH__JUDGE__API_KEY_ENV": "sk-abc123-def"})
    assert Config().judge.configured is False


def test_the_visibility_timeout_makes_room_for_the_judge() -> None:
    from workers.app import visibility_timeout

    env = {"GROUNDWATCH__SCORING__SCORER": "embedded", "GROUNDWATCH__BROKER__BATCH_SIZE": "100"}
    assert visibility_timeout(load_config(None, environ=env)) == 400
    with_judge = {**env, "GROUNDWATCH__JUDGE__BASE_URL": "http://127.0.0.1:9/v1",
                  "GROUNDWATCH__JUDGE__MODEL": "m"}
    assert visibility_timeout(load_config(None, environ=with_judge)) == 1900
    judge_only = {**with_judge, "GROUNDWATCH__SCORING__SCORER": "compact"}
    assert visibility_timeout(load_config(None, environ=judge_only)) == 500


def test_ragas_is_imported_only_after_telemetry_is_off() -> None:
    import subprocess
    import sys

    code = ("import os, sys\n"
            "import evaluator.judge.ragas_backend as backend\n"
            "assert 'ragas' not in sys.modules\n"
            "assert os.environ['RAGAS_DO_NOT_TRACK'] == 'true'\n"
            "print(backend.ragas_version())\n")
    env = {k: v for k, v in os.environ.items() if k != "RAGAS_DO_NOT_TRACK"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "0.4.3"


def test_the_judge_bench_compares_the_two_modes(tmp_path: Path) -> None:
    """`make bench`'s judge table on a few items: both modes run, the JSON has its keys."""
    import json

    from benchmarks.judge import main

    out = tmp_path / "judge.json"
    assert main(["--items", "6", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    for key in ("ragas_calls_per_item", "ragas_prompt_tokens_per_item",
                "compact_calls_per_item", "compact_prompt_tokens_per_item"):
        assert data[key] > 0
    assert data["compact_calls_per_item"] == 1.0
    assert data["ragas_calls_per_item"] > 5
    assert data["prompt_token_ratio"] >= 4


def test_an_item_is_counted_unjudged_only_when_a_metric_lost_its_value() -> None:
    # Seen in test_judge_worker's budget test (8 counted against 7 skipped): a call refused by
    # the budget whose metric still got a value (one of ResponseGroundedness's two judges
    # answered) counted the item in budget_exhausted_total though every score was ok.
    refused = CallLog(failure="budget")
    judged = [MetricResult.ok("faithfulness", 0.9), MetricResult.ok("groundedness", 0.8)]
    partly = [MetricResult.ok("faithfulness", 0.9), MetricResult.error("groundedness", "budget")]
    assert _not_judged(refused, judged) is None
    assert _not_judged(refused, partly) == "budget"
    assert _not_judged(CallLog(failure="circuit_open"), partly) == "circuit_open"
    assert _not_judged(CallLog(failure="timeout"), partly) is None
    assert _not_judged(CallLog(), partly) is None
