"""`groundwatch report --html`: the numbers on the page, its escaping, and that Chromium draws it."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from evaluator.errors import InvalidRecordError
from evaluator.records import LogRecord
from evaluator.scorers.base import METRICS, Detection, ItemResult, MetricResult
from evaluator.store import Store
from groundwatch.cli import main
from groundwatch.report import quality_rules
from groundwatch.report_html import (
    OTHER,
    PALETTE,
    anchor,
    bucket_width,
    build_html_report,
    line_routes,
)
from tests.png_helpers import Image, read_png, write_png

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
THRESHOLDS = {"faithfulness": 0.5, "groundedness": 0.5, "answer_relevance": 0.5,
              "context_relevance": 0.3}
RULES = quality_rules(THRESHOLDS)  # the quality alerts' rules, from configs/alerts.yml
HOSTILE_ANSWER = '<script>alert("pwned")</script> & more'
HOSTILE_QUESTION = "<img src=x onerror=alert(1)> why?"
HOSTILE_ROUTE = "q&a <beta>"
# (request id, route, minutes after T0, value of every metric, detections)
ITEMS = [
    ("d1", "docs", 0, 0.2, ("no_relevant_context",)),
    ("d2", "docs", 10, 0.4, ("refusal",)),
    ("d3", "docs", 20, 0.6, ()),
    ("d4", "docs", 30, 0.8, ()),
    ("b1", "billing", 5, 0.9, ()),
    ("b2", "billing", 15, 0.7, ()),
    ("evil", "billing", 25, 0.05, ("out_of_scope",)),
    ("q1", HOSTILE_ROUTE, 12, 0.3, ()),
]


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def _record(rid: str, route: str, minutes: int) -> LogRecord:
    hostile = rid == "evil"
    return LogRecord(request_id=rid, timestamp=T0 + timedelta(minutes=minutes),
                     question=HOSTILE_QUESTION if hostile else f"question {rid}?",
                     contexts=("passage one",), answer=HOSTILE_ANSWER if hostile else "answer",
                     route=route, model="m1")


def fill(store: Store) -> None:
    """The store of ITEMS: every metric scored at the item's value, plus one not-applicable
    score, an item still queued, a failed one and three rejected source rows."""
    records = {rid: _record(rid, route, minutes) for rid, route, minutes, _, _ in ITEMS}
    rules = {"d1": "no_contexts", "evil": "thumbs_down"}
    store.ledger.add_items([(r, rules.get(r.request_id, "default")) for r in records.values()]
                    + [(_record("wait", "docs", 31), "default"),
                       (_record("dead", "docs", 32), "errors")], source="app")
    results = []
    for rid, _, _, value, kinds in ITEMS:
        metrics = [MetricResult.ok(m, value) for m in METRICS]
        if rid == "b2":
            metrics[-1] = MetricResult.not_applicable("context_relevance", "no_contexts")
        results.append(ItemResult(rid, tuple(metrics),
                                  explanation={"claims": [{"claim": f"claim of {rid}",
                                                           "verdict": "supported"}]},
                                  detections=tuple(Detection(k, "seen") for k in kinds)))
    store.results.record_results(results, records, scorer="lexical", scorer_version="9")
    store.results.record_failures(["dead"], stage="score", kind="internal", reason="boom", attempts=3)
    store.ledger.record_rejections("app", [
        InvalidRecordError("bad_contexts", field="contexts", row_ref="x1", detail="not JSON"),
        InvalidRecordError("bad_contexts", field="contexts", row_ref="x2", detail="not JSON"),
        InvalidRecordError("missing_field", field="question", row_ref="x3", detail="null")])


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def filled(sqlite_url: str) -> Iterator[Store]:
    with Store(sqlite_url, clock=FakeClock(T0 + timedelta(hours=1))) as store:
        fill(store)
        yield store


def page_of(store: Store, **kw: object) -> str:
    kw.setdefault("rules", RULES)
    return build_html_report(store.queries, thresholds=THRESHOLDS, now=T0 + timedelta(hours=2),
                             source="sqlite:///x.db", **kw)  # type: ignore[arg-type]


# -- an HTML reader for the assertions ------------------------------------------------------

VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source"}


class Page(HTMLParser):
    """Checks nesting as it reads; keeps tables, tooltips, links, ids and URL attributes."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.titles: list[tuple[str, str]] = []  # (aria-label of the enclosing svg, text)
        self.links: list[str] = []
        self.ids: list[str] = []
        self.url_attrs: list[tuple[str, str, str]] = []
        self.styles: list[str] = []
        self.tags: list[str] = []
        self._svg = ""
        self._cell: list[str] | None = None
        self._title: list[str] | None = None
        self._style: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attrs(tag, attrs)
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "title":
            self._title = []
        elif tag == "style":
            self._style = []
        elif tag == "svg":
            self._svg = dict(attrs).get("aria-label") or ""

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attrs(tag, attrs)

    def _attrs(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            value = value or ""
            if name == "id":
                self.ids.append(value)
            if name in ("src", "href", "xlink:href", "action", "formaction", "poster", "data"):
                self.url_attrs.append((tag, name, value))
                if tag == "a" and name == "href":
                    self.links.append(value)
            if name == "style":
                self.styles.append(value)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None and self.tables:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "title" and self._title is not None:
            self.titles.append((self._svg, "".join(self._title)))
            self._title = None
        elif tag == "style" and self._style is not None:
            self.styles.append("".join(self._style))
            self._style = None

    def handle_data(self, data: str) -> None:
        for part in (self._cell, self._title, self._style):
            if part is not None:
                part.append(data)

    def rows_starting(self, *cells: str) -> list[list[str]]:
        return [row for table in self.tables for row in table
                if row[:len(cells)] == list(cells)]


# -- the numbers ----------------------------------------------------------------------------

def test_page_shows_the_stores_means_counts_and_failure_modes(filled: Store) -> None:
    page = Page(page_of(filled))
    assert not page.errors and not page.stack, (page.errors, page.stack)
    # Per route and metric: n, not applicable, error, mean.
    docs = page.rows_starting("docs", "faithfulness", "lexical")
    assert len(docs) == 1 and docs[0][3:7] == ["4", "0", "0", "0.500"]
    billing = page.rows_starting("billing", "context_relevance", "lexical")
    assert billing[0][3:7] == ["2", "1", "0", f"{(0.9 + 0.05) / 2:.3f}"]
    assert page.rows_starting("billing", "faithfulness", "lexical")[0][6] == f"{1.65 / 3:.3f}"
    # The chart's tooltips add up to the same n and mean.
    tips = [text for svg, text in page.titles
            if svg == "faithfulness (lexical)" and text.startswith("docs ·")]
    parsed = [(int(n), float(m)) for n, m in
              (re.search(r"n = (\d+), mean ([0-9.]+)", t).groups() for t in tips)]  # type: ignore[union-attr]
    assert sum(n for n, _ in parsed) == 4
    assert sum(n * m for n, m in parsed) / 4 == pytest.approx(0.5, abs=1e-3)
    assert any("threshold 0.50" in t for svg, t in page.titles if svg == "faithfulness (lexical)")
    assert '<circle class="few"' in page_of(filled)  # one score per bucket: hollow dots
    # Beside each mean chart its share below the threshold, both with a y-axis title.
    text = page_of(filled)
    assert text.count("<svg") == 2 * len(METRICS) == text.count('class="ytitle"')
    assert text.count('>share below 0.50</text>') == 3 and text.count('>mean score<') == 4
    shares = [t for svg, t in page.titles if svg == "faithfulness (lexical) share below threshold"
              and t.startswith("docs ·")]
    assert sum(int(re.search(r", (\d+) below 0.50", t).group(1))  # type: ignore[union-attr]
               for t in shares) == 2  # d1 and d2
    # Failure modes per route: count and share of the explained items.
    modes = page.rows_starting("docs", "4")
    assert modes and modes[0][2:] == ["1 (25.0%)", "0 (0.0%)", "1 (25.0%)", "0 (0.0%)"]
    assert page.rows_starting("all routes", "8")[0][3] == "1 (12.5%)"  # out_of_scope: evil
    # Coverage: status per route, rules, rejections, failures.
    assert page.rows_starting("docs", "1", "4", "1", "6")  # queued, scored, failed, total
    assert page.rows_starting("all routes", "1", "8", "1", "10")
    assert page.rows_starting("default", "7", "70.0%")
    assert page.rows_starting("contexts", "bad_contexts", "2")
    assert page.rows_starting("question", "missing_field", "1")
    assert page.rows_starting("score", "internal", "1")
    text = page_of(filled)
    for words in ("2025-03-01 12:00:00 – 2025-03-01 12:30:00 UTC", "lexical 9",
                  "generated", "2025-03-01 14:00:00 UTC", "skipped by the sampling rate",
                  "groundwatch_logs_seen_total"):
        assert words in text


def test_worst_items_link_to_their_explanations_on_the_same_page(filled: Store) -> None:
    page = Page(page_of(filled, worst=3))
    # The faithfulness table: the three lowest questions, lowest first, one item each.
    worst = [row for table in page.tables for row in table
             if len(row) == 5 and row[2] in ("docs", "billing", HOSTILE_ROUTE)]
    assert [r[:4] for r in worst[:3]] == [["0.050", "1", "billing", "evil"],
                                         ["0.200", "1", "docs", "d1"],
                                         ["0.300", "1", HOSTILE_ROUTE, "q1"]]
    assert len(worst) == 3 * len(METRICS)  # capped per metric
    fragments = [link[1:] for link in page.links if link.startswith("#")]
    for rid in ("evil", "d1", "q1"):
        assert anchor(rid) in fragments and anchor(rid) in page.ids
    assert anchor("d4") not in page.ids  # not among the worst: no explanation rendered
    assert set(fragments) <= set(page.ids), set(fragments) - set(page.ids)
    explanation = page_of(filled, worst=3).split(f'id="{anchor("evil")}"', 1)[1]
    explanation = explanation.split('<section class="explanation"', 1)[0]
    # Claims with their verdicts, not preformatted text (that is folded under them).
    assert '<span class="verdict supported">supported</span>claim of evil' in explanation
    assert "<b>detection</b>: out_of_scope: seen" in explanation
    assert explanation.index("<details>") > explanation.index('class="verdict')


def test_an_explanation_shows_verdicts_and_highlighted_evidence(sqlite_url: str) -> None:
    claims = [{"claim": "The refund takes 5 days", "verdict": "supported",
               "evidence": "Refunds are paid within 5 days of the request.",
               "evidence_context": 0, "strength": 0.8},
              {"claim": "Shipping is free <always>", "verdict": "unsupported",
               "missing": ["shipping", "free"]},
              {"claim": "Support is open on Sundays", "verdict": "contradicted",
               "reason": "the passage says closed on Sundays"}]
    with Store(sqlite_url, clock=FakeClock(T0)) as store:
        record = _record("r1", "docs", 0)
        store.ledger.add_items([(record, "default")], source="app")
        store.results.record_results(
            [ItemResult("r1", (MetricResult.ok("faithfulness", 0.1),),
                        explanation={"claims": claims})],
            {"r1": record}, scorer="embedded", scorer_version="2")
        text = page_of(store)
    section = text.split(f'id="{anchor("r1")}"', 1)[1]
    for verdict in ("supported", "unsupported", "contradicted"):
        assert f'<li class="{verdict}"><span class="verdict {verdict}">{verdict}</span>' in section
    assert ("context[0]:</small> Refunds are paid within <mark>5</mark> <mark>days</mark> of "
            "the request.") in section
    assert '<mark class="missing">shipping</mark>' in section
    assert "Shipping is free &lt;always&gt;" in section
    assert "why: the passage says closed on Sundays" in section
    assert "<pre>" not in section.split("<details>", 1)[0]


def test_worst_items_are_grouped_by_question(sqlite_url: str) -> None:
    with Store(sqlite_url, clock=FakeClock(T0)) as store:
        records = {}
        for i in range(5):
            rid = f"same-{i}"
            records[rid] = LogRecord(request_id=rid, timestamp=T0 + timedelta(minutes=i),
                                     question="How do I reset my password?", contexts=("p",),
                                     answer="a", route="docs" if i % 2 else "billing")
        records["other"] = _record("other", "docs", 9)
        store.ledger.add_items([(r, "default") for r in records.values()], source="app")
        store.results.record_results(
            [ItemResult(rid, (MetricResult.ok("faithfulness", 0.1 + i / 100),))
             for i, rid in enumerate(records)], records, scorer="lexical", scorer_version="1")
        page = Page(page_of(store, worst=3))
    rows = [row for t in page.tables for row in t
            if len(row) == 5 and re.fullmatch(r"[0-9.]+", row[0])]
    assert [r[:3] for r in rows] == [["0.100", "5", "billing, docs"], ["0.150", "1", "docs"]]
    assert rows[0][4] == "How do I reset my password?"
    assert rows[0][3].startswith("same-0") and "+1 more" in rows[0][3]
    assert anchor("same-0") in page.ids and anchor("same-1") not in page.ids


def test_the_table_shows_the_share_below_and_what_the_alerts_would_fire(filled: Store) -> None:
    page = Page(page_of(filled))
    docs = page.rows_starting("docs", "faithfulness", "lexical")[0]
    assert docs[8:10] == ["0.50", "50.0% (2 of 4)"]  # d1 0.2 and d2 0.4 below 0.50
    assert f"not flagged: n 4 < {RULES.min_samples} scored items" in docs[10]
    # With a guard the fixture passes, the same rows fire what the alerts would.
    few = dataclasses.replace(RULES, min_samples=3)
    page = Page(page_of(filled, rules=few))
    docs = page.rows_starting("docs", "faithfulness", "lexical")[0]
    assert docs[10] == "ALERT: BurnSlow"  # 50% > 20%; the mean 0.500 is not below 0.50
    billing = page.rows_starting("billing", "faithfulness", "lexical")[0]
    assert billing[10] == "ALERT: BurnSlow"  # evil: 1 of 3 below
    rare = page.rows_starting("billing", "context_relevance", "lexical")[0]
    assert rare[10].startswith("not flagged: n 2 < 3")  # 1 of 2 below: the guard holds it
    assert "GroundwatchQualityBurnFast</b> (ALERT: BurnFast): more than 50%" in page_of(filled)


def test_rejected_rows_are_listed_with_their_ids(filled: Store) -> None:
    page = Page(page_of(filled))
    rows = [row for t in page.tables for row in t if len(row) == 7 and row[0].startswith("x")]
    assert [(r[0], r[2], r[3], r[6]) for r in rows] == [
        ("x3", "question", "missing_field", "groundwatch explain x3"),
        ("x2", "contexts", "bad_contexts", "groundwatch explain x2"),
        ("x1", "contexts", "bad_contexts", "groundwatch explain x1")]


def test_store_data_is_escaped_and_nothing_is_fetched(filled: Store) -> None:
    text = page_of(filled)
    assert "<script" not in text.lower() and "<img" not in text.lower()
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt; &amp; more" in text
    assert "&lt;img src=x onerror=alert(1)&gt; why?" in text
    assert "q&amp;a &lt;beta&gt;" in text and HOSTILE_ROUTE not in text
    page = Page(text)
    assert not page.errors and not page.stack
    assert "script" not in page.tags and "img" not in page.tags and "iframe" not in page.tags
    # What the parser reads back is the original text: escaped once, not twice.
    assert any(HOSTILE_QUESTION in cell for t in page.tables for row in t for cell in row)
    assert HOSTILE_ROUTE in {row[0] for t in page.tables for row in t if row}
    external = [a for a in page.url_attrs if not a[2].startswith("#")]
    assert external == [], external
    assert not any("url(" in s or "@import" in s for s in page.styles)


def test_an_empty_store_still_gives_a_page(sqlite_url: str) -> None:
    with Store(sqlite_url) as store:
        text = page_of(store)
    page = Page(text)
    assert not page.errors and not page.stack
    assert "No ok scores yet" in text and "<svg" not in text


def test_many_routes_share_ten_colours() -> None:
    counts = {f"r{i:02d}": 100 - i for i in range(14)}
    lines = line_routes(counts)
    assert len(set(lines.values())) == len(PALETTE)
    assert lines["r00"] == "r00" and lines["r08"] == "r08" and lines["r09"] == OTHER
    assert line_routes({"a": 1, "b": 2}) == {"b": "b", "a": "a"}


@pytest.mark.parametrize(("span", "per_line", "width"), [
    (timedelta(0), 50, timedelta(seconds=10)),
    (timedelta(seconds=74), 60, timedelta(seconds=30)),  # the demo: 7 buckets wanted
    (timedelta(hours=24), 10_000, timedelta(hours=1)),  # plenty of data: 30 buckets at most
    (timedelta(days=7), 100, timedelta(days=1)),  # little data: fewer, wider buckets
    (timedelta(days=3650), 10_000, timedelta(days=3650) / 30),  # past the table: 30 buckets
])
def test_bucket_width_follows_the_span_and_the_data(span: timedelta, per_line: int,
                                                    width: timedelta) -> None:
    assert bucket_width(span, per_line) == width


def test_store_aggregates(db_url: str) -> None:
    with Store(db_url, clock=FakeClock(T0 + timedelta(hours=1))) as store:
        fill(store)
        items = store.queries.count_items()
        assert items[("docs", "default", "scored")] == 3
        assert items[("docs", "no_contexts", "scored")] == 1
        assert items[("docs", "default", "queued")] == 1
        assert items[("docs", "errors", "failed")] == 1
        assert sum(items.values()) == 10
        assert store.queries.count_items(since=T0 + timedelta(hours=2)) == {}
        assert store.queries.count_rejections() == {("contexts", "bad_contexts"): 2,
                                            ("question", "missing_field"): 1}
        assert store.queries.count_failures() == {("score", "internal"): 1}
        detections = store.queries.item_detections()
        assert len(detections) == len(ITEMS)
        assert detections["d1"] == ("docs", frozenset({"no_relevant_context"}))
        assert detections["evil"] == ("billing", frozenset({"out_of_scope"}))
        assert detections["d3"] == ("docs", frozenset())


def test_report_command_writes_the_page(tmp_path: Path, sqlite_url: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with Store(sqlite_url, clock=FakeClock(T0 + timedelta(hours=1))) as store:
        fill(store)
    config = tmp_path / "gw.toml"
    config.write_text(f'[store]\nurl = "{sqlite_url}"\n'
                      '[scoring]\nthresholds = { faithfulness = 0.42 }\n')
    out = tmp_path / "sub" / "report.html"
    assert main(["--config", str(config), "report", "--html", str(out), "--html-worst", "2"]) == 0
    assert f"HTML report: {out}" in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    assert "threshold 0.42" in text and "0.500" in text
    # evil and d1 are the two lowest of every metric: each explained once.
    assert text.count('<section class="explanation"') == 2


# -- in a real browser ----------------------------------------------------------------------

def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed (`apt-get install chromium`; .ci/run does it)")
    return found


def screenshot(page: Path, out: Path, profile: Path, timeout_s: float = 90.0) -> bytes:
    """Chromium's headless screenshot of ``page``; its whole process group is killed after."""
    argv = [_chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
            "--no-first-run", "--disable-extensions", "--disable-background-networking",
            "--disable-component-update", "--disable-dev-shm-usage",
            # Paint everything before the capture (without it a slow machine can capture a
            # blank frame); the budget is virtual time, not a wait.
            "--run-all-compositor-stages-before-draw", "--virtual-time-budget=3000",
            f"--user-data-dir={profile}", f"--screenshot={out}", "--window-size=1400,2000",
            page.resolve().as_uri()]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    finally:
        with contextlib.suppress(ProcessLookupError):  # it exited with its whole group
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 0 and out.exists(), output.decode(errors="replace")[-2000:]
    return out.read_bytes()


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


# Chart pixels expected per route colour: a line across a 500-px plot drawn 2.5 px wide gives
# over a thousand on the page (billing's, the shorter, draws ~1400); its dots alone (~30 px
# each, 16 of them) and the legend's swatch (54 px) stay well below.
LINE_PIXELS = 1000
BAND = _rgb("#fdecec")  # the tinted "below the threshold" band of every mean chart
# The tinted band of every share chart: above the lowest burn-rate alert's share (20%).
ABOVE = _rgb("#ffe9cc")


def _columns(image: Image, colour: tuple[int, int, int]) -> list[int]:
    """Per pixel column, how many pixels of ``colour`` it holds."""
    c = image.channels
    counts = [0] * image.width
    for row in image.rows:
        for x in range(image.width):
            if (row[c * x], row[c * x + 1], row[c * x + 2]) == colour:
                counts[x] += 1
    return counts


def test_chromium_draws_the_charts(filled: Store, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(page_of(filled), encoding="utf-8")
    empty = tmp_path / "empty.html"
    with Store(f"sqlite:///{tmp_path / 'empty.db'}") as store:
        empty.write_text(page_of(store), encoding="utf-8")
    # docs and billing have a line in every chart (the first two colours); the third route
    # has one item, a dot per chart, and the fourth colour is nobody's.
    wanted = [_rgb(c) for c in PALETTE[:2]]
    for attempt in range(3):
        image = read_png(screenshot(page, tmp_path / f"report-{attempt}.png", tmp_path / "p"))
        colours = image.colours()
        if (all(colours[c] >= LINE_PIXELS for c in wanted) and colours[BAND] > 4 * 20_000
                and colours[ABOVE] > 4 * 40_000):
            break
    assert (image.width, image.height) == (1400, 2000)
    assert all(colours[c] >= LINE_PIXELS for c in wanted), {c: colours[c] for c in wanted}
    assert colours[BAND] > 4 * 20_000, colours[BAND]  # four charts' bands of ~45 000 px each
    # Beside each mean chart, its share below the threshold: four bands above 20% of ~80 000.
    assert colours[ABOVE] > 4 * 40_000, colours[ABOVE]
    # Share on the left, mean on the right, together across the page (1400 px): each plot
    # over 400 px wide, the two over 1000 px apart.
    above = [x for x, n in enumerate(_columns(image, ABOVE)) if n]
    below = [x for x, n in enumerate(_columns(image, BAND)) if n]
    assert above[-1] - above[0] > 400 and below[-1] - below[0] > 400, (above[0], below[0])
    assert above[-1] < below[0] and below[-1] - above[0] > 1000, (above, below)
    assert 0 < colours[_rgb(PALETTE[2])] < LINE_PIXELS
    assert colours[_rgb(PALETTE[3])] == 0
    assert len(colours) > 200  # text, antialiased lines: a page, not a flat fill
    # The same check on a page without charts finds no line and no band.
    blank = read_png(screenshot(empty, tmp_path / "empty.png", tmp_path / "p")).colours()
    assert all(blank[c] < LINE_PIXELS for c in wanted) and blank[BAND] == blank[ABOVE] == 0


def test_png_reader_undoes_every_filter() -> None:
    pixels = [[((x * 37 + y * 11) % 256, (x * y) % 256, (200 - x * 5) % 256) for x in range(7)]
              for y in range(5)]
    image = read_png(write_png(7, 5, pixels, filters=[0, 1, 2, 3, 4]))
    assert [[tuple(row[i:i + 3]) for i in range(0, 21, 3)] for row in image.rows] == pixels


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
