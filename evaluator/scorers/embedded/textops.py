"""Pure-Python text checks of the ``embedded`` scorer: claims, evidence units, and the facts
embeddings are known to blur (numbers, dates, names, negation).

Nothing here imports torch; it is cheap and unit-testable on its own.
"""

from __future__ import annotations

import re
from functools import lru_cache

from evaluator.scorers.text import STOPWORDS, content_words, split_sentences

# A sentence longer than this many words is split at clause boundaries: one claim per clause
# keeps "X, and Y" from being judged supported because X is.
LONG_CLAIM_WORDS = 28
MIN_CLAUSE_WORDS = 5
# Evidence units: context sentences, long ones cut into chunks of this many words.
UNIT_WORDS = 60

_CITATION = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")
_CLAUSE = re.compile(r"(?:;\s+|,\s+(?=(?:and|but|while|whereas|which|although|though|however|"
                     r"so|yet)\b))")
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?")
_NEGATION = re.compile(
    r"\b(?:not|no|never|none|neither|nor|without|cannot|nobody|nothing|nowhere|"
    r"\w+n['’]t|fail(?:s|ed)?\s+to|lack(?:s|ed)?|unable)\b", re.IGNORECASE)
_CAP_WORD = re.compile(r"\b[A-Z][\w'’-]*[a-z][\w'’-]*\b|\b[A-Z]{2,}\b")
_MONTHS = frozenset(["january", "february", "march", "april", "may", "june", "july",
                     "august", "september", "october", "november", "december"])


def strip_citations(text: str) -> str:
    return _CITATION.sub("", text)


def split_claims(answer: str) -> list[str]:
    """The answer's claims: sentences, with long sentences split at clause boundaries."""
    claims: list[str] = []
    for sentence in split_sentences(strip_citations(answer)):
        if len(sentence.split()) <= LONG_CLAIM_WORDS:
            claims.append(sentence)
            continue
        pieces = [p.strip() for p in _CLAUSE.split(sentence) if p and p.strip()]
        merged: list[str] = []
        for piece in pieces:
            if merged and (len(piece.split()) < MIN_CLAUSE_WORDS
                           or len(merged[-1].split()) < MIN_CLAUSE_WORDS):
                merged[-1] = f"{merged[-1]}, {piece}"
            else:
                merged.append(piece)
        claims.extend(merged)
    return [c for c in claims if any(ch.isalnum() for ch in c)]


def split_units(passage: str) -> list[str]:
    """Evidence units of one passage: sentences, long ones chunked by words."""
    units: list[str] = []
    for sentence in split_sentences(passage):
        words = sentence.split()
        if len(words) <= UNIT_WORDS:
            units.append(sentence)
        else:
            units.extend(" ".join(words[i:i + UNIT_WORDS])
                         for i in range(0, len(words), UNIT_WORDS))
    return [u for u in units if any(ch.isalnum() for ch in u)]


def numbers(text: str) -> set[str]:
    """Numbers in ``text``, normalised (thousands separators dropped, trailing .0 folded)."""
    out = set()
    for match in _NUMBER.finditer(text):
        n = match.group(0).replace(",", "").lstrip("+")
        if n.endswith(".0"):
            n = n[:-2]
        if n and n not in {"-"}:
            out.add(n)
    return out


def negated(text: str) -> bool:
    return _NEGATION.search(text) is not None


def names(text: str) -> set[str]:
    """Capitalised words that are not the first word of a sentence: a cheap stand-in for named
    entities (people, places, organisations, months)."""
    out: set[str] = set()
    for sentence in split_sentences(text):
        first = True
        for match in _CAP_WORD.finditer(sentence):
            word = match.group(0)
            if first and match.start() == len(sentence) - len(sentence.lstrip()):
                first = False
                continue
            first = False
            low = word.lower().replace("’", "'")
            if low.endswith("'s"):
                low = low[:-2]
            if low not in STOPWORDS and len(low) > 1:
                out.add(low)
    return out


def lower_words(text: str) -> set[str]:
    words = set()
    for w in re.findall(r"[^\W_]+", text.lower()):
        words.add(w)
    return words


@lru_cache(maxsize=65536)
def idf(word: str) -> float:
    """Rarity weight of a word from its corpus frequency (wordfreq's Zipf scale, 0-8): common
    words weigh little, rare ones (names, terms) much."""
    from wordfreq import zipf_frequency

    return max(0.5, 8.0 - zipf_frequency(word, "en")) / 8.0


def idf_coverage(words: list[str], present: set[str]) -> float:
    """IDF-weighted share of ``words`` found in ``present``; 1.0 for no words."""
    if not words:
        return 1.0
    total = sum(idf(w) for w in words)
    return sum(idf(w) for w in words if w in present) / total


def content_set(text: str) -> set[str]:
    return set(content_words(text))


def missing_share(wanted: set[str], present_text_words: set[str]) -> float:
    if not wanted:
        return 0.0
    return sum(w not in present_text_words for w in wanted) / len(wanted)


def is_month(word: str) -> bool:
    return word in _MONTHS
