"""No wasted tokens: the evidence filter before the model, one encoding per distinct text."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from evaluator.config import EmbeddedConfig
from evaluator.records import LogRecord
from evaluator.scorers.embedded.model import Encoder
from evaluator.scorers.embedded.prefilter import select_units
from evaluator.scorers.embedded.scorer import EmbeddedScorer
from evaluator.scorers.explanation import Verdict

FILLER = [f"Section {i} describes the history of the lighthouse keepers of harbour {i}."
          for i in range(80)]
PAGE = " ".join([*FILLER[:57], "Deleted storage buckets are kept for 30 days before they are "
                 "purged.", *FILLER[57:]])


def test_short_contexts_keep_every_sentence() -> None:
    units = [["A is 1.", "B is 2."], ["C is 3."]]
    sel = select_units(units, ["What is A?", "A is 1."], keep_all=32, per_query=1)
    assert sel.kept == [[0, 1], [0]] and (sel.n_kept, sel.n_dropped) == (3, 0)
    off = select_units([FILLER], ["harbour 3"], keep_all=0, per_query=1)
    assert off.n_dropped == 0


def test_long_contexts_keep_the_best_sentences_of_each_query_in_order() -> None:
    units = [FILLER[:40], FILLER[40:]]
    sel = select_units(units, ["What about harbour 71?", "Keepers of harbour 3 and 12."],
                       keep_all=10, per_query=2)
    kept = [units[p][i] for p in range(2) for i in sel.kept[p]]
    assert FILLER[71] in kept and FILLER[3] in kept and FILLER[12] in kept
    assert sel.n_kept == len(kept) <= 4 and sel.n_kept + sel.n_dropped == 80
    assert all(sel.kept[p] == sorted(sel.kept[p]) for p in range(2))


def test_queries_sharing_no_word_keep_the_first_sentences() -> None:
    sel = select_units([FILLER], ["zzz qqq"], keep_all=5, per_query=2)
    assert sel.kept == [[0, 1, 2, 3, 4]]


@pytest.fixture(scope="module")
def scorers() -> Iterator[tuple[EmbeddedScorer, EmbeddedScorer]]:
    filtered = EmbeddedScorer(EmbeddedConfig(evidence_keep_all=32, evidence_per_query=4,
                                             cache_size=0))
    everything = EmbeddedScorer(EmbeddedConfig(evidence_keep_all=0, cache_size=0))
    yield filtered, everything
    filtered.close()
    everything.close()


def test_a_long_page_embeds_the_sentences_that_matter_and_says_how_many(
        scorers: tuple[EmbeddedScorer, EmbeddedScorer]) -> None:
    filtered, everything = scorers
    record = LogRecord("r", datetime.now(UTC), "How long are deleted buckets kept?", (PAGE,),
                       "Deleted buckets are kept for 30 days.")
    before = filtered.encoder.tokens_embedded, everything.encoder.tokens_embedded
    (a,), (b,) = filtered.score_batch([record]), everything.score_batch([record])
    spent = (filtered.encoder.tokens_embedded - before[0],
             everything.encoder.tokens_embedded - before[1])
    assert spent[0] * 5 < spent[1], spent
    shown = a.explanation.extra["evidence_units"]
    assert shown["kept"] + shown["dropped"] == 81 and 1 <= shown["kept"] <= 8, shown
    assert "evidence_units" not in b.explanation.extra
    (claim,) = a.explanation.claims or ()
    assert claim.verdict is Verdict.SUPPORTED and "30 days" in (claim.evidence or "")
    for m, n in zip(a.metrics, b.metrics, strict=True):
        assert m.value is not None and n.value is not None
        assert abs(m.value - n.value) < 0.05, (m, n)


def test_a_short_context_is_scored_exactly_as_without_the_filter(
        scorers: tuple[EmbeddedScorer, EmbeddedScorer]) -> None:
    filtered, everything = scorers
    record = LogRecord("r", datetime.now(UTC), "How long are deleted buckets kept?",
                       (" ".join(FILLER[:5]) + " Deleted buckets are kept for 30 days.",),
                       "They are kept for 30 days, then purged.")
    (a,), (b,) = filtered.score_batch([record]), everything.score_batch([record])
    assert a.metrics == b.metrics and a.explanation == b.explanation


def test_nothing_is_embedded_twice_in_a_call() -> None:
    encoder = Encoder(cache_size=0)
    try:
        encoder.encode(["one text", "another text", "one text"])
        assert encoder.texts_embedded == 2
        # The same chunk retrieved for two items of a batch, and a sentence that is also a
        # whole passage: each distinct text once.
        out, lookups = encoder.encode_passages_counted(
            [("Keys rotate daily.", ["Keys rotate daily."]),
             ("Keys rotate daily.", ["Keys rotate daily."])])
        assert (lookups.hits, lookups.misses) == (0, 1) and encoder.texts_embedded == 3
        assert out[0][0] is out[0][1] is out[1][0]
    finally:
        encoder.close()


def test_sentences_stay_cached_when_another_question_picks_others() -> None:
    encoder = Encoder()
    try:
        encoder.encode_passages([("P", ["s1", "s2", "s3"])])
        _, lookups = encoder.encode_passages_counted([("P", ["s2", "s3", "s4"])])
        assert (lookups.hits, lookups.misses) == (3, 1)
    finally:
        encoder.close()


def test_batches_of_long_texts_are_smaller_and_every_text_is_in_one() -> None:
    """Batches are cut by word pieces with their padding: sorted, at most BATCH texts and
    BATCH_TOKENS pieces (size times longest), a text past the bound alone."""
    from evaluator.scorers.embedded.model import BATCH, BATCH_TOKENS, _batches

    lengths = [9] * 70 + [BATCH_TOKENS // 4] * 9 + [BATCH_TOKENS * 2]
    batches = _batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    sizes: dict[int, list[int]] = {}
    for b in batches:
        sizes.setdefault(lengths[b[-1]], []).append(len(b))
    assert sizes == {9: [BATCH, BATCH, 70 - 2 * BATCH], BATCH_TOKENS // 4: [4, 4, 1],
                     BATCH_TOKENS * 2: [1]}
    # Random lengths: sorted, bounded, and little padding once sorted.
    rng = np.random.default_rng(7)
    lengths = [int(n) for n in rng.integers(1, 129, size=500)] + [3] * 100
    batches = _batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    previous = 0
    for b in batches:
        pieces = [lengths[i] for i in b]
        assert pieces == sorted(pieces) and pieces[0] >= previous
        previous = pieces[-1]
        assert len(b) <= BATCH and (len(b) == 1 or len(b) * max(pieces) <= BATCH_TOKENS)
    assert sum(len(b) * max(lengths[i] for i in b) for b in batches) <= 1.15 * sum(lengths)
    assert _batches([]) == []


def test_explain_says_how_many_context_sentences_were_embedded(
        scorers: tuple[EmbeddedScorer, EmbeddedScorer], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from evaluator.store import Store
    from groundwatch.cli import main

    filtered, _ = scorers
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    config = tmp_path / "gw.toml"
    config.write_text(f'[store]\nurl = "{url}"\n', encoding="utf-8")
    long = LogRecord("long", datetime.now(UTC), "How long are deleted buckets kept?", (PAGE,),
                     "Deleted buckets are kept for 30 days.")
    short = LogRecord("short", datetime.now(UTC), "How long are deleted buckets kept?",
                      ("Deleted buckets are kept for 30 days.",), "30 days.")
    store = Store(url)
    store.ledger.add_items([(r, "default") for r in (long, short)], source="app")
    store.results.record_results(filtered.score_batch([long, short]),
                                 {r.request_id: r for r in (long, short)},
                                 scorer=filtered.name, scorer_version=filtered.version)
    store.close()
    assert main(["--config", str(config), "explain", "long"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"evidence \(embedded\): \d of 81 context sentences embedded", out), out
    assert main(["--config", str(config), "explain", "short"]) == 0
    assert "context sentences embedded" not in capsys.readouterr().out
