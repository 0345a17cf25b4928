"""The LLM judge as a scorer: backends ``ragas`` and ``compact`` behind one set of guards.

Per process (built in ``warm_up``, after a fork): one event loop (:mod:`.loop`), one OpenAI
client whose HTTP goes through :class:`~evaluator.judge.calls.JudgeTransport` (retries,
circuit breaker, budgets, token accounting), one semaphore of ``judge.max_concurrency``, the
shared budget and response cache (:mod:`.shared`), and the redactor (:mod:`.redact`).

Per item, after the applicability gates: the open metrics are looked up in the cache, the
rest are judged on redacted, size-capped texts, and every outcome is mapped onto ours:

==========================================  =============================================
what happened                               the metric's result
==========================================  =============================================
a number                                    ``ok`` (clipped into [0, 1])
ragas's NaN with every call answered        ``not_applicable`` (e.g. ``no_claims``)
a reply that is not the JSON asked for      ``error`` ``unparseable`` (+ an excerpt)
5xx, timeout, refused connection (retried)  ``error`` ``unavailable`` / ``timeout``
the circuit is open                         ``error`` ``unavailable``, not judged
a budget is spent                           ``error`` ``budget``, not judged
429 past ``rate_limit_max_wait_s``          the batch goes back to the queue
                                            (``TransientError``); ``error``
                                            ``rate_limited`` on its last attempt
==========================================  =============================================

An error from the judge is replaced by a real score when the item is judged again (the
store keeps the better of the two), and the cheap scorer's scores of the item are stored
either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from evaluator.errors import ConfigError, Stopping, TransientError
from evaluator.judge.bounds import streamed
from evaluator.judge.calls import CURRENT, CallLog, CircuitBreaker, JudgeTransport, Price
from evaluator.judge.compact import PROMPT_VERSION, CompactBackend
from evaluator.judge.loop import JudgeLoop, StoppedWaiting
from evaluator.judge.ragas_backend import EmbeddedEmbeddings, RagasBackend, _ragas_embeddings
from evaluator.judge.redact import Redactor
from evaluator.judge.shared import Budget, ResponseCache, shared_state_for
from evaluator.judge.types import FINAL_ATTEMPT, JudgeBackend, JudgeInput, MetricOutcome
from evaluator.scorers import JUDGES
from evaluator.scorers.base import MetricResult, NotJudged, Outcome, Usage
from evaluator.scorers.explanation import Explanation, JudgeTrace
from evaluator.scorers.gates import Assessment, Gated, GatedScorer
from evaluator.stopping import STOP

if TYPE_CHECKING:
    from evaluator.config import Config, JudgeConfig
    from evaluator.judge.shared import Budget, ResponseCache

log = logging.getLogger("groundwatch.judge")

MODES = JUDGES
# The texts a judge sees are cut to these sizes (each cut counted as a truncation).
MAX_QUESTION_CHARS = 2_000
MAX_ANSWER_CHARS = 8_000
MAX_CONTEXT_CHARS = 40_000


def prompt_version(mode: str) -> str:
    """The prompts' version without importing ragas (its metadata only)."""
    if mode == "compact":
        return PROMPT_VERSION
    try:
        return f"ragas-{version('ragas')}"
    except PackageNotFoundError:
        return "ragas-missing"


_WARNED_KEYS: set[str] = set()


def api_key(config: JudgeConfig) -> str:
    """The key from the environment variable named by ``judge.api_key_env``; a local server
    (vLLM, Ollama, llama.cpp) needs none, so a missing variable is allowed and said once."""
    name = config.api_key_env
    value = os.environ.get(name, "") if name else ""
    if not value:
        if name not in _WARNED_KEYS:
            _WARNED_KEYS.add(name)
            log.warning("judge: environment variable %s is not set; calling %s without an "
                        "API key", name or "(judge.api_key_env is empty)", config.base_url)
        return "not-set"
    return value


class JudgeScorer(GatedScorer):
    """``ragas`` or ``compact`` on ``[judge]``'s endpoint (see the module docstring)."""

    def __init__(self, config: Config, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown judge mode {mode!r}; valid: {MODES}")
        judge = config.judge
        if not judge.configured:
            raise ConfigError("the judge needs an endpoint: set judge.base_url (and "
                              "judge.model)", path=config.path, key="judge.base_url")
        if not judge.model.strip():
            raise ConfigError("the judge needs a model name", path=config.path,
                              key="judge.model")
        self.name = mode
        self.config = config
        self.judge_config = judge
        self.mode = mode
        # The prompt version is part of it: a new ragas or a new compact prompt scores under
        # a new version (its own rows, its own golden baseline), never mixed with the old.
        self.version = f"{mode}:{judge.model}:{prompt_version(mode)}"
        self.circuit = CircuitBreaker(judge.circuit.failures, judge.circuit.cooldown_s)
        self._lock = threading.Lock()
        self._started_pid: int | None = None
        self._loop: Any = None
        self._backend: JudgeBackend | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self.concurrency = judge.max_concurrency  # calls in flight at most (the server's slots)
        self._client: Any = None
        self._embeddings_client: Any = None
        self.budget: Budget | None = None
        self.cache: ResponseCache | None = None
        self._redactor: Any = None
        self._state: Any = None

    @classmethod
    def from_config(cls, config: Config) -> JudgeScorer:  # the backend "ragas"
        return cls(config, "ragas")


    # -- process set-up ---------------------------------------------------------------------
    def warm_up(self) -> None:
        """Build the loop, clients, budget, cache and redactor of this process. Calls
        nothing but one bounded ``GET /props`` (how many slots the server has; any failure is
        ignored): a judge that is down must not keep the worker (and the cheap scores) from
        starting."""
        self._start()

    def _start(self) -> None:
        with self._lock:
            if self._started_pid == os.getpid():
                return
            # The [judge] extra, imported when the judge starts in its process: building a
            # scorer (and checking its name) must work before the extra is installed.
            import httpx
            from openai import AsyncOpenAI

            # One line per HTTP call at INFO would drown the worker's log; failures are
            # logged by the transport, and counted.
            logging.getLogger("httpx").setLevel(logging.WARNING)
            cfg = self.judge_config
            self._state = shared_state_for(self.config.broker.url.get_secret_value())
            self.budget = Budget(cfg.budget, self._state)
            self.cache = ResponseCache(self._state, cfg.cache_ttl_s)
            self._redactor = Redactor(cfg.redaction) if cfg.redaction.enabled \
                else Redactor.off()
            self._loop = JudgeLoop()
            price = self._price(cfg.model)
            key = api_key(cfg)
            self._client = self._openai(AsyncOpenAI, httpx, cfg.base_url, key, price)
            slots = server_slots(httpx, cfg.base_url, key)
            self.concurrency = min(cfg.max_concurrency, slots or cfg.max_concurrency)
            if slots is not None and slots < cfg.max_concurrency:
                log.warning("judge: the server has %d slots: %d calls in flight at most, not "
                            "judge.max_concurrency %d (more would queue into their timeouts)",
                            slots, slots, cfg.max_concurrency)
            self._semaphore = self._loop.run(_make_semaphore(self.concurrency))
            self._backend = self._build_backend(AsyncOpenAI, httpx, price)
            self._started_pid = os.getpid()
            log.info("judge %s ready: %s model %s, %d calls in flight at most, budget and "
                     "cache in %s", self.mode, cfg.base_url, cfg.model, self.concurrency,
                     self._state.where)

    def _price(self, model: str) -> Price:
        found = self.judge_config.prices.get(model)
        if found is None:
            log.warning("judge: no price for model %r in judge.prices: its cost is counted as "
                        "0 USD (its tokens are still counted and budgeted)", model)
            return Price()
        return Price(found.prompt, found.completion, True)

    def _openai(self, client_cls: Any, httpx: Any, base_url: str, key: str,
                price: Price) -> Any:
        cfg = self.judge_config
        budget = self.budget
        assert budget is not None

        def guard() -> str | None:
            return "budget" if budget.exhausted() else None

        transport = JudgeTransport(
            httpx.AsyncHTTPTransport(retries=0), circuit=self.circuit, price=price,
            max_retries=cfg.max_retries, rate_limit_max_wait_s=cfg.rate_limit_max_wait_s,
            guard=guard, on_reply=lambda p, c, usd: budget.spend(p + c, usd),
            stream=streamed(cfg.stream, cfg.base_url), max_call_s=cfg.max_call_s)
        http = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(cfg.timeout_s))
        return client_cls(base_url=base_url, api_key=key, max_retries=0,
                          timeout=cfg.timeout_s, http_client=http)

    def _build_backend(self, client_cls: Any, httpx: Any, price: Price) -> JudgeBackend:
        cfg = self.judge_config
        if self.mode == "compact":
            return CompactBackend(cfg, self._client)
        emb = cfg.embeddings
        if emb.source == "embedded":
            embeddings = _ragas_embeddings(EmbeddedEmbeddings(self.config.scoring.embedded))
        else:
            from ragas.embeddings import OpenAIEmbeddings  # the [ragas] extra, this mode only

            self._embeddings_client = self._openai(
                client_cls, httpx, emb.base_url or cfg.base_url,
                api_key(cfg.model_copy(update={"api_key_env": emb.api_key_env}))
                if emb.api_key_env else api_key(cfg), self._price(emb.model))
            embeddings = OpenAIEmbeddings(client=self._embeddings_client, model=emb.model)
        return RagasBackend(cfg, self._client, embeddings)

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
            self._started_pid = None
        if loop is None:
            return
        for client in (self._client, self._embeddings_client):
            if client is not None:
                with contextlib.suppress(Exception):
                    loop.run(client.close(), timeout_s=5)
        loop.close()
        if self._state is not None:
            self._state.close()

    @property
    def judge_up(self) -> bool | None:
        """For ``groundwatch_judge_up``: None before this process's first call."""
        if self.circuit.state == "open":
            return False
        return self.circuit.last_ok

    # -- scoring ----------------------------------------------------------------------------
    def assess(self, items: Sequence[Gated]) -> tuple[list[Assessment], Usage]:
        self._start()
        final = FINAL_ATTEMPT.get()
        done = [0]  # items whose judgement finished, for the account of a stop
        try:
            results = self._loop.run(self._assess_all(items, done), stop=STOP.get())
        except StoppedWaiting as exc:
            raise Stopping(f"judge {self.name}", done=done[0], total=len(items),
                           waited_s=exc.waited_s) from exc
        logs = [calls for _, calls in results]
        limited = [c for c in logs if c.failure == "rate_limited"]
        if limited and not final:
            after = max((c.retry_after_s or 0.0) for c in limited)
            raise TransientError("rate_limited", f"the judge rate-limited {len(limited)} of "
                                 f"{len(items)} items past judge.rate_limit_max_wait_s",
                                 retry_after_s=after or None)
        usage = Usage()
        for assessment, calls in results:
            usage = usage + _usage(calls, assessment)
        return [a for a, _ in results], usage

    async def _assess_all(self, items: Sequence[Gated],
                          done: list[int]) -> list[tuple[Assessment, CallLog]]:
        async def one(item: Gated) -> tuple[Assessment, CallLog]:
            result = await self._assess_one(item)
            done[0] += 1
            return result

        return list(await asyncio.gather(*(one(g) for g in items)))

    async def _assess_one(self, item: Gated) -> tuple[Assessment, CallLog]:
        calls = CallLog()
        CURRENT.set(calls)  # this task's own: gather runs each item in a task of its own
        wanted = [m for m, open_ in (("faithfulness", item.wants_support),
                                      ("groundedness", item.wants_support),
                                      ("answer_relevance", item.wants_answer_relevance),
                                      ("context_relevance", item.wants_context_relevance))
                  if open_]
        if not wanted:
            return Assessment(), calls
        judge_input, redacted, truncations = self._prepare(item)
        calls.truncations += truncations
        assert self._backend is not None and self.cache is not None
        backend = self._backend
        keys = {m: self.cache.key(m, self.judge_config.model, backend.prompt_version,
                                  judge_input.key()) for m in wanted}
        cached: dict[str, dict[str, Any]] = {}
        for m in wanted:
            hit = self.cache.get(keys[m])
            if isinstance(hit, dict):
                cached[m] = hit
        todo = [m for m in wanted if m not in cached]
        outcomes: dict[str, MetricOutcome | BaseException] = {}
        if todo:
            assert self._semaphore is not None
            outcomes = await backend.judge(judge_input, todo, self._semaphore)
        metrics: list[MetricResult] = []
        claims: tuple[Any, ...] | None = None
        details: dict[str, Any] = {}
        for m in wanted:
            if m in cached:
                result = _from_cache(m, cached[m])
                if result is None:
                    continue
                metrics.append(result)
                continue
            result, outcome = self._map(m, outcomes.get(m), calls)
            metrics.append(result)
            if isinstance(outcome, MetricOutcome):
                if outcome.claims and m == "faithfulness":
                    claims = outcome.claims
                if outcome.detail:
                    details[m] = dict(outcome.detail)
                if result.outcome.value != "error":
                    self.cache.put(keys[m], _to_cache(result))
        not_judged = _not_judged(calls, metrics)
        unparseable = any(m.reason == "unparseable" for m in metrics)
        excerpt = calls.replies[-1] if unparseable and calls.replies else None
        finish = calls.finish_reasons[-1] if unparseable and calls.finish_reasons else None
        parse_error = next((str(o)[:300] for o in outcomes.values()
                            if isinstance(o, BaseException) and _is_parse_error(o)), None) \
            if unparseable else None
        trace = JudgeTrace(self.judge_config.model, self.mode, calls.calls,
                           calls.prompt_tokens, calls.completion_tokens, calls.cost_usd,
                           tuple(m for m in wanted if m in cached), dict(redacted),
                           not_judged, excerpt, details=details, parse_error=parse_error,
                           finish_reason=finish)
        explanation = Explanation(scorer=self.name, version=self.version, claims=claims,
                                  judge=trace)
        return Assessment(tuple(metrics), explanation), calls

    def _prepare(self, item: Gated) -> tuple[JudgeInput, dict[str, int], int]:
        truncations = 0

        def cut(text: str, limit: int) -> str:
            nonlocal truncations
            if len(text) > limit:
                truncations += 1
                return text[:limit]
            return text

        question = cut(item.question, MAX_QUESTION_CHARS)
        answer = cut(item.answer, MAX_ANSWER_CHARS)
        contexts: list[str] = []
        room = MAX_CONTEXT_CHARS
        for passage in item.contexts:
            if room <= 0:
                truncations += 1
                break
            contexts.append(cut(passage, room) if len(passage) > room else passage)
            room -= len(contexts[-1])
        texts, counts = self._redactor.redact_many([question, answer, *contexts])
        return JudgeInput(texts[0], texts[1], tuple(texts[2:])), counts, truncations

    def _map(self, metric: str, outcome: MetricOutcome | BaseException | None,
             calls: CallLog) -> tuple[MetricResult, MetricOutcome | BaseException | None]:
        failure = calls.failure
        if isinstance(outcome, MetricOutcome) and not math.isnan(outcome.value) \
                and failure is None:
            return MetricResult.ok(metric, outcome.value), outcome
        if failure is not None and (not isinstance(outcome, MetricOutcome)
                                    or math.isnan(outcome.value)):
            kind = {"circuit_open": "unavailable", "item_failed": "unavailable"}.get(
                failure, failure)
            return MetricResult.error(metric, kind), outcome
        if isinstance(outcome, MetricOutcome) and not math.isnan(outcome.value):
            # A value despite a failed call (e.g. one of ResponseGroundedness's two judges
            # answered): the value stands.
            return MetricResult.ok(metric, outcome.value), outcome
        if calls.unparseable:
            return MetricResult.error(metric, "unparseable"), outcome
        if isinstance(outcome, MetricOutcome):  # NaN with every call answered
            if outcome.empty_reason is None:  # the replies did not validate
                return MetricResult.error(metric, "unparseable"), outcome
            return MetricResult.not_applicable(metric, outcome.empty_reason), outcome
        if outcome is not None and _is_parse_error(outcome):
            return MetricResult.error(metric, "unparseable"), outcome
        log.warning("judge %s failed on %s: %s: %s", self.mode, metric,
                    type(outcome).__name__, str(outcome)[:300])
        return MetricResult.error(metric, "internal"), outcome


# The slots probe's time limit: a judge that is down must not hold the worker's start up.
SLOTS_PROBE_S = 2.0


def server_slots(httpx: Any, base_url: str, key: str | None) -> int | None:
    """How many requests the server serves at once, where it says: llama.cpp's server
    answers ``GET /props`` with ``total_slots``. None when it does not say (another server,
    no route, down): then ``judge.max_concurrency`` alone bounds the calls in flight."""
    root = base_url.rstrip("/").removesuffix("/v1")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        reply = httpx.get(root + "/props", headers=headers, timeout=SLOTS_PROBE_S)
        slots = reply.json().get("total_slots") if reply.status_code == 200 else None
    except Exception:  # any reason it does not say: it does not say
        return None
    return slots if isinstance(slots, int) and not isinstance(slots, bool) and slots > 0 \
        else None


async def _make_semaphore(n: int) -> asyncio.Semaphore:
    return asyncio.Semaphore(n)


def _is_parse_error(exc: BaseException) -> bool:
    names = {type(e).__name__ for e in _chain(exc)}
    return bool(names & {"ValidationError", "JSONDecodeError", "InstructorRetryException",
                         "IncompleteOutputException", "Unparseable"})


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def _to_cache(result: MetricResult) -> dict[str, Any]:
    return {"outcome": result.outcome.value, "value": result.value, "reason": result.reason}


def _from_cache(metric: str, data: dict[str, Any]) -> MetricResult | None:
    try:
        if data["outcome"] == "ok":
            return MetricResult.ok(metric, float(data["value"]))
        if data["outcome"] == "not_applicable":
            return MetricResult.not_applicable(metric, str(data["reason"]))
    except (KeyError, TypeError, ValueError):
        return None
    return None


def _not_judged(calls: CallLog, metrics: Sequence[MetricResult]) -> str | None:
    """Why the item went (partly) unjudged: a spent budget or an open circuit refused a call
    *and* a metric ended in error for it. A refused call whose metric still got a value (one
    of ResponseGroundedness's two judges answered) leaves the item judged."""
    if calls.failure not in (NotJudged.BUDGET, NotJudged.CIRCUIT_OPEN):
        return None
    return calls.failure if any(m.outcome is Outcome.ERROR for m in metrics) else None


def _usage(calls: CallLog, assessment: Assessment) -> Usage:
    judge = assessment.explanation.judge
    reason = _not_judged(calls, assessment.metrics)
    not_judged = {NotJudged(reason): 1} if reason is not None else {}
    cached = len(judge.cached) if judge else 0
    misses = len(assessment.metrics) - cached if assessment.metrics else 0
    return Usage(judge_calls=calls.calls, prompt_tokens=calls.prompt_tokens,
                 completion_tokens=calls.completion_tokens, cost_usd=calls.cost_usd,
                 cache_hits=cached, cache_misses=max(0, misses),
                 truncations=calls.truncations, unpriced=1 if calls.unpriced else 0,
                 abandoned=calls.abandoned, judge_statuses=dict(calls.statuses),
                 redactions=dict(judge.redacted) if judge else {}, not_judged=not_judged)


class CompactJudgeScorer(JudgeScorer):
    """The backend ``compact`` (``[scoring] scorer = "compact"``)."""

    @classmethod
    def from_config(cls, config: Config) -> JudgeScorer:
        return JudgeScorer(config, "compact")
