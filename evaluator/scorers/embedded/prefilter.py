"""Which context sentences are worth embedding: a BM25 pass before the model.

A retrieved web page or manual runs to hundreds of sentences, and the scorer embedded every
one of them, although a claim is checked against its few best-matching sentences and the
question against the passage's best. Before anything is embedded, each context sentence is
scored with BM25 against each query (the question and each claim of the answer), and only the
``per_query`` best sentences of each query are kept (their union, in document order). An item
whose contexts have at most ``keep_all`` sentences keeps every one: short contexts, the common
case of chunked RAG retrieval, are scored exactly as before.

What is kept and dropped is counted per item and shown in the explanation
(``extra.evidence_units``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from evaluator.scorers.text import content_words

BM25_K1 = 1.2
BM25_B = 0.75


@dataclass(frozen=True, slots=True)
class Selection:
    """Per passage, the indices of its units to embed; and how many were kept and dropped."""

    kept: list[list[int]]
    n_kept: int
    n_dropped: int

    def to_dict(self) -> dict[str, int]:
        return {"kept": self.n_kept, "dropped": self.n_dropped}


def select_units(units: Sequence[Sequence[str]], queries: Sequence[str], *, keep_all: int,
                 per_query: int) -> Selection:
    """The units (sentences, per passage) to embed for these queries (question, claims).

    ``keep_all`` <= 0 turns the filter off."""
    total = sum(len(u) for u in units)
    everything = [list(range(len(u))) for u in units]
    if keep_all <= 0 or total <= keep_all or per_query <= 0:
        return Selection(everything, total, 0)
    flat = [(p, i) for p, us in enumerate(units) for i in range(len(us))]
    docs = [Counter(content_words(units[p][i])) for p, i in flat]
    lengths = [sum(d.values()) for d in docs]
    avg = (sum(lengths) / len(lengths)) or 1.0
    df: Counter[str] = Counter()
    for d in docs:
        df.update(d.keys())
    n = len(docs)

    def idf(term: str) -> float:
        return math.log(1.0 + (n - df[term] + 0.5) / (df[term] + 0.5))

    keep: set[int] = set()
    for query in queries:
        terms = set(content_words(query))
        if not terms:
            continue
        scores = []
        for k, (d, length) in enumerate(zip(docs, lengths, strict=True)):
            s = 0.0
            for t in terms:
                tf = d.get(t, 0)
                if tf:
                    s += idf(t) * tf * (BM25_K1 + 1) / (
                        tf + BM25_K1 * (1 - BM25_B + BM25_B * length / avg))
            if s > 0:
                scores.append((s, -k))
        keep.update(-k for _, k in sorted(scores, reverse=True)[:per_query])
    if not keep:  # no query shares a word with the contexts: keep the first sentences
        keep = set(range(min(keep_all, n)))
    kept: list[list[int]] = [[] for _ in units]
    for k in sorted(keep):
        p, i = flat[k]
        kept[p].append(i)
    return Selection(kept, len(keep), total - len(keep))
