"""The sampling policy: deterministic, rule-ordered, capped."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import SecretStr

from evaluator.config import SamplingConfig, SamplingRule
from evaluator.records import LogRecord
from evaluator.sampling import SamplingPolicy, TokenBucket, Verdict, sample_hash


def rec(i: int, **kw: object) -> LogRecord:
    base: dict[str, object] = {"request_id": f"req-{i}", "timestamp": datetime.now(UTC),
                               "question": "q?", "contexts": ("c",), "answer": "a"}
    base.update(kw)
    return LogRecord(**base)  # type: ignore[arg-type]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_hash_is_deterministic_uniform_and_salted() -> None:
    values = [sample_hash("s", f"req-{i}") for i in range(20000)]
    assert values == [sample_hash("s", f"req-{i}") for i in range(20000)]
    assert all(0.0 <= v < 1.0 for v in values)
    share = sum(v < 0.3 for v in values) / len(values)
    assert 0.28 < share < 0.32
    assert sample_hash("other", "req-1") != sample_hash("s", "req-1")


def test_rate_zero_and_one() -> None:
    never = SamplingPolicy(SamplingConfig(default_rate=0.0, max_items_per_minute=None))
    always = SamplingPolicy(SamplingConfig(default_rate=1.0, max_items_per_minute=None))
    assert not any(never.decide(rec(i)).sampled for i in range(500))
    assert all(always.decide(rec(i)).sampled for i in range(500))


def test_first_matching_rule_wins() -> None:
    cfg = SamplingConfig(
        default_rate=0.0, max_items_per_minute=None,
        rules=[
            SamplingRule(name="errors", match={"status": "error"}, rate=1.0),
            SamplingRule(name="search", match={"route": ["search"]}, rate=0.0),
            SamplingRule(name="empty", match={"contexts_empty": True}, rate=1.0),
            SamplingRule(name="tenant", match={"metadata": {"tenant": "acme"}}, rate=1.0),
            SamplingRule(name="down", match={"feedback": -1, "model": "m1"}, rate=1.0),
        ])
    policy = SamplingPolicy(cfg)
    assert policy.decide(rec(1, status="error", route="search")).rule == "errors"
    assert policy.decide(rec(2, route="search", contexts=())).rule == "search"
    assert policy.decide(rec(3, contexts=())).rule == "empty"
    assert policy.decide(rec(4, metadata={"tenant": "acme"})).rule == "tenant"
    assert policy.decide(rec(5, feedback=-1, model="m1")).rule == "down"
    assert policy.decide(rec(6, feedback=-1, model="m2")).rule == "default"


def test_decision_equals_hash_below_rate() -> None:
    cfg = SamplingConfig(salt=SecretStr("pepper"), default_rate=0.25, max_items_per_minute=None)
    policy = SamplingPolicy(cfg)
    for i in range(2000):
        r = rec(i)
        assert policy.decide(r).sampled == (sample_hash("pepper", r.request_id) < 0.25)


def test_token_bucket_refills_with_time() -> None:
    clock = FakeClock()
    bucket = TokenBucket(60, clock)  # one a second, burst of 60
    for _ in range(60):
        assert bucket.available()
        bucket.take()
    assert not bucket.available()
    clock.now += 1.0
    assert bucket.available()


def test_caps_overall_and_per_rule() -> None:
    clock = FakeClock()
    cfg = SamplingConfig(default_rate=1.0, max_items_per_minute=10, rules=[
        SamplingRule(name="chat", match={"route": "chat"}, rate=1.0, max_items_per_minute=3)])
    policy = SamplingPolicy(cfg, clock)
    chat = [policy.decide(rec(i, route="chat")).verdict for i in range(5)]
    assert chat == [Verdict.SAMPLED] * 3 + [Verdict.CAPPED] * 2
    other = [policy.decide(rec(100 + i)).verdict for i in range(10)]
    # 3 of the 10 overall tokens went to chat; a refused chat item took none.
    assert other.count(Verdict.SAMPLED) == 7 and other.count(Verdict.CAPPED) == 3
    clock.now += 60.0
    assert policy.decide(rec(999, route="chat")).sampled


def test_route_minimums_top_up_small_routes() -> None:
    clock = FakeClock()
    cfg = SamplingConfig(default_rate=0.1, max_items_per_minute=None,
                         min_items_per_route_per_hour=6, route_minimums={"billing": 12})
    policy = SamplingPolicy(cfg, clock)

    def by_rate(i: int) -> bool:
        return sample_hash("groundwatch", f"req-{i}") < 0.1

    # A small route: its first 6 items are all taken, then only its rate applies.
    docs = [policy.decide(rec(i, route="docs")) for i in range(40)]
    assert all(d.sampled for d in docs[:6])
    assert {d.rule for d in docs[:6]} <= {"route_minimum", "default"}
    assert [d.sampled for d in docs[6:]] == [by_rate(i) for i in range(6, 40)]
    # The per-route value overrides the default minimum.
    billing = [policy.decide(rec(i, route="billing")) for i in range(1000, 1040)]
    assert all(d.sampled for d in billing[:12])
    assert [d.sampled for d in billing[12:]] == [by_rate(i) for i in range(1012, 1040)]
    # An hour's minimum refills evenly: 10 minutes later, one more docs item (6 an hour).
    clock.now += 600.0
    later = [policy.decide(rec(i, route="docs")) for i in range(2000, 2200)]
    assert sum(d.rule == "route_minimum" for d in later) == 1


def test_items_sampled_by_rate_count_toward_the_minimum() -> None:
    cfg = SamplingConfig(default_rate=0.0, max_items_per_minute=None,
                         min_items_per_route_per_hour=5, rules=[
                             SamplingRule(name="vip", match={"metadata": {"vip": True}},
                                          rate=1.0)])
    policy = SamplingPolicy(cfg, FakeClock())
    vip = [policy.decide(rec(i, route="chat", metadata={"vip": True})) for i in range(5)]
    assert [d.rule for d in vip] == ["vip"] * 5
    # Those 5 used the hour's minimum: nothing more of the route is topped up.
    assert not any(policy.decide(rec(100 + i, route="chat")).sampled for i in range(50))
    assert policy.decide(rec(200, route="other")).rule == "route_minimum"


def test_route_minimum_respects_the_overall_cap_and_stays_bounded() -> None:
    cfg = SamplingConfig(default_rate=0.0, max_items_per_minute=3,
                         min_items_per_route_per_hour=10)
    policy = SamplingPolicy(cfg, FakeClock())
    got = [policy.decide(rec(i, route="docs")).verdict for i in range(6)]
    assert got == [Verdict.SAMPLED] * 3 + [Verdict.CAPPED] * 3
    # Off by default.
    off = SamplingPolicy(SamplingConfig(default_rate=0.0, max_items_per_minute=None))
    assert not any(off.decide(rec(i, route=f"r{i}")).sampled for i in range(100))
    # At most MAX_MINIMUM_ROUTES routes are tracked; later routes get no minimum.
    from evaluator.sampling import MAX_MINIMUM_ROUTES

    many = SamplingPolicy(SamplingConfig(default_rate=0.0, max_items_per_minute=None,
                                         min_items_per_route_per_hour=1))
    n = MAX_MINIMUM_ROUTES + 50
    assert sum(many.decide(rec(i, route=f"r{i}")).sampled for i in range(n)) == MAX_MINIMUM_ROUTES
    assert len(many._minimums) == MAX_MINIMUM_ROUTES


def test_reserved_rule_names() -> None:
    import pytest
    from pydantic import ValidationError

    for name in ("default", "route_minimum"):
        with pytest.raises(ValidationError, match="reserved"):
            SamplingConfig(rules=[SamplingRule(name=name, match={}, rate=1.0)])
