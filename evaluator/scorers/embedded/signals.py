"""Text-only signals the embeddings miss: does the text hold the kind of thing the question asks
for (a number, a date, a name), does it hedge, does it say anything the question did not.

They need no model, so ``scripts/calibrate.py`` recomputes them from the raw rows on every run
instead of caching them with the (slow) embedding features.
"""

from __future__ import annotations

import math
import re

from evaluator.scorers.embedded import textops as tx
from evaluator.scorers.text import content_words

ANSWER_SIGNALS = ("type_match", "hedging", "novelty")
CONTEXT_SIGNALS = ("type_match",)

_NUMBER_Q = re.compile(r"\bhow\s+(many|much|long|old|far|big|tall|often|high|deep|fast)\b|"
                       r"\b(what|which)\s+(percentage|percent|number|amount|age|size)\b", re.I)
_DATE_Q = re.compile(r"\bwhen\b|\b(what|which)\s+(year|date|day|month|century|decade)\b", re.I)
_NAME_Q = re.compile(r"\b(who|whom|whose|where)\b|\b(what|which)\s+(country|city|state|team|"
                     r"company|person|band|actor|player|author|party)\b", re.I)
_YEAR = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})s?\b")
_NUMBER_WORD = re.compile(r"\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|"
                          r"twenty|thirty|forty|fifty|hundred|thousand|million|billion|dozen)\b",
                          re.I)
_HEDGE = re.compile(r"\b(however|unclear|not\s+clear|may|might|possibly|perhaps|likely|"
                    r"unknown|uncertain|not\s+(specified|mentioned|provided|known)|"
                    r"there\s+is\s+no|it\s+depends|various|several\s+(possible|different))\b",
                    re.I)


def question_type(question: str) -> str:
    """What kind of answer the question wants: number, date, name, or other."""
    if _NUMBER_Q.search(question):
        return "number"
    if _DATE_Q.search(question):
        return "date"
    if _NAME_Q.search(question):
        return "name"
    return "other"


def type_match(question: str, text: str) -> float:
    """1.0 when ``text`` holds the kind of thing the question asks for, 0.0 when not, 0.5 when
    the question asks for no particular kind."""
    kind = question_type(question)
    if kind == "other":
        return 0.5
    if kind == "number":
        found = bool(tx.numbers(text) - tx.numbers(question)) or bool(_NUMBER_WORD.search(text))
    elif kind == "date":
        found = bool(_YEAR.search(text)) or any(tx.is_month(w) for w in tx.lower_words(text))
    else:
        found = bool(tx.names(text) - tx.names(question) - tx.lower_words(question))
    return 1.0 if found else 0.0


def hedging(text: str) -> float:
    """Hedge phrases per sentence, capped at 1."""
    sentences = max(1, len(tx.split_claims(text)))
    return min(1.0, len(_HEDGE.findall(text)) / sentences)


def novelty(question: str, answer: str) -> float:
    """How many content words the answer adds beyond the question (log-scaled)."""
    q = set(content_words(question))
    new = {w for w in content_words(answer) if w not in q}
    return math.log1p(len(new)) / 5.0


def answer_signals(question: str, answer: str) -> list[float]:
    return [type_match(question, answer), hedging(answer), novelty(question, answer)]


def context_signals(question: str, passage: str) -> list[float]:
    return [type_match(question, passage)]
