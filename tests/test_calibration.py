"""The calibration maps (evaluator/calibration): the monotone fit and its figures, the pairs
the store keeps (the random share only), the refit, and the maps applied to the cheap scorer's
scores, exported raw and calibrated. SQLite and, under the ``postgres`` marker, PostgreSQL."""

from __future__ import annotations

import dataclasses
import logging
import random
from datetime import timedelta

import numpy as np
import pytest

from evaluator.calibration.apply import Calibrator
from evaluator.calibration.fit import FitSettings, fit_maps, fit_one
from evaluator.calibration.isotonic import ece, fit_isotonic, many, roc_auc
from evaluator.calibration.maps import ALL_ROUTES, Pair
from evaluator.calibration.refit import RefitScheduler, refit
from evaluator.config import CalibrationConfig, MetricsConfig
from evaluator.scorers.base import ItemResult, MetricResult, ScoredBatch, ScorerRun
from evaluator.store import Store
from evaluator.verdicts import Verdicts
from metrics.registry import Metrics
from tests.store_helpers import T0, FakeClock, record

pytest_plugins = ["tests.store_fixtures"]

SETTINGS = FitSettings(min_pairs=50, max_band=0.15, max_pairs=5000, bootstrap_rounds=30)


def _pairs(n: int, *, seed: int = 1, route: str = "chat", metric: str = "faithfulness",
           distort=lambda j: j * j, binary: bool = False) -> list[Pair]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        j = rng.random()
        target = float(rng.random() < j) if binary else j
        out.append(Pair(f"{route}-{seed}-{i}", route, metric, distort(j), target))
    return out


# -- the arithmetic ------------------------------------------------------------------------

def test_isotonic_pools_violators_and_stays_monotone() -> None:
    fitted = fit_isotonic([0.1, 0.2, 0.3, 0.4], [0.2, 0.6, 0.4, 0.9])
    # 0.6 and 0.4 pool into one block at x 0.25, y 0.5.
    assert fitted.x == pytest.approx((0.1, 0.25, 0.4)) and fitted.y == pytest.approx(
        (0.2, 0.5, 0.9))
    rng = np.random.default_rng(3)
    x = rng.random(500)
    noisy = fit_isotonic(x, np.clip(x + rng.normal(0, 0.3, 500), 0, 1))
    values = many(noisy, np.linspace(0, 1, 101))
    assert (np.diff(values) >= 0).all() and values.min() >= 0 and values.max() <= 1
    # Equal raw scores get one value: the map is a function of the score.
    tied = fit_isotonic([0.5, 0.5, 0.5], [0.0, 1.0, 1.0])
    assert tied(0.5) == pytest.approx(2 / 3)


def test_ece_and_auc_on_known_cases() -> None:
    assert ece([0.9] * 10, [1] * 9 + [0]) == pytest.approx(0.0)
    assert ece([0.9] * 10, [0] * 10) == pytest.approx(0.9)
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert roc_auc([0.5, 0.5], [True, False]) == pytest.approx(0.5)
    assert roc_auc([0.1, 0.2], [True, True]) is None


@pytest.mark.parametrize("binary", [False, True], ids=["judge-values", "judge-verdicts"])
def test_the_map_recovers_a_known_distortion(binary: bool) -> None:
    """cheap = judge**2: the fitted map is close to sqrt, and on pairs it never saw its ECE is
    far below the raw score's. Stated error: mean |map(c) - sqrt(c)| <= 0.03 with the judge's
    values, <= 0.06 with 0/1 verdicts drawn from them (4,000 pairs)."""
    train = _pairs(4000, seed=1, binary=binary)
    held = _pairs(2000, seed=2, binary=binary)
    m = fit_one(train, scorer="embedded", scorer_version="1", source="judge", route="chat",
                metric="faithfulness", threshold=0.5, settings=SETTINGS, now=T0)
    assert m.usable and m.map is not None and m.n == 4000
    grid = np.linspace(0.01, 0.99, 99)
    error = float(np.abs(many(m.map, grid) - np.sqrt(grid)).mean())
    assert error <= (0.06 if binary else 0.03)
    x = np.array([p.cheap for p in held])
    y = np.array([p.target for p in held])
    before, after = ece(x, y), ece(many(m.map, x), y)
    assert before > 0.1 and after < before / 3
    # The stored figure is out of fold, and tells the same story.
    assert m.ece_calibrated is not None and m.ece_calibrated < m.ece_raw / 3
    lo, hi = m.band_at(0.25)
    assert lo <= m.apply(0.25) <= hi and hi - lo < 0.2


def test_below_the_minimum_count_a_map_is_kept_for_its_figures_but_never_applies() -> None:
    few = fit_one(_pairs(49), scorer="embedded", scorer_version="1", source="judge",
                  route="chat", metric="faithfulness", threshold=0.5, settings=SETTINGS, now=T0)
    assert not few.usable and few.map is None and "49 pairs" in few.why
    assert few.auc is not None  # the agreement is still measured
    # Enough pairs but too noisy for the band: not used either.
    noisy = fit_one(_pairs(60, binary=True), scorer="embedded", scorer_version="1",
                    source="judge", route="chat", metric="faithfulness", threshold=0.5,
                    settings=dataclasses.replace(SETTINGS, max_band=0.05), now=T0)
    assert not noisy.usable and noisy.map is not None and "band" in noisy.why
    calibrator = Calibrator("embedded", "1", lambda: [few, noisy])
    assert calibrator.lookup("chat", "faithfulness") is None


def test_maps_per_route_and_one_over_all_routes() -> None:
    pairs = _pairs(300, route="chat") + _pairs(20, route="search", seed=5) + \
        _pairs(5, route="faq", seed=6)
    maps = fit_maps(pairs, scorer="embedded", scorer_version="1", source="judge",
                    thresholds={"faithfulness": 0.7}, settings=SETTINGS, now=T0)
    by = {(m.route, m.metric): m for m in maps}
    # faq (5 pairs, under MIN_ROUTE_PAIRS) gets no fit of its own; its pairs count in "*".
    assert set(by) == {("chat", "faithfulness"), ("search", "faithfulness"),
                       (ALL_ROUTES, "faithfulness")}
    assert by["chat", "faithfulness"].usable and not by["search", "faithfulness"].usable
    assert by[ALL_ROUTES, "faithfulness"].n == 325
    with pytest.raises(ValueError, match="unknown calibration source"):
        fit_maps(pairs, scorer="e", scorer_version="1", source="vibes", thresholds={},
                 settings=SETTINGS, now=T0)


# -- applying ------------------------------------------------------------------------------

def _usable(route: str, seed: int = 1) -> object:
    return fit_one(_pairs(400, seed=seed, route=route), scorer="embedded", scorer_version="1",
                   source="judge", route=route, metric="faithfulness", threshold=0.5,
                   settings=SETTINGS, now=T0)


def test_a_route_uses_its_own_map_else_the_map_over_all_routes_else_none() -> None:
    chat = dataclasses.replace(_usable("chat"), id=1)
    pooled = dataclasses.replace(_usable(ALL_ROUTES, seed=2), id=2)
    calibrator = Calibrator("embedded", "1", lambda: [chat, pooled])
    records = {r.request_id: r for r in (record("a", route="chat"), record("b", route="faq"),
                                         record("c", route="chat"))}
    run = ScorerRun("embedded", "1", (
        ItemResult("a", (MetricResult.ok("faithfulness", 0.25),
                         MetricResult.ok("groundedness", 0.25))),
        ItemResult("b", (MetricResult.ok("faithfulness", 0.25),)),
        ItemResult("c", (MetricResult.error("faithfulness", "internal"),))))
    out = {i.request_id: i for i in calibrator.apply(run, records).items}
    a_faith, a_ground = out["a"].metrics
    assert a_faith.calibration == "judge#1" and a_faith.value == 0.25
    assert a_faith.calibrated == pytest.approx(0.5, abs=0.05)  # sqrt(0.25)
    assert a_ground.calibrated is None  # no map for groundedness
    assert out["b"].metrics[0].calibration == "judge#2"  # faq: the map over all routes
    assert out["c"].metrics[0].calibrated is None  # an error has no value to map
    # Another scorer's (or version's) run is left alone.
    other = dataclasses.replace(run, version="2")
    assert calibrator.apply(other, records) is other


def test_a_failed_reload_keeps_the_maps_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    chat = dataclasses.replace(_usable("chat"), id=1)
    fail = [False]

    def load() -> list[object]:
        if fail[0]:
            raise ConnectionError("store down")
        return [chat]

    calibrator = Calibrator("embedded", "1", load, refresh_s=60, clock=lambda: now[0])
    assert calibrator.lookup("chat", "faithfulness") is chat
    fail[0] = True
    with caplog.at_level(logging.WARNING, logger="groundwatch.calibration"):
        for step in (61, 122, 183):
            now[0] = step
            assert calibrator.lookup("chat", "faithfulness") is chat
    assert len(caplog.records) == 1 and "store down" in caplog.records[0].getMessage()


def test_a_calibrated_value_is_an_ok_scores_and_names_its_map() -> None:
    with pytest.raises(ValueError, match="map's name"):
        MetricResult("faithfulness", MetricResult.ok("faithfulness", 0.2).outcome, 0.2,
                     calibrated=0.4)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        MetricResult.ok("faithfulness", 0.2).__class__(
            "faithfulness", MetricResult.ok("faithfulness", 0.2).outcome, 0.2, None, 1.5, "judge#1")


# -- the store, the refit and the exported series -------------------------------------------

def _cascade_batch(ids: list[str], *, cheap: list[float], judge: list[float],
                   picked: dict[str, str], route: str = "chat") -> ScoredBatch:
    records = tuple(record(rid, route=route) for rid in ids)
    cheap_run = ScorerRun("embedded", "1", tuple(
        ItemResult(rid, (MetricResult.ok("faithfulness", v),))
        for rid, v in zip(ids, cheap, strict=True)))
    judged = [(rid, v) for rid, v in zip(ids, judge, strict=True) if rid in picked]
    judge_run = ScorerRun("compact", "m1", tuple(
        ItemResult(rid, (MetricResult.ok("faithfulness", v),)) for rid, v in judged),
        selection=picked)
    return ScoredBatch(records, (cheap_run, judge_run))


def test_pairs_come_from_the_random_share_only_and_once(store: Store) -> None:
    """A biased pick (low, band) is scored by the judge but never becomes a pair: it was
    chosen by the cheap score. A batch delivered twice stores its pairs once."""
    batch = _cascade_batch(["r0", "r1", "r2", "r3"], cheap=[0.1, 0.45, 0.9, 0.8],
                           judge=[0.9, 0.8, 0.2, 0.6],
                           picked={"r0": "low", "r1": "band", "r2": "random"})
    store.results.record_batch(batch)
    store.results.record_batch(batch)
    pairs = store.calibration.pairs("embedded", "1", T0 - timedelta(days=1))
    assert [(p.request_id, p.route, p.cheap, p.target) for p in pairs] == [
        ("r2", "chat", 0.9, 0.2)]
    assert store.calibration.pairs("embedded", "2", T0 - timedelta(days=1)) == []
    # Pairs age out with the retention purge.
    assert store.purge_tables(T0 + timedelta(seconds=1))["gw_calibration_pairs"] == 1


def test_refit_stores_maps_the_workers_apply_and_export_raw_and_calibrated(
        store: Store, clock: FakeClock) -> None:
    rng = random.Random(7)
    for b in range(20):  # 400 random-share items, cheap = judge**2
        ids = [f"b{b}-{i}" for i in range(20)]
        judge = [rng.random() for _ in ids]
        store.results.record_batch(_cascade_batch(
            ids, cheap=[j * j for j in judge], judge=judge,
            picked=dict.fromkeys(ids, "random")))
    metrics = Metrics(MetricsConfig(), multiprocess=False)
    get = metrics.registry.get_sample_value
    config = CalibrationConfig(min_pairs=50)
    scheduler = RefitScheduler(config, store.calibration, store.golden, metrics.calibration,
                               scorer="embedded", scorer_version="1",
                               thresholds={"faithfulness": 0.5})
    maps = scheduler.tick()
    assert maps is not None and {(m.route, m.usable) for m in maps} == {("chat", True),
                                                                          (ALL_ROUTES, True)}
    assert scheduler.tick() is None  # claimed for this interval
    labels = {"metric": "faithfulness", "route": "chat"}
    assert get("groundwatch_calibration_pairs", labels) == 400
    assert get("groundwatch_calibration_map_usable", labels) == 1
    assert get("groundwatch_calibration_agreement_auc", labels) > 0.95
    raw_ece = get("groundwatch_calibration_ece", {**labels, "values": "raw"})
    cal_ece = get("groundwatch_calibration_ece", {**labels, "values": "calibrated"})
    assert cal_ece < raw_ece / 3
    assert get("groundwatch_calibration_refits_total", {"result": "ok"}) == 1
    # A route past the label's value cap is not exported (one "other" series would mix
    # routes); the map over all routes is.
    capped = Metrics(MetricsConfig(max_label_values=1), multiprocess=False)
    capped.calibration.set_maps([dataclasses.replace(m, route=r) for m in maps
                                 for r in ("a", "b") if m.route == "chat"] + [
        m for m in maps if m.route == ALL_ROUTES])
    gauge = capped.registry.get_sample_value
    assert gauge("groundwatch_calibration_pairs", {**labels, "route": "a"}) == 400
    assert gauge("groundwatch_calibration_pairs", {**labels, "route": "other"}) is None
    assert gauge("groundwatch_calibration_pairs", {**labels, "route": "*"}) == 400

    # A worker's calibrator reads them; the store keeps the calibrated twin and its map.
    calibrator = Calibrator("embedded", "1", lambda: store.calibration.newest_maps(
        "embedded", "1", usable_only=True))
    rec = record("new", route="chat")
    run = calibrator.apply(ScorerRun("embedded", "1", (
        ItemResult("new", (MetricResult.ok("faithfulness", 0.16),)),)), {"new": rec})
    batch = ScoredBatch((rec,), (run,))
    written = store.results.record_batch(batch)
    stored = store.queries.scores_for("new")[0]
    assert stored.value == 0.16 and stored.calibrated == pytest.approx(0.4, abs=0.06)
    chat_map = next(m for m in maps if m.route == "chat")
    assert stored.calibration == f"judge#{chat_map.id}"
    # Both series, for the first scorer: raw below the threshold, calibrated below it too.
    metrics.scoring.observe_written(Verdicts.of(batch, written, {"faithfulness": 0.5}))
    series = {"metric": "faithfulness", "scorer": "embedded", "route": "chat", "model": ""}
    assert get("groundwatch_score_sum", series) == pytest.approx(0.16)
    assert get("groundwatch_calibrated_score_sum", series) == pytest.approx(
        stored.calibrated)
    assert get("groundwatch_calibrated_quality_failures_total",
               {k: series[k] for k in ("metric", "scorer", "route")}) == 1


def test_the_newest_fits_are_kept_and_the_newest_usable_applies(store: Store,
                                                                clock: FakeClock) -> None:
    from evaluator.store.calibration import KEEP_PER_KEY

    good = _usable("chat")
    bad = fit_one(_pairs(10), scorer="embedded", scorer_version="1", source="judge",
                  route="chat", metric="faithfulness", threshold=0.5, settings=SETTINGS, now=T0)
    first = store.calibration.save_maps([good])[0]
    store.calibration.save_maps([bad])  # newer, not usable
    applied = store.calibration.newest_maps("embedded", "1", usable_only=True)
    assert [m.id for m in applied] == [first.id]
    assert store.calibration.newest_maps("embedded", "1", usable_only=False)[0].n == 10
    for _ in range(KEEP_PER_KEY + 2):
        store.calibration.save_maps([bad])
    assert store.calibration.map_by_id(first.id) is None  # only the newest fits are kept
    kept = store.calibration.newest_maps("embedded", "1", usable_only=False)
    assert len(kept) == 1


def test_refit_with_no_pairs_stores_nothing(store: Store) -> None:
    assert refit(store.calibration, scorer="embedded", scorer_version="1",
                 config=CalibrationConfig(), thresholds={}) == []


# -- a labelled file, the CLI, explain and the report ---------------------------------------

def _labelled_file(path, n: int = 240) -> None:  # type: ignore[no-untyped-def]
    """Items the lexical scorer can tell apart: answers drawing k of their six words from
    outside the context, labelled faithful when k <= 2."""
    import json

    rng = random.Random(11)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota",
             "kappa", "lambda", "mu"]
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            context = " ".join(rng.choice(words) for _ in range(12))
            k = rng.randint(0, 6)
            answer = " ".join(context.split()[:6 - k] + [f"zz{j}" for j in range(k)])
            fh.write(json.dumps({"request_id": f"l{i}", "question": f"what of {words[i % 12]}?",
                                 "contexts": [context], "answer": answer,
                                 "route": "chat" if i % 3 else "faq",
                                 "labels": {"faithfulness": k <= 2}}) + "\n")


def test_calibrate_labels_fits_the_same_map_and_workers_apply_it(
        tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    from evaluator.judge.golden import load_labelled
    from evaluator.scorers.lexical import LexicalScorer
    from groundwatch.cli import main
    from groundwatch.explain import format_explanation
    from groundwatch.report import build_report, format_report

    labels = tmp_path / "labelled.jsonl"
    _labelled_file(labels)
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "gw.db"}"\n'
                   '[scoring]\nscorer = "lexical"\n', encoding="utf-8")
    assert main(["calibrate", "--labels", str(labels), "--dry-run", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "240 labelled items, 240 pairs" in out and "dry run" in out
    assert not (tmp_path / "gw.db").exists()  # a dry run neither opens nor migrates the store
    with Store(f"sqlite:///{tmp_path / 'gw.db'}") as store:
        assert store.calibration.newest_maps("lexical", "1", usable_only=False) == []
    assert main(["calibrate", "--labels", str(labels), "-c", str(cfg)]) == 0
    assert "labels#" in capsys.readouterr().out

    # The same pairs through the library give the same map.
    scorer = LexicalScorer()
    items = load_labelled(labels, require_labels=True)
    batch = Scoring_score(scorer, [i.record for i in items])
    pairs = [Pair(i.record.request_id, i.record.route or "", "faithfulness",
                  next(m.value for m in r.metrics if m.metric == "faithfulness"),
                  i.labels["faithfulness"])
             for i, r in zip(items, batch, strict=True)]
    expected = {m.route: m for m in fit_maps(
        pairs, scorer="lexical", scorer_version="1", source="labels",
        thresholds={"faithfulness": 0.5}, settings=FitSettings(), now=T0)}
    with Store(f"sqlite:///{tmp_path / 'gw.db'}") as store:
        stored = {m.route: m for m in store.calibration.newest_maps("lexical", "1",
                                                                    usable_only=True)
                  if m.metric == "faithfulness"}
        assert set(stored) == {"chat", "faq", ALL_ROUTES}
        for route, m in stored.items():
            assert m.map is not None and expected[route].map is not None
            assert m.source == "labels" and m.map.to_dict() == expected[route].map.to_dict()
        # A worker applies them; explain and the report say which map.
        calibrator = Calibrator("lexical", "1", lambda: store.calibration.newest_maps(
            "lexical", "1", usable_only=True))
        rec = items[0].record
        run = calibrator.apply(ScorerRun("lexical", "1", (
            ItemResult(rec.request_id, (MetricResult.ok("faithfulness", 0.4),)),)),
            {rec.request_id: rec})
        store.results.record_batch(ScoredBatch((rec,), (run,)))
        text = format_explanation(store.queries, rec.request_id,
                                  map_of=store.calibration.map_by_id)
        route_map = stored[rec.route or ""]
        assert f"-> calibrated {run.items[0].metrics[0].calibrated:.3f} by labels#" \
               f"{route_map.id} (route {rec.route}, {route_map.n} pairs from the labels" in text
        report = format_report(build_report(store.queries.scores()))
        assert f"calibrated mean {run.items[0].metrics[0].calibrated:.3f} (1 of 1 through " \
               f"labels#{route_map.id})" in report
        from groundwatch.report_html import build_html_report

        page = build_html_report(store.queries, thresholds={"faithfulness": 0.5})
        assert "<th>calibrated mean</th>" in page
        assert f'title="1 of 1 scores through labels#{route_map.id}">' \
               f'{run.items[0].metrics[0].calibrated:.3f}</td>' in page


def Scoring_score(scorer, records):  # type: ignore[no-untyped-def]
    from evaluator.scoring import Scoring

    return Scoring([scorer]).score(records).runs[0].items


def test_a_labelled_file_names_its_bad_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from evaluator.errors import ConfigError
    from evaluator.judge.golden import load_labelled

    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q?", "contexts": [], "answer": "a", '
                    '"labels": {"faithfulness": 1}}\n'
                    '{"question": "q?", "contexts": [], "answer": "a", '
                    '"labels": {"faithfulness": 1.5}}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="line 2, field 'labels': faithfulness: a label is"):
        load_labelled(path)
    path.write_text('{"question": "q?", "contexts": [], "answer": "a", '
                    '"labels": {"truthiness": 1}}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown metric 'truthiness'"):
        load_labelled(path)
    path.write_text('{"question": "q?", "contexts": [], "answer": "a"}\n', encoding="utf-8")
    assert load_labelled(path)[0].labels == {}
    with pytest.raises(ConfigError, match="no labels"):
        load_labelled(path, require_labels=True)
