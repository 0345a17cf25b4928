"""The figures in the README and docs/ are the committed benchmark results (issue 18).

Throughput figures live between ``<!-- bench:… -->`` markers filled from
``benchmarks/results/*.json`` by ``make docs-figures`` (``benchmarks/figures.py``); these tests
fail when a doc's figure differs from those files or is written outside a marker.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import figures

REPO = Path(__file__).resolve().parent.parent
RESULTS = {"pipeline": {"raw_celery_items_per_s": 51375.1, "embedded_items_per_s": 16.2,
                        "cases": [{"items_per_s": 4009.3}],
                        "provenance": {"measured_at": "2026-12-01T14:57:14+00:00",
                                       "machine": {"cpu_count": 2, "cpu_model": None,
                                                   "platform": "Linux-x"}}}}


def test_every_doc_states_the_committed_results() -> None:
    assert figures.problems(REPO) == []


def test_every_results_file_says_when_and_where_it_was_measured() -> None:
    for name, data in figures.load_results(REPO / "benchmarks" / "results").items():
        prov = data["provenance"]
        assert prov["measured_at"][:4].isdigit(), name
        assert "machine" in prov and prov["recorded_by"], name


def test_a_figure_the_results_do_not_hold_is_rewritten() -> None:
    doc = "bare Celery: <!-- bench:pipeline.raw_celery_items_per_s|k -->28k<!-- /bench --> items/s"
    assert figures.render(doc, RESULTS) == doc.replace("28k", "51k")


def test_formats_lists_ratios_and_the_machine() -> None:
    def one(ref: str) -> str:
        return figures.figure(RESULTS, ref)
    assert one("pipeline.raw_celery_items_per_s") == "51,375"
    assert one("pipeline.embedded_items_per_s") == "16.2"
    assert one("pipeline.cases.0.items_per_s|k") == "4.0k"
    assert one("pipeline.raw_celery_items_per_s/pipeline.cases.0.items_per_s|.0f") == "13"
    assert one("pipeline@measured") == "2026-12-01, 2 CPUs, Linux-x"


@pytest.mark.parametrize("ref", ["judge.x", "pipeline.nope", "pipeline.cases.3.items_per_s",
                                 "pipeline.embedded_items_per_s|zz"])
def test_a_marker_the_results_cannot_fill_is_an_error(ref: str) -> None:
    with pytest.raises(figures.FigureError):
        figures.figure(RESULTS, ref)


@pytest.mark.parametrize("text", [
    "~7.5k items/s through the pipeline", "against 36,859 items/s", "about 10–40 items/s",
    "12/s on short QA", "~1.1–1.3k\nitems/s", "133 embeddings/s", "9 items per second"])
def test_a_throughput_figure_outside_a_marker_is_found(text: str) -> None:
    assert [fig for _, fig in figures.unmarked_figures(text)]


@pytest.mark.parametrize("text", [
    "<!-- bench:pipeline.embedded_items_per_s -->16.2<!-- /bench --> items/s",
    "20 rows/s (the soak's feed rate)", "items/s", "p95 18 ms"])
def test_marked_figures_and_non_throughput_text_pass(text: str) -> None:
    assert list(figures.unmarked_figures(text)) == []


def test_a_stale_doc_is_reported(tmp_path: Path) -> None:
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "docs" / "decisions").mkdir(parents=True)
    (tmp_path / "benchmarks" / "README.md").write_text("nothing measured\n")
    (tmp_path / "README.md").write_text(
        "<!-- bench:pipeline.embedded_items_per_s -->9<!-- /bench --> items/s\n")
    (tmp_path / "docs" / "scaling.md").write_text("raw Celery ~28k items/s\n")
    (tmp_path / "docs" / "decisions" / "0001.md").write_text("at the time: 863 items/s\n")
    found = figures.problems(tmp_path, RESULTS)
    assert len(found) == 2
    assert found[0].startswith("README.md: figures differ")
    assert found[1].startswith("docs/scaling.md:1: throughput figure '~28k items/s'")
