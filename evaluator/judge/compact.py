"""Judge mode ``compact``: all four metrics of one item in ONE call, with our own prompt.

ragas's triad asks about seven prompts per item, each with its few-shot examples and most of
them with the whole context again. Here the context is sent once and the judge returns one
JSON object (``JUDGEMENT_SCHEMA``, sent as ``response_format`` json_schema, or json_object
with ``judge.structured_output = "json_object"`` for servers without schemas):

- ``claims``: the answer's atomic claims, each ``supported`` / ``unsupported`` /
  ``contradicted``, with the number of the passage and a short verbatim quote as evidence;
- ``answer_rating`` 0-2 (does the answer address the question) and ``noncommittal``;
- ``context_rating`` 0-2 (did retrieval bring what the question needs).

Our values are computed from that, not read off it:

- faithfulness = supported claims / claims (a contradicted claim counts 0);
- groundedness = the share of claims whose quote is really found (whitespace and case
  folded) in the passage they cite: the judge's evidence is checked, not trusted;
- answer_relevance = answer_rating / 2, 0 when noncommittal; context_relevance =
  context_rating / 2.

A reply is bounded (issue 20): ``max_tokens`` is sized to the item (its answer's length and
the claims it can hold, never above ``judge.max_tokens``) and, where the endpoint enforces
them (``judge.schema_bounds``), the schema caps the claims (``maxItems``) and each claim's
and quote's length (``maxLength``). A reply that does not validate gets one repair request
(the error and "only the JSON object"), unless it was cut at ``max_tokens`` (finish_reason
``length``) or repeats itself: a second full call would end the same way. A second failure is
``unparseable``, and so is a judgement that is not about the item (:func:`check`: most of its
claims are not the answer's, or most of its quotes are not in their passages). So an item
costs 1 call, at most 2.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evaluator.judge.bounds import bounded, bounds_enforced, repeats_itself
from evaluator.judge.types import JudgeInput, MetricOutcome
from evaluator.scorers.explanation import Claim, Verdict
from evaluator.scorers.text import content_words, split_sentences

if TYPE_CHECKING:
    from evaluator.config import JudgeConfig

PROMPT_VERSION = "compact-1"

SYSTEM = (
    "You grade one answer of a retrieval-augmented assistant against the passages it was "
    "given. Judge only by the passages, never by your own knowledge. Reply with one JSON "
    "object and nothing else.")

INSTRUCTIONS = """Return JSON: {"claims":[{"claim":str,"verdict":"supported"|"unsupported"|"contradicted","passage":int|null,"quote":str}],"answer_rating":0|1|2,"noncommittal":bool,"context_rating":0|1|2}
- claims: each atomic factual claim of the ANSWER, in order. supported: a passage states it. contradicted: a passage says otherwise (negation, other number, date, unit, quantity, name, place, opposite). unsupported: no passage says it. passage: the number of the passage used; quote: its words, verbatim, at most 25 words ("" if none).
- answer_rating: 2 the answer addresses the question, 1 partly, 0 not. noncommittal: the answer evades or says it does not know.
- context_rating: 2 the passages hold what the question needs, 1 some of it, 0 nothing."""


class _Claim(BaseModel):
    model_config = ConfigDict(extra="ignore")

    claim: str = Field(min_length=1, max_length=2000)
    verdict: Literal["supported", "unsupported", "contradicted"]
    passage: int | None = None
    quote: str = Field("", max_length=2000)


class Judgement(BaseModel):
    """The reply of the compact judge."""

    model_config = ConfigDict(extra="ignore")

    claims: list[_Claim] = Field(max_length=200)
    answer_rating: Literal[0, 1, 2]
    noncommittal: bool = False
    context_rating: Literal[0, 1, 2]


JUDGEMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["claims", "answer_rating", "noncommittal", "context_rating"],
    "properties": {
        "claims": {"type": "array", "items": {
            "type": "object", "additionalProperties": False,
            "required": ["claim", "verdict", "passage", "quote"],
            "properties": {
                "claim": {"type": "string"},
                "verdict": {"type": "string",
                            "enum": ["supported", "unsupported", "contradicted"]},
                "passage": {"type": ["integer", "null"]},
                "quote": {"type": "string"}}}},
        "answer_rating": {"type": "integer", "enum": [0, 1, 2]},
        "noncommittal": {"type": "boolean"},
        "context_rating": {"type": "integer", "enum": [0, 1, 2]},
    },
    "title": "GroundwatchJudgement",
}


# The bounds of a reply: claims, and characters of a claim and of its quote (the prompt asks
# for quotes of at most 25 words).
MAX_CLAIMS = 16
CLAIM_CHARS = 400
QUOTE_CHARS = 240
# Tokens of a reply: the ratings and keys, twice the answer's own (its claims restate it, with
# room to spare), and a verdict, passage and quote per claim it can hold (two per sentence).
BASE_TOKENS = 96
PER_CLAIM_TOKENS = 48
MIN_REPLY_TOKENS = 128


def judgement_schema(bounds: bool) -> dict[str, Any]:
    """``JUDGEMENT_SCHEMA`` (a copy), with its bounds when ``bounds``: at most
    :data:`MAX_CLAIMS` claims of :data:`CLAIM_CHARS`, quotes of :data:`QUOTE_CHARS`."""
    if not bounds:
        return json.loads(json.dumps(JUDGEMENT_SCHEMA))
    schema = bounded(JUDGEMENT_SCHEMA, max_items=MAX_CLAIMS, max_chars=CLAIM_CHARS)
    schema["properties"]["claims"]["items"]["properties"]["quote"]["maxLength"] = QUOTE_CHARS
    return schema


def reply_tokens(item: JudgeInput, cap: int) -> int:
    """``max_tokens`` for one item's reply: enough for its claims, never above ``cap``."""
    claims = min(MAX_CLAIMS, 2 * max(1, len(split_sentences(item.answer))))
    wanted = BASE_TOKENS + 2 * (len(item.answer) // 3 + 1) + PER_CLAIM_TOKENS * claims
    return min(cap, max(MIN_REPLY_TOKENS, wanted))


class Unparseable(ValueError):
    """The reply, and the repair, did not validate against ``JUDGEMENT_SCHEMA``."""


def user_prompt(item: JudgeInput) -> str:
    passages = "\n".join(f"[{i}] {' '.join(p.split())}" for i, p in
                         enumerate(item.contexts, 1)) or "(none)"
    return (f"{INSTRUCTIONS}\n\nPASSAGES:\n{passages}\n\nQUESTION: {item.question}\n\n"
            f"ANSWER: {item.answer}")


def _fold(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.casefold()))


def quote_found(quote: str, passage: str) -> bool:
    folded = _fold(quote)
    return bool(folded) and folded in _fold(passage)


def parse(text: str) -> Judgement:
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`").removeprefix("json").strip()
    try:
        return Judgement.model_validate_json(stripped)
    except ValidationError as exc:
        raise Unparseable(_short(exc)) from exc


def _short(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'reply'}: {e['msg']}"
                     for e in exc.errors()[:5])


def _cited(claim: _Claim, item: JudgeInput) -> tuple[int | None, bool]:
    """The index of the passage ``claim`` cites (None if it cites none that exists), and
    whether its quote is really there."""
    index = claim.passage - 1 if claim.passage is not None \
        and 0 < claim.passage <= len(item.contexts) else None
    return index, index is not None and quote_found(claim.quote, item.contexts[index])


def check(judgement: Judgement, item: JudgeInput) -> None:
    """Raise :class:`Unparseable` for a judgement that is not about this item: most of its
    claims are not the answer's (no more than half of a claim's words are in the answer), or
    most of its quotes are not in the passages they cite. A small model's "claim 'cai', quote
    'quote'" is no judgement, and must not be stored as an ``ok`` score."""
    answer = set(content_words(item.answer))
    foreign = [c.claim for c in judgement.claims
               if len(set(content_words(c.claim)) & answer) * 2
               < len(set(content_words(c.claim)))]
    if foreign and len(foreign) * 2 > len(judgement.claims):
        raise Unparseable(f"{len(foreign)} of {len(judgement.claims)} claims are not the "
                          f"answer's (first: {foreign[0][:80]!r})")
    quoted = [c for c in judgement.claims if c.quote.strip()]
    missing = [c.quote for c in quoted if not _cited(c, item)[1]]
    if missing and len(missing) * 2 > len(quoted):
        raise Unparseable(f"{len(missing)} of {len(quoted)} quotes are not in the passage "
                          f"they cite (first: {missing[0][:80]!r})")


def outcomes(judgement: Judgement, item: JudgeInput) -> dict[str, MetricOutcome]:
    claims: list[Claim] = []
    grounded = 0
    for c in judgement.claims:
        index, found = _cited(c, item)
        grounded += bool(found and c.verdict == "supported")
        claims.append(Claim(c.claim, Verdict(c.verdict), strength=1.0 if found else 0.0,
                            evidence=c.quote or None, evidence_context=index,
                            reason=None if found or not c.quote
                            else "the quote is not in the passage cited"))
    n = len(claims)
    nan = float("nan")
    faithfulness = sum(c.verdict is Verdict.SUPPORTED for c in claims) / n if n else nan
    answer = 0.0 if judgement.noncommittal else judgement.answer_rating / 2
    return {
        "faithfulness": MetricOutcome(faithfulness, tuple(claims), empty_reason="no_claims"),
        "groundedness": MetricOutcome(grounded / n if n else nan, tuple(claims),
                                      empty_reason="no_claims"),
        "answer_relevance": MetricOutcome(answer, detail={
            "rating": judgement.answer_rating, "noncommittal": judgement.noncommittal}),
        "context_relevance": MetricOutcome(judgement.context_rating / 2,
                                           detail={"rating": judgement.context_rating}),
    }


class CompactBackend:
    mode = "compact"
    prompt_version = PROMPT_VERSION

    def __init__(self, config: JudgeConfig, client: Any) -> None:
        self.config = config
        self.client = client
        self.schema = judgement_schema(bounds_enforced(config.schema_bounds, config.base_url))

    def _format(self) -> dict[str, Any]:
        if self.config.structured_output == "json_object":
            return {"type": "json_object"}
        return {"type": "json_schema", "json_schema": {
            "name": "groundwatch_judgement", "schema": self.schema, "strict": True}}

    async def judge(self, item: JudgeInput, metrics: Sequence[str],
                    limit: asyncio.Semaphore) -> dict[str, MetricOutcome | BaseException]:
        messages: list[dict[str, str]] = [{"role": "system", "content": SYSTEM},
                                          {"role": "user", "content": user_prompt(item)}]
        try:
            async with limit:
                judgement = await self._ask(messages, reply_tokens(item, self.config.max_tokens))
            check(judgement, item)
        except Exception as exc:
            return dict.fromkeys(metrics, exc)
        found = outcomes(judgement, item)
        return {m: found[m] for m in metrics}

    async def _ask(self, messages: list[dict[str, str]], max_tokens: int) -> Judgement:
        text, finish = await self._complete(messages, max_tokens)
        try:
            return parse(text)
        except Unparseable as first:
            # Cut at the limit or looping: a second full call would end the same way.
            if finish == "length":
                raise Unparseable(f"cut at max_tokens {max_tokens} (finish_reason "
                                  f"length): {first}") from None
            if repeats_itself(text):
                raise Unparseable(f"the reply repeats itself: {first}") from None
            if self.config.max_retries < 1:
                raise
            repair = [*messages, {"role": "assistant", "content": text[:4000]},
                      {"role": "user", "content": f"That reply is not valid ({first}). "
                                                  "Reply with only the JSON object."}]
            return parse((await self._complete(repair, max_tokens))[0])

    async def _complete(self, messages: list[dict[str, str]],
                        max_tokens: int) -> tuple[str, str | None]:
        """The reply's text and its finish_reason."""
        reply = await self.client.chat.completions.create(
            model=self.config.model, messages=messages, temperature=self.config.temperature,
            max_tokens=max_tokens, response_format=self._format())
        choice = reply.choices[0]
        return choice.message.content or "", choice.finish_reason


def schema_text() -> str:
    """The schema as sent (for docs and tests)."""
    return json.dumps(JUDGEMENT_SCHEMA, indent=2)
