"""Judge mode ``ragas``: ragas 0.4.3's collections metrics on an OpenAI-compatible endpoint.

=====================  ===========================================  =====================
ours                   ragas (``ragas.metrics.collections``)        prompts per item
=====================  ===========================================  =====================
faithfulness           Faithfulness (statements, then NLI verdicts) 2
groundedness           ResponseGroundedness (two judge prompts)     2
answer_relevance       AnswerRelevancy (``strictness`` questions,   ``strictness`` +
                       cosine to the question by embeddings)        embeddings
context_relevance      ContextRelevance (two judge prompts)         2
=====================  ===========================================  =====================

Replies are bounded as in ``compact`` (:mod:`evaluator.judge.bounds`): ragas asks through
instructor for a JSON object of a pydantic model; :func:`structured_create`, the call under
instructor, sends that model's schema as ``response_format`` json_schema (not a bare
json_object), with ``maxItems``/``maxLength`` where ``judge.schema_bounds`` says, and a
``max_tokens`` sized to what the schema can hold (a rating is a few dozen tokens, not
``judge.max_tokens``).

Re-asks are capped so that a judge that always answers badly costs at most
``1 + judge.max_retries`` calls per prompt: instructor's own re-ask (``max_retries`` given
through ``llm_factory``) for the metrics without a loop of their own, and the metric's loop
(``max_retries`` of ResponseGroundedness and ContextRelevance, five by default) with
instructor asking once for the two that have one. Transient HTTP failures are retried below
all of this, once, by :class:`evaluator.judge.calls.JudgeTransport`.

ragas is imported only here, after ``RAGAS_DO_NOT_TRACK=true`` is set (its usage telemetry
would otherwise phone home from every worker).
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from evaluator.config import EmbeddedConfig, JudgeConfig
from evaluator.judge.bounds import bounded, bounds_enforced, reply_tokens
from evaluator.judge.types import JudgeInput, MetricOutcome
from evaluator.scorers.explanation import Claim, Verdict

os.environ["RAGAS_DO_NOT_TRACK"] = "true"

_CLAIMS: contextvars.ContextVar[list[Claim] | None] = contextvars.ContextVar(
    "groundwatch_ragas_claims", default=None)


def ragas_version() -> str:
    # the [ragas] extra: loaded where ragas runs, not when this module is imported
    import ragas

    return str(ragas.__version__)


class EmbeddedEmbeddings:
    """ragas embeddings from the shipped all-MiniLM-L6-v2 (no network): sentence vectors of
    :class:`evaluator.scorers.embedded.model.Encoder`, computed off the event loop."""

    def __init__(self, settings: EmbeddedConfig | None = None) -> None:
        # The [embedded] extra (onnxruntime, numpy): needed only when ragas embeds with the
        # shipped model (judge.embeddings.source = "embedded").
        from evaluator.scorers.embedded.model import Encoder

        s = settings or EmbeddedConfig()
        self.encoder = Encoder(threads=s.threads, cache_size=0, cache_mb=0, runtime=s.runtime,
                               precision=s.precision)

    def vectors(self, texts: Sequence[str]) -> list[list[float]]:
        return [e.vec.tolist() for e in self.encoder.encode(list(texts))]


def _ragas_embeddings(source: EmbeddedEmbeddings) -> Any:
    # the [ragas] extra: loaded where ragas runs, not when this module is imported
    from ragas.embeddings.base import BaseRagasEmbedding

    class _Embedded(BaseRagasEmbedding):
        def embed_text(self, text: str, **kwargs: Any) -> list[float]:
            return source.vectors([text])[0]

        async def aembed_text(self, text: str, **kwargs: Any) -> list[float]:
            return (await asyncio.to_thread(source.vectors, [text]))[0]

        def embed_texts(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
            return source.vectors(texts)

        async def aembed_texts(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
            return await asyncio.to_thread(source.vectors, texts)

    return _Embedded()


def structured_create(create: Callable[..., Awaitable[Any]], config: JudgeConfig,
                      ) -> Callable[..., Awaitable[Any]]:
    """``create`` (the OpenAI client's chat completion) for instructor's JSON_SCHEMA mode,
    whose requests carry ``response_format = {"type": "json_object", "schema": ...}``: the
    schema goes out as OpenAI's json_schema format (not strict: ragas's models are not
    written for it; llama.cpp makes a grammar of either), bounded where the endpoint enforces
    bounds, with ``max_tokens`` sized to it. ``judge.structured_output = "json_object"``
    sends a bare json_object instead (servers without schemas), still sized."""
    bounds = bounds_enforced(config.schema_bounds, config.base_url)

    async def structured(**kwargs: Any) -> Any:
        fmt = kwargs.get("response_format")
        if isinstance(fmt, dict) and isinstance(fmt.get("schema"), dict):
            schema = bounded(fmt["schema"]) if bounds else fmt["schema"]
            kwargs["max_tokens"] = reply_tokens(schema, int(kwargs.get("max_tokens")
                                                            or config.max_tokens))
            if config.structured_output == "json_object":
                kwargs["response_format"] = {"type": "json_object"}
            else:
                name = re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title") or "reply"))
                kwargs["response_format"] = {"type": "json_schema", "json_schema": {
                    "name": name[:64], "schema": schema, "strict": False}}
        return await create(**kwargs)

    return structured


def _instructor_llm(client: Any, config: JudgeConfig, **model_args: Any) -> Any:
    """ragas's InstructorLLM on ``client`` through :func:`structured_create` (what
    ``llm_factory`` builds, but in instructor's JSON_SCHEMA mode instead of bare JSON)."""
    # the [ragas] extra: loaded where ragas runs, not when this module is imported
    import instructor
    from ragas.llms.base import InstructorLLM, InstructorModelArgs

    mode = instructor.Mode.JSON_SCHEMA
    patched = instructor.AsyncInstructor(
        client=client, create=instructor.patch(
            create=structured_create(client.chat.completions.create, config), mode=mode),
        mode=mode, provider=instructor.Provider.OPENAI)
    return InstructorLLM(client=patched, model=config.model, provider="openai",
                         model_args=InstructorModelArgs(), **model_args)


NO_QUESTION = "(no question: check the answer against the passages)"


class RagasBackend:
    """The four metrics, each scored by its own ragas metric object (built once)."""

    mode = "ragas"

    def __init__(self, config: JudgeConfig, client: Any, embeddings: Any) -> None:
        # the [ragas] extra: loaded where ragas runs, not when this module is imported
        from ragas.metrics.collections import (
            AnswerRelevancy,
            ContextRelevance,
            Faithfulness,
            ResponseGroundedness,
        )

        attempts = 1 + config.max_retries
        common: dict[str, Any] = {"temperature": config.temperature,
                                  "max_tokens": config.max_tokens}
        # instructor re-asks after a reply that does not validate; once for the metrics that
        # loop themselves (their loop is the re-ask), 1 + max_retries for the others.
        reasking = _instructor_llm(client, config, max_retries=attempts, **common)
        single = _instructor_llm(client, config, max_retries=1, **common)

        class _Faithfulness(Faithfulness):
            """Keeps the statements and verdicts for the explanation."""

            async def _create_verdicts(self, statements: list[str], context: str) -> Any:
                result = await super()._create_verdicts(statements, context)
                sink = _CLAIMS.get()
                if sink is not None:
                    for s in getattr(result, "statements", []):
                        sink.append(Claim(str(s.statement), Verdict.SUPPORTED if s.verdict
                                          else Verdict.UNSUPPORTED, reason=str(s.reason)))
                return result

        self.prompt_version = f"ragas-{ragas_version()}-collections/strictness={config.strictness}"
        self._faithfulness = _Faithfulness(llm=reasking)
        self._groundedness = ResponseGroundedness(llm=single, max_retries=attempts)
        self._context_relevance = ContextRelevance(llm=single, max_retries=attempts)
        self._answer_relevance = AnswerRelevancy(llm=reasking, embeddings=embeddings,
                                                 strictness=config.strictness)

    async def judge(self, item: JudgeInput, metrics: Sequence[str],
                    limit: asyncio.Semaphore) -> dict[str, MetricOutcome | BaseException]:
        """Every metric of ``metrics`` for ``item``, concurrently (each under ``limit``)."""
        jobs = {m: self._one(m, item, limit) for m in metrics}
        done = await asyncio.gather(*jobs.values(), return_exceptions=True)
        out: dict[str, MetricOutcome | BaseException] = {}
        for metric, result in zip(jobs, done, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancellation, KeyboardInterrupt
            out[metric] = result
        return out

    async def _one(self, metric: str, item: JudgeInput,
                   limit: asyncio.Semaphore) -> MetricOutcome:
        async with limit:
            if metric == "faithfulness":
                claims: list[Claim] = []
                token = _CLAIMS.set(claims)
                try:
                    # ragas refuses an empty user_input ("user_input is missing"), but a
                    # claim checked against a page (WiCE) or a summary has no question, and
                    # faithfulness does not need one.
                    r = await self._faithfulness.ascore(
                        user_input=item.question or NO_QUESTION, response=item.answer,
                        retrieved_contexts=list(item.contexts))
                finally:
                    _CLAIMS.reset(token)
                return MetricOutcome(_value(r), tuple(claims), empty_reason="no_claims")
            if metric == "groundedness":
                r = await self._groundedness.ascore(response=item.answer,
                                                    retrieved_contexts=list(item.contexts))
                return MetricOutcome(_value(r))
            if metric == "context_relevance":
                r = await self._context_relevance.ascore(
                    user_input=item.question, retrieved_contexts=list(item.contexts))
                return MetricOutcome(_value(r))
            if metric == "answer_relevance":
                r = await self._answer_relevance.ascore(user_input=item.question,
                                                        response=item.answer)
                return MetricOutcome(_value(r))
        raise ValueError(f"unknown metric {metric!r}")


def _value(result: Any) -> float:
    """ragas's value as a float; NaN stays NaN (the caller decides what it means), anything
    else is clipped into [0, 1] (AnswerRelevancy's cosine can be slightly negative)."""
    value = getattr(result, "value", result)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    if math.isnan(number):
        return number
    return min(1.0, max(0.0, number))
