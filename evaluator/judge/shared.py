"""State the judge shares across worker processes: its budgets and its response cache.

With a Redis broker both live in that Redis, so every worker process on every host spends one
budget and reads one cache. A process without one (the demo's filesystem broker,
``groundwatch score``) keeps them in memory, which is right for a single process and says so
at start-up.

The budgets are hard: tokens per UTC day and USD per UTC hour. A call is refused once a
window's total has reached its limit; calls already in flight when it is reached still land,
so a window can overshoot by at most ``judge.max_concurrency`` calls per process. If Redis
cannot be read the budget counts as spent (the bill is the thing it guards).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import redis

from evaluator.config import JudgeBudgetConfig

log = logging.getLogger("groundwatch.judge")
PREFIX = "groundwatch:judge:"
MEMORY_CACHE_ITEMS = 10_000


class SharedState(Protocol):
    where: str

    def incr(self, key: str, amount: float, ttl_s: int) -> float: ...

    def read(self, key: str) -> float: ...

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes, ttl_s: int) -> None: ...

    def close(self) -> None: ...


class MemoryState:
    """One process's state (an LRU of at most ``MEMORY_CACHE_ITEMS`` cache entries)."""

    where = "memory of this process"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._numbers: dict[str, tuple[float, float]] = {}
        self._blobs: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._clock = clock

    def incr(self, key: str, amount: float, ttl_s: int) -> float:
        with self._lock:
            now = self._clock()
            value, expires = self._numbers.get(key, (0.0, now + ttl_s))
            if expires <= now:
                value, expires = 0.0, now + ttl_s
            self._numbers[key] = (value + amount, expires)
            return value + amount

    def read(self, key: str) -> float:
        with self._lock:
            value, expires = self._numbers.get(key, (0.0, 0.0))
            return value if expires > self._clock() else 0.0

    def get(self, key: str) -> bytes | None:
        with self._lock:
            hit = self._blobs.get(key)
            if hit is None or hit[1] <= self._clock():
                return None
            self._blobs.move_to_end(key)
            return hit[0]

    def put(self, key: str, value: bytes, ttl_s: int) -> None:
        with self._lock:
            self._blobs[key] = (value, self._clock() + ttl_s)
            self._blobs.move_to_end(key)
            while len(self._blobs) > MEMORY_CACHE_ITEMS:
                self._blobs.popitem(last=False)

    def close(self) -> None:
        return None


class RedisState:
    """The state in Redis (the broker's): ``INCRBYFLOAT`` with a TTL per window."""

    def __init__(self, url: str, *, timeout_s: float = 2.0) -> None:
        self.where = "Redis (shared by every worker)"
        self._client = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                            socket_connect_timeout=timeout_s)

    def incr(self, key: str, amount: float, ttl_s: int) -> float:
        pipe = self._client.pipeline()
        pipe.incrbyfloat(key, amount)
        pipe.expire(key, ttl_s, nx=True)
        value, _ = pipe.execute()
        return float(value)

    def read(self, key: str) -> float:
        value = self._client.get(key)
        return float(value) if value is not None else 0.0

    def get(self, key: str) -> bytes | None:
        value = self._client.get(key)
        return value if isinstance(value, bytes) else None

    def put(self, key: str, value: bytes, ttl_s: int) -> None:
        self._client.set(key, value, ex=max(1, ttl_s))

    def close(self) -> None:
        self._client.close()


def shared_state_for(broker_url: str) -> SharedState:
    if broker_url.startswith(("redis://", "rediss://", "unix://")):
        return RedisState(broker_url)
    return MemoryState()


class Budget:
    """Tokens per UTC day and USD per UTC hour, across processes (see the module docstring)."""

    def __init__(self, config: JudgeBudgetConfig, state: SharedState, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.state = state
        self._clock = clock
        self._warned: set[str] = set()

    def _keys(self) -> tuple[str, str]:
        now = datetime.fromtimestamp(self._clock(), UTC)
        return (f"{PREFIX}tokens:{now:%Y%m%d}", f"{PREFIX}usd:{now:%Y%m%d%H}")

    def exhausted(self) -> str | None:
        """The spent budget's config key, or None while both have room."""
        tokens_key, usd_key = self._keys()
        try:
            if self.config.tokens_per_day and \
                    self.state.read(tokens_key) >= self.config.tokens_per_day:
                return self._spent("judge.budget.tokens_per_day")
            if self.config.usd_per_hour and \
                    self.state.read(usd_key) >= self.config.usd_per_hour:
                return self._spent("judge.budget.usd_per_hour")
        except Exception as exc:
            log.warning("cannot read the judge budget (%s): counted as spent", exc)
            return "judge.budget (unreadable)"
        self._warned.clear()
        return None

    def _spent(self, key: str) -> str:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("judge budget %s is spent: the judge stops until the window ends; "
                        "cheap scores keep flowing", key)
        return key

    def spend(self, tokens: int, usd: float) -> None:
        tokens_key, usd_key = self._keys()
        if tokens:
            self.state.incr(tokens_key, float(tokens), 2 * 86400)
        if usd:
            self.state.incr(usd_key, usd, 2 * 3600)

    def spent(self) -> tuple[float, float]:
        """(tokens today, USD this hour)."""
        tokens_key, usd_key = self._keys()
        return self.state.read(tokens_key), self.state.read(usd_key)


class ResponseCache:
    """A judge's results by (metric, judge model, prompt version, inputs). Only ``ok`` and
    ``not_applicable`` results are kept: an error is never served from the cache."""

    def __init__(self, state: SharedState, ttl_s: float) -> None:
        self.state = state
        self.ttl_s = int(ttl_s)

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    @staticmethod
    def key(metric: str, model: str, prompt_version: str, inputs: Any) -> str:
        blob = json.dumps([metric, model, prompt_version, inputs], ensure_ascii=False,
                          sort_keys=True, separators=(",", ":"))
        return PREFIX + "cache:" + hashlib.sha256(blob.encode("utf-8", "surrogatepass")) \
            .hexdigest()

    def get(self, key: str) -> Any | None:
        if not self.enabled:
            return None
        try:
            raw = self.state.get(key)
        except Exception as exc:
            log.warning("judge cache unreadable (%s): calling the judge", exc)
            return None
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def put(self, key: str, value: Any) -> None:
        if not self.enabled:
            return
        try:
            self.state.put(key, json.dumps(value).encode(), self.ttl_s)
        except Exception as exc:
            log.warning("could not write the judge cache (%s)", exc)
