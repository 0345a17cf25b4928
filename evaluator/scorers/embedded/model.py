"""The per-process MiniLM encoder: lazy loading, batched inference, a bounded cache.

The model runs on a :mod:`~evaluator.scorers.embedded.runtime` (ONNX Runtime by default, torch
as the measured baseline), loaded on the first call that needs it, so importing or constructing
the scorer stays cheap and a forked Celery child never inherits a half-initialised runtime.
Tokenizing, pooling and the token weights are the same numpy code for both runtimes.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from evaluator.scorers.embedded.runtime import (
    MAX_TOKENS,
    Precision,
    Runtime,
    RuntimeName,
    Tokens,
    make_runtime,
)
from evaluator.scorers.embedded.textops import idf
from evaluator.scorers.text import STOPWORDS

if TYPE_CHECKING:
    from evaluator.scorers.embedded.shared_cache import SharedCache

__all__ = ["BATCH", "MAX_TOKENS", "Encoded", "Encoder", "Lookups", "release_free_memory"]

BATCH = 32
# A batch holds at most this many word pieces, padding included (its size times its longest
# text), of texts sorted by their word-piece count, so padding stays small and a batch of long
# texts is smaller (the runtime's working memory follows the largest batch it ever ran).
# Before, batches were cut by characters (2,048 of the longest text times the size), a proxy
# of the word pieces: 21 % of the pieces embedded were padding on the dev mixture and on long
# pages. Measured in benchmarks/runtime.py (see docs/scorers.md).
BATCH_TOKENS = 512


@dataclass(frozen=True, slots=True)
class Encoded:
    """One text: its sentence embedding (unit norm), its contextual token embeddings (unit
    norm, special tokens dropped) and a weight per token (IDF of the word, 0 for stop words and
    punctuation; a word split into pieces shares its weight among them)."""

    vec: np.ndarray
    tokens: np.ndarray
    weights: np.ndarray


class Encoder:
    """Thread-safe, lazily loaded all-MiniLM-L6-v2 with an LRU of passage and sentence
    encodings."""

    def __init__(self, *, threads: int = 1, cache_size: int = 50_000, cache_mb: float = 128.0,
                 runtime: RuntimeName = "onnx", precision: Precision = "fp32",
                 shared: SharedCache | None = None) -> None:
        self.shared = shared
        self.runtime: Runtime = make_runtime(runtime, threads=threads, precision=precision)
        self.cache_size = cache_size
        # An entry (a passage or one of its sentences) holds a 384-float vector per word piece
        # (about 1.5 KB per piece: 20-60 KB for a sentence, up to 200 KB for a passage's first
        # 128 pieces), so the entry count alone does not bound memory: the cache also stays
        # under ``cache_mb``.
        self.cache_bytes_limit = int(cache_mb * 1024 * 1024)
        self.cache_bytes = 0
        self._cache_lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[Encoded, int]] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0
        # Seconds spent in encode() (tokenize, forward pass, pooling, token weights) and in the
        # transformer's forward pass alone, summed over calls and threads (for benchmarks).
        self._time_lock = threading.Lock()
        self.encode_seconds = 0.0
        self.forward_seconds = 0.0
        # Texts and word pieces (special tokens included, padding not) through the model, and
        # the pieces it ran, padding included.
        self.texts_embedded = 0
        self.tokens_embedded = 0
        self.padded_tokens_embedded = 0

    @property
    def loaded(self) -> bool:
        return self.runtime.loaded

    def load(self) -> None:
        """Load the runtime and the model now, instead of on the first encode()."""
        self.runtime.load()

    def clear_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()
            self.cache_bytes = 0

    def close(self) -> None:
        self.clear_cache()
        self.runtime.close()

    def encode(self, texts: Sequence[str]) -> list[Encoded]:
        """Encode texts in length-sorted batches (padding waste stays small)."""
        if not texts:
            return []
        distinct = list(dict.fromkeys(texts))
        if len(distinct) < len(texts):  # nothing is embedded twice in one call
            by_text = dict(zip(distinct, self.encode(distinct), strict=True))
            return [by_text[t] for t in texts]
        runtime = self.runtime
        runtime.load()
        started = time.perf_counter()
        forward = 0.0
        pieces = padded = 0
        out: list[Encoded | None] = [None] * len(texts)
        encodings = runtime.encodings(texts)
        for idx in _batches([len(e.ids) for e in encodings]):
            batch = Tokens.padded([encodings[i] for i in idx])
            t = time.perf_counter()
            hidden = runtime.forward(batch)
            forward += time.perf_counter() - t
            pieces += int(batch.mask.sum())
            padded += int(batch.mask.size)
            mask = batch.mask[..., None].astype(np.float32)
            pooled = _unit((hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9))
            toks = _unit(hidden)
            for row, i in enumerate(idx):
                word_ids = batch.word_ids(row)
                keep = [j for j, w in enumerate(word_ids) if w is not None]
                weights = _token_weights(texts[i], batch, row, keep, word_ids)
                out[i] = Encoded(pooled[row].astype(np.float32),
                                 toks[row, keep].astype(np.float32), weights)
        with self._time_lock:
            self.encode_seconds += time.perf_counter() - started
            self.forward_seconds += forward
            self.texts_embedded += len(texts)
            self.tokens_embedded += pieces
            self.padded_tokens_embedded += padded
        return [e for e in out if e is not None]

    def encode_passages(self, passages: Sequence[tuple[str, list[str]]]) -> list[list[Encoded]]:
        """Encodings of each passage and of its units, each text cached by its content hash.

        ``passages`` holds (passage text, its units); the first encoding returned per passage is
        the whole passage (first ``MAX_TOKENS`` pieces), the rest its units in order."""
        return self.encode_passages_counted(passages)[0]

    def encode_passages_counted(self, passages: Sequence[tuple[str, list[str]]],
                                ) -> tuple[list[list[Encoded]], Lookups]:
        """:meth:`encode_passages`, and this call's cache lookups, one per distinct text (the
        running totals ``cache_hits`` / ``cache_misses`` mix every thread's calls).

        The cache holds texts, not passages: a passage retrieved again for another question,
        whose sentences the evidence filter picks differently, still finds the sentences it
        had before. A text that occurs twice in the call (the same chunk retrieved for two
        items of a batch, a sentence repeated in a page) is embedded once. Texts this
        process's cache misses are looked up in the shared cache (when there is one) before
        they are embedded, and what is embedded is stored there for the other workers."""
        wanted = list(dict.fromkeys(t for text, units in passages for t in (text, *units)))
        keys = {t: hashlib.blake2b(t.encode("utf-8", "replace"), digest_size=16).hexdigest()
                for t in wanted}
        found: dict[str, Encoded] = {}
        with self._cache_lock:
            for t in wanted:
                hit = self._cache.get(keys[t])
                if hit is not None:
                    self._cache.move_to_end(keys[t])
                    found[t] = hit[0]
            hits = len(found)
            self.cache_hits += hits
            self.cache_misses += len(wanted) - hits
        todo = [t for t in wanted if t not in found]
        lookups = Lookups(hits, len(todo))
        if self.shared is not None and todo:
            shared = self.shared.get_many([keys[t] for t in todo])
            if shared is None:
                lookups = dataclasses.replace(lookups, shared_errors=1)
            else:
                from_shared = {t: shared[keys[t]] for t in todo if keys[t] in shared}
                lookups = dataclasses.replace(lookups, shared_hits=len(from_shared),
                                              shared_misses=len(todo) - len(from_shared))
                self._remember(from_shared, keys)
                found.update(from_shared)
                todo = [t for t in todo if t not in from_shared]
        encoded = dict(zip(todo, self.encode(todo), strict=True))
        self._remember(encoded, keys)
        found.update(encoded)
        if self.shared is not None and encoded and not lookups.shared_errors \
                and not self.shared.put_many({keys[t]: e for t, e in encoded.items()}):
            lookups = dataclasses.replace(lookups, shared_errors=lookups.shared_errors + 1)
        out = [[found[text], *(found[u] for u in units)] for text, units in passages]
        return out, lookups

    def _remember(self, encodings: dict[str, Encoded], keys: dict[str, str]) -> None:
        """Put ``encodings`` (text → encoding) in this process's LRU, within its bounds."""
        with self._cache_lock:
            for t, enc in encodings.items():
                size = _nbytes((enc,))
                old = self._cache.pop(keys[t], None)
                if old is not None:
                    self.cache_bytes -= old[1]
                if self.cache_size > 0 and size <= self.cache_bytes_limit:
                    self._cache[keys[t]] = (enc, size)
                    self.cache_bytes += size
            while self._cache and (len(self._cache) > self.cache_size
                                   or self.cache_bytes > self.cache_bytes_limit):
                _, (_, size) = self._cache.popitem(last=False)
                self.cache_bytes -= size


@dataclass(frozen=True, slots=True)
class Lookups:
    """One call's cache lookups, one per distinct text: this process's cache (``hits``,
    ``misses``), then, for its misses, the shared cache (``shared_hits``, ``shared_misses``;
    ``shared_errors`` counts failed lookups or stores: those texts were embedded here)."""

    hits: int = 0
    misses: int = 0
    shared_hits: int = 0
    shared_misses: int = 0
    shared_errors: int = 0


def _load_malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


_MALLOC_TRIM = _load_malloc_trim()


def release_free_memory() -> None:
    """Give the heap's free pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    A batch's transient tensors and arrays of varying shapes leave glibc's heap fragmented:
    measured on 400 ExpertQA items, a worker's RSS climbed from 657 MB (model loaded) to
    1,202 MB with a 99 MB passage cache, and ``malloc_trim`` gave 300 MB of it back. One call
    costs ~15 ms, against seconds per batch."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _nbytes(encs: Sequence[Encoded]) -> int:
    return sum(e.vec.nbytes + e.tokens.nbytes + e.weights.nbytes for e in encs) + 200 * len(encs)


def _batches(lengths: Sequence[int]) -> list[list[int]]:
    """Indices of texts of word-piece counts ``lengths`` in batches of similar length (sorted,
    so padding waste stays small): at most ``BATCH`` texts and ``BATCH_TOKENS`` pieces of the
    longest text times the batch size."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = max(lengths[i], 1)
        if current and (len(current) >= BATCH or (len(current) + 1) * longest > BATCH_TOKENS):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _unit(x: np.ndarray) -> np.ndarray:
    """Unit vectors along the last axis (torch's ``normalize``: norms below 1e-12 count as
    1e-12)."""
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12),
                      dtype=np.float32)


def _token_weights(text: str, batch: Tokens, row: int, keep: list[int],
                   word_ids: list[int | None]) -> np.ndarray:
    pieces: dict[int, int] = {}
    for j in keep:
        w = word_ids[j]
        assert w is not None
        pieces[w] = pieces.get(w, 0) + 1
    weights = np.zeros(len(keep), dtype=np.float32)
    for k, j in enumerate(keep):
        w = word_ids[j]
        assert w is not None
        span = batch.word_to_chars(row, w)
        word = text[span[0]:span[1]].lower() if span is not None else ""
        if not word or word in STOPWORDS or not any(ch.isalnum() for ch in word):
            continue
        weights[k] = idf(word) / pieces[w]
    return weights
