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


_UNITS_WORDS = ("two", "three", "four", "five", "six", "seven", "eight", "nine")
_CARDINALS = {w: str(n) for n, w in enumerate(_UNITS_WORDS, start=2)} | {
    "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14",
    "fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19"}
_TENS = {"twenty": 2, "thirty": 3, "forty": 4, "fifty": 5, "sixty": 6, "seventy": 7,
         "eighty": 8, "ninety": 9}
_ORDINALS = {"third": "3", "fourth": "4", "fifth": "5", "sixth": "6", "seventh": "7",
             "eighth": "8", "ninth": "9", "tenth": "10", "eleventh": "11", "twelfth": "12"}
# "one" and "first" are left alone (pronoun, "at first"); "second" only as a rank ("the
# second-largest", "the second most populous"), not as the unit of time.
_NUMBER_WORD = re.compile(
    r"\b(?:(" + "|".join(_TENS) + r")(?:[-\s](" + "|".join(_UNITS_WORDS) + r"|one))?|("
    + "|".join([*_CARDINALS, *_ORDINALS]) + r")|(?<=\bthe\s)(second)(?=[-\s]))\b",
    re.IGNORECASE)
# "2018–19" (a season or academic year) is 2018 to 2019; "the '70s" and "70's" are the 1970s.
_YEAR_RANGE = re.compile(r"\b((?:1[89]|20)(\d\d))\s*([–—-])\s*(\d\d)\b(?![-–—]?\d)")
_DECADE = re.compile(r"(?<![\w.])(?:['’]([1-9]0)['’]?|([1-9]0)['’])s\b")


def _number_word(match: re.Match[str]) -> str:
    tens, unit, word, second = match.groups()
    if tens:
        return str(_TENS[tens.lower()] * 10 + (
            0 if unit is None else 1 if unit.lower() == "one" else int(_CARDINALS[unit.lower()])))
    if second:
        return "2"
    return _CARDINALS.get(word.lower()) or _ORDINALS[word.lower()]


_MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August",
                "September", "October", "November", "December")
# Dates written with digits only, year first ("2003-06-11", "2003.06.11", "2003/06/11") or
# day first with dots ("11.06.2003"), are read as "11 June 2003". Slashed day/month dates
# ("06/11/2003") are left alone: which of the two is the month is the writer's locale.
_YMD = re.compile(r"(?<![\w.])((?:1[5-9]|20)\d\d)([-./])(0?[1-9]|1[0-2])\2(0?[1-9]|[12]\d|3[01])"
                  r"(?![\w.]?\d)")
_DMY_DOTS = re.compile(r"(?<![\w.])(0?[1-9]|[12]\d|3[01])\.(0?[1-9]|1[0-2])\.((?:1[5-9]|20)\d\d)"
                       r"(?![\w.]?\d)")
# Clock times with am/pm are read on the 24-hour clock ("5 pm", "5:30 p.m." -> "17:00",
# "17:30"), so "17:00" and "5 pm" carry the same numbers.
_CLOCK = re.compile(r"\b(1[0-2]|0?[1-9])(?::([0-5]\d))?\s*([ap])\.?\s?m\b\.?", re.IGNORECASE)


def _date(day: str, month: str, year: str) -> str:
    return f"{int(day)} {_MONTH_NAMES[int(month) - 1]} {year}"


def _clock(match: re.Match[str]) -> str:
    hour = int(match.group(1)) % 12 + (12 if match.group(3).lower() == "p" else 0)
    return f"{hour}:{match.group(2) or '00'}"


def normalise_numbers(text: str, *, spelled: bool = False) -> str:
    """``text`` with numbers written one way: abbreviated year ranges in full ("2018–19" ->
    "2018–2019"), two-digit decades with their century ("70's" -> "1970s"), digit-only
    dates as "11 June 2003", clock times on the 24-hour clock and, if ``spelled``, number
    words as digits ("six" -> "6", "twenty-five" -> "25", "the fifth" -> "the 5")."""
    text = _YMD.sub(lambda m: _date(m.group(4), m.group(3), m.group(1)), text)
    text = _DMY_DOTS.sub(lambda m: _date(m.group(1), m.group(2), m.group(3)), text)
    text = _CLOCK.sub(_clock, text)
    if spelled:
        text = _NUMBER_WORD.sub(_number_word, text)
    text = _YEAR_RANGE.sub(lambda m: f"{m.group(1)}{m.group(3)}{m.group(1)[:2]}{m.group(4)}"
                           if m.group(4) > m.group(2) else m.group(0), text)
    return _DECADE.sub(lambda m: f"19{m.group(1) or m.group(2)}s", text)


def numbers(text: str, *, spelled: bool = False) -> set[str]:
    """Numbers in ``text``, normalised (``normalise_numbers``, thousands separators dropped,
    trailing .0 folded). ``spelled`` (for evidence and contexts) reads number words as
    numbers too, so a claim's "6" is found in "six"; a claim's own "three" is not made a
    number that must be found (long answers say "three main types" of what their sources
    list)."""
    return _numbers_in(normalise_numbers(text, spelled=spelled))


def _numbers_in(normalised: str) -> set[str]:
    out = set()
    for match in _NUMBER.finditer(normalised):
        n = _canonical(match.group(0))
        if n and n not in {"-"}:
            out.add(n)
    return out


def context_numbers(text: str) -> set[str]:
    """The numbers a claim may take from ``text`` (a context): its :func:`numbers`, number
    words included, and each amount in the other units of its kind it converts to exactly
    ("two weeks" holds 14 days, "1.5 kg" 1500 g), so an answer that says it in another unit
    is not read as giving another number."""
    normalised = normalise_numbers(text, spelled=True)
    out = _numbers_in(normalised)
    for match in _AMOUNT.finditer(normalised):
        value = float(match.group(1).replace(",", ""))
        for factor in _SCALES.get(match.group(2).lower(), ()):
            out.add(_canonical(f"{value * factor:.6f}"))
    return out


def _canonical(number: str) -> str:
    """"1,500" -> "1500", "+3" -> "3", "2.0" and "2.000000" -> "2", "1.50" -> "1.5"."""
    n = number.replace(",", "").lstrip("+")
    if "." in n:
        n = n.rstrip("0").rstrip(".")
    return n


# An amount and its unit, and what the amount is in the units it converts to exactly.
_AMOUNT = re.compile(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?)\s?-?([a-zA-Z]+)\b")
_PER = {  # unit -> (dimension, size in the dimension's base unit)
    **{u: ("time", 1.0) for u in ("second", "seconds", "sec", "secs")},
    **{u: ("time", 60.0) for u in ("minute", "minutes", "min", "mins")},
    **{u: ("time", 3600.0) for u in ("hour", "hours", "hr", "hrs")},
    **{u: ("time", 86400.0) for u in ("day", "days")},
    **{u: ("time", 604800.0) for u in ("week", "weeks")},
    **{u: ("mass", 1.0) for u in ("g", "gram", "grams")},
    **{u: ("mass", 1000.0) for u in ("kg", "kilogram", "kilograms")},
    **{u: ("length", 0.001) for u in ("mm", "millimetre", "millimetres", "millimeter",
                                      "millimeters")},
    **{u: ("length", 0.01) for u in ("cm", "centimetre", "centimetres", "centimeter",
                                     "centimeters")},
    **{u: ("length", 1.0) for u in ("m", "metre", "metres", "meter", "meters")},
    **{u: ("length", 1000.0) for u in ("km", "kilometre", "kilometres", "kilometer",
                                       "kilometers")},
    **{u: ("volume", 0.001) for u in ("ml", "millilitre", "millilitres", "milliliter",
                                      "milliliters")},
    **{u: ("volume", 1.0) for u in ("l", "litre", "litres", "liter", "liters")},
    **{u: ("data", 1e3) for u in ("kb", "kilobyte", "kilobytes")},
    **{u: ("data", 1e6) for u in ("mb", "megabyte", "megabytes")},
    **{u: ("data", 1e9) for u in ("gb", "gigabyte", "gigabytes")},
    **{u: ("data", 1e12) for u in ("tb", "terabyte", "terabytes")},
}
_SCALES: dict[str, tuple[float, ...]] = {
    unit: tuple(size / other for other in sorted({o for d, o in _PER.values() if d == dim})
                if other != size)
    for unit, (dim, size) in _PER.items()}


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
