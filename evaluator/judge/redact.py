"""PII redaction: the judge is an outside service, so personal data is replaced before any
text leaves the process.

A :class:`Redactor` replaces what it recognises by a token and counts it by kind:

- ``[EMAIL]``: ``local@domain.tld`` (plus-addressing, dots, subdomains, Unicode letters); the
  domain needs a dot and a TLD of two or more letters, so ``a@b`` and ``user@localhost`` stay;
- ``[CARD]``: 13 to 19 digits, optionally split by single spaces or dashes, that pass the Luhn
  check; a number failing Luhn (an order number) stays;
- ``[IBAN]``: a country code of the IBAN registry, two check digits and up to 30 capitals or
  digits, compact or in groups of four, that pass the ISO 13616 mod-97 check;
- ``[PHONE]``: ``+`` and 7 to 15 digits in groups (``+44 20 7946 0958``, ``+1-202-555-0143``,
  ``+49 (0)30 123456``, ``+12025550143``); North American ``(202) 555-0143``,
  ``202-555-0143``, ``202.555.0143``; national numbers with a trunk ``0`` and 9 to 12 digits in
  groups (``020 7946 0958``, ``(030) 123456``);
- ``[NAME]`` for each custom pattern of the config (``re`` syntax), counted under its name.

Precision is chosen over recall for phone numbers, because the judge is also shown policy and
support text in which numbers are the content: dates, times, years, versions, prices,
percentages and counts ("at least 8 characters", "30 days") must reach it unchanged. So a
phone number is never cut out of a longer run of numbers (``202-555-0143-12``,
``2026-12-01 10:30``), and a number without ``+`` needs one of the shapes above.

Not detected: names, postal addresses, dates of birth, national ID and tax numbers, account
numbers other than IBANs, IP addresses, phone numbers written without separators in national
form (``2025550143``) or with fewer than 7 digits, two phone numbers separated only by a space
(read as one longer number), obfuscated e-mail addresses (``jane at example dot com``),
lower-case IBANs. Custom patterns are the way to add any of them. Known false positives: about
one 16-digit number in ten passes Luhn, about one capital code in 97 that starts like an IBAN
passes mod 97, asset names like ``icon@2x.png`` look like addresses, and groups of digits after
a ``+`` (``+20 30 40 50``) look like a phone number.

Guarantees, for any ``str``: ``redact`` never raises; it is idempotent for the built-in kinds
(redacting its output again changes nothing), because every pattern treats a token's brackets
as it treats the characters they replaced and no pattern matches inside a token, neither the
tokens it writes nor tokens already in the input; the counts add up to the tokens written.
The built-in patterns take time linear in the text: no nested quantifier can match a string
in more than one way, and a candidate that a checksum or shape check refuses is bounded in
length. Custom patterns run as written, so keeping them linear is up to the config.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from evaluator.config import RedactionConfig

EMAIL = "email"
CARD = "card"
IBAN = "iban"
PHONE = "phone"

# Countries of the SWIFT IBAN registry, and those using IBANs outside it (mostly in Africa).
# A capital-letter code with another prefix is never an IBAN, which removes most of the one in
# 97 codes that would pass mod 97 by chance.
IBAN_COUNTRIES = frozenset({
    "AD", "AE", "AL", "AT", "AZ", "BA", "BE", "BG", "BH", "BI", "BR", "BY", "CH", "CR", "CY",
    "CZ", "DE", "DJ", "DK", "DO", "EE", "EG", "ES", "FI", "FK", "FO", "FR", "GB", "GE", "GI",
    "GL", "GR", "GT", "HN", "HR", "HU", "IE", "IL", "IQ", "IS", "IT", "JO", "KW", "KZ", "LB",
    "LC", "LI", "LT", "LU", "LV", "LY", "MC", "MD", "ME", "MK", "MN", "MR", "MT", "MU", "NI",
    "NL", "NO", "OM", "PK", "PL", "PS", "PT", "QA", "RO", "RS", "RU", "SA", "SC", "SD", "SE",
    "SI", "SK", "SM", "SO", "ST", "SV", "TL", "TN", "TR", "UA", "VA", "VG", "XK", "YE",
    # outside the registry
    "AO", "BF", "BJ", "CF", "CG", "CI", "CM", "CV", "DZ", "GA", "GQ", "GW", "IR", "KM", "MA",
    "MG", "ML", "MZ", "NE", "SN", "TD", "TG",
})


def token(kind: str) -> str:
    """The text that replaces a match of ``kind``: ``[EMAIL]``, ``[EMPLOYEE_ID]``."""
    return f"[{kind.upper()}]"


@dataclass(frozen=True, slots=True)
class Redaction:
    """A redacted text and how many matches of each kind were replaced in it.

    ``counts`` holds only kinds that were found, so an untouched text has empty counts."""

    text: str
    counts: Mapping[str, int]


# Every built-in match starts and ends with a letter or digit (or an opening ``(`` / ``+`` of a
# phone number), so every pattern's look-behind excludes ``]`` wherever it excludes letters and
# digits: a token written in place of a match then stops the next pattern exactly as the match
# did. This is what makes redacting twice change nothing.

_EMAIL = re.compile(
    r"(?<![\w.%+\-\]])"  # a local part starts a run of its characters, not after a token
    r"[\w.%+-]+@"
    r"(?:[^\W_][\w-]{0,62}\.)+"  # labels cannot contain dots, so they split only one way
    r"[^\W\d_]{2,63}"
    r"(?![\w-])"
)

# The card's digit run must be the whole run: no digit (or token) before it across a single
# separator, none after it, and no decimal point on either side.
_CARD = re.compile(
    r"(?<![\w.\]])(?<![\d\]][ -])"
    r"\d(?:[ -]?\d){12,18}"
    r"(?![\w]|[ -]?\d|\.\d)"
)

_IBAN = re.compile(
    r"(?<![\w\]])"
    r"(?P<compact>[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30})(?!\w)"
    r"|(?<![\w\]])"
    r"(?P<grouped>[A-Z]{2}[0-9]{2}(?:\ [A-Z0-9]{4}){2,7}(?:\ [A-Z0-9]{1,4})?)(?!\w)"
)

_PHONE = re.compile(
    r"""
    (?<![\w.+\]])               # not inside a word, a decimal, a '+' number or after a token
    (?!(?<=[\d\]][\ .:-])\d)    # a digit group must not continue a number or a time
    (?:
        (?P<intl>\+\d{1,15}(?:[\ .-]?\(\d{1,4}\)[\ .-]?\d{1,14}|[\ .-]\d{1,14}){0,7})
      | (?P<nanp>(?:1[\ .-])?(?:\(\d{3}\)\ ?|\d{3}[\ .-])\d{3}[\ .-]\d{4})
      | (?P<trunk>(?:\(0\d{1,4}\)\ ?|0\d{1,4}[\ -])\d{2,8}(?:[\ -]\d{2,8}){0,3})
    )
    (?!\w|[\ .-]?\d|:\d)        # nor continue into another digit group or a time
    """,
    re.VERBOSE,
)

_DIGIT_GROUP = re.compile(r"\d+")


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card_span(match: re.Match[str]) -> tuple[int, int] | None:
    digits = "".join(char for char in match.group() if char.isdecimal())
    return match.span() if _luhn(digits) else None


def _iban_prefix_plausible(text: str) -> bool:
    # Check digits 00, 01 and 99 are never issued (they alias valid ones).
    return text[:2] in IBAN_COUNTRIES and text[2:4] not in ("00", "01", "99")


def _iban_longest(compact: str, ends: Iterable[int]) -> int:
    """The largest ``end`` in ``ends`` for which ``compact[:end]`` passes mod 97, or 0.

    The check reads the BBAN, then the country and check digits, as one number (A = 10 ...
    Z = 35); its remainder is carried along the BBAN, so every prefix costs one step."""
    if not _iban_prefix_plausible(compact):
        return 0
    head = (int(compact[0], 36) * 100 + int(compact[1], 36)) * 100 + int(compact[2:4])
    wanted = frozenset(ends)
    best = remainder = 0
    for end, char in enumerate(compact[4:34], start=5):
        value = int(char, 36)
        remainder = (remainder * (100 if value > 9 else 10) + value) % 97
        if end >= 15 and end in wanted and (remainder * 1_000_000 + head) % 97 == 1:
            best = end
    return best


def _iban_span(match: re.Match[str]) -> tuple[int, int] | None:
    start, end = match.span()
    text = match.group()
    if match.lastgroup == "compact":
        return (start, end) if _iban_longest(text, (len(text),)) else None
    # Grouped: the last groups may be a word that follows the IBAN ("... 7034 EURO"), so the
    # longest prefix that ends at a group and is valid wins.
    group_ends = [*(i for i, char in enumerate(text) if char == " "), len(text)][1:]
    # The k-th of these ends (k from 0) has k + 1 spaces before it: compact end -> text end.
    cuts = {e - k - 1: e for k, e in enumerate(group_ends)}
    best = _iban_longest(text.replace(" ", ""), cuts.keys())
    return (start, start + cuts[best]) if best else None


def _international(groups: list[str]) -> bool:
    # A country code has 1-3 digits: "+2026-12-01" is not a phone number. E.164 allows 15.
    return 7 <= sum(map(len, groups)) <= 15 and (len(groups) == 1 or len(groups[0]) <= 3)


def _phone_span(match: re.Match[str]) -> tuple[int, int] | None:
    start, end = match.span()
    text = match.group()
    if match.lastgroup == "intl":
        if sum(char.isdecimal() for char in text) < 7:
            return None
        # The longest prefix that ends at a digit group and is a phone number wins, so that
        # "+12025550143 (202) 555-0143" is two numbers, not one of 21 digits; the second is
        # then found on its own, as it would be once the first is a token.
        groups = [m for m in _DIGIT_GROUP.finditer(text) if text[m.end():m.end() + 1] != ")"]
        for last in range(len(groups), 0, -1):
            cut = groups[last - 1].end()
            if _international(_DIGIT_GROUP.findall(text, 0, cut)):
                return start, start + cut
        return None
    if match.lastgroup == "trunk":
        digits = sum(char.isdecimal() for char in text)
        return (start, end) if 9 <= digits <= 12 else None  # 8 would be a date: 01-12-2026
    return start, end  # the North American shape has 10 or 11 digits


def _whole_match(match: re.Match[str]) -> tuple[int, int] | None:
    return match.span()


@dataclass(frozen=True, slots=True)
class _Detector:
    kind: str
    pattern: re.Pattern[str]
    # The part of a candidate to replace, or None when its checksum or shape says no.
    accept: Callable[[re.Match[str]], tuple[int, int] | None]


# Order matters: e-mail first (its local part may hold digits), cards and IBANs before phone
# numbers, so that a card number never becomes a phone number.
_BUILTIN = (
    _Detector(EMAIL, _EMAIL, _whole_match),
    _Detector(CARD, _CARD, _card_span),
    _Detector(IBAN, _IBAN, _iban_span),
    _Detector(PHONE, _PHONE, _phone_span),
)


class Redactor:
    """Replaces PII in text by ``[KIND]`` tokens; built once from the config, safe to share.

    Custom patterns run first, each on the text between tokens (so none can match inside
    one), then the built-in kinds in the order e-mail, card, IBAN, phone. Redaction is
    idempotent for the built-in kinds; a custom pattern keeps that property when it does not
    depend on what surrounds its match (anchors, ``\\b`` and look-arounds can see a token's
    edge where the original text was)."""

    def __init__(self, config: RedactionConfig) -> None:
        self._enabled = config.enabled
        self._custom = tuple((p.name, re.compile(p.regex)) for p in config.patterns)
        kinds = dict.fromkeys([d.kind for d in _BUILTIN] + [name for name, _ in self._custom])
        self._tokens = re.compile("|".join(re.escape(token(kind)) for kind in kinds))

    @classmethod
    def off(cls) -> Redactor:
        """A redactor that returns every text unchanged, for a judge on a trusted endpoint."""
        return cls(RedactionConfig(enabled=False))

    def redact(self, text: str) -> Redaction:
        """``text`` with every recognised item replaced by its token, and the counts."""
        counts: dict[str, int] = {}
        if not self._enabled:
            return Redaction(text, MappingProxyType(counts))
        for name, pattern in self._custom:
            text, n = self._substitute_between_tokens(text, name, pattern)
            _add(counts, name, n)
        for detector in _BUILTIN:
            text, n = self._substitute(text, detector)
            _add(counts, detector.kind, n)
        return Redaction(text, MappingProxyType(counts))

    def redact_many(self, texts: Sequence[str]) -> tuple[list[str], dict[str, int]]:
        """Redacts each text; the counts are summed over all of them."""
        out: list[str] = []
        totals: dict[str, int] = {}
        for text in texts:
            redaction = self.redact(text)
            out.append(redaction.text)
            for kind, n in redaction.counts.items():
                _add(totals, kind, n)
        return out, totals

    def _substitute(self, text: str, detector: _Detector) -> tuple[str, int]:
        # The search runs on the text as it was before this pattern's replacements; the
        # look-behinds treat ']' like the last character of a match, so that is the same.
        tokens = [m.span() for m in self._tokens.finditer(text)]
        token_starts = [start for start, _ in tokens]
        replacement = token(detector.kind)
        pieces: list[str] = []
        done = pos = n = 0
        while (match := detector.pattern.search(text, pos)) is not None:
            span = detector.accept(match)
            if span is None or _overlaps(span, tokens, token_starts):
                # Every later start is tried, so a refused candidate hides nothing.
                pos = match.start() + 1
                continue
            start, end = span
            pieces += (text[done:start], replacement)
            done = pos = end
            n += 1
        if not n:
            return text, 0
        pieces.append(text[done:])
        return "".join(pieces), n

    def _substitute_between_tokens(self, text: str, name: str,
                                   pattern: re.Pattern[str]) -> tuple[str, int]:
        replacement = token(name)
        pieces: list[str] = []
        done = n = 0
        bounds = [*(m.span() for m in self._tokens.finditer(text)), (len(text), len(text))]
        for token_start, token_end in bounds:
            segment = text[done:token_start]
            last = 0
            for match in pattern.finditer(segment):
                if match.end() == match.start():
                    continue  # the config refuses patterns matching "", not "(?=x)"
                pieces += (segment[last:match.start()], replacement)
                last = match.end()
                n += 1
            pieces += (segment[last:], text[token_start:token_end])
            done = token_end
        return ("".join(pieces), n) if n else (text, 0)


def _add(counts: dict[str, int], kind: str, n: int) -> None:
    if n:
        counts[kind] = counts.get(kind, 0) + n


def _overlaps(span: tuple[int, int], tokens: list[tuple[int, int]],
              token_starts: list[int]) -> bool:
    # Built-in matches cannot contain a bracket, so this only refuses a match inside a token
    # whose custom name happens to look like PII (a name made of a card number).
    i = bisect.bisect_left(token_starts, span[1])
    return i > 0 and tokens[i - 1][1] > span[0]
