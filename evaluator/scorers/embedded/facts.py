"""The facts a claim asserts, and which of them no passage contains (issue 17, "atomic
claims"): shown in the explanation, moving neither the value nor the verdict.

A claim such as "The show, syndicated by 20th Television, returns in 2021." asserts a core
("The show returns") and details attached to it: an apposition ("syndicated by 20th
Television"), a date ("in 2021"). One strong sentence match can carry the whole claim while a
detail is found nowhere; the explanation then names that detail beside the verdict. The split
is by rule (clauses, coordinations, appositions, parentheses, relative clauses, and
prepositional phrases that carry a number, a date or a name); a fact is *not found* when a
number or a name of it is in no passage, or less than half of its content words (IDF-weighted)
are in the context.

Chosen on the tuned part of WiCE (scripts/measure_facts.py; docs/scorers.md has both columns):
read against the claim's evidence sentence instead of the whole context, a fact was "not
found" for about three quarters of the fully supported items, nearly as often as for the
partly supported ones, because support on long pages is spread over sentences; against the
whole context, for a quarter of them against 69 % of the partly supported.

Why it moves neither the value nor the verdict: a feature that read the least covered fact
lost on the tuned part of the dev files (decision 0020), and on the sealed part of WiCE a
supported claim that names a fact is an item labelled fully supported twice as often as one
labelled partly supported, so "partly supported" would mostly be a false alarm. On unsupported
claims the named fact is what an operator wants to read.
"""

from __future__ import annotations

import re

from evaluator.scorers.embedded import textops as tx
from evaluator.scorers.text import content_words

MIN_COVERAGE = 0.5  # IDF-weighted share of a fact's content words found in the context
MIN_FACT_WORDS = 2  # shorter pieces are not facts ("he", "in it")
MAX_FACTS = 8

_PAREN = re.compile(r"\s*\(([^()]{2,200})\)")
# ", which ...", ", who ...", ", where ..." up to the next comma or the end
_RELATIVE = re.compile(r",\s+(?:which|who|whom|whose|where|when|including|such\s+as|"
                       r"especially|notably|mainly)\b[^,;]*")
# clause and coordination boundaries
_CLAUSE = re.compile(r"\s*(?:;|,\s*(?:and|but|while|whereas|although|though|yet|so)\b|"
                     r"\s(?:and|but)\s(?=(?:it|he|she|they|we|you|i|there|this|that|these|those|the|"
                     r"a|an|its|his|her|their|your|our)\b))\s*", re.IGNORECASE)
APPOSITION_WORDS = 8  # a piece between two commas of at most this many words is an apposition
# a prepositional phrase whose object has a digit or a capitalised word: "in 2021",
# "by 20th Television", "on 3 June", "for 30 days", "at Yale University"
_DETAIL = re.compile(
    r"\b(?:in|on|at|by|from|since|until|till|for|during|with|within|after|before|between|"
    r"of|to|over|under|about|around|near|than)\s+(?:the\s+|a\s+|an\s+)?"
    r"(?:[A-Z0-9][\w,:/'’-]*(?:\s+(?:[A-Z0-9][\w,:/'’-]*|of|the|de|per|"
    r"days?|weeks?|months?|years?|hours?|minutes?|percent|per\s+cent|km|miles?|"
    r"January|February|March|April|May|June|July|August|September|October|November|"
    r"December))*)")

# connectors left dangling at a piece's end ("on 3 June 1950 and")
_TRAILING = re.compile(r"(?:\s+(?:and|or|of|the|per|de))+$", re.IGNORECASE)
# the word after a number, taken with it unless it is one of _NOT_UNITS ("30 days", not "30 and")
_UNIT_AFTER = re.compile(r"\s+([a-z][a-z-]{1,20})\b")
_NOT_UNITS = frozenset({"and", "or", "but", "the", "a", "an", "in", "on", "at", "by", "to",
                        "of", "for", "with", "from", "is", "was", "are", "were", "which",
                        "that", "who", "when", "where", "as", "it", "he", "she", "they"})


def _words(text: str) -> int:
    return len(text.split())


def _clean(text: str) -> str:
    return _TRAILING.sub("", text.strip(" ,;:.-—–")).strip(" ,;:.-—–")


def _detail_span(clause: str, match: re.Match[str]) -> tuple[int, int]:
    """A detail's span; a number takes the word after it with it ("260,000 volumes")."""
    start, end = match.span()
    text = clause[start:end].rstrip(" ,;:.")
    end = start + len(text)
    if text.split()[-1][:1].isdigit():
        after = _UNIT_AFTER.match(clause, end)
        if after and after.group(1) not in _NOT_UNITS:
            end = after.end()
    return start, end



def split_facts(claim: str) -> list[str]:
    """The facts of ``claim``: its core first, then each detail, as written (at most
    ``MAX_FACTS``; one element when it asserts one fact)."""
    details: list[str] = []
    core = claim

    def take(pattern: re.Pattern[str], group: int = 0) -> None:
        nonlocal core
        pieces = [(m.span(), _clean(m.group(group))) for m in pattern.finditer(core)]
        pieces = [(span, piece) for span, piece in pieces if _words(piece) >= MIN_FACT_WORDS]
        details.extend(piece for _, piece in pieces)
        for (start, end), _ in reversed(pieces):
            core = core[:start] + " " + core[end:]

    take(_PAREN, 1)
    take(_RELATIVE)
    # appositions: a short piece between two commas, inside the sentence
    parts = core.split(",")
    if len(parts) >= 3:
        core, sep = parts[0], ","
        for piece in parts[1:-1]:
            if MIN_FACT_WORDS <= _words(piece) <= APPOSITION_WORDS and not _CLAUSE.match(
                    "," + piece):
                details.append(_clean(piece))
                sep = " "  # the apposition goes with its commas
            else:
                core, sep = core + sep + piece, ","
        core += sep + parts[-1]
    clauses = [c for c in (_clean(p) for p in _CLAUSE.split(core)) if c]
    facts: list[str] = []
    for clause in clauses:
        kept = clause
        for match in _DETAIL.finditer(clause):
            start, end = _detail_span(clause, match)
            piece = _clean(clause[start:end])
            rest = _clean(" ".join(kept.replace(clause[start:end], " ").split()))
            if _words(piece) >= MIN_FACT_WORDS and _words(rest) >= MIN_FACT_WORDS:
                details.append(piece)
                kept = rest
        facts.append(" ".join(kept.split()))
    facts = [f for f in facts if _words(f) >= MIN_FACT_WORDS] or [_clean(claim)]
    seen: set[str] = set()
    out: list[str] = []
    for fact in facts + details:
        key = fact.lower()
        if key not in seen:
            seen.add(key)
            out.append(fact)
    return out[:MAX_FACTS]


def not_found(claim: str, context_words: set[str], context_numbers: set[str]
              ) -> tuple[str, ...]:
    """The facts of ``claim`` (:func:`split_facts`, when it asserts more than one) that no
    passage contains: a number or a name of the fact absent from the context, or less than
    ``MIN_COVERAGE`` of its content words (IDF-weighted) in it. ``context_words``: the
    context's content and lower-cased words; ``context_numbers``: its numbers, normalised
    (``textops.context_numbers``)."""
    facts = split_facts(claim)
    if len(facts) < 2:
        return ()
    out = []
    for fact in facts:
        numbers = tx.numbers(fact)
        names = tx.names(fact)
        words = content_words(fact)
        if (numbers and tx.missing_share(numbers, context_numbers) > 0) or (
                names and tx.missing_share(names, context_words) > 0) or (
                words and tx.idf_coverage(words, context_words) < MIN_COVERAGE):
            out.append(fact)
    return tuple(out)
