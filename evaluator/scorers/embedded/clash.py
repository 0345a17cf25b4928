"""Contradiction cues: does a claim say the opposite of the evidence it is about?

Embeddings place "Passwords must be at least 12 characters long" and "Passwords can be any
length" close together: same topic, same words. What tells them apart is small and textual, so
it is checked here, by rule, on the claim against its best evidence sentences:

- ``negation``: one says "not" (cannot, never, no, without, ...) and the other does not —
  unless an antonym swap undoes it ("cannot be turned off" = "stays on");
- ``antonym``: the claim has a word whose opposite the evidence has ("optional" / "required",
  "free" / "paid", "public" / "private", "before" / "after", an "un-"/"non-" prefix), and the
  polarity does not undo it ("not optional" = "mandatory");
- ``quantifier``: the claim is unrestricted ("any", "all", "every", "unlimited", "anyone")
  where the evidence restricts ("at least", "at most", "only", "up to", "maximum"), or the
  claim restricts with "only" where the evidence says "every" / "all";
- ``entity``: the claim names something (a capitalised word) that the whole context does not
  hold, where its evidence names something else;
- ``unit``: the same number with another unit of the same kind (12 GB / 12 MB, 30 days /
  30 hours, 5 % / 5 USD is not a clash);
- ``date``: a month or weekday that the context does not hold, where the evidence has another;
- numbers that differ are :mod:`.features`' ``number`` clash.

A clash counts only when the evidence is about the same thing: at least ``min_overlap`` of the
claim's other content words (IDF-weighted) are in that evidence sentence. Which kinds flip a
verdict, and that overlap, are chosen by ``scripts/calibrate.py`` on out-of-fold dev numbers.
Pure Python; no model.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from evaluator.scorers.embedded import textops as tx
from evaluator.scorers.text import content_words

# Memoised per text: the whole context is read again for each of a claim's evidence sentences
# (and each claim of an answer). What these return is shared: callers only read it. Small:
# an item's context is touched on every call for it, and a context may be a whole web page.
_PER_TEXT = 128

KINDS = ("negation", "antonym", "quantifier", "entity", "unit", "date")
DEFAULT_MIN_OVERLAP = 0.6

_PAIRS = """
optional:mandatory optional:required optional:compulsory optional:obligatory free:paid
free:charged free:billed free:chargeable public:private enabled:disabled enable:disable
enables:disables allowed:forbidden allowed:prohibited allowed:banned permitted:prohibited
permitted:forbidden allow:forbid allow:prohibit allows:prohibits allows:forbids
included:excluded include:exclude includes:excludes automatic:manual automatically:manually
permanent:temporary permanently:temporarily online:offline increase:decrease
increases:decreases increased:decreased raise:lower before:after earlier:later more:less
more:fewer minimum:maximum higher:lower faster:slower first:last open:closed on:off
accept:reject accepts:rejects accepted:rejected visible:hidden internal:external
encrypted:unencrypted inside:outside start:end monthly:annually monthly:yearly daily:weekly
weekly:monthly weekdays:weekends upgrade:downgrade local:remote success:failure
valid:invalid secure:insecure possible:impossible full:partial unlimited:limited
same:different cheaper:pricier keep:delete kept:deleted keeps:deletes retain:delete
retained:deleted retains:deletes add:remove added:removed adds:removes gain:lose
expand:shrink lock:unlock locked:unlocked required:forbidden mandatory:forbidden
shared:private refund:charge refunded:charged win:lose above:below over:under
maximum:minimum upload:download sync:async synchronous:asynchronous keep:stop keeps:stops
continue:stop continues:stops read-only:writable
immediately:later instantly:later immediate:delayed same-day:next-day in-person:online
domestic:international
""".split()  # noqa: SIM905 (a word list reads better as text)
# Closed sets of mutually exclusive alternatives: any two members clash like antonyms.
_ALTERNATIVES = """
red green blue yellow orange purple black white grey gray pink brown
front back rear | left right | top bottom | upper lower | inner outer | north south east west
strongly eventually weakly | hourly daily weekly monthly quarterly yearly annually
small medium large | first second third fourth last | morning afternoon evening night
fridge freezer | terabyte gigabyte megabyte kilobyte | terabytes gigabytes megabytes kilobytes
litre litres liter liters millilitre millilitres milliliter milliliters
gram grams kilogram kilograms | celsius fahrenheit | iphone android
""".replace("\n", " | ").split("|")
ANTONYMS: dict[str, frozenset[str]] = {}
for _pair in _PAIRS:
    _a, _b = _pair.split(":")
    ANTONYMS[_a] = ANTONYMS.get(_a, frozenset()) | {_b}
    ANTONYMS[_b] = ANTONYMS.get(_b, frozenset()) | {_a}
for _group in _ALTERNATIVES:
    _members = _group.split()
    for _m in _members:
        ANTONYMS[_m] = ANTONYMS.get(_m, frozenset()) | (frozenset(_members) - {_m})

# Verbal negation only: "costs nothing" and "nobody" are too often a plain statement ("free",
# "no one else") to count as a flipped polarity.
# Verbs that say "not" ("excludes" is "does not include", "forbidden" is "not allowed") count
# as negators too, so a negated paraphrase agrees with them and their opposites clash by
# polarity ("includes" against "excludes"), not as an antonym pair.
_NEGATOR = re.compile(
    r"\b(?:not|no|never|neither|nor|without|cannot|\w+n['’]t|fail(?:s|ed)?\s+to|unable|"
    r"lack(?:s|ed|ing)?|absen(?:t|ce)|unlikely|forb(?:id|ids|idden|ade)|"
    r"prohibit(?:s|ed)?|disallow(?:s|ed)?|exclud(?:e|es|ed))\b", re.IGNORECASE)
# Idioms with a negator that negate nothing: "not only X but Y", "no matter", "if not all".
_IDIOM = re.compile(r"\b(?:(?:not|\w+n['’]t)\s+(?:only|just|solely|exclusively)|no\s+matter|"
                    r"if\s+not|whether\s+or\s+not|"
                    r"never-say-die|not\s+necessarily\s+\w+)\b", re.IGNORECASE)
# "before the backup, not after it": a contrast, not a negated statement.
_CONTRAST = re.compile(r"[,;]\s*(?:and\s+|but\s+)?not\s+[^,;.]*", re.IGNORECASE)
# ("No" needs its punctuation: "No refunds are given" is a statement.)
_ANSWER_PARTICLE = re.compile(
    r"^\s*(?:(?:yes|yep|nope|yeah|not\s+really|oh\s+no|well|sure)\s*[,:.!;—–-]?|"
    r"no\s*[,:.!;—–-])\s+", re.IGNORECASE)
# Bounds written with a negator negate nothing: "no later than March 1" is "by March 1".
_BOUND = re.compile(r"\b(?:no|not)\s+(?:later|earlier|sooner|more|less|fewer|longer|"
                    r"shorter|higher|lower)\s+than\b", re.IGNORECASE)
# Negation that is part of a name or a compound, not of the statement: "not-for-profit",
# "no-kill", "Rebel Without a Cause", "Not Ready for Prime Time Players"; and parentheses.
_COMPOUND_NEGATION = re.compile(r"\b(?:not|no|without)\s*-\s*\w+|(?<!^)(?<![.!?]\s)"
                                r"\b(?:Not|No|Without|Never)\b", re.MULTILINE)
# "non-X" / "unX" negates only as a predicate ("are non-refundable"), not as an attribute
# ("in non-Muslim nations").
_COPULA_PREFIX = re.compile(r"\b(?:is|are|was|were|be|been|being|become|becomes|remain|"
                            r"remains|stay|stays)\s+(?:\w+\s+)?(?:non\s*-\s*|un)([a-z]{4,})\b",
                            re.IGNORECASE)
_ATTRIBUTE_NON = re.compile(r"\bnon\s*-\s*\w+", re.IGNORECASE)
_PARENTHESES = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
_QUOTED = re.compile(r"[\"“][^\"”]{1,80}[\"”]")
# Claims shorter than this (content words) are not checked for polarity: "director", "nine".
MIN_POLAR_WORDS = 2
# ...nor clauses longer than this (words): a polarity flip somewhere in a long web-page
# clause says little about the claim (measured on the WiCE and ExpertQA dev files).
MAX_POLAR_CLAUSE_WORDS = 30
# ("each" is distributive, not unrestricted: "each key may make 100 requests".)
_UNIVERSAL = re.compile(r"\b(?:any|all|every|everyone|everybody|anyone|anybody|anything|"
                        r"anywhere|anytime|unlimited|whatever|whenever|no\s+limit|"
                        r"around\s+the\s+clock)\b|\b24/7\b", re.I)
# What "over", "under", "more than" restrict when they do: an amount ("over 100 users", not
# "year-over-year").
_AMOUNT = (r"(?:[$€£]?\d|a\s+(?:few|dozen|hundred|thousand)|two|three|four|five|six|seven|"
           r"eight|nine|ten|twelve|twenty|fifty|hundred)")
_RESTRICTED = re.compile(r"\b(?:at\s+least|at\s+most|only|just|once|single|up\s+to|some|"
                         r"certain|selected|most|several|a\s+few|"
                         r"no\s+more\s+than|"
                         r"no\s+less\s+than|minimum|maximum|limited\s+to|exclusively|"
                         r"(?:not\s+more|fewer|less|more)\s+than(?=\s+" + _AMOUNT + r")|"
                         r"(?:under|over)(?=\s+" + _AMOUNT + r")|"
                         r"or\s+more|or\s+less|or\s+fewer|business\s+hours|"
                         r"(?:mon|monday)\s*(?:to|-|–|through|until)\s*(?:fri|friday))\b|"
                         r"\b\d{1,2}[:.]\d{2}\s*(?:to|-|–|until)\s*\d{1,2}[:.]\d{2}", re.I)
_ONLY = re.compile(r"\b(?:only|exclusively|solely|just)\b", re.I)
_ALL = re.compile(r"\b(?:all|every|each|any|everyone|anyone)\b", re.I)
_UNITS = {
    "size": ("b", "byte", "bytes", "kb", "kib", "mb", "mib", "gb", "gib", "tb", "tib", "pb"),
    "time": ("second", "seconds", "sec", "secs", "minute", "minutes", "min", "mins", "hour",
             "hours", "hr", "hrs", "h", "day", "days", "week", "weeks", "month", "months",
             "year", "years", "business"),
    "money": ("usd", "eur", "gbp", "dollars", "dollar", "euros", "euro", "cents", "$", "€",
              "£"),
    "length": ("mm", "cm", "m", "km", "meter", "meters", "metres", "miles", "mile", "inch",
               "inches", "feet", "ft"),
    "share": ("%", "percent", "percentage"),
    "count": ("user", "users", "seat", "seats", "device", "devices", "member", "members",
              "character", "characters", "item", "items", "file", "files", "request",
              "requests", "attempt", "attempts", "times"),
}
_UNIT_KIND = {u: kind for kind, units in _UNITS.items() for u in units}
_UNIT_ALIASES = {"seconds": "second", "secs": "second", "sec": "second", "minutes": "minute",
                 "mins": "minute", "min": "minute", "hours": "hour", "hrs": "hour", "hr": "hour",
                 "h": "hour", "days": "day", "weeks": "week", "months": "month",
                 "years": "year", "bytes": "byte", "b": "byte", "dollars": "usd",
                 "dollar": "usd", "$": "usd", "euros": "eur", "euro": "eur", "€": "eur",
                 "£": "gbp", "percent": "%", "percentage": "%", "meters": "m", "metres": "m",
                 "meter": "m", "miles": "mile", "inches": "inch", "feet": "ft"}
_NUM_UNIT = re.compile(r"([$€£])?\s?(\d[\d,]*(?:\.\d+)?)\s?(%|[A-Za-z]+)?")
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
             "weekend", "weekends")
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december")
_CALENDAR = frozenset(_MONTHS + _WEEKDAYS)


@dataclass(frozen=True, slots=True)
class Clash:
    """A contradiction cue: its kind, what clashes (``claim_says`` / ``evidence_says``), the
    evidence sentence, and how much of the claim's other words that sentence holds."""

    kind: str
    claim_says: str
    evidence_says: str
    evidence: str
    overlap: float

    @property
    def detail(self) -> str:
        return (f"{self.kind}: the claim says {self.claim_says!r}, the evidence says "
                f"{self.evidence_says!r}")


def _join_hyphens(text: str) -> str:
    """"non - governmental" (a tokeniser's spacing) as "non-governmental"."""
    return re.sub(r"(?<=\w)\s+-\s+(?=\w)", "-", text)


def _words(text: str) -> list[str]:
    return [w.lower() for w in re.findall(r"[A-Za-z][A-Za-z'-]*", _join_hyphens(text))]


@lru_cache(maxsize=_PER_TEXT)
def _word_set(text: str) -> frozenset[str]:
    return frozenset(_words(text))


def _statement(text: str) -> str:
    """``text`` without a leading yes/no particle, contrastive "…, not X" tails, parentheses,
    quoted titles and negation inside names or compounds."""
    text = _PARENTHESES.sub(" ", _ANSWER_PARTICLE.sub("", text))
    text = _COMPOUND_NEGATION.sub(" ", _QUOTED.sub(" ", _IDIOM.sub(" ", _BOUND.sub(" ", text))))
    return _CONTRAST.sub("", text)


def _without_attributes(text: str) -> str:
    """``text`` with attributive "non-X" compounds dropped (predicates kept)."""
    keep = {m.start(): m.end() for m in _COPULA_PREFIX.finditer(text)}
    out, last = [], 0
    for m in _ATTRIBUTE_NON.finditer(text):
        if any(start <= m.start() < end for start, end in keep.items()):
            continue
        out.append(text[last:m.start()])
        last = m.end()
    out.append(text[last:])
    return "".join(out)


_CLAUSE = re.compile(
    r"\s*[;:]\s*|,\s*(?=(?:and|but|which|while|whereas|although|though|so|yet)\b)|\s+but\s+|"
    r"\s+and\s+(?=(?:can|cannot|can't|is|are|isn't|aren't|was|were|must|may|will|won't|"
    r"do|does|doesn't|don't|did|didn't|has|have|not|never|should|shall)\b)|"
    r"(?<!\bof)\s+(?=(?:unless|except|because|which|whereas)\b)", re.IGNORECASE)
# A leading condition ("If a company does not protect its mark, ...", "Without sponsorship,
# programs lack funding") supposes; it does not say: its negators assert nothing.
_CONDITION = re.compile(r"^\s*(?:if|unless|without|when|whenever|once|in\s+case)\b[^,;]*,\s*",
                        re.IGNORECASE)


def clauses(text: str) -> list[str]:
    """``text`` cut at clause boundaries (";", ", and", ", which", " but ", " and cannot"):
    polarity is compared clause by clause, so "kept for 30 days and cannot be restored" does
    not make "kept for 30 days" a negation."""
    parts = [p.strip(" ,.") for p in _CLAUSE.split(text) if p and p.strip(" ,.")]
    return [p for p in parts if any(ch.isalpha() for ch in p)] or [text]


def _prefix_negations(text: str, other: str) -> int:
    """Predicates negated by a prefix ("are non-refundable", "is unavailable") whose stem the
    other text holds unprefixed: they flip polarity like "not" ("cannot be refunded")."""
    other_stems = _stems(_words(other))
    return sum(stem(m.group(1)) in other_stems for m in _COPULA_PREFIX.finditer(text))


# How far a negator reaches, in words other than fillers: "cannot be turned off" negates
# "turned off", but "no information indicating that any dates were cancelled" says nothing of
# the claim's tour, nor "checks every path without checking the functionality of the design"
# of the design.
NEGATION_SCOPE = 2
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’-]*")
# Words too common to tie a negator to the other text's statement.
_SCOPE_FILLER = frozenset({
    "the", "a", "an", "of", "to", "in", "on", "at", "for", "by", "with", "and", "or", "is",
    "are", "be", "been", "was", "were", "it", "its", "this", "that", "these", "those", "can",
    "could", "may", "might", "must", "will", "would", "should", "shall", "do", "does", "did",
    "has", "have", "had", "any", "there", "their", "they", "them", "you", "your", "we", "our",
    "he", "she", "his", "her", "i", "my", "as", "so", "than", "then", "also", "even", "yet",
    "very", "more", "most", "such", "from", "into", "about", "under", "over", "after",
    "before", "between", "through", "during", "within", "across", "against", "among", "upon",
    "via", "per", "who", "which", "what", "where", "when", "how", "not", "no", "never"})


def _scoped_negators(statement: str, other: str) -> int:
    """Negators of ``statement`` whose scope (the ``NEGATION_SCOPE`` words after them, or
    before them at the end of a clause) holds a word of ``other``: a negator about something
    the other text does not speak of ("... without checking the functionality") is no
    disagreement with it."""
    other_words = [w for w in _words(other) if w not in _SCOPE_FILLER]
    # The other text's words and their opposites: "cannot be turned off" is about a claim's
    # "keeps it on".
    # ...with compounds read in parts ("non-refundable" is about "refunded").
    parts = [p for w in other_words for p in w.split("-") if len(p) > 2]
    shared = {stem(w) for w in [*other_words, *parts]} | {
        stem(a) for w in _words(other) for a in ANTONYMS.get(w, ()) if a not in _SCOPE_FILLER}
    tokens = [t for t in _TOKEN.finditer(statement) if t.group(0).lower() not in _SCOPE_FILLER]
    negators = list(_NEGATOR.finditer(statement))
    scoped = [False] * len(negators)
    # Right to left: a negator whose scope holds another, scoped one is scoped too ("not
    # allowed without consent": both, so the sentence is positive about consent).
    for i in reversed(range(len(negators))):
        match = negators[i]
        after = [t for t in tokens if t.start() >= match.end()][:NEGATION_SCOPE]
        words = [t.group(0) for t in after] or [  # "..., but the free plan does not."
            t.group(0) for t in tokens if t.end() <= match.start()][-2:]
        reach = after[-1].end() if after else match.end()
        scoped[i] = any(stem(w) in shared or stem(_root(w)) in shared for w in words) or any(
            scoped[j] for j in range(i + 1, len(negators)) if negators[j].start() < reach)
        # ...and one in the scope of a scoped negator belongs to the same statement ("never
        # closed without the customer's confirmation").
        if scoped[i]:
            for j in range(i + 1, len(negators)):
                if negators[j].start() < reach:
                    scoped[j] = True
    return sum(scoped)


def _root(word: str) -> str:
    """``word`` without a negating prefix ("uncommon" -> "common"), else itself."""
    lower = word.lower()
    for prefix in ("non-", "non", "un"):
        if lower.startswith(prefix) and len(lower) - len(prefix) >= 4:
            return lower[len(prefix):]
    return lower


def _polarity(text: str, other: str) -> bool:
    """True when ``text`` is negative (an odd number of negators whose scope reaches what
    ``other`` speaks of) about what ``other`` says."""
    statement = _without_attributes(_statement(text))
    return (_scoped_negators(statement, other) + _prefix_negations(statement, other)) % 2 == 1


# A prefixed predicate counts as a negation in :func:`_negative` when its root is a word
# (wordfreq Zipf >= 2.5: "is unavailable", not "is understood").
_ROOT_IDF = (8.0 - 2.5) / 8.0


def _negative(text: str) -> bool:
    """The plain parity of ``text``'s negations (every negator and prefixed predicate, in
    scope or not). A polarity clash needs it to differ too: "can't print on both sides"
    against "doesn't support duplex printing" is negative on both sides, whatever the words
    each negator's scope shares with the other text."""
    statement = _without_attributes(_statement(text))
    prefixed = sum(tx.idf(m.group(1)) <= _ROOT_IDF for m in _COPULA_PREFIX.finditer(statement))
    return (len(_NEGATOR.findall(statement)) + prefixed) % 2 == 1


def _polar_word(word: str, text: str) -> bool:
    """Is ``word`` a negator, or a prefixed predicate of ``text`` ("is unavailable")?"""
    return bool(_NEGATOR.fullmatch(word)) or any(
        m.group(0).split()[-1].lower() == word.lower() for m in _COPULA_PREFIX.finditer(text))


def _negated(text: str) -> bool:
    return len(_NEGATOR.findall(_statement(text))) % 2 == 1


def _negators(text: str) -> list[str]:
    statement = _statement(text)
    return [m.lower() for m in _NEGATOR.findall(statement)] + [
        m.group(0).split()[-1].lower() for m in _COPULA_PREFIX.finditer(statement)]


@lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    """A crude English stem, enough to match "stores"/"store", "items"/"item"."""
    w = word.lower().replace("’", "'")
    for suffix in ("'s", "ability", "ibility", "able", "ible", "ies", "es", "s", "ing", "ed"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            w = w[: -len(suffix)] + ("y" if suffix == "ies" else "")
            break
    return w


def _stems(words: Iterable[str]) -> set[str]:
    return {stem(w) for w in words}


# "in-", "im-" and "dis-" make opposites of adjectives ("incorrect", "impossible",
# "dishonest") and of a few verbs ("disable", "disagree"), but they also begin unrelated words
# ("display"/"play", "inform"/"form", "impress"/"press"): for them the base must look like one.
_ADJECTIVE_END = re.compile(r"(?:able|ible|ent|ant|ive|al|ful|ate|ect|ure|ete|ic|id|ous|ed)$")
_DIS_VERBS = frozenset({"able", "agree", "allow", "appear", "approve", "arm", "connect",
                        "continue", "enable", "like", "obey", "own", "qualify", "trust"})


def _prefixed_opposite(word: str, other: set[str]) -> str | None:
    for prefix in ("un", "non", "non-", "in", "im", "dis"):
        if prefix + word in other:
            base, opposite = word, prefix + word
        elif word.startswith(prefix) and len(word) - len(prefix) >= 4 and \
                word[len(prefix):] in other:
            base, opposite = word[len(prefix):], word[len(prefix):]
        else:
            continue
        if prefix in ("in", "im", "dis") and not (_ADJECTIVE_END.search(base)
                                                   or base in _DIS_VERBS):
            continue
        return opposite
    return None


def antonym_swaps(claim: str, evidence: str) -> list[tuple[str, str]]:
    """(claim word, evidence word) pairs of opposites, each side lacking the other's word."""
    # An attributive "non-X" ("appeals even to non-sci-fi fans") says nothing against X.
    cw, ew = set(_words(claim)), set(_words(_without_attributes(_statement(
        _join_hyphens(evidence)))))
    out: list[tuple[str, str]] = []
    for word in sorted(cw - ew):
        opposite = ANTONYMS.get(word, frozenset()) & (ew - cw)
        if opposite:
            out.append((word, sorted(opposite)[0]))
            continue
        prefixed = _prefixed_opposite(word, ew - cw)
        if prefixed is not None and len(word) > 3:
            out.append((word, prefixed))
    return out


def overlap(claim: str, evidence: str, exclude: Iterable[str] = ()) -> float:
    """IDF-weighted share of the claim's content words (minus ``exclude``, negators and
    quantifiers) found in ``evidence``; 0 when nothing is left to compare."""
    # ("ap-south-1" is excluded with its parts: content_words reads "ap", "south".)
    skip = {part for w in exclude for part in [w.lower(), *re.findall(r"[^\W_]+", w.lower())]}
    skip |= {stem(w) for w in skip}  # content_words folds "keeps" to "keep", "hours" to "hour"
    words = [w for w in content_words(claim) if w not in skip and stem(w) not in skip
             and not _UNIVERSAL.fullmatch(w) and not _NEGATOR.fullmatch(w)]
    if not words:
        return 0.0
    present = _present_stems(evidence)
    total = sum(tx.idf(w) for w in words)
    return sum(tx.idf(w) for w in words if stem(w) in present) / total


@lru_cache(maxsize=_PER_TEXT)
def _present_stems(evidence: str) -> frozenset[str]:
    """The stems :func:`overlap` looks the claim's words up in."""
    return frozenset(_stems(set(content_words(evidence)) | tx.lower_words(evidence)))


@lru_cache(maxsize=_PER_TEXT)
def _num_units(text: str) -> dict[str, frozenset[tuple[str, str]]]:
    found: dict[str, set[tuple[str, str]]] = {}
    for match in _NUM_UNIT.finditer(text):
        currency, number, unit = match.group(1), match.group(2), match.group(3)
        unit = (currency or unit or "").lower()
        kind = _UNIT_KIND.get(unit)
        if kind is None:
            continue
        number = number.replace(",", "")
        found.setdefault(number, set()).add((kind, _UNIT_ALIASES.get(unit, unit)))
    return {number: frozenset(units) for number, units in found.items()}


def _unit_clash(claim: str, evidence: str, context: str) -> tuple[str, str] | None:
    mine, theirs, anywhere = _num_units(claim), _num_units(evidence), _num_units(context)
    for number, units in mine.items():
        for kind, unit in units:
            if (kind, unit) in anywhere.get(number, ()):
                continue  # the context says it, in another sentence
            other = {u for k, u in theirs.get(number, ()) if k == kind and u != unit}
            if other and (kind, unit) not in theirs.get(number, ()):
                return f"{number} {unit}", f"{number} {sorted(other)[0]}"
    return None


# When something happens: at once, or after a while ("stops working immediately" against
# "keeps working for 24 hours", "takes effect at the end of the billing cycle").
_AT_ONCE = re.compile(r"\b(?:immediately|instantly|at\s+once|right\s+away|straight\s+away|"
                      r"without\s+delay)\b", re.I)
_LATER = re.compile(r"\b(?:(?:for|after|within|in|over)\s+(?:\d+|an?|one|two|three|four|five|"
                    r"six|seven|ten|several|a\s+few)\s+(?:minute|hour|day|week|month|year|"
                    r"business\s+day)s?|at\s+the\s+end\s+of|the\s+next\s+(?:day|week|month)|"
                    r"later|eventually)\b", re.I)


def _calendar_clash(claim: str, evidence: str, context: str) -> tuple[str, str] | None:
    cw, ew, xw = _word_set(claim), _word_set(evidence), _word_set(context)
    for names in (_MONTHS, _WEEKDAYS):
        said = [w for w in cw & set(names) if w not in xw]
        other = sorted((ew & set(names)) - cw)
        if said and other and not (names is _MONTHS and said == ["may"]):
            return said[0], other[0]
    for mine, theirs in ((_AT_ONCE, _LATER), (_LATER, _AT_ONCE)):
        said_m, other_m = mine.search(claim), theirs.search(evidence)
        if said_m and other_m and not theirs.search(claim) and not mine.search(evidence):
            return said_m.group(0).lower(), other_m.group(0).lower()
    return None


def find_clash(claim: str, evidence: Sequence[str], context: str, *,
               min_overlap: float = DEFAULT_MIN_OVERLAP,
               kinds: Iterable[str] = KINDS) -> Clash | None:
    """The first clash of ``kinds`` between ``claim`` and one of its ``evidence`` sentences
    (best first) that is about the same thing; ``context`` is all of the retrieved text."""
    wanted = set(kinds)
    if claim.rstrip().endswith("?"):
        return None  # a question claims nothing
    for sentence in evidence:
        found = _clash_with(claim, sentence, context, wanted, min_overlap)
        if found is not None:
            return found
    return None


def _excluded(claim: str, sentence: str) -> bool:
    """Does the claim speak of what the sentence excludes ("in the fridge, not in the
    freezer": the freezer)? Then the sentence is negative about the claim's subject."""
    claim_stems = _stems(tx.lower_words(_statement(claim)))
    for match in _CONTRAST.finditer(_ANSWER_PARTICLE.sub("", sentence)):
        tail = [stem(w) for w in tx.lower_words(match.group(0))
                if w not in _FILLER and w not in ("not", "but", "and", "it", "them")]
        if tail and all(w in claim_stems for w in tail):
            return True
    return False


def _polar_clash(claim: str, sentence: str, wanted: set[str],
                 min_overlap: float) -> Clash | None:
    """negation and antonym, decided clause by clause: each clause of the claim against the
    clause of the sentence that holds most of its words."""
    excluded = _excluded(claim, sentence)
    if "negation" in wanted and excluded and not _negated(claim):
        # The claim asserts what the evidence rules out ("..., not in the freezer").
        share = overlap(claim, sentence, [w for pair in antonym_swaps(claim, sentence)
                                          for w in pair])
        if share >= min_overlap:
            return Clash("negation", "(affirms)", "not", sentence, share)
    if len(content_words(claim)) < MIN_POLAR_WORDS:
        return None  # "director", "nine": too little to have a polarity
    for part in clauses(_CONDITION.sub("", _ANSWER_PARTICLE.sub("", claim))):
        if len(part.split()) > MAX_POLAR_CLAUSE_WORDS:
            continue
        options = [c for c in clauses(_CONDITION.sub("", _PARENTHESES.sub(" ", sentence)))
                   if len(c.split()) <= MAX_POLAR_CLAUSE_WORDS]
        if not options:
            continue
        target = max(options, key=lambda e: overlap(part, e))
        swaps = antonym_swaps(part, target)
        swapped = [w for pair in swaps for w in pair]
        # A word that is itself a negation ("forbidden", "unavailable") is the polarity's to
        # weigh: "not allowed" agrees with "forbidden", "allowed" clashes with it by polarity.
        swaps = [(a, b) for a, b in swaps if not _polar_word(a, part)
                 and not _polar_word(b, target)]
        # About the same thing: most of the claim clause's words are in the evidence clause, or
        # all but a few of the evidence clause's are in the claim ("Reserved instances are
        # non-refundable" against a claim that adds "in full at the end of the term").
        share = max(overlap(part, target, swapped), overlap(target, part, swapped))
        if share < min_overlap:
            continue
        # A claim that denies what the evidence rules out agrees with it.
        differs = (_polarity(part, target) != _polarity(target, part)
                   and _negative(part) != _negative(target)
                   and not (excluded and _negated(part)))
        if "antonym" in wanted and swaps and not differs:
            a, b = swaps[0]
            return Clash("antonym", a, b, sentence, share)
        if "negation" in wanted and differs and not swaps:
            said = _negators(part) or ["(affirms)"]
            other = _negators(target) or ["(affirms)"]
            return Clash("negation", said[0], other[0], sentence, share)
    return None


# The pieces of a claim between commas, semicolons and "but": where a clash of a word is
# judged (if the piece holds this many content words).
_PHRASE = re.compile(r"\s*[,;:]\s+|\s+but\s+|\s+[—–]\s+")
MIN_PHRASE_WORDS = 3


def _clash_with(claim: str, sentence: str, context: str, wanted: set[str],
                min_overlap: float) -> Clash | None:
    if wanted & {"negation", "antonym"}:
        polar = _polar_clash(claim, sentence, wanted, min_overlap)
        if polar is not None:
            return polar
    if "negation" in wanted:
        name = _denied(claim, sentence)
        if name is not None:
            return Clash("negation", name, "not " + name, sentence, 1.0)
    swapped = {w for pair in antonym_swaps(claim, sentence) for w in pair}

    def about_the_same(*exclude: str) -> float | None:
        # Judged on the claim's clause that says the clashing word, as polarity is: in
        # "support is available 24/7, including weekends" the clash is in the first clause.
        said = exclude[0].lower() if exclude else ""
        parts = [c for c in _PHRASE.split(claim) if said and said in c.lower()
                 and len(content_words(c)) >= MIN_PHRASE_WORDS] or [claim]
        share = max(overlap(part, sentence, (*swapped, *exclude)) for part in parts)
        return share if share >= min_overlap else None
    if "quantifier" in wanted:
        found = _quantifier_clash(claim, sentence)
        if found is not None:
            share = about_the_same(*found[0].split(), *found[1].split())
            if share is not None:
                return Clash("quantifier", found[0], found[1], sentence, share)
    if "unit" in wanted:
        found = _unit_clash(claim, sentence, context)
        if found is not None:
            share = about_the_same()
            if share is not None:
                return Clash("unit", found[0], found[1], sentence, share)
    if "date" in wanted:
        found = _calendar_clash(claim, sentence, context)
        if found is not None:
            share = about_the_same(*found)
            if share is not None:
                return Clash("date", found[0], found[1], sentence, share)
    if "entity" in wanted:
        context_stems = _stems_and_identifiers(context)
        absent = sorted(n for n in _entities(claim) if stem(n) not in context_stems
                        and not _named_otherwise(n, claim, context))
        claim_stems = _stems_and_identifiers(claim)
        others = sorted(n for n in _entities(sentence) if stem(n) not in claim_stems)
        if absent and others:
            share = about_the_same(*absent)
            if share is not None:
                return Clash("entity", absent[0], others[0], sentence, share)
    return None


_FILLER = frozenset({"the", "a", "an", "of", "to", "in", "on", "at", "for", "by", "with",
                          "and", "or", "is", "are", "be", "it", "its", "this", "that"})


_IDENTIFIER = re.compile(r"\b[a-z]+(?:-[a-z0-9]+)*-[0-9]+[a-z0-9]*\b", re.IGNORECASE)


def _identifiers(text: str) -> list[str]:
    """Codes like region or plan ids ("eu-west-2", "us-east-1"): names written in lower case."""
    return [m.group(0).lower() for m in _IDENTIFIER.finditer(text)]


@lru_cache(maxsize=_PER_TEXT)
def _stems_and_identifiers(text: str) -> frozenset[str]:
    return frozenset(_stems(tx.lower_words(text)) | set(_identifiers(text)))


def _entities(text: str) -> set[str]:
    """Names and identifiers of ``text``; not what parentheses gloss ("the International
    Court of Justice (ICJ)"), not a capitalised word opening a list item ("Policies: Create
    ..."), not months or weekdays (the date kind's)."""
    if _shouted(text):
        return set(_identifiers(text))  # "WE ARE TALKING ABOUT ZOOTOPIA": no names to read
    text = _PARENTHESES.sub(" ", text)
    text = re.sub(r":\s+(?=[A-Z])", ". ", text)
    return {n for n in tx.names(text) if n not in _CALENDAR} | set(_identifiers(text))


def _shouted(text: str) -> bool:
    letters = [ch for ch in text if ch.isalpha()]
    return len(letters) >= 12 and sum(ch.isupper() for ch in letters) > 0.6 * len(letters)


# Words capitalised by custom that name no one.
_TITLES = frozenset({"mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "mt"})


def _fold(text: str) -> str:
    """``text`` lower-cased without accents ("Pokémon" -> "pokemon")."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@lru_cache(maxsize=_PER_TEXT)
def _folded_words(text: str) -> tuple[frozenset[str], str]:
    """The words of ``text`` folded (:func:`_fold`), and the folded text without spaces or
    hyphens ("wallstreet")."""
    folded = _fold(text)
    return frozenset(re.findall(r"[^\W_]+", folded)), re.sub(r"[\s-]+", "", folded)


def _named_otherwise(name: str, claim: str, context: str) -> bool:
    """Does ``context`` hold the claim's name ``name`` in another spelling: accents
    ("Pokemon"/"Pokémon"), written together ("Wallstreet"/"Wall Street"), an abbreviation
    ("US"/"United States") or another form of the word ("Brits"/"Britons",
    "Christianity"/"Christian", a clipped "Cumber"/"Cumberland")? Then it is no new name."""
    n = _fold(name)
    if n in _TITLES:
        return True
    words, joined = _folded_words(context)
    if n in words or all(part in words for part in n.split("-")):
        return True
    if len(n) >= 6 and n in joined:
        return True
    if len(n) <= 5 and re.search(rf"\b{re.escape(name.upper())}\b", claim):
        # Initials of runs of capitalised words ("United States", "Bank of America").
        initials, run = [], ""
        for token in [*re.findall(r"[^\W_][\w'’-]*|[^\w\s]", context), "."]:
            if token[0].isupper():
                run += token[0].lower()
            elif not (run and token.lower() in ("of", "the", "and", "for")):
                initials.append(run)
                run = ""
        if any(n in r for r in initials if len(r) >= 2):
            return True
    root = stem(n)
    return len(root) >= 4 and any(
        w.startswith(root) or (len(w) >= 5 and root.startswith(w)) for w in words)


def _denied(claim: str, sentence: str) -> str | None:
    """A short negative sentence about names the claim affirms ("PayPal is not accepted"
    against "You can pay by card or PayPal"): the name, or None."""
    if _negated(claim) or not _negated(sentence) or len(sentence.split()) > 10:
        return None
    # "The office is closed on Sundays" against "The office isn't open on Sundays": the claim
    # says the opposite word, or is negative itself ("is unavailable"): the polarity's case.
    if antonym_swaps(claim, sentence) or _negative(claim):
        return None
    # Capitalised words of the claim that the sentence also capitalises (its first word too:
    # "PayPal is not accepted").
    claim_caps = {w.lower() for w in re.findall(r"\b[A-Z][\w-]*", claim[1:])} | set(
        _identifiers(claim))
    named = {w.lower() for w in re.findall(r"\b[A-Z][\w-]*", sentence)} | set(
        _identifiers(sentence))
    named -= STOP_CAPS | _CALENDAR  # "Sundays" names no thing that could be denied
    if named and named <= claim_caps:
        return sorted(named)[0]
    return None


STOP_CAPS = frozenset({"the", "a", "an", "it", "this", "that", "these", "those", "there", "you",
                       "we", "they", "he", "she", "i", "our", "your", "its", "no", "not"})


def _quantifier_clash(claim: str, evidence: str) -> tuple[str, str] | None:
    claim, evidence = _IDIOM.sub(" ", claim), _IDIOM.sub(" ", evidence)  # "doesn't just"
    claim_all = _UNIVERSAL.search(claim)
    evidence_restricts = _RESTRICTED.search(evidence)
    if claim_all and evidence_restricts and not _RESTRICTED.search(claim) \
            and not _UNIVERSAL.search(evidence):
        return claim_all.group(0).lower(), evidence_restricts.group(0).lower()
    claim_only = _ONLY.search(claim)
    evidence_all = _ALL.search(evidence)
    if claim_only and evidence_all and not _ONLY.search(evidence) and not _ALL.search(claim):
        return claim_only.group(0).lower(), evidence_all.group(0).lower()
    return None


def clash_overlaps(claim: str, evidence: Sequence[str], context: str,
                   kinds: Iterable[str] = KINDS) -> dict[str, float]:
    """Per kind, the largest evidence overlap at which that kind fires (absent: never):
    ``find_clash(..., kinds={k}, min_overlap=t)`` finds a clash iff ``t <= result[k]``.
    For ``scripts/calibrate.py``, which chooses kinds and the overlap on dev data."""
    out: dict[str, float] = {}
    if claim.rstrip().endswith("?"):
        return out
    for kind in kinds:
        best = -1.0
        for sentence in evidence:
            found = _clash_with(claim, sentence, context, {kind}, 0.0)
            if found is not None:
                best = max(best, found.overlap)
        if best >= 0.0:
            out[kind] = best
    return out
