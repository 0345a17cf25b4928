"""Atomic facts in the embedded scorer's explanation (issue 17): which facts of a claim no
passage contains. The value is not moved by them (decision 0020)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from evaluator.records import LogRecord
from evaluator.scorers.embedded import textops as tx
from evaluator.scorers.embedded.facts import not_found, split_facts
from evaluator.scorers.embedded.scorer import EmbeddedScorer
from evaluator.scorers.explanation import Claim, Verdict
from evaluator.scorers.text import content_words


@pytest.mark.parametrize(("claim", "facts"), [
    ("The show, syndicated by 20th Television, returns in 2021.",
     ["The show returns", "syndicated by 20th Television", "in 2021"]),
    ("Refunds are issued within 14 days and you can cancel at any time.",
     ["Refunds are issued", "you can cancel at any time", "within 14 days"]),
    ("The museum (founded in 1866) is part of Yale University, which also runs the library.",
     ["The museum is part", "founded in 1866", "which also runs the library",
      "of Yale University"]),
    ("The Tozzer library holds over 260,000 volumes, including the first book it bought.",
     ["The Tozzer library holds", "including the first book it bought",
      "over 260,000 volumes"]),
])
def test_a_claim_is_split_into_its_core_and_the_details_attached_to_it(
        claim: str, facts: list[str]) -> None:
    assert split_facts(claim) == facts


@pytest.mark.parametrize("claim", [
    "You can't bring pets.", "The fee is 40 euros per person.", "Yes.", "",
    "Deleted buckets are kept forever.",
])
def test_a_claim_of_one_fact_stays_whole(claim: str) -> None:
    assert len(split_facts(claim)) == 1


def _words(context: str) -> tuple[set[str], set[str]]:
    return set(content_words(context)) | tx.lower_words(context), tx.context_numbers(context)


def test_the_fact_no_passage_has_is_named_and_the_rest_are_not() -> None:
    context = ("The show returns to television in 2021. It is produced in Atlanta by a small "
               "studio.")
    words, numbers = _words(context)
    claim = "The show, syndicated by 20th Television, returns in 2021."
    assert not_found(claim, words, numbers) == ("syndicated by 20th Television",)
    # every fact present: nothing named
    whole = "The show, produced in Atlanta, returns in 2021."
    assert not_found(whole, words, numbers) == ()
    # a number the context lacks, in a detail
    assert not_found("The show returns in 2022, produced in Atlanta.", words, numbers) == ("in 2022",)
    # a date is a fact of its own: the claim's core is found, its date is not
    assert not_found("The show returns in 2030.", words, numbers) == ("in 2030",)
    # a claim of one fact is the verdict's business, not a fact's
    assert not_found("The show is cancelled forever.", words, numbers) == ()


def test_claims_keep_their_unsupported_facts_through_json() -> None:
    claim = Claim("A, b by Carol, in 2021", Verdict.SUPPORTED,
                  unsupported_facts=("b by Carol",))
    data = claim.to_dict()
    assert data["unsupported_facts"] == ["b by Carol"]
    assert Claim.from_dict(data) == claim
    plain = Claim("A claim", Verdict.SUPPORTED)
    assert "unsupported_facts" not in plain.to_dict()
    assert Claim.from_dict(plain.to_dict()) == plain


@pytest.fixture(scope="module")
def scorer() -> Iterator[EmbeddedScorer]:
    s = EmbeddedScorer()
    yield s
    s.close()


def test_the_scorer_names_the_missing_detail_and_leaves_the_value_alone(
        scorer: EmbeddedScorer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    context = ("Annual plans renew automatically on the first day of each billing year. "
               "Monthly plans can be cancelled at any time from the billing page.")
    record = LogRecord("partly", datetime.now(UTC), "How do annual plans renew?", (context,),
                       "Annual plans renew automatically, approved by the Finance Board, on "
                       "the first day of each billing year.")
    whole = LogRecord("whole", datetime.now(UTC), "How do annual plans renew?", (context,),
                      "Annual plans renew automatically on the first day of each billing "
                      "year.")
    partly, complete = scorer.score_batch([record, whole])
    claims = partly.explanation.claims or ()
    assert [c.unsupported_facts for c in claims] == [("approved by the Finance Board",)]
    assert not any(c.unsupported_facts for c in complete.explanation.claims or ())

    from evaluator.store import Store
    from groundwatch.cli import main

    url = f"sqlite:///{tmp_path / 'gw.db'}"
    config = tmp_path / "gw.toml"
    config.write_text(f'[store]\nurl = "{url}"\n', encoding="utf-8")
    store = Store(url)
    store.ledger.add_items([(record, "default")], source="app")
    store.results.record_results([partly], {"partly": record}, scorer=scorer.name,
                                 scorer_version=scorer.version)
    from groundwatch.report_explain import render_explanation

    html = render_explanation(store.queries, "partly", "partly", {})
    store.close()
    assert ('facts not found in any passage: <mark class="missing">approved by the Finance '
            "Board</mark>") in html
    assert main(["--config", str(config), "explain", "partly"]) == 0
    out = capsys.readouterr().out
    assert 'facts not found in any passage: "approved by the Finance Board"' in out
