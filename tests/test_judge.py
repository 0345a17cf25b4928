"""The LLM judge over HTTP: ragas's real code path (and the compact judge) against the scripted
OpenAI-protocol server, through groundwatch's transport, budgets, circuit and cache.

Each test asserts the number of requests the server saw (no amplification), the outcomes, and
that every item ends with a result. The same paths through a real Celery worker are in
tests/test_judge_worker.py.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from evaluator.config import Config, MetricsConfig, load_config
from evaluator.errors import Stopping, TransientError
from evaluator.judge.bounds import streamed
from evaluator.judge.scorer import JudgeScorer
from evaluator.judge.types import FINAL_ATTEMPT
from evaluator.records import LogRecord
from evaluator.scorers.base import (
    ItemResult,
    NotJudged,
    Outcome,
    ScoredBatch,
    ScorerRun,
    Usage,
)
from evaluator.scorers.gates import apply_gates
from evaluator.stopping import STOP, StopRequest
from metrics.registry import Metrics
from tests.judge_server import CHAT_PATH, EMBEDDINGS_PATH, JudgeServer, Reply, free_port
from tests.prom_helpers import wait_until

pytestmark = [pytest.mark.filterwarnings("ignore:FUNCTIONS is deprecated:DeprecationWarning"),
              pytest.mark.timeout(120)]

KEY_VAR = "GW_TEST_JUDGE_KEY"
KEY = "sk-test-7f3a9c1e5b2d4f6a8c0e"
CONTEXT = "Passwords must be at least 12 characters long. They expire every 90 days."


def record(rid: str, answer: str = "Passwords must be at least 12 characters long.",
           question: str = "How long must passwords be?",
           contexts: tuple[str, ...] = (CONTEXT,)) -> LogRecord:
    return LogRecord(request_id=rid, timestamp=datetime.now(UTC), question=question,
                     contexts=contexts, answer=answer)


def judge_config(url: str, **overrides: Any) -> Config:
    env = {"GROUNDWATCH__JUDGE__BASE_URL": url, "GROUNDWATCH__JUDGE__MODEL": "stub-judge",
           "GROUNDWATCH__JUDGE__API_KEY_ENV": KEY_VAR,
           "GROUNDWATCH__JUDGE__EMBEDDINGS__SOURCE": "openai",
           "GROUNDWATCH__JUDGE__TIMEOUT_S": "5",
           "GROUNDWATCH__JUDGE__CACHE_TTL_S": "0",
           # No broker: budget and cache in this process's memory.
           "GROUNDWATCH__BROKER__URL": "filesystem:///nonexistent"}
    for key, value in overrides.items():
        env["GROUNDWATCH__JUDGE__" + key.upper()] = str(value)
    return load_config(None, environ=env)


@pytest.fixture
def server() -> Iterator[JudgeServer]:
    os.environ[KEY_VAR] = KEY
    with JudgeServer() as s:
        yield s
    os.environ.pop(KEY_VAR, None)


@pytest.fixture
def judges() -> Iterator[list[JudgeScorer]]:
    made: list[JudgeScorer] = []
    yield made
    for j in made:
        j.close()


def build(judges: list[JudgeScorer], url: str, mode: str = "ragas", **overrides: Any) \
        -> JudgeScorer:
    judge = JudgeScorer(judge_config(url, **overrides), mode)
    judge.warm_up()
    judges.append(judge)
    return judge


def score(judge: JudgeScorer, records: list[LogRecord]) -> tuple[list[ItemResult], Usage]:
    return judge.score_gated(apply_gates(records))


def outcomes(item: ItemResult) -> dict[str, tuple[str, Any]]:
    return {m.metric: (m.outcome.value, m.value if m.outcome is Outcome.OK else m.reason)
            for m in item.metrics}


def test_valid_replies_give_four_scores_claims_and_exact_usage(server: JudgeServer,
                                                               judges: list[JudgeScorer]) -> None:
    judge = build(judges, server.url)
    items, usage = score(judge, [record("good"),
                                 record("bad", answer="Bananas grow on the moon in winter.")])
    good, bad = (outcomes(i) for i in items)
    assert {m: o for m, (o, _) in good.items()} == dict.fromkeys(
        ("context_relevance", "answer_relevance", "faithfulness", "groundedness"), "ok")
    assert good["faithfulness"][1] == 1.0 and bad["faithfulness"][1] == 0.0
    assert good["groundedness"][1] > bad["groundedness"][1]
    claims = items[1].explanation.claims
    assert claims and claims[0].verdict.value == "unsupported"
    # Per item: faithfulness 2, groundedness 2, context relevance 2, answer relevance 1 chat
    # calls (strictness 1) and 2 embeddings calls.
    assert server.count(CHAT_PATH) == 14 and server.count(EMBEDDINGS_PATH) == 4
    assert usage.judge_calls == 18
    assert usage.prompt_tokens == server.usage_served["prompt_tokens"] > 0
    assert usage.completion_tokens == server.usage_served["completion_tokens"] > 0
    assert usage.judge_statuses["ok"] == 18
    trace = items[0].explanation.judge
    assert trace is not None and trace.calls == 9 and trace.model == "stub-judge"
    # The key is sent, as the bearer token, and only there.
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in server.requests)


@pytest.mark.parametrize("bad", ["malformed", "truncated", "wrong_schema"])
def test_a_judge_that_always_answers_badly_costs_at_most_two_calls_per_prompt(
        server: JudgeServer, judges: list[JudgeScorer], bad: str) -> None:
    server.default = bad
    judge = build(judges, server.url)
    items, usage = score(judge, [record("r1")])
    result = outcomes(items[0])
    assert {m: o for m, (o, _) in result.items()} == dict.fromkeys(result, "error")
    assert {r for _, r in result.values()} == {"unparseable"}
    per_title = {t: server.count(CHAT_PATH, title=t) for t in (
        "StatementGeneratorOutput", "NLIStatementOutput", "ResponseGroundednessOutput",
        "ContextRelevanceOutput", "AnswerRelevanceOutput")}
    # ragas's defaults cost 30-40 calls here; ours: 2 per prompt (groundedness and context
    # relevance have two prompts each; faithfulness never gets to its second). A reply cut
    # at max_tokens is asked once (issue 20): neither instructor's re-ask, which hands it
    # back for repair, nor ragas's own loop, which sends the same request, is made.
    calls = 1 if bad == "truncated" else 2
    assert per_title == {"StatementGeneratorOutput": calls, "NLIStatementOutput": 0,
                         "ResponseGroundednessOutput": 2 * calls,
                         "ContextRelevanceOutput": 2 * calls, "AnswerRelevanceOutput": calls}
    trace = items[0].explanation.judge
    assert trace is not None and trace.reply_excerpt  # what the judge said, for explain
    if bad != "wrong_schema":
        assert usage.judge_statuses["unparseable"] == 6 * calls


def test_ragas_judges_the_faithfulness_of_an_answer_to_no_question(
        server: JudgeServer, judges: list[JudgeScorer]) -> None:
    """make bench-judge found it: ragas's Faithfulness raises "user_input is missing" for an
    item without a question (a claim checked against a page), which ended ``internal``."""
    judge = build(judges, server.url)
    items, _ = score(judge, [record("no-question", question="")])
    result = outcomes(items[0])
    assert result["faithfulness"] == ("ok", 1.0)
    assert result["answer_relevance"][0] == result["context_relevance"][0] == "not_applicable"


def test_a_reply_that_loops_is_not_asked_again_in_ragas_either(
        server: JudgeServer, judges: list[JudgeScorer]) -> None:
    server.default = Reply.content('{"statements": ["the quote the quote the quote the quote '
                                   'the quote the quote', "stop")
    judge = build(judges, server.url)
    items, usage = score(judge, [record("r1")])
    assert {r for _, r in outcomes(items[0]).values()} == {"unparseable"}
    # One call per prompt: faithfulness 1, groundedness 2, context relevance 2, answer
    # relevance 1 (each loop's second request, and each re-ask, refused without a call).
    assert server.count(CHAT_PATH) == 6 and usage.judge_calls == 6


def test_compact_judges_in_one_call_and_repairs_once(server: JudgeServer,
                                                     judges: list[JudgeScorer]) -> None:
    judge = build(judges, server.url, mode="compact")
    items, usage = score(judge, [record("good"),
                                 record("bad", answer="Bananas grow on the moon in winter.")])
    assert server.count(CHAT_PATH) == 2 and usage.judge_calls == 2
    assert outcomes(items[0])["faithfulness"] == ("ok", 1.0)
    assert outcomes(items[1])["faithfulness"] == ("ok", 0.0)
    body = next(r.body for r in server.requests if r.path == CHAT_PATH)
    assert body["response_format"]["type"] == "json_schema"
    server.clear()
    server.script("malformed")  # one bad reply, then valid: repaired in the second call
    items, _ = score(judge, [record("again")])
    assert server.count(CHAT_PATH) == 2
    assert outcomes(items[0])["faithfulness"] == ("ok", 1.0)
    server.clear()
    server.default = "malformed"  # never valid: unparseable after exactly 2 calls
    items, _ = score(judge, [record("never")])
    assert server.count(CHAT_PATH) == 2
    assert {r for _, r in outcomes(items[0]).values()} == {"unparseable"}


def test_compact_bounds_what_a_reply_can_be(server: JudgeServer,
                                            judges: list[JudgeScorer]) -> None:
    """Issue 20: the request's max_tokens is sized to the item, and the schema carries its
    bounds where the endpoint enforces them (a server on this host: "auto" is on)."""
    from evaluator.judge.compact import CLAIM_CHARS, MAX_CLAIMS, QUOTE_CHARS, reply_tokens
    from evaluator.judge.types import JudgeInput

    judge = build(judges, server.url, mode="compact")
    short, long = record("short"), record("long", answer=" ".join(
        f"Rule {i} says passwords must hold at least {i + 8} characters." for i in range(12)))
    score(judge, [short, long])
    sent = {len(r.body["messages"][1]["content"]): r.body for r in server.requests
            if r.path == CHAT_PATH}
    small, large = (sent[k] for k in sorted(sent))
    assert small["max_tokens"] == reply_tokens(JudgeInput("q", short.answer, ()), 1024) < 1024
    assert small["max_tokens"] < large["max_tokens"] <= 1024
    claims = small["response_format"]["json_schema"]["schema"]["properties"]["claims"]
    assert claims["maxItems"] == MAX_CLAIMS
    assert claims["items"]["properties"]["claim"]["maxLength"] == CLAIM_CHARS
    assert claims["items"]["properties"]["quote"]["maxLength"] == QUOTE_CHARS
    server.clear()
    judge = build(judges, server.url, mode="compact", schema_bounds="off", max_tokens=200)
    score(judge, [long])
    body = next(r.body for r in server.requests if r.path == CHAT_PATH)
    assert body["max_tokens"] == 200  # never above judge.max_tokens
    assert "maxItems" not in json.dumps(body["response_format"])


def test_ragas_sends_each_prompts_schema_bounded_and_max_tokens_to_fit(
        server: JudgeServer, judges: list[JudgeScorer]) -> None:
    """Issue 20: the ragas backend sent a bare json_object and max_tokens 1024 for every
    prompt, a one-number rating included; a looping small model ran each to the limit."""
    from evaluator.judge.bounds import MAX_CHARS, MAX_ITEMS, reply_tokens

    judge = build(judges, server.url)  # a server on this host: bounds on ("auto")
    score(judge, [record("r1")])
    chats = [r.body for r in server.requests if r.path == CHAT_PATH]
    assert chats and {b["response_format"]["type"] for b in chats} == {"json_schema"}
    sent = {b["response_format"]["json_schema"]["schema"]["title"]: b for b in chats}
    statements = sent["StatementGeneratorOutput"]["response_format"]["json_schema"]["schema"]
    assert statements["properties"]["statements"]["maxItems"] == MAX_ITEMS
    assert statements["properties"]["statements"]["items"]["maxLength"] == MAX_CHARS
    for body in sent.values():
        schema = body["response_format"]["json_schema"]["schema"]
        assert body["max_tokens"] == reply_tokens(schema, 1024)
    assert sent["ResponseGroundednessOutput"]["max_tokens"] <= 128  # a rating
    assert sent["StatementGeneratorOutput"]["max_tokens"] == 1024  # 16 sentences' worth
    server.clear()
    judge = build(judges, server.url, schema_bounds="off", structured_output="json_object")
    score(judge, [record("r2")])
    chats = [r.body for r in server.requests if r.path == CHAT_PATH]
    assert chats and all(b["response_format"] == {"type": "json_object"} for b in chats)
    assert all(b["max_tokens"] <= 1024 for b in chats)
    assert min(b["max_tokens"] for b in chats) < 128  # still sized


def test_schema_bounds_and_reply_tokens() -> None:
    from evaluator.judge.bounds import bounded, reply_tokens

    schema = {"type": "object", "properties": {
        "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
        "note": {"type": "string", "maxLength": 50},
        "kind": {"type": "string", "enum": ["a", "b"]}},
        "$defs": {"Item": {"type": "object", "properties": {
            "text": {"type": "string"}, "score": {"type": "integer"}}}}}
    out = bounded(schema, max_items=4, max_chars=90)
    assert out["properties"]["items"]["maxItems"] == 4
    assert out["$defs"]["Item"]["properties"]["text"]["maxLength"] == 90
    assert out["properties"]["note"]["maxLength"] == 50  # its own bound kept
    assert "maxLength" not in out["properties"]["kind"]  # an enum is bounded already
    assert "maxItems" not in schema["properties"]["items"]  # a copy
    # 4 items of (text 30+2, score 4, two keys 8) + 1 each, note 16+2, kind 4, keys, slack
    assert reply_tokens(out, 10_000) == 32 + (4 + 4 * (30 + 2 + 4 + 4 + 4 + 1)) + \
        (4 + 18) + (4 + 4)
    assert reply_tokens(out, 100) == 100
    assert reply_tokens({"type": "object", "properties": {"r": {"type": "integer"}}},
                        1024) == 64  # the floor


@pytest.mark.parametrize("reply", [
    Reply.truncated(),
    Reply.content('{"claims": [{"claim": "cai", "verdict": "supported", "passage": 1, '
                  '"quote": "quote quote quote quote quote quote quote quote quote', "stop")],
    ids=["cut at max_tokens", "repeating itself"])
def test_compact_does_not_repair_a_reply_that_would_end_the_same_way(
        server: JudgeServer, judges: list[JudgeScorer], reply: Reply) -> None:
    judge = build(judges, server.url, mode="compact")
    server.default = reply
    items, usage = score(judge, [record("r1")])
    assert server.count(CHAT_PATH) == 1 and usage.judge_calls == 1
    assert {r for _, r in outcomes(items[0]).values()} == {"unparseable"}
    trace = items[0].explanation.judge  # explain says how the reply ended, and why it failed
    assert trace is not None and trace.finish_reason == reply.finish_reason
    assert trace.parse_error and trace.reply_excerpt


def test_a_nonsense_judgement_is_an_error_with_its_reason_not_a_score(
        server: JudgeServer, judges: list[JudgeScorer]) -> None:
    server.policy("GroundwatchJudgement", lambda schema, messages: {
        "claims": [{"claim": "cai", "verdict": "supported", "passage": 1, "quote": "quote"}],
        "answer_rating": 2, "noncommittal": False, "context_rating": 2})
    judge = build(judges, server.url, mode="compact")
    items, _ = score(judge, [record("r1")])
    assert {r for _, r in outcomes(items[0]).values()} == {"unparseable"}
    assert server.count(CHAT_PATH) == 1  # it parsed: no repair would change what it says
    trace = items[0].explanation.judge
    assert trace is not None and trace.parse_error is not None
    assert "claims are not the answer's" in trace.parse_error
    # explain says what the judge replied and why it did not count; the trace keeps it.
    from evaluator.scorers.explanation.judge import JudgeTrace
    from groundwatch.explain import judge_line

    line = judge_line("compact", JudgeTrace.from_dict(trace.to_dict()))
    assert "the judge replied (finish_reason stop):" in line
    assert "why it did not count: 1 of 1 claims" in line


def test_no_more_calls_in_flight_than_the_server_has_slots(server: JudgeServer,
                                                            judges: list[JudgeScorer]) -> None:
    """Issue 20: max_concurrency 8 against a server with 4 slots queued calls into their
    timeouts. A server that says its slots (llama.cpp's /props) bounds the calls in flight."""
    server.slots = 2
    server.default = Reply.slow(0.4)
    judge = build(judges, server.url, mode="compact", max_concurrency=8)
    assert judge.concurrency == 2
    score(judge, [record(f"r{i}") for i in range(6)])
    starts = sorted(r.time for r in server.requests if r.path == CHAT_PATH)
    assert len(starts) == 6
    # Two at a time: the third call starts only when one of the first two has answered.
    assert starts[2] - starts[0] >= 0.3
    server.slots = None  # a server that does not say: judge.max_concurrency alone
    assert build(judges, server.url, mode="compact", max_concurrency=8).concurrency == 8


def test_schema_bounds_auto_is_on_for_servers_that_enforce_them() -> None:
    from evaluator.judge.bounds import bounds_enforced

    for url in ("http://127.0.0.1:8080/v1", "http://localhost:11434/v1", "http://10.1.2.3/v1",
                "http://llama:8080/v1", "http://vllm.ml.svc/v1"):
        assert bounds_enforced("auto", url), url
    for url in ("https://api.openai.com/v1", "https://x.openai.azure.com/openai"):
        assert not bounds_enforced("auto", url), url
    assert bounds_enforced("on", "https://api.openai.com/v1")
    assert not bounds_enforced("off", "http://127.0.0.1:8080/v1")


def test_nothing_to_judge_is_not_applicable_not_nan(server: JudgeServer,
                                                    judges: list[JudgeScorer]) -> None:
    server.policy("StatementGeneratorOutput", lambda schema, messages: {"statements": []})
    judge = build(judges, server.url)
    items, _ = score(judge, [record("r1")])
    assert outcomes(items[0])["faithfulness"] == ("not_applicable", "no_claims")


def test_a_reply_slower_than_the_timeout_is_a_timeout_error(server: JudgeServer,
                                                            judges: list[JudgeScorer]) -> None:
    server.default = Reply.slow(3)
    judge = build(judges, server.url, timeout_s=0.5, circuit__failures=100)
    started = time.monotonic()
    items, usage = score(judge, [record("r1")])
    assert time.monotonic() - started < 10
    assert {o for o, _ in outcomes(items[0]).values()} == {"error"}
    assert {r for _, r in outcomes(items[0]).values()} == {"timeout"}
    # Four prompts start together, each is tried twice, then the item is given up.
    assert server.count(CHAT_PATH) <= 8
    assert usage.judge_statuses["timeout"] == server.count(CHAT_PATH)


def test_a_429_is_waited_out_with_retry_after(server: JudgeServer,
                                              judges: list[JudgeScorer]) -> None:
    judge = build(judges, server.url, mode="compact")
    server.script(Reply.status(429, retry_after=1))
    started = time.monotonic()
    items, usage = score(judge, [record("r1")])
    assert time.monotonic() - started >= 1.0
    assert outcomes(items[0])["faithfulness"] == ("ok", 1.0)
    assert server.count(CHAT_PATH) == 2
    assert usage.judge_statuses == {"rate_limited": 1, "ok": 1}


def test_a_429_past_the_wait_limit_sends_the_batch_back_then_errors_on_the_last_attempt(
        server: JudgeServer, judges: list[JudgeScorer]) -> None:
    judge = build(judges, server.url, mode="compact", rate_limit_max_wait_s=0.5)
    server.default = Reply.status(429, retry_after=30)
    token = FINAL_ATTEMPT.set(False)
    try:
        with pytest.raises(TransientError) as info:
            score(judge, [record("r1"), record("r2")])
    finally:
        FINAL_ATTEMPT.reset(token)
    assert info.value.kind == "rate_limited" and info.value.retry_after_s == 30
    assert server.count(CHAT_PATH) == 2  # one call per item: 30 s is past the limit
    items, _ = score(judge, [record("r1")])  # the last attempt: recorded, not raised
    assert {r for _, r in outcomes(items[0]).values()} == {"rate_limited"}


def test_500s_are_retried_once_then_unavailable(server: JudgeServer,
                                                judges: list[JudgeScorer]) -> None:
    server.default = Reply.status(500)
    judge = build(judges, server.url, mode="compact", circuit__failures=100)
    items, usage = score(judge, [record("r1")])
    assert {r for _, r in outcomes(items[0]).values()} == {"unavailable"}
    assert server.count(CHAT_PATH) == 2
    assert usage.judge_statuses["unavailable"] == 2


def test_a_refused_connection_is_unavailable_and_opens_the_circuit(
        judges: list[JudgeScorer]) -> None:
    # One call in flight, so the count is exact (with more, the calls already in flight when
    # the circuit opens still fail: at most max_concurrency more).
    judge = build(judges, f"http://127.0.0.1:{free_port()}/v1", mode="compact",
                  circuit__failures=3, circuit__cooldown_s=60, max_concurrency=1)
    items, usage = score(judge, [record(f"r{i}") for i in range(6)])
    assert all({r for _, r in outcomes(i).values()} == {"unavailable"} for i in items)
    # Three failed calls (the first item's call and its retry, the second's call) open the
    # circuit; the rest are not made at all.
    assert usage.judge_calls == 3
    assert usage.not_judged.get(NotJudged.CIRCUIT_OPEN, 0) >= 2
    assert judge.judge_up is False
    not_judged = [i.explanation.judge.not_judged for i in items if i.explanation.judge]
    assert "circuit_open" in not_judged


def test_the_circuit_closes_when_the_judge_is_back(server: JudgeServer,
                                                   judges: list[JudgeScorer]) -> None:
    judge = build(judges, server.url, mode="compact", max_retries=0,
                  circuit__failures=2, circuit__cooldown_s=0.5)
    server.default = Reply.status(503)
    score(judge, [record("a"), record("b"), record("c")])
    assert judge.circuit.state == "open" and judge.judge_up is False
    made = server.count(CHAT_PATH)
    items, _ = score(judge, [record("d")])
    assert server.count(CHAT_PATH) == made  # open: nothing sent
    assert items[0].explanation.judge is not None
    assert items[0].explanation.judge.not_judged == "circuit_open"
    server.default = "valid"
    wait_until(lambda: judge.circuit.state == "half_open", timeout=5, interval=0.05,
               what="the circuit's cool-down")
    items, _ = score(judge, [record("e")])
    assert outcomes(items[0])["faithfulness"] == ("ok", 1.0)
    assert judge.circuit.state == "closed" and judge.judge_up is True


def test_a_budget_reached_mid_batch_stops_the_judge(server: JudgeServer,
                                                    judges: list[JudgeScorer]) -> None:
    # One compact call costs ~300 prompt + ~60 completion tokens here: 700 allow two items.
    judge = build(judges, server.url, mode="compact", max_concurrency=1,
                  budget__tokens_per_day=700)
    items, usage = score(judge, [record(f"r{i}") for i in range(6)])
    judged = [i for i in items if outcomes(i)["faithfulness"][0] == "ok"]
    skipped = [i for i in items if outcomes(i)["faithfulness"] == ("error", "budget")]
    assert len(judged) == server.count(CHAT_PATH) == 2
    assert len(skipped) == 4 and usage.not_judged[NotJudged.BUDGET] == 4
    assert all(i.explanation.judge and i.explanation.judge.not_judged == "budget"
               for i in skipped)


def test_the_cache_answers_a_second_time_without_a_call(server: JudgeServer,
                                                        judges: list[JudgeScorer]) -> None:
    judge = build(judges, server.url, cache_ttl_s=3600)
    first, _ = score(judge, [record("r1")])
    made = server.count()
    again, usage = score(judge, [record("r2")])  # same texts, another request id
    assert server.count() == made
    assert usage.cache_hits == 4 and usage.judge_calls == 0
    assert outcomes(again[0]) == outcomes(first[0])


def test_pii_never_reaches_the_judge(server: JudgeServer, judges: list[JudgeScorer]) -> None:
    secrets = ["jane.doe+billing@example.co.uk", "+44 20 7946 0958", "4111 1111 1111 1111",
               "GB82 WEST 1234 5698 7654 32"]
    question = f"I am {secrets[0]}, call {secrets[1]}: how long must passwords be?"
    answer = (f"Passwords must be at least 12 characters long. Your card {secrets[2]} and "
              f"account {secrets[3]} are on file.")
    context = CONTEXT + f" Contact {secrets[0]} for help."
    judge = build(judges, server.url)
    items, usage = score(judge, [record("pii", answer=answer, question=question,
                                        contexts=(context,))])
    wire = server.wire_text()
    assert server.count() > 0
    for value in secrets:
        assert value not in wire
        assert value.replace(" ", "") not in wire
    assert "[EMAIL]" in wire and "[CARD]" in wire and "[IBAN]" in wire and "[PHONE]" in wire
    assert usage.redactions["email"] >= 2
    trace = items[0].explanation.judge
    assert trace is not None and trace.redacted["card"] == 1


def test_the_api_key_appears_in_no_log_line(server: JudgeServer, judges: list[JudgeScorer],
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server.script(Reply.status(401, body={"error": {"message": "bad key"}}), "malformed")
    judge = build(judges, server.url, mode="compact")
    score(judge, [record("r1"), record("r2")])
    assert server.count() >= 2
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert text  # something was logged (the 401 at least)
    assert KEY not in text
    assert KEY not in repr(judge.config.masked())


# -- streamed calls: a progress deadline, and loops abandoned -------------------------------

@pytest.mark.parametrize("mode", ["compact", "ragas"])
def test_a_slow_but_steady_judge_is_not_timed_out_when_streamed(
        server: JudgeServer, judges: list[JudgeScorer], mode: str) -> None:
    """Each reply takes 10 pieces x 0.3 s = 3 s, six times the 0.5 s timeout: unstreamed
    every call times out; streamed (judge.stream = "on") timeout_s is the wait for the next
    piece, so every call succeeds, the circuit never opens, and the usage is the server's."""
    server.default = Reply.steady(0.3, pieces=10)
    steady = build(judges, server.url, mode=mode, timeout_s=0.5, circuit__failures=2,
                   stream="on")
    items, usage = score(steady, [record("r1")])
    assert outcomes(items[0])["faithfulness"][0] == "ok", outcomes(items[0])
    assert set(usage.judge_statuses) == {"ok"}
    assert all(r.body.get("stream") is True and r.body["stream_options"] == {
        "include_usage": True} for r in server.requests if r.path == CHAT_PATH)
    assert usage.prompt_tokens == server.usage_served["prompt_tokens"]
    assert usage.completion_tokens == server.usage_served["completion_tokens"]
    # The same judge unstreamed: every call times out.
    slow = build(judges, server.url, mode=mode, timeout_s=0.5, circuit__failures=100,
                 max_retries=0, stream="off")
    items, usage = score(slow, [record("r2")])
    assert {r for _, r in outcomes(items[0]).values()} == {"timeout"}
    # The default ("auto") streams to a server on this host: no timeout.
    server.clear()
    default = build(judges, server.url, mode=mode, timeout_s=0.5, circuit__failures=2)
    items, usage = score(default, [record("r3")])
    assert outcomes(items[0])["faithfulness"][0] == "ok", outcomes(items[0])
    assert all(r.body.get("stream") is True for r in server.requests if r.path == CHAT_PATH)


def test_stream_auto_is_on_for_self_hosted_servers_only() -> None:
    assert streamed("auto", "http://127.0.0.1:8080/v1")
    assert streamed("auto", "http://10.0.3.7:8000/v1") and streamed("auto", "http://llama:8080")
    assert not streamed("auto", "https://api.openai.com/v1")
    assert streamed("on", "https://api.openai.com/v1")
    assert not streamed("off", "http://127.0.0.1:8080/v1")


def test_a_streamed_judge_that_stops_sending_is_timed_out(server: JudgeServer,
                                                          judges: list[JudgeScorer]) -> None:
    """The progress deadline still catches a judge that stalls: 1.5 s between pieces against
    a 0.5 s timeout."""
    server.default = Reply.steady(1.5, pieces=3)
    judge = build(judges, server.url, mode="compact", timeout_s=0.5, circuit__failures=100,
                  max_retries=0, stream="on")
    started = time.monotonic()
    items, usage = score(judge, [record("r1")])
    assert time.monotonic() - started < 5
    assert {r for _, r in outcomes(items[0]).values()} == {"timeout"}
    assert usage.judge_statuses == {"timeout": 1}


def test_a_streamed_reply_past_its_max_tokens_is_abandoned_there(
        server: JudgeServer, judges: list[JudgeScorer]) -> None:
    """A server that does not honour max_tokens: a reply that never loops but outgrows the
    item's budget (max_tokens x 8 characters) is given up there, as cut, in one call."""
    words = " ".join(f"{chr(97 + i % 26)}{i * 7919 % 100003}" for i in range(6000))
    # No pace: the pieces come as fast as the server writes them, many to one read.
    server.default = Reply.content('{"claims": [{"claim": "' + words, pace_s=0.0)
    judge = build(judges, server.url, mode="compact", stream="on", max_retries=1)
    items, usage = score(judge, [record("r1")])
    assert outcomes(items[0])["faithfulness"] == ("error", "unparseable")
    assert server.count(CHAT_PATH) == 1 and usage.abandoned == 1
    trace = items[0].explanation.judge
    assert trace is not None and trace.finish_reason == "length"
    max_tokens = next(r.body for r in server.requests if r.path == CHAT_PATH)["max_tokens"]
    assert max_tokens * 8 < len(words)  # the reply would have run far past its budget
    # Read to the budget and not past it, one 16-character piece at most.
    assert usage.completion_tokens <= (max_tokens * 8 + 16) // 4


def test_a_streamed_reply_that_loops_is_abandoned_and_not_asked_again(
        server: JudgeServer, judges: list[JudgeScorer]) -> None:
    """A reply that repeats itself is given up as soon as the loop shows (not at
    max_tokens), costs one call (it counts as cut: not re-asked), and its usage, which the
    server never sent, is estimated."""
    loop = '{"claims": [{"claim": "' + "the same words again, " * 400
    server.default = Reply.content(loop, pace_s=0.01)  # 16 characters every 10 ms: ~6 s
    judge = build(judges, server.url, mode="compact", stream="on", max_retries=1)
    started = time.monotonic()
    items, usage = score(judge, [record("r1")])
    assert time.monotonic() - started < 3
    assert outcomes(items[0])["faithfulness"] == ("error", "unparseable")
    assert server.count(CHAT_PATH) == 1
    trace = items[0].explanation.judge
    assert trace is not None and trace.finish_reason == "length"
    assert usage.abandoned == 1
    metrics = Metrics(MetricsConfig(), multiprocess=False)
    metrics.judge.observe_usage(ScoredBatch((), (ScorerRun("compact", "1", (), usage),)))
    assert metrics.registry.get_sample_value("groundwatch_judge_replies_abandoned_total",
                                             {"judge": "compact"}) == 1
    assert 0 < usage.completion_tokens < len(loop) // 8  # estimated: the server sent none
    # The server stops when its next write finds the connection gone: far short of the whole.
    wait_until(lambda: server.usage_served["completion_tokens"] > 0 or None, timeout=10)
    assert server.usage_served["completion_tokens"] < len(loop) // 8


def test_the_first_piece_deadline_follows_the_measured_prompt_pace() -> None:
    """Before any measurement 5x the progress deadline; then 3x the slowest recent time per
    prompt token for this prompt, never under the progress deadline nor over the cap."""
    from evaluator.judge.calls import PrefillPace

    pace = PrefillPace(cap_s=100.0)
    assert pace.deadline(1000, 2.0) == 10.0
    pace.observe(4.0, 2000)  # 2 ms per prompt token
    assert pace.deadline(1000, 2.0) == pytest.approx(6.0)
    assert pace.deadline(100, 2.0) == 2.0  # never under the progress deadline
    pace.observe(1.0, 2000)  # a faster call: the slowest recent one still counts
    assert pace.deadline(1000, 2.0) == pytest.approx(6.0)
    assert pace.deadline(10**6, 2.0) == 100.0
    assert PrefillPace(cap_s=4.0).deadline(1000, 2.0) == 4.0


def test_a_judge_slow_to_its_first_piece_is_measured_not_timed_out(
        server: JudgeServer, judges: list[JudgeScorer]) -> None:
    """A server that takes 1.2 s before its first piece (a long prompt on a CPU server),
    then streams steadily, against a 0.5 s progress deadline: the first call is allowed 5 x
    0.5 s, and later calls 3x the measured time per prompt token; none times out."""
    server.default = Reply.steady(0.2, pieces=4, first_s=1.2)
    judge = build(judges, server.url, mode="compact", timeout_s=0.5, circuit__failures=2,
                  stream="on")
    items, usage = score(judge, [record(f"r{i}") for i in range(4)])
    assert all(outcomes(item)["faithfulness"][0] == "ok" for item in items)
    assert set(usage.judge_statuses) == {"ok"}


def test_a_stop_cuts_the_judges_calls_after_its_grace_and_says_how_far_it_got(
        server: JudgeServer, judges: list[JudgeScorer]) -> None:
    # Two items answered at once, three by a judge far slower than the grace.
    server.script(Reply.valid(), Reply.valid())
    server.default = Reply.slow(30)
    judge = build(judges, server.url, mode="compact", timeout_s=60, max_concurrency=8)
    stop = StopRequest()
    stop.request(1.0)
    token = STOP.set(stop)
    started = time.monotonic()
    try:
        with pytest.raises(Stopping) as caught:
            score(judge, [record(f"r{i}") for i in range(5)])
    finally:
        STOP.reset(token)
    assert time.monotonic() - started < 10  # the grace, not the slow calls' 30 s
    assert (caught.value.done, caught.value.total) == (2, 5)
    assert "2 of 5 items finished, 3 still running" in str(caught.value)
    # The circuit does not count a call cut by the stop as the judge failing.
    assert judge.circuit.state == "closed"
