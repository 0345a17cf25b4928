"""Small text utilities shared by the scorers: sentences, content words, refusals."""

from __future__ import annotations

import re
from functools import lru_cache

# A short English stop list: function words carry no facts. Kept here, not downloaded.
STOPWORDS = frozenset(["a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any", "are", "aren't", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "can't", "cannot", "could", "couldn't", "did", "didn't", "do", "does", "doesn't", "doing", "don't", "down", "during", "each", "few", "for", "from", "further", "had", "hadn't", "has", "hasn't", "have", "haven't", "having", "he", "he'd", "he'll", "he's", "her", "here", "here's", "hers", "herself", "him", "himself", "his", "how", "how's", "i", "i'd", "i'll", "i'm", "i've", "if", "in", "into", "is", "isn't", "it", "it's", "its", "itself", "let's", "me", "more", "most", "mustn't", "my", "myself", "no", "nor", "not", "of", "off", "on", "once", "only", "or", "other", "ought", "our", "ours", "ourselves", "out", "over", "own", "same", "shan't", "she", "she'd", "she'll", "she's", "should", "shouldn't", "so", "some", "such", "than", "that", "that's", "the", "their", "theirs", "them", "themselves", "then", "there", "there's", "these", "they", "they'd", "they'll", "they're", "they've", "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "wasn't", "we", "we'd", "we'll", "we're", "we've", "were", "weren't", "what", "what's", "when", "when's", "where", "where's", "which", "while", "who", "who's", "whom", "why", "why's", "will", "with", "won't", "would", "wouldn't", "you", "you'd", "you'll", "you're", "you've", "your", "yours", "yourself", "yourselves", "s", "t", "just", "may", "might", "must", "shall", "also", "yes", "many", "much", "one", "get", "got", "use", "used", "using", "like"])

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n+")

_REFUSAL = re.compile(
    r"\b(i\s+(do\s+not|don'?t|cannot|can'?t)\s+(know|answer|help|find|say|provide)"
    r"|i'?m\s+(not\s+sure|unable|sorry)|i\s+am\s+(not\s+sure|unable|sorry)"
    r"|(no|not\s+enough)\s+information"
    r"|(cannot|can'?t|unable\s+to)\s+(find|answer|determine|help)"
    r"|outside\s+(of\s+)?(my|the)\s+(scope|knowledge)"
    r"|not\s+(mentioned|covered|provided)\s+in\s+the\s+(context|documents?|sources?))",
    re.IGNORECASE,
)


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``; blank pieces dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


@lru_cache(maxsize=65536)
def _normalise(word: str) -> str:
    w = word.lower().replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    # A crude plural fold: enough for "claims"/"claim"; numbers are left alone.
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss") and not w.isdigit():
        w = w[:-1]
    return w


def content_words(text: str) -> list[str]:
    """Lower-cased, plural-folded words of ``text`` that are not stop words."""
    out = []
    for match in _WORD.finditer(text):
        raw = match.group(0).lower()
        if raw in STOPWORDS:
            continue
        word = _normalise(raw)
        if word and word not in STOPWORDS:
            out.append(word)
    return out


def is_refusal(answer: str) -> bool:
    """True for "I don't know"-style answers (short answers only: a long answer that merely
    mentions missing information still makes claims worth checking)."""
    return len(answer) <= 400 and _REFUSAL.search(answer) is not None
