"""One passage cache for every worker: encodings kept in Redis, bounded in size.

RAG apps retrieve the same chunks again and again, for every worker process and every host.
Each worker keeps its own LRU (:class:`~evaluator.scorers.embedded.model.Encoder`); a text that
misses it is looked up here before it is embedded, and what a worker embeds is written here
for the others. A hit gives exactly the arrays the other worker computed (float32, bit for
bit), so a score never depends on which worker had the text first.

Keys are ``{prefix}:{model}:{sha}``: ``model`` names the exact model file (its sha256, from
the manifest) and precision, so workers on another export never read each other's vectors.
The size is bounded by ``max_mb``: a Lua script stores each entry with its size in a sorted
set (by last use) and evicts the least recently used entries past the bound, atomically
(standalone Redis: the script touches keys it is not passed, which Redis Cluster refuses).

A cache that cannot be reached never costs an item: the lookup counts as an error and the
texts are embedded as if missed; after a failure the cache is not asked again for
``retry_after_s`` seconds, so a dead Redis costs one timeout per interval, not one per batch.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import redis

from evaluator.scorers.embedded.model import Encoded
from evaluator.sources.engine import masked_url

log = logging.getLogger(__name__)

DIM = 384
_HEADER = struct.Struct("<II")  # vector length, token count

# KEYS: the LRU index (zset), the sizes (hash), the byte total (string).
# ARGV: max bytes, now, then key, value pairs.
_STORE = """
for i = 3, #ARGV, 2 do
  local k, v = ARGV[i], ARGV[i + 1]
  local old = redis.call('HGET', KEYS[2], k)
  if old then redis.call('DECRBY', KEYS[3], old) end
  redis.call('SET', k, v)
  redis.call('ZADD', KEYS[1], ARGV[2], k)
  redis.call('HSET', KEYS[2], k, string.len(v))
  redis.call('INCRBY', KEYS[3], string.len(v))
end
local total = tonumber(redis.call('GET', KEYS[3]) or '0')
local evicted = 0
while total > tonumber(ARGV[1]) do
  local oldest = redis.call('ZPOPMIN', KEYS[1])
  if #oldest == 0 then break end
  local size = tonumber(redis.call('HGET', KEYS[2], oldest[1]) or '0')
  redis.call('DEL', oldest[1])
  redis.call('HDEL', KEYS[2], oldest[1])
  total = redis.call('DECRBY', KEYS[3], size)
  evicted = evicted + 1
end
return evicted
"""


def pack(enc: Encoded) -> bytes:
    vec = np.ascontiguousarray(enc.vec, dtype=np.float32)
    tokens = np.ascontiguousarray(enc.tokens, dtype=np.float32).reshape(-1, vec.shape[0])
    weights = np.ascontiguousarray(enc.weights, dtype=np.float32)
    return (_HEADER.pack(vec.shape[0], tokens.shape[0]) + vec.tobytes() + tokens.tobytes()
            + weights.tobytes())


def unpack(data: bytes) -> Encoded:
    dim, n = _HEADER.unpack_from(data)
    at = _HEADER.size
    vec = np.frombuffer(data, np.float32, dim, at).copy()
    at += 4 * dim
    tokens = np.frombuffer(data, np.float32, n * dim, at).reshape(n, dim).copy()
    at += 4 * n * dim
    weights = np.frombuffer(data, np.float32, n, at).copy()
    if at + 4 * n != len(data):
        raise ValueError(f"entry of {len(data)} bytes does not hold {n} tokens of {dim}")
    return Encoded(vec, tokens, weights)


class SharedCache:
    """Encodings by text hash in Redis, shared by every worker that uses the same URL."""

    def __init__(self, url: str, *, model: str, max_mb: float = 256.0,
                 prefix: str = "groundwatch:emb", timeout_s: float = 0.5,
                 retry_after_s: float = 30.0) -> None:
        self.url = url
        self.prefix = f"{prefix}:{model}"
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self._client: Any = None
        self._store: Any = None
        self._down_until = 0.0
        self._lock = threading.Lock()

    def _redis(self) -> Any:
        if self._client is None:
            self._client = redis.Redis.from_url(self.url, socket_timeout=self.timeout_s,
                                                socket_connect_timeout=self.timeout_s)
            self._store = self._client.register_script(_STORE)
        return self._client

    def key(self, digest: str) -> str:
        return f"{self.prefix}:{digest}"

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, what: str, exc: Exception) -> None:
        with self._lock:
            first = self.available
            self._down_until = time.monotonic() + self.retry_after_s
        if first:
            log.warning("shared passage cache at %s: %s failed (%s: %s); embedding locally, "
                        "next try in %.0f s", masked_url(self.url), what, type(exc).__name__, exc,
                        self.retry_after_s)

    def get_many(self, digests: Sequence[str]) -> dict[str, Encoded] | None:
        """The cached encodings among ``digests``; ``None`` when the cache could not be asked
        (down, or skipped after a recent failure)."""
        if not digests or not self.available:
            return None if digests else {}
        try:
            client = self._redis()
            keys = [self.key(d) for d in digests]
            values = client.mget(keys)
            found = {d: unpack(v) for d, v in zip(digests, values, strict=True) if v}
            if found:  # recently used: last to be evicted
                now = time.time()
                client.zadd(f"{self.prefix}:lru", {self.key(d): now for d in found}, xx=True)
            return found
        except Exception as exc:  # any Redis or decoding failure: embed locally
            self._failed("a lookup", exc)
            return None

    def put_many(self, entries: dict[str, Encoded]) -> bool:
        """Store ``entries`` (digest → encoding); False when the cache could not take them."""
        if not entries or not self.available:
            return not entries
        try:
            self._redis()
            args: list[Any] = [self.max_bytes, time.time()]
            for digest, enc in entries.items():
                args += [self.key(digest), pack(enc)]
            self._store(keys=[f"{self.prefix}:lru", f"{self.prefix}:sizes",
                              f"{self.prefix}:bytes"], args=args)
            return True
        except Exception as exc:
            self._failed("a store", exc)
            return False

    def stored_bytes(self) -> int:
        return int(self._redis().get(f"{self.prefix}:bytes") or 0)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

