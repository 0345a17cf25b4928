"""The ``embedded`` scorer on the real MiniLM model: verdicts, detectors, cache, limits."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from evaluator.config import Config, EmbeddedConfig, ScopeConfig, ScoringConfig
from evaluator.records import LogRecord
from evaluator.scorers import ItemResult, Outcome, build_scorer
from evaluator.scorers.embedded.scorer import EmbeddedScorer
from evaluator.scorers.embedded.textops import numbers, split_claims
from evaluator.scorers.gates import apply_gates

ROOT = Path(__file__).resolve().parent.parent
CONTEXT = ("Deleted storage buckets are kept in a recoverable state for 30 days. After 30 days "
           "the bucket is purged permanently. The free plan does not include phone support; "
           "paid plans include phone support around the clock.")
SCOPE = ScopeConfig(
    description="Questions about our cloud storage product: buckets, billing and access keys.",
    in_scope=["How do I restore a deleted bucket?", "Why was my card charged twice?",
              "How do I rotate an access key?"],
    out_of_scope=["Write me a poem about love", "Who won the football match yesterday?"],
)


def rec(question: str, answer: str, contexts: tuple[str, ...] = (CONTEXT,),
        rid: str = "r") -> LogRecord:
    return LogRecord(rid, datetime.now(UTC), question, contexts, answer)


def metrics(result: ItemResult) -> dict[str, tuple[Outcome, float | None, str | None]]:
    return {m.metric: (m.outcome, m.value, m.reason) for m in result.metrics}


def kinds(result: ItemResult) -> set[str]:
    return {d.kind for d in result.detections}


@pytest.fixture(scope="module")
def scorer() -> Iterator[EmbeddedScorer]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    s = EmbeddedScorer(EmbeddedConfig(threads=1), SCOPE)
    yield s
    s.close()


def one(scorer: EmbeddedScorer, record: LogRecord) -> ItemResult:
    (result,) = scorer.score_batch([record])
    return result


def test_import_and_construction_do_not_load_torch() -> None:
    code = ("import sys\n"
            "from evaluator.config import Config\n"
            "from evaluator.scorers import build_scorer\n"
            "s = build_scorer(Config(), 'embedded')\n"
            "assert s.name == 'embedded'\n"
            "heavy = [m for m in ('torch', 'sentence_transformers', 'transformers') "
            "if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_supported_paraphrase(scorer: EmbeddedScorer) -> None:
    r = one(scorer, rec("How long are deleted buckets kept?",
                        "Buckets that were deleted can still be recovered for 30 days."))
    m = metrics(r)
    assert m["faithfulness"][0] is Outcome.OK and m["faithfulness"][1] > 0.5  # type: ignore[operator]
    (claim,) = r.explanation.claims
    assert claim.verdict == "supported"
    assert "30 days" in claim.evidence
    assert not kinds(r)


def test_contradicted_number(scorer: EmbeddedScorer) -> None:
    good = one(scorer, rec("How long are deleted buckets kept?",
                           "Deleted buckets are kept for 30 days."))
    bad = one(scorer, rec("How long are deleted buckets kept?",
                          "Deleted buckets are kept for 90 days."))
    (claim,) = bad.explanation.claims
    assert claim.verdict == "contradicted"
    assert "90" in claim.reason and claim.clash == "number"
    assert metrics(bad)["faithfulness"][1] < metrics(good)["faithfulness"][1]  # type: ignore[operator]


def test_off_topic_numbers_are_unsupported_not_contradicted(scorer: EmbeddedScorer) -> None:
    # Numbers that differ from an unrelated passage's numbers say nothing about contradiction.
    r = one(scorer, rec("Who won the football world cup in 2014?",
                        "Germany won the 2014 world cup, beating Argentina 1-0 in the final."))
    (claim,) = r.explanation.claims
    assert claim.verdict == "unsupported"
    assert claim.mismatch is None and claim.reason is None
    assert metrics(r)["faithfulness"][1] < 0.5  # type: ignore[operator]


def test_negation_mismatch(scorer: EmbeddedScorer) -> None:
    r = one(scorer, rec("Does the free plan include phone support?",
                        "Yes, the free plan includes phone support."))
    (claim,) = r.explanation.claims
    # Calibration decides whether a polarity clash flips the verdict (the clash cues of
    # clash.py, or the features' coarser check); otherwise it is shown as a mismatch.
    cal = scorer.calibration
    if "negation" in cal.clash_kinds or "negation" in cal.contradiction_kinds:
        assert claim.verdict == "contradicted" and "negation" in claim.reason
    else:
        assert "negation" in claim.mismatch


def test_explanation_lists_claims_with_evidence(scorer: EmbeddedScorer) -> None:
    r = one(scorer, rec("How long are deleted buckets kept?",
                        "Deleted buckets are kept for 30 days. Support can restore purged "
                        "buckets from cold tape archives for a fee."))
    claims = r.explanation.claims
    assert [c.strength is not None and c.evidence is not None for c in claims] == [True] * 2
    assert claims[0].verdict == "supported"
    assert claims[1].verdict != "supported"
    assert all(c.evidence in CONTEXT and 0.0 <= c.strength <= 1.0 for c in claims)
    assert r.explanation.unsupported == [claims[1].claim]
    cr = r.explanation.context_relevance
    assert cr.best >= cr.mean


def test_empty_answer(scorer: EmbeddedScorer) -> None:
    r = one(scorer, rec("How long are deleted buckets kept?", "   "))
    assert "empty_answer" in kinds(r)
    assert metrics(r)["faithfulness"] == (Outcome.NOT_APPLICABLE, None, "empty_answer")
    assert metrics(r)["context_relevance"][0] is Outcome.OK
    # Nothing answers the question: not relevant, a value the alerts count (issue 17).
    assert metrics(r)["answer_relevance"] == (Outcome.OK, 0.0, None)


def test_refusal(scorer: EmbeddedScorer) -> None:
    r = one(scorer, rec("How long are deleted buckets kept?", "I'm sorry, I don't know."))
    assert "refusal" in kinds(r)
    assert metrics(r)["faithfulness"] == (Outcome.NOT_APPLICABLE, None, "refusal")
    assert metrics(r)["groundedness"] == (Outcome.NOT_APPLICABLE, None, "refusal")


def test_no_relevant_context(scorer: EmbeddedScorer) -> None:
    empty = one(scorer, rec("How long are deleted buckets kept?", "30 days.", contexts=()))
    assert "no_relevant_context" in kinds(empty)
    assert metrics(empty)["context_relevance"] == (Outcome.NOT_APPLICABLE, None, "no_contexts")
    off_topic = one(scorer, rec(
        "How long are deleted buckets kept?", "30 days.",
        contexts=("The Treaty of Westphalia ended the Thirty Years' War in 1648.",)))
    assert "no_relevant_context" in kinds(off_topic)
    on_topic = one(scorer, rec("How long are deleted buckets kept?", "30 days."))
    assert "no_relevant_context" not in kinds(on_topic)
    assert metrics(on_topic)["context_relevance"][1] > metrics(off_topic)["context_relevance"][1]  # type: ignore[operator]


def test_right_passages_of_the_demo_are_relevant(scorer: EmbeddedScorer) -> None:
    # The demo's questions beside their own passage and an unrelated one: no_relevant_context
    # must fire only for the unrelated passage alone.
    from evaluator.demo_traffic import FACTS

    records = [rec(f.question, f.answer, contexts=(f.passage, FACTS[i - 1].passage), rid=str(i))
               for i, f in enumerate(FACTS)]
    records += [rec(f.question, f.answer, contexts=(FACTS[i - 1].passage,), rid=f"x{i}")
                for i, f in enumerate(FACTS)]
    results = scorer.score_batch(records)
    right, wrong = results[:len(FACTS)], results[len(FACTS):]
    assert [r.request_id for r in right if "no_relevant_context" in kinds(r)] == []
    flagged = sum("no_relevant_context" in kinds(r) for r in wrong)
    assert flagged >= len(FACTS) - 1, [r.explanation.context_relevance for r in wrong]


def test_out_of_scope_names_nearest_example(scorer: EmbeddedScorer) -> None:
    r = one(scorer, rec("Write a short poem about the sea", "The sea is wide."))
    (d,) = [d for d in r.detections if d.kind == "out_of_scope"]
    assert "poem" in d.detail
    inside = one(scorer, rec("How can I get back a bucket I deleted?", "Within 30 days."))
    assert "out_of_scope" not in kinds(inside)
    assert inside.explanation.scope.nearest == "How do I restore a deleted bucket?"


def test_scope_detection_is_off_without_scope() -> None:
    s = EmbeddedScorer(EmbeddedConfig(threads=1))
    try:
        r = one(s, rec("Write a short poem about the sea", "The sea is wide."))
        assert "out_of_scope" not in kinds(r) and r.explanation.scope is None
    finally:
        s.close()


def test_answer_relevance_tells_evasive_generic_and_off_topic_answers(
        scorer: EmbeddedScorer) -> None:
    q = "How long are deleted buckets kept?"
    answers = {
        "direct": "Deleted buckets are kept for 30 days before they are purged.",
        "evasive": "The provided documents do not contain information about this topic; it "
                   "depends on many factors.",
        "generic": "Great question! Storage is an important part of any modern cloud setup, and "
                   "we care a lot about your data.",
        "off_topic": "The capital of Australia is Canberra.",
    }
    results = scorer.score_batch([rec(q, a, rid=k) for k, a in answers.items()])
    value = {r.request_id: metrics(r)["answer_relevance"][1] for r in results}
    assert value["direct"] > 0.6, value  # type: ignore[operator]
    assert max(value["evasive"], value["off_topic"]) < 0.25, value  # type: ignore[type-var]
    assert value["generic"] < value["direct"] - 0.2, value  # type: ignore[operator]
    off = next(r for r in results if r.request_id == "off_topic").explanation.answer_relevance
    assert off.on_topic < 0.25 and "cos_q_claim" in off.features


def test_passage_cache_hits_on_repeat(scorer: EmbeddedScorer) -> None:
    context = ("Access keys can be rotated from the console under Security. Old keys keep "
               "working for 24 hours after rotation.")
    record = rec("How do I rotate an access key?", "From the console, under Security.",
                 contexts=(context,))
    before = scorer.encoder.cache_hits
    first = one(scorer, record)
    assert scorer.encoder.cache_hits == before
    second = one(scorer, record)
    # One lookup per text: the passage and its two sentences.
    assert scorer.encoder.cache_hits == before + 3
    assert metrics(first) == metrics(second)
    # Each batch reports its own lookups as usage, which the worker exports (workers/tasks.py).
    _, usage = scorer.score_gated(apply_gates([record]))
    assert (usage.cache_hits, usage.cache_misses) == (3, 0)


def test_passage_cache_is_bounded_in_memory(scorer: EmbeddedScorer) -> None:
    from evaluator.scorers.embedded.model import Encoder

    encoder = Encoder(cache_size=1000, cache_mb=0.5)
    encoder.runtime = scorer.encoder.runtime  # share the loaded model
    passages = [(f"Passage {i} says that bucket {i} is kept for {i} days in region {i}.", [])
                for i in range(200)]
    for start in range(0, 200, 20):
        encoder.encode_passages(passages[start:start + 20])
    assert 0 < encoder.cache_bytes <= 0.5 * 1024 * 1024
    assert 0 < len(encoder._cache) < 200
    # The newest entries are kept; the oldest went first.
    assert encoder.encode_passages(passages[-1:]) and encoder.cache_hits == 1
    encoder.encode_passages(passages[:1])
    assert encoder.cache_hits == 1


def test_long_inputs_are_truncated_and_counted() -> None:
    s = EmbeddedScorer(EmbeddedConfig(max_context_chars=200, max_answer_chars=100))
    try:
        long_context = CONTEXT + " " + "Filler sentence about nothing in particular. " * 20
        long_record = rec("How long are deleted buckets kept?", "Deleted buckets are kept for 30 "
                          "days. " * 10, contexts=(long_context, CONTEXT))
        r = one(s, long_record)
        assert s.truncations == 3  # the answer, the first passage cut, the second dropped
        _, usage = s.score_gated(apply_gates([long_record]))
        assert usage.truncations == 3  # and each batch reports its own
        assert metrics(r)["faithfulness"][0] is Outcome.OK
    finally:
        s.close()


def test_outcomes_are_never_nan(scorer: EmbeddedScorer) -> None:
    odd = [
        rec("?", "!!!", contexts=("", "   ")),
        rec("How long?", "…", contexts=("—",)),
        rec("What is 1e308 * 10?", "It is 1e309, i.e. " + "9" * 400 + ".", contexts=("0",)),
        rec("Quelle est la durée ?", "三十天。", contexts=("削除されたバケットは30日間保持されます。",)),
        rec("How long are deleted buckets kept?", "\n\n\n", contexts=(CONTEXT,) * 3),
    ]
    results = scorer.score_batch(odd)
    assert [r.request_id for r in results] == [r.request_id for r in odd]
    for result in results:
        assert len(result.metrics) == 4
        for m in result.metrics:
            if m.outcome is Outcome.OK:
                assert m.value is not None and math.isfinite(m.value) and 0 <= m.value <= 1
            else:
                assert m.value is None and m.reason


def test_threads_share_one_scorer(scorer: EmbeddedScorer) -> None:
    records = [rec("How long are deleted buckets kept?", f"They are kept for {n} days.",
                   rid=str(n)) for n in range(8)]
    expected = [metrics(r) for r in scorer.score_batch(records)]
    got: list[list[dict[str, tuple[Outcome, float | None, str | None]]]] = []

    def work() -> None:
        got.append([metrics(r) for r in scorer.score_batch(records)])

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for run in got:
        for a, b in zip(run, expected, strict=True):
            for key in a:
                assert a[key][0] == b[key][0]
                assert a[key][1] == pytest.approx(b[key][1], abs=1e-4)


def test_build_from_config() -> None:
    config = Config(scoring=ScoringConfig(scorer="embedded", scope=SCOPE,
                                          embedded=EmbeddedConfig(cache_size=16)))
    s = build_scorer(config)
    assert isinstance(s, EmbeddedScorer) and s.encoder.cache_size == 16
    assert s.version.startswith("1+cal")


def test_claims_and_numbers() -> None:
    long = ("The bucket is kept for thirty days after deletion, and after that it is purged "
            "from every region including the cold archive tier that we keep for our customers"
            " backups in Europe.")
    assert len(split_claims(long)) == 2
    assert split_claims("Kept for 30 days [2]. Then purged [3].") == ["Kept for 30 days.",
                                                                    "Then purged."]
    assert numbers("It cost $1,200.0 in 2019") == {"1200", "2019"}


@pytest.mark.parametrize(("claim", "evidence"), [
    ("during the 2018–19 academic year", "over the 2018-2019 academic year"),
    ("one of the only 5 franchises", "one of only five franchises"),
    ("the 2nd most populous island", "the second-most populous island"),
    ("in the late 70's", "in the late 1970s"),
    ("25 people", "twenty-five people"),
])
def test_numbers_written_two_ways_are_one_number(claim: str, evidence: str) -> None:
    # Found on the dev data: each pair was a "number differs" contradiction of a faithful claim.
    assert numbers(claim) and numbers(claim) == numbers(evidence, spelled=True)


@pytest.mark.parametrize(("claim", "evidence"), [
    # Issue 17: dates, clock times and units written another way (written here).
    ("released on 11 June 2003", "Released: 2003.06.11"),
    ("released on 11 June 2003", "released 2003-06-11"),
    ("released on June 11, 2003", "released on 11.06.2003"),
    ("the desk closes at 17:00", "the desk closes at 5 pm"),
    ("opens at 9:30 a.m.", "opens at 9:30"),
    ("kept for 14 days", "kept for two weeks"),
    ("kept for 2 weeks", "kept for 14 days"),
    ("a 1,500 g limit", "a 1.5 kg limit"),
    ("up to 2 GB", "up to 2000 MB"),
    ("within 48 hours", "within 2 days"),
])
def test_dates_times_and_units_written_another_way_are_found(claim: str, evidence: str) -> None:
    from evaluator.scorers.embedded.textops import context_numbers

    assert numbers(claim) and numbers(claim) <= context_numbers(evidence)


def test_other_amounts_are_still_other_numbers() -> None:
    from evaluator.scorers.embedded.textops import context_numbers

    for claim, evidence in [("kept for 10 days", "kept for two weeks"),
                            ("closes at 18:00", "closes at 5 pm"),
                            ("released on 12 June 2003", "released 2003-06-11"),
                            ("a 2 kg limit", "a 1,500 g limit")]:
        assert not numbers(claim) <= context_numbers(evidence), claim
    # A slashed date's month is the writer's locale: left as it is.
    assert numbers("06/11/2003") == {"06", "11", "2003"}


def test_number_words_count_in_the_evidence_only() -> None:
    # A claim's "three main types" is not a number the context must hold; the context's
    # "three" does hold a claim's "3".
    assert numbers("the three main types") == set()
    assert numbers("the three main types", spelled=True) == {"3"}
    assert numbers("one of them, at first, for a second", spelled=True) == set()
    assert numbers("wait 30 seconds", spelled=True) == {"30"}
    assert numbers("the Top 40s") == {"40"}


def test_calibration_matches_the_feature_code() -> None:
    # The weights apply to the numbers the feature code computes: a change to that code needs
    # `make calibrate` (a minute from its cache, ~15 min cold) and the new calibration.json.
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("calibrate", ROOT / "scripts" / "calibrate.py")
    assert spec is not None and spec.loader is not None
    calibrate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(calibrate)
    shipped = json.loads((ROOT / "evaluator/scorers/embedded/calibration.json").read_text())
    assert shipped["features_code"] == calibrate.feature_code_hash(), (
        "evaluator/scorers/embedded feature code changed since calibration.json was written: "
        "run `make calibrate` and commit the result")


def test_groundwatch_explain_shows_claims_verdicts_evidence_and_detections(
        scorer: EmbeddedScorer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from evaluator.store import Store
    from groundwatch.cli import main

    url = f"sqlite:///{tmp_path / 'gw.db'}"
    config = tmp_path / "gw.toml"
    config.write_text(f'[store]\nurl = "{url}"\n', encoding="utf-8")
    records = [
        rec("How long are deleted buckets kept?",
            "Deleted buckets are kept for 90 days. Support can restore purged buckets from "
            "cold tape archives for a fee.", rid="contradicted"),
        rec("Write a short poem about the sea", "The capital of Australia is Canberra.",
            contexts=("The Treaty of Westphalia ended the Thirty Years' War in 1648.",),
            rid="off"),
    ]
    store = Store(url)
    store.ledger.add_items([(r, "default") for r in records], source="app")
    store.results.record_results(scorer.score_batch(records), {r.request_id: r for r in records},
                         scorer=scorer.name, scorer_version=scorer.version)
    store.close()

    assert main(["--config", str(config), "explain", "contradicted"]) == 0
    out = capsys.readouterr().out
    assert "[contradicted, strength" in out and "Deleted buckets are kept for 90 days." in out
    assert "why (number clash): number 90" in out
    assert "context[0]: Deleted storage buckets are kept in a recoverable state for 30 days." in out
    assert "[unsupported, strength" in out and "cold tape archives" in out
    assert "embedded/faithfulness:" in out and "answer relevance (embedded): on topic" in out

    assert main(["--config", str(config), "explain", "off"]) == 0
    out = capsys.readouterr().out
    assert "detection: out_of_scope: nearest scope example is out of scope" in out
    assert "detection: no_relevant_context: best passage relevance" in out
    assert "context relevance per passage (embedded): [0] 0.0" in out
