"""Contradiction cues (evaluator/scorers/embedded/clash.py): each kind fires on a clash and stays
quiet on the paraphrase beside it. Examples written here, apart from the benchmark's
contradiction set (benchmarks/data/contradictions.jsonl), which nothing is tuned on."""

from __future__ import annotations

import pytest

from evaluator.scorers.embedded import clash

CASES = [
    # (kind, evidence, contradicting claim, faithful paraphrase)
    ("negation", "Guest users cannot create new projects.",
     "Guest users can create new projects.",
     "Guests are not able to create new projects."),
    ("negation", "Deleted files are not recoverable after 30 days.",
     "Deleted files are recoverable after 30 days.",
     "After 30 days, deleted files cannot be recovered."),
    ("antonym", "Two-step verification is mandatory for all staff accounts.",
     "Two-step verification is optional for staff accounts.",
     "Every staff account must use two-step verification."),
    ("antonym", "The dashboard is private to your workspace.",
     "The dashboard is public.",
     "Only members of your workspace can see the dashboard."),
    ("antonym", "Invoices are sent after the payment clears.",
     "Invoices are sent before the payment clears.",
     "Once the payment has cleared, the invoice goes out."),
    ("quantifier", "Uploads are limited to at most five files at a time.",
     "You can upload any number of files at a time.",
     "You can upload up to five files at once."),
    ("quantifier", "Webhooks are available on every plan.",
     "Webhooks are only available on the Business plan.",
     "All plans include webhooks."),
    ("unit", "Each project gets 50 GB of storage.",
     "Each project gets 50 MB of storage.",
     "Projects come with 50 GB of storage each."),
    ("unit", "Sessions expire after 12 hours of inactivity.",
     "Sessions expire after 12 days of inactivity.",
     "An idle session ends after 12 hours."),
    ("date", "The office is closed every Friday afternoon.",
     "The office is closed every Monday afternoon.",
     "On Friday afternoons the office is closed."),
    ("entity", "The mobile app is built by the Oslo team.",
     "The mobile app is built by the Madrid team.",
     "The Oslo team builds the mobile app."),
    ("antonym", "Store the samples in the fridge, not in the freezer.",
     "Store the samples in the freezer.",
     "Keep the samples in the fridge; not the freezer."),
]


@pytest.mark.parametrize(("kind", "evidence", "claim", "paraphrase"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_a_clash_fires_and_its_paraphrase_does_not(kind: str, evidence: str, claim: str,
                                                   paraphrase: str) -> None:
    found = clash.find_clash(claim, [evidence], evidence, min_overlap=0.5)
    assert found is not None, f"no clash found for {claim!r}"
    assert clash.find_clash(paraphrase, [evidence], evidence, min_overlap=0.5) is None
    assert found.evidence == evidence and found.detail.startswith(found.kind)


def test_a_clash_needs_evidence_about_the_same_thing() -> None:
    evidence = "Refunds are not issued for annual plans."
    assert clash.find_clash("The parking garage opens at seven.", [evidence], evidence) is None
    assert clash.find_clash("Refunds are issued for annual plans.", [evidence], evidence) \
        is not None


def test_polarity_undone_by_an_antonym_is_no_clash() -> None:
    evidence = "The setting cannot be turned off."
    assert clash.find_clash("The setting always stays on.", [evidence], evidence) is None
    assert clash.find_clash("The setting can be turned off.", [evidence], evidence) is not None


def test_yes_no_particles_are_not_negation() -> None:
    evidence = "Backups are kept for 30 days."
    assert clash.find_clash("No, backups are kept for 30 days.", [evidence], evidence) is None


def test_kinds_can_be_switched_off() -> None:
    evidence = "Two-step verification is mandatory."
    claim = "Two-step verification is optional."
    assert clash.find_clash(claim, [evidence], evidence, kinds=("negation",)) is None
    assert clash.find_clash(claim, [evidence], evidence, kinds=("antonym",)) is not None


def test_clash_overlaps_agree_with_find_clash() -> None:
    evidence = "Guest users cannot create new projects."
    claim = "Guest users can create new projects."
    overlaps = clash.clash_overlaps(claim, [evidence], evidence)
    assert set(overlaps) == {"negation"}
    t = overlaps["negation"]
    assert clash.find_clash(claim, [evidence], evidence, kinds=("negation",),
                            min_overlap=t) is not None
    assert clash.find_clash(claim, [evidence], evidence, kinds=("negation",),
                            min_overlap=t + 0.01) is None


@pytest.mark.parametrize("text", ["", "...", "12", "Not.", "a" * 5000, "no no no not never"])
def test_odd_text_never_raises(text: str) -> None:
    clash.find_clash(text, [text, "Something else entirely."], text)
    clash.clash_overlaps(text, [text], text)


# False clashes found on the dev data (WiCE, ExpertQA, FaithDial, BEGIN), each a rule's bug:
# (claim, evidence). None of them may be flagged.
NO_CLASH = [
    # A negator about something else than the claim speaks of (its scope).
    ("The end of the tour concluded his relationship with Pepsi-Cola which sponsored the tour.",
     "A spokesman for Pepsi-Cola, which is sponsoring the tour, said he had no information "
     "indicating that any dates were being canceled."),
    ("Perform static timing analysis to ensure that the design meets the timing requirements.",
     "Static timing analysis checks every path in the design for timing violations without "
     "checking the functionality of the design."),
    # "absent" and "no" say the same.
    ("The title was absent on the prop.", "There was no title on the prop."),
    # Other spellings of one name: abbreviations, accents, forms of a word, written together.
    ("It is the most densely populated major city in the US.",
     "New York City is the most densely populated major city in the United States."),
    ("Nintendo makes Mario, Zelda and Pokemon.",
     "Nintendo makes Mario, The Legend of Zelda and Pokémon."),
    ("Hawking was ranked 25th in the BBC poll of the 100 Greatest Brits.",
     "Hawking was ranked 25th in the BBC poll of the 100 Greatest Britons."),
    ("The movie is The Wolf of Wallstreet.", "The Wolf of Wall Street was released in 2013."),
    ("WE ARE TALKING ABOUT ZOOTOPIA",
     "Jenny Slate plays Dawn Bellwether, a sheep who is the assistant mayor of Zootopia."),
    # "play" is no opposite of "display"; "doesn't just" restricts nothing.
    ("The website tells the role they played, and still play, in the horse industry.",
     "The archive will display photos of those who worked in the horse industry."),
    ("Domestic violence doesn't just affect the perpetrator and the victim.",
     "Domestic violence affects all who are exposed: perpetrators, victims and children."),
]


# Issue 17: agreeing polarity written another way never clashes: contractions, negated
# paraphrases ("not allowed" / "forbidden"), prefixed negatives, double negatives, bounds
# written with a negator, a negator that is a determiner. Written here (claim, evidence).
NO_CLASH += [
    ("Refunds can't be issued after 30 days.", "Refunds cannot be issued after 30 days."),
    ("Refunds cannot be issued after 30 days.", "Refunds can't be issued after 30 days."),
    ("Guests are unable to create projects.", "Guests cannot create projects."),
    ("Sharing passwords is not allowed.", "Sharing passwords is forbidden."),
    ("Sharing passwords is forbidden.", "Sharing passwords is not allowed."),
    ("Pets aren't permitted in the building.", "Pets are prohibited in the building."),
    ("The app doesn't store your location.", "The app does not store your location."),
    ("Late fees are not uncommon.", "Late fees are common."),
    ("Access is never left unlogged.", "Access is always logged."),
    ("The form is not processed without a signature.",
     "The form is never processed without a signature."),
    ("You won't be charged for the trial.", "You will not be charged for the trial."),
    ("The office is closed on Sundays.", "The office isn't open on Sundays."),
    ("The office isn't open on Sundays.", "The office is closed on Sundays."),
    ("Applications must arrive no later than March 1.", "Applications must arrive by March 1."),
    ("Water damage is not covered by the warranty.", "The warranty excludes water damage."),
    ("The service is unavailable in Canada.", "The service isn't available in Canada."),
    ("The service isn't offered in Canada.", "The service is unavailable in Canada."),
    ("Smoking is banned everywhere on campus.", "Smoking is not permitted anywhere on campus."),
    ("Digital goods aren't refundable.", "No refunds are given for digital goods."),
    ("You can't get a refund for digital goods.", "Digital goods are non-refundable."),
    ("The printer can't print on both sides.", "The printer doesn't support duplex printing."),
]


@pytest.mark.parametrize(("claim", "evidence"), NO_CLASH, ids=range(len(NO_CLASH)))
def test_no_false_clash(claim: str, evidence: str) -> None:
    found = clash.find_clash(claim, [evidence], evidence, min_overlap=0.5)
    assert found is None, found.detail if found else ""


def test_the_same_rules_still_catch_real_clashes() -> None:
    cases = [("Refunds are handled by PayPal.", "Refunds are handled by Stripe.", "entity"),
             ("The form is correct.", "The form is incorrect.", "antonym"),
             ("The title was on the prop.", "There was no title on the prop.", "negation"),
             # A negative verb clashes with its opposite by polarity.
             ("Sharing passwords is allowed.", "Sharing passwords is forbidden.", "negation"),
             ("The warranty includes water damage.", "The warranty excludes water damage.",
              "negation"),
             ("Access is never logged.", "Access is always logged.", "negation"),
             ("The service is available in Canada.", "The service is unavailable in Canada.",
              "negation"),
             ("Digital goods can be refunded.", "No refunds are given for digital goods.",
              "negation"),
             ("The office is open on Sundays.", "The office is closed on Sundays.", "antonym")]
    for claim, evidence, kind in cases:
        found = clash.find_clash(claim, [evidence], evidence, min_overlap=0.5)
        assert found is not None and found.kind == kind, claim


def test_a_short_evidence_sentence_the_claim_elaborates_is_about_the_same_thing() -> None:
    # The claim holds few of its words in the evidence (0.38), but the evidence's words are
    # all in the claim: the clash is judged on the larger of the two shares.
    evidence = "Gift cards are non-refundable."
    claim = "Yes, gift cards can be refunded to the original payment method within a week."
    found = clash.find_clash(claim, [evidence], evidence, min_overlap=0.5)
    assert found is not None and found.kind == "negation" and found.overlap > 0.7


def test_known_limit_a_negated_verb_paraphrased_by_its_opposite() -> None:
    """Documented, not wanted: "without stopping" said as "keeps running" reads as a flipped
    polarity (the lexicon has no stop/run pair). The overlap threshold and the calibration's
    choice of kinds decide how much such cases cost on real data (scripts/calibrate.py)."""
    evidence = "The export runs without stopping the database."
    found = clash.find_clash("Exports run while the database keeps running.", [evidence],
                             evidence, min_overlap=0.5)
    assert found is not None and found.kind == "negation"


def test_the_scorer_marks_a_clash_contradicted_and_pulls_faithfulness_down() -> None:
    import dataclasses
    from datetime import UTC, datetime

    from evaluator.records import LogRecord
    from evaluator.scorers.embedded.calibration import Calibration
    from evaluator.scorers.embedded.scorer import EmbeddedScorer

    evidence = "Guest users cannot create new projects."
    records = [LogRecord(rid, datetime.now(UTC), "Can guests create projects?", (evidence,),
                         answer)
               for rid, answer in (("clash", "Guest users can create new projects."),
                                   ("fine", "Guest users cannot create new projects."))]
    shipped = Calibration.load()
    strict = dataclasses.replace(shipped, clash_kinds=("negation",), clash_overlap=0.5,
                                 contradicted_claim=0.15, contradicted_answer=0.3)
    scorer = EmbeddedScorer(calibration=strict)
    clash_item, fine_item = scorer.score_batch(records)
    value = {m.metric: m.value for m in clash_item.metrics}["faithfulness"]
    assert value is not None and value < 0.5
    [claim] = clash_item.explanation.claims or ()
    assert claim.verdict.value == "contradicted" and claim.reason is not None
    assert claim.reason.startswith("negation") and claim.evidence == evidence
    assert claim.clash == "negation"  # the kind, for explain and the cue precision per kind
    assert type(claim).from_dict(claim.to_dict()) == claim
    fine = {m.metric: m.value for m in fine_item.metrics}["faithfulness"]
    assert fine is not None and fine >= 0.5


def test_the_answer_level_map_is_monotone_and_the_identity_by_default() -> None:
    import dataclasses

    from evaluator.scorers.embedded.calibration import Calibration

    cal = Calibration.load()
    identity = dataclasses.replace(cal, faithfulness_map=(1.0, 0.0))
    assert identity.map_faithfulness(0.37) == 0.37
    values = [cal.map_faithfulness(x / 20) for x in range(21)]
    assert values == sorted(values) and all(0.0 <= v <= 1.0 for v in values)


def _faithfulness(scorer: object, context: str, answers: list[str]) -> list[float]:
    from datetime import UTC, datetime

    from evaluator.records import LogRecord

    records = [LogRecord(f"r{i}", datetime.now(UTC), "How long are deleted buckets kept?",
                         (context,), a) for i, a in enumerate(answers)]
    out = []
    for item in scorer.score_batch(records):  # type: ignore[attr-defined]
        value = {m.metric: m.value for m in item.metrics}["faithfulness"]
        assert value is not None
        out.append(value)
    return out


def test_a_contradicted_answer_stays_below_the_threshold_after_the_map() -> None:
    """The map is applied before the answer's cap: a number clash used to be capped at 0.5 and
    then mapped to 0.53, a "contradicted" verdict on a value above the threshold."""
    from evaluator.scorers.embedded.calibration import Calibration
    from evaluator.scorers.embedded.scorer import EmbeddedScorer

    cal = Calibration.load()
    assert cal.contradicted_answer < 0.5
    context = "Deleted storage buckets are kept in a recoverable state for 30 days."
    [value] = _faithfulness(EmbeddedScorer(calibration=cal), context,
                            ["Deleted storage buckets are kept in a recoverable state for 90 days."])
    assert value <= cal.contradicted_answer


def test_the_answer_cap_needs_a_share_of_the_claims() -> None:
    import dataclasses

    from evaluator.scorers.embedded.calibration import Calibration
    from evaluator.scorers.embedded.scorer import EmbeddedScorer

    context = ("Deleted storage buckets are kept for 30 days. Objects can be up to 5 TB. "
               "Invoices are issued on the first business day of each month. "
               "Support is available Monday to Friday.")
    two = "Deleted storage buckets are kept for 90 days. Objects can be up to 5 TB."
    four = (f"{two} Invoices are issued on the first business day of each month. "
            "Support is available Monday to Friday.")
    cal = dataclasses.replace(Calibration.load(), contradicted_answer=0.3,
                              contradicted_share=0.5)
    short, long = _faithfulness(EmbeddedScorer(calibration=cal), context, [two, four])
    assert short <= 0.3  # one of two claims contradicted: capped
    assert long > 0.3  # one of four: the claim's own cap only


def _calibrate_module() -> object:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "calibrate.py"
    spec = importlib.util.spec_from_file_location("calibrate_for_tests", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_calibrate_judges_the_closed_list_kinds_together_and_drops_misfiring_ones() -> None:
    c = _calibrate_module()

    def item(label: int, cue: dict[str, float]) -> dict[str, object]:
        return {"claims": [([0.0], 0.5, None, "claim", ())], "cues": [cue],
                "label_faithful": label}

    # Half the answers faithful. Antonym and unit fire 6 times each, always on unfaithful
    # answers: too rare alone, judged as one group (12 fires) and kept. Negation fires 12
    # times, mostly on faithful answers: dropped. Entity fires too rarely to be judged.
    rows = ([item(0, {"antonym": 0.9}) for _ in range(6)] + [item(0, {"unit": 0.9})
                                                              for _ in range(6)]
            + [item(1, {"negation": 0.9}) for _ in range(10)]
            + [item(0, {"negation": 0.9}) for _ in range(2)] + [item(0, {"entity": 0.9})]
            + [item(1, {}) for _ in range(15)] + [item(0, {}) for _ in range(1)])
    kept = c.choose_kinds({"f": rows}, ["f"], 0.5)  # type: ignore[attr-defined]
    assert kept == ["antonym", "quantifier", "unit", "date"]
    assert c.choose_kinds({"f": rows}, ["f"], 0.95) == []  # type: ignore[attr-defined]


def test_calibrate_caps_an_answer_only_with_enough_contradicted_claims() -> None:
    # The rule scripts/calibrate.py chooses its caps with and the scorer reports by.
    from evaluator.scorers.embedded.calibration import answer_faithfulness as final

    ab = (1.0, 0.0)  # identity map
    assert final(0.8, 0.5, ab, 0.35, 0.5) == 0.35
    assert final(0.8, 0.25, ab, 0.35, 0.5) == pytest.approx(0.8)
    assert final(0.8, 0.0, ab, 0.35, 0.0) == pytest.approx(0.8)  # no clash: never capped


def test_groundedness_is_the_mapped_mean_evidence_strength() -> None:
    from datetime import UTC, datetime

    from evaluator.records import LogRecord
    from evaluator.scorers.embedded.calibration import Calibration
    from evaluator.scorers.embedded.scorer import EmbeddedScorer

    cal = Calibration.load()
    assert cal.groundedness_map != (1.0, 0.0)  # calibrate.py adopted it (ECE, out of fold)
    values = [cal.map_groundedness(x / 20) for x in range(21)]
    assert values == sorted(values) and all(0.0 <= v <= 1.0 for v in values)
    context = "Deleted storage buckets are kept for 30 days. Objects can be up to 5 TB."
    [item] = EmbeddedScorer(calibration=cal).score_batch([LogRecord(
        "g", datetime.now(UTC), "How long are buckets kept?", (context,),
        "Deleted buckets are kept for 30 days. Objects can be 5 TB at most.")])
    strengths = [c.strength for c in item.explanation.claims or () if c.strength is not None]
    value = {m.metric: m.value for m in item.metrics}["groundedness"]
    assert value == pytest.approx(cal.map_groundedness(sum(strengths) / len(strengths)),
                                  abs=1e-3)
