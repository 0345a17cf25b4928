"""The sampling policy: which log records get scored.

Decisions are deterministic: a record is sampled iff ``hash(salt, request_id) < rate``, so two
sampler replicas, a re-run after a crash and an auditor with the same salt all agree. The first
rule (in config order) that matches a record sets its rate; otherwise ``default_rate`` applies.
Per-minute caps (token buckets, overall and per rule) bound the load a traffic spike can put on
the judges; a record refused by a cap is counted as ``capped``. Per-route hourly minimums
(``min_items_per_route_per_hour``, ``route_minimums``) top up small routes: a record its rate
skips is still taken, under the rule name ``route_minimum``, while its route is below its
minimum for the last hour. Caps and minimums depend on arrival order: they are the only
non-deterministic part.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from evaluator.config import RuleMatch, SamplingConfig
from evaluator.records import LogRecord

DEFAULT_RULE = "default"
ROUTE_MINIMUM_RULE = "route_minimum"
# Routes tracked for minimums; a log with more distinct routes than this is misconfigured (its
# route column is not a route) and the rest get no minimum, so memory stays bounded.
MAX_MINIMUM_ROUTES = 1000
_HASH_SPACE = float(2**64)


def sample_hash(salt: str, request_id: str) -> float:
    """A uniform number in [0, 1) fixed by the salt and the request id."""
    digest = hashlib.blake2b(request_id.encode("utf-8"), digest_size=8,
                             key=salt.encode("utf-8")[:64]).digest()
    return int.from_bytes(digest, "big") / _HASH_SPACE


class TokenBucket:
    """``per_minute`` tokens a minute, with a burst of up to one minute's worth.

    Thread-safe; time comes from ``clock`` (monotonic seconds) so tests need not sleep.
    """

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic, *,
                 capacity: float | None = None) -> None:
        self.capacity = float(per_minute if capacity is None else capacity)
        self.refill_per_s = per_minute / 60.0
        self._clock = clock
        self._tokens = self.capacity
        self._stamp = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.refill_per_s)
        self._stamp = now

    def available(self) -> bool:
        with self._lock:
            self._refill()
            return self._tokens >= 1.0

    def take(self) -> None:
        with self._lock:
            self._refill()
            self._tokens -= 1.0

    def try_take(self) -> bool:
        with self._lock:
            self._refill()
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
            return True


class Verdict(StrEnum):
    SAMPLED = "sampled"
    SKIPPED = "skipped"  # above the rate: the deterministic "no"
    CAPPED = "capped"  # would have been sampled, refused by a per-minute cap


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    rule: str
    rate: float

    @property
    def sampled(self) -> bool:
        return self.verdict is Verdict.SAMPLED


def rule_matches(match: RuleMatch, record: LogRecord) -> bool:
    """True when every condition set in ``match`` holds for ``record``."""
    if match.route is not None and record.route not in match.route:
        return False
    if match.model is not None and record.model not in match.model:
        return False
    if match.status is not None and (record.status or "") not in match.status:
        return False
    if match.feedback is not None and record.feedback not in match.feedback:
        return False
    if match.contexts_empty is not None and (len(record.contexts) == 0) != match.contexts_empty:
        return False
    if match.metadata:
        for key, want in match.metadata.items():
            if record.metadata.get(key) != want:
                return False
    return True


class SamplingPolicy:
    """Built from :class:`SamplingConfig`; rebuilt when the config file changes."""

    def __init__(self, config: SamplingConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._salt = config.salt.get_secret_value()
        self._overall = (TokenBucket(config.max_items_per_minute, clock)
                         if config.max_items_per_minute else None)
        self._rule_buckets = {
            r.name: TokenBucket(r.max_items_per_minute, clock)
            for r in config.rules if r.max_items_per_minute
        }
        self._clock = clock
        # Hourly minimum per route: a bucket holding up to an hour's minimum, refilled evenly.
        # Every item sampled from the route takes a token when one is left; a skipped item is
        # taken (as ``route_minimum``) only by a token. Buckets start full, so right after a
        # start or a config reload each route's first items fill its minimum.
        self._minimums: dict[str | None, TokenBucket | None] = {}
        self._minimums_on = bool(config.min_items_per_route_per_hour
                                 or any(config.route_minimums.values()))
        self._lock = threading.Lock()

    def _minimum_bucket(self, route: str | None) -> TokenBucket | None:
        if route in self._minimums:
            return self._minimums[route]
        per_hour = self.config.route_minimums.get(route or "",
                                                  self.config.min_items_per_route_per_hour)
        if len(self._minimums) >= MAX_MINIMUM_ROUTES:
            return None
        bucket = (TokenBucket(per_hour / 60.0, self._clock, capacity=per_hour)
                  if per_hour > 0 else None)
        self._minimums[route] = bucket
        return bucket

    def rule_for(self, record: LogRecord) -> tuple[str, float]:
        for rule in self.config.rules:
            if rule_matches(rule.match, record):
                return rule.name, rule.rate
        return DEFAULT_RULE, self.config.default_rate

    def wants(self, record: LogRecord) -> Decision:
        """The deterministic part alone: rule and rate, no caps."""
        rule, rate = self.rule_for(record)
        hit = rate > 0.0 and sample_hash(self._salt, record.request_id) < rate
        return Decision(Verdict.SAMPLED if hit else Verdict.SKIPPED, rule, rate)

    def decide(self, record: LogRecord) -> Decision:
        """The full decision: rate, then the rule's cap, then the overall cap; a record the
        rate skips is still taken while its route is below its hourly minimum (the overall cap
        still applies)."""
        decision = self.wants(record)
        if not decision.sampled and not self._minimums_on:
            return decision
        with self._lock:  # check every bucket before taking any, so a refusal costs no token
            minimum = self._minimum_bucket(record.route) if self._minimums_on else None
            if decision.sampled:
                buckets = [b for b in (self._rule_buckets.get(decision.rule), self._overall) if b]
            elif minimum is not None and minimum.available():
                decision = Decision(Verdict.SAMPLED, ROUTE_MINIMUM_RULE, decision.rate)
                buckets = [b for b in (self._overall,) if b]
            else:
                return decision
            if not all(b.available() for b in buckets):
                return Decision(Verdict.CAPPED, decision.rule, decision.rate)
            for bucket in buckets:
                bucket.take()
            if minimum is not None:
                minimum.try_take()
        return decision
