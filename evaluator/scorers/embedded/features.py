"""Named features of the ``embedded`` scorer, computed from encodings.

The same functions serve the scorer and ``scripts/calibrate.py``, so the calibrated weights
apply to exactly the numbers the scorer sees. Each feature has a name; the calibration file
lists the names it was fitted on, in order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evaluator.scorers.embedded import textops as tx
from evaluator.scorers.embedded.model import Encoded
from evaluator.scorers.embedded.signals import ANSWER_SIGNALS, CONTEXT_SIGNALS
from evaluator.scorers.text import content_words, is_refusal

TOP_UNITS = 3  # evidence for a claim: its most similar units (a claim may join two sentences)

FAITH_FEATURES = ("cos_unit", "cos_window", "tok_top", "tok_all", "lex_top", "lex_all",
                  "num_missing", "name_missing", "neg_mismatch", "claim_len")
ANSWER_FEATURES = ("cos_qa", "cos_q_claim", "tok_recall", "lex_q", "evasive", "answer_len")
CONTEXT_FEATURES = ("cos_qp", "cos_qu", "tok_recall", "lex_q")
# What each calibrated head reads: the embedding features, then the text-only signals.
ANSWER_MODEL = ANSWER_FEATURES + ANSWER_SIGNALS
CONTEXT_MODEL = CONTEXT_FEATURES + CONTEXT_SIGNALS

_EVASIVE = re.compile(
    r"\b(not\s+clear|unclear|(search\s+results?|sources?|documents?|context|passages?)\s+"
    r"(do(es)?\s+not|don'?t|doesn'?t)\s+(provide|contain|mention|say|include|specify|answer)"
    r"|not\s+relevant|no\s+(relevant\s+)?information|there\s+is\s+no\s+(mention|information)"
    r"|it\s+depends|varies|cannot\s+be\s+determined|not\s+possible\s+to\s+(say|determine))\b",
    re.IGNORECASE)


# Claims this short (in words) are judged by word presence rather than sentence similarity: the
# embedding of "Delhi" says nothing about whether Delhi is the answer the context gives.
SHORT_CLAIM_WORDS = 2
FULL_CLAIM_WORDS = 10


def faith_inputs(values: Sequence[float]) -> dict[str, float]:
    """A claim's raw features by name, plus the length-gated blends the model reads:
    ``sem_gated``/``tok_gated``/``strength`` move from word coverage (very short claims) to
    sentence / token similarity (claims of ``FULL_CLAIM_WORDS`` words or more)."""
    d = dict(zip(FAITH_FEATURES, (float(v) for v in values), strict=True))
    words = math.expm1(d["claim_len"] * 4.0)
    full = min(1.0, max(0.0, (words - SHORT_CLAIM_WORDS) / (FULL_CLAIM_WORDS - SHORT_CLAIM_WORDS)))
    d["sem_gated"] = full * d["cos_window"] + (1.0 - full) * d["lex_all"]
    d["tok_gated"] = full * d["tok_all"] + (1.0 - full) * d["lex_all"]
    # Evidence strength (groundedness): how much of the claim its best evidence sentences hold.
    d["strength"] = full * d["tok_top"] + (1.0 - full) * d["lex_top"]
    return d


# A number clash only means contradiction when the evidence is about the same thing: at least
# this IDF-weighted share of the claim's words is in its best evidence. Otherwise an off-topic
# claim ("Germany won 1-0") against an unrelated passage ("parts of 5 MB") would be
# "contradicted" where "unsupported" is the truth.
NUMBER_CLASH_COVERAGE = 0.5


def contradiction_kind(claim: ClaimFeatures) -> str | None:
    """``number`` when a number of the claim is absent from the context while evidence that
    shares most of the claim's words gives another; ``negation`` when polarity differs from
    evidence that holds every content word of the claim (a looser polarity difference is too
    common in real text to mean much). Which kinds flip a verdict is calibrated
    (``contradiction_kinds``)."""
    if claim.contradiction is None:
        return None
    lex_top = claim.values[FAITH_FEATURES.index("lex_top")]
    if claim.contradiction.startswith("number"):
        return "number" if lex_top >= NUMBER_CLASH_COVERAGE else None
    if lex_top >= 0.999:
        return "negation"
    return None


@dataclass(slots=True)
class Unit:
    """One evidence unit: a context sentence (or chunk) and where it came from."""

    text: str
    passage: int
    enc: Encoded


@dataclass(slots=True)
class ClaimFeatures:
    claim: str
    values: list[float]
    evidence: str
    evidence_passage: int
    best_cos: float
    contradiction: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # The claim's most similar evidence units, best first (what the clash cues read).
    top_evidence: tuple[str, ...] = ()


def _tok_precision(src: Encoded, tokens: np.ndarray) -> float:
    """IDF-weighted BERTScore precision: how well each weighted token of ``src`` is matched by
    some token of ``tokens`` (both unit-normed contextual embeddings)."""
    if src.tokens.shape[0] == 0 or tokens.shape[0] == 0:
        return 0.0
    weights = src.weights
    if float(weights.sum()) <= 0.0:
        weights = np.ones(src.tokens.shape[0], dtype=np.float32)
    best = (src.tokens @ tokens.T).max(axis=1)
    return float(np.clip((best * weights).sum() / weights.sum(), 0.0, 1.0))


def claim_features(claim: str, enc: Encoded, units: Sequence[Unit],
                   context_words: set[str], context_numbers: set[str]) -> ClaimFeatures:
    """Features of one claim against all evidence units (at least one)."""
    vecs = np.stack([u.enc.vec for u in units])
    cos = vecs @ enc.vec
    top = np.argsort(-cos)[:TOP_UNITS]
    best = int(top[0])
    if len(units) > 1:
        pairs = vecs[:-1] + vecs[1:]
        pairs /= np.linalg.norm(pairs, axis=1, keepdims=True).clip(min=1e-9)
        cos_window = max(float((pairs @ enc.vec).max()), float(cos[best]))
    else:
        cos_window = float(cos[best])
    top_tokens = np.concatenate([units[i].enc.tokens for i in top])
    all_tokens = np.concatenate([u.enc.tokens for u in units])
    top_text = " ".join(units[i].text for i in top)
    words = content_words(claim)
    top_words = set(content_words(top_text))
    claim_numbers = tx.numbers(claim)
    claim_names = tx.names(claim)
    num_missing = tx.missing_share(claim_numbers, context_numbers)
    name_missing = tx.missing_share(claim_names, context_words)
    best_text = units[best].text
    neg_mismatch = float(tx.negated(claim) != tx.negated(best_text))

    contradiction = None
    best_numbers = tx.numbers(best_text, spelled=True)
    differing = sorted(n for n in claim_numbers if n not in context_numbers)
    if differing and best_numbers and not claim_numbers & best_numbers:
        contradiction = f"number {differing[0]} differs from evidence ({sorted(best_numbers)[0]})"
    elif differing and best_numbers:
        contradiction = f"number {differing[0]} is not in the evidence"
    elif neg_mismatch:
        contradiction = "negation differs from the evidence"
    values = [
        float(cos[best]), cos_window,
        _tok_precision(enc, top_tokens), _tok_precision(enc, all_tokens),
        tx.idf_coverage(words, top_words), tx.idf_coverage(words, context_words),
        num_missing, name_missing, neg_mismatch,
        math.log1p(len(claim.split())) / 4.0,
    ]
    return ClaimFeatures(claim, values, best_text, units[best].passage, float(cos[best]),
                         contradiction, top_evidence=tuple(units[i].text for i in top))


def answer_features(question: str, q_enc: Encoded, answer: str, a_enc: Encoded,
                    claim_encs: Sequence[Encoded]) -> list[float]:
    """Does the answer address the question?"""
    encs = list(claim_encs) or [a_enc]
    cos_claim = max(float(e.vec @ q_enc.vec) for e in encs)
    answer_tokens = np.concatenate([e.tokens for e in encs])
    q_words = content_words(question)
    evasive = float(is_refusal(answer) or _EVASIVE.search(answer[:600]) is not None)
    return [
        float(a_enc.vec @ q_enc.vec), cos_claim, _tok_precision(q_enc, answer_tokens),
        tx.idf_coverage(q_words, set(content_words(answer))), evasive,
        math.log1p(len(answer.split())) / 6.0,
    ]


def context_features(question: str, q_enc: Encoded, passage: str,
                     encs: Sequence[Encoded]) -> list[float]:
    """Relevance of one passage (its whole encoding first, then its units) to the question."""
    whole, units = encs[0], list(encs[1:]) or [encs[0]]
    tokens = np.concatenate([u.tokens for u in units])
    q_words = content_words(question)
    return [
        float(whole.vec @ q_enc.vec), max(float(u.vec @ q_enc.vec) for u in units),
        _tok_precision(q_enc, tokens),
        tx.idf_coverage(q_words, set(content_words(passage))),
    ]
