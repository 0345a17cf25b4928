"""One passage cache for all workers: encodings in a real Redis, bounded, never costing an item."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from pydantic import ValidationError

from evaluator import demo_traffic
from evaluator.config import Config, EmbeddedConfig
from evaluator.errors import ConfigError
from evaluator.records import LogRecord
from evaluator.scorers.base import Usage
from evaluator.scorers.embedded.model import Encoded, Encoder
from evaluator.scorers.embedded.runtime import model_key
from evaluator.scorers.embedded.scorer import EmbeddedScorer
from evaluator.scorers.embedded.shared_cache import SharedCache, pack, unpack
from evaluator.scorers.gates import apply_gates
from evaluator.store import Store
from tests.fault_helpers import RedisServer, redis_server
from tests.gw_helpers import (
    REDIS_HOST,
    REDIS_PORT,
    TEST_REDIS_DB,
    flush_test_redis,
    groundwatch_cmd,
    log_tail,
    parse_metrics,
    processes,
    snapshot,
    start,
    total,
    write_config,
)
from tests.prom_helpers import wait_until

pytestmark = pytest.mark.integration

PAGES = [f"Plan {i} keeps deleted buckets for {i + 3} days. Restores from plan {i} take {i} "
         f"hours. Support for plan {i} answers within {i + 1} hours." for i in range(6)]


def records(tag: str) -> list[LogRecord]:
    now = datetime.now(UTC)
    return [LogRecord(f"{tag}{i}", now, f"How long does plan {i} keep deleted buckets?",
                      (PAGES[i], PAGES[(i + 1) % 6]), f"Plan {i} keeps them for {i + 3} days.")
            for i in range(6)]


@pytest.fixture
def redis_cache(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis", persistent=False) as server:
        yield server


def scorer(url: str, **settings: object) -> EmbeddedScorer:
    return EmbeddedScorer(EmbeddedConfig(**settings), shared_cache_url=url)  # type: ignore[arg-type]


def test_a_second_worker_finds_the_first_workers_encodings(redis_cache: RedisServer) -> None:
    first, second = scorer(redis_cache.url), scorer(redis_cache.url)
    alone = EmbeddedScorer(EmbeddedConfig())
    try:
        a, usage_a = first.score_gated(apply_gates(records("a")))
        texts_before = second.encoder.texts_embedded
        b, usage_b = second.score_gated(apply_gates(records("a")))
        c = alone.score_batch(records("a"))
        distinct = usage_a.cache_misses
        assert distinct > 0 and usage_a.shared_cache_misses == distinct
        assert usage_a.shared_cache_hits == usage_a.shared_cache_errors == 0
        # The second worker embeds no context text: every one comes from the shared cache.
        assert (usage_b.shared_cache_hits, usage_b.shared_cache_misses) == (distinct, 0)
        own = {t for r in records("a") for t in (r.question, r.answer)} | {
            c.claim for r in b for c in r.explanation.claims or ()}
        assert second.encoder.texts_embedded - texts_before == len(own)  # no context text
        # Bit for bit what the worker computed, and what a worker without the cache computes.
        assert [(r.metrics, r.explanation) for r in b] == [(r.metrics, r.explanation) for r in a]
        assert [r.metrics for r in c] == [r.metrics for r in a]
    finally:
        for s in (first, second, alone):
            s.close()


def test_the_cache_stays_within_its_bound_and_keeps_what_is_used(
        redis_cache: RedisServer) -> None:
    cache = SharedCache(redis_cache.url, model="m", max_mb=0.25)
    rng = np.random.default_rng(1)

    def enc(n: int) -> Encoded:
        return Encoded(rng.random(384, dtype=np.float32),
                       rng.random((n, 384), dtype=np.float32), rng.random(n, dtype=np.float32))

    entry = len(pack(enc(20)))  # ~32 KB
    assert cache.put_many({"kept": enc(20)})
    for i in range(30):
        assert cache.put_many({f"e{i}": enc(20)})
        assert cache.get_many(["kept"]) is not None  # used: the last to go
    assert cache.stored_bytes() <= 0.25 * 1024 * 1024
    found = cache.get_many(["kept", "e0", "e29"])
    assert found is not None and set(found) == {"kept", "e29"}
    keys = {k.decode() for k in redis_cache.client().keys("groundwatch:emb:m:*")}
    entries = keys - {"groundwatch:emb:m:lru", "groundwatch:emb:m:sizes", "groundwatch:emb:m:bytes"}
    assert len(entries) == cache.stored_bytes() // entry
    cache.close()


def test_an_unreachable_cache_costs_no_item_and_is_counted(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", persistent=False)  # never started: refused
    s = scorer(server.url)
    s.encoder.shared.retry_after_s = 0.0  # type: ignore[union-attr]
    plain = EmbeddedScorer(EmbeddedConfig())
    try:
        got, usage = s.score_gated(apply_gates(records("x")))
        assert [r.metrics for r in got] == [r.metrics for r in plain.score_batch(records("x"))]
        assert usage.shared_cache_errors == 1 and usage.shared_cache_hits == 0
        assert all(m.outcome.value == "ok" for r in got for m in r.metrics)
    finally:
        s.close()
        plain.close()


def test_after_a_failure_the_cache_is_not_asked_until_the_retry_time(
        redis_cache: RedisServer) -> None:
    cache = SharedCache(redis_cache.url, model="m", retry_after_s=3600)
    redis_cache.stop()
    assert cache.get_many(["a"]) is None and not cache.available
    redis_cache.start()
    assert cache.get_many(["a"]) is None  # still waiting: no timeout paid per batch
    cache._down_until = 0.0
    assert cache.get_many(["a"]) == {}


def test_a_damaged_entry_is_an_error_not_a_score(redis_cache: RedisServer) -> None:
    cache = SharedCache(redis_cache.url, model="m")
    redis_cache.client().set("groundwatch:emb:m:bad", b"\x01\x02")
    assert cache.get_many(["bad"]) is None


def test_entries_round_trip_exactly_and_models_do_not_mix(redis_cache: RedisServer) -> None:
    e = Encoded(np.arange(384, dtype=np.float32) / 7,
                np.linspace(0, 1, 3 * 384, dtype=np.float32).reshape(3, 384),
                np.array([0.5, 0.0, 1.25], dtype=np.float32))
    back = unpack(pack(e))
    assert all(np.array_equal(x, y) for x, y in zip((e.vec, e.tokens, e.weights),
                                                    (back.vec, back.tokens, back.weights),
                                                    strict=True))
    fp32 = SharedCache(redis_cache.url, model=model_key("onnx", "fp32"))
    int8 = SharedCache(redis_cache.url, model=model_key("onnx", "int8"))
    assert fp32.put_many({"k": e}) and int8.get_many(["k"]) == {}
    assert model_key("onnx", "fp32") != model_key("torch", "fp32")


def test_the_shared_cache_setting() -> None:
    assert EmbeddedConfig(shared_cache="broker").shared_cache == "broker"
    with pytest.raises(ValidationError, match="redis:// URL"):
        EmbeddedConfig(shared_cache="memcached://127.0.0.1")
    config = Config.model_validate({"broker": {"url": "amqp://guest@127.0.0.1//"},
                                    "scoring": {"embedded": {"shared_cache": "broker"}}})
    with pytest.raises(ConfigError, match=r"scoring\.embedded\.shared_cache.*Redis broker"):
        EmbeddedScorer.from_config(config)
    config = Config.model_validate({"broker": {"url": "redis://127.0.0.1:6379/3"},
                                    "scoring": {"embedded": {"shared_cache": "broker"}}})
    s = EmbeddedScorer.from_config(config)
    assert s.encoder.shared is not None and s.encoder.shared.url.endswith(":6379/3")
    s.close()


def test_usage_adds_the_shared_lookups() -> None:
    total = Usage(shared_cache_hits=2, shared_cache_errors=1) + Usage(shared_cache_misses=3)
    assert (total.shared_cache_hits, total.shared_cache_misses,
            total.shared_cache_errors) == (2, 3, 1)


def test_one_encoder_alone_is_unchanged() -> None:
    encoder = Encoder()
    try:
        _, lookups = encoder.encode_passages_counted([("P", ["s1"])])
        assert (lookups.shared_hits, lookups.shared_misses, lookups.shared_errors) == (0, 0, 0)
    finally:
        encoder.close()


def test_real_workers_share_their_passage_encodings_through_the_broker(tmp_path: Path) -> None:
    """Two `groundwatch worker` processes, one after the other, each scoring half of the demo
    traffic with shared_cache = "broker": the second finds in Redis the passages the first
    embedded, and the metrics say so."""
    flush_test_redis()
    logs_url = f"sqlite:///{tmp_path}/logs.db"
    demo_traffic.create_log_table(logs_url)
    rows = demo_traffic.make_rows(80, seed=3)
    config = write_config(tmp_path, rate=1.0, scorer="embedded", batch_size=20)
    config.write_text(config.read_text() + '[scoring.embedded]\nshared_cache = "broker"\n')
    store = Store(f"sqlite:///{tmp_path}/gw.db")
    try:
        for n, half in enumerate((rows[:40], rows[40:])):
            demo_traffic.write_rows(logs_url, half)
            with processes() as procs:
                worker = start(procs, groundwatch_cmd(config, "worker", "--name", f"w{n}@%h"),
                               tmp_path / f"worker{n}.log")
                sampler = start(procs, groundwatch_cmd(config, "sampler", "--until-idle"),
                                tmp_path / f"sampler{n}.log")
                assert sampler.wait(timeout=120) == 0, log_tail(tmp_path / f"sampler{n}.log")

                def scored(n: int = n, worker: Any = worker) -> bool:
                    assert worker.poll() is None, log_tail(tmp_path / f"worker{n}.log")
                    counts = store.queries.count_items_by_status()
                    return counts["queued"] == 0 and counts["scored"] > 0
                wait_until(scored, timeout=120, what=f"worker {n} done")
    finally:
        store.close()
    m = parse_metrics(snapshot(tmp_path / "prom"))
    lookups = "groundwatch_scorer_shared_cache_lookups_total"
    own_misses = total(m, "groundwatch_scorer_cache_lookups_total", result="miss")
    hits, misses = total(m, lookups, result="hit"), total(m, lookups, result="miss")
    assert hits > 0 and total(m, lookups, result="error") == 0
    assert hits + misses == own_misses  # every miss of a worker's own cache was looked up
    keys = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=TEST_REDIS_DB).keys(
        "groundwatch:emb:onnx-fp32-*:bytes")
    assert len(keys) == 1
