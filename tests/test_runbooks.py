"""The runbooks (docs/runbooks/): one per alert and one alert per runbook, every required
section, generated headers fresh, and nothing in them invented: every `groundwatch ...`
command parses with the real CLI parser, every PromQL block passes `promtool check rules` and
names only metrics that exist, every SQL block names only the store's tables and columns and
runs on an empty migrated store (SQLite, and PostgreSQL under the ``postgres`` marker).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from evaluator.store import models
from evaluator.store.store import Store
from groundwatch.cli import build_parser
from metrics.alerts import ALERT_NAMES, build, load_alerts
from metrics.alerts.__main__ import main
from metrics.alerts.config import REPO_ROOT
from metrics.alerts.runbooks import BEGIN, END, RUNBOOK_DIR, SECTIONS

INDEX = "README.md"
PROMTOOL_TIMEOUT_S = 180

# What a placeholder in a runbook stands for when the test runs it. Runbooks write them in
# capitals (docs/runbooks/README.md lists them); SQL writes times as 'SINCE_UTC' text.
PLACEHOLDERS = {
    "REQUEST_ID": "req-0001",
    "ROLE": "worker",
    "ROUTE": "docs_qa",
    "METRIC": "faithfulness",
    "NAME": "incident-1",
    "SOURCE": "app",
    "SINCE_UTC": "2024-01-01 00:00:00",
    "UNTIL_UTC": "2024-01-02 00:00:00",
    "FILE": "/tmp/report.html",
    "SCORER": "lexical",
    "JUDGE": "compact",
}


@dataclass(frozen=True)
class Block:
    lang: str
    body: str
    path: Path


def runbook_paths() -> list[Path]:
    return sorted(p for p in RUNBOOK_DIR.glob("*.md") if p.name != INDEX)


_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.S | re.M)


def blocks(path: Path) -> list[Block]:
    return [Block(m.group(1).strip(), m.group(2), path)
            for m in _FENCE.finditer(path.read_text(encoding="utf-8"))]


def all_blocks(lang: str) -> list[Block]:
    return [b for p in [*runbook_paths(), RUNBOOK_DIR / INDEX] for b in blocks(p)
            if b.lang == lang]


def fill(text_: str) -> str:
    for name, value in PLACEHOLDERS.items():
        text_ = re.sub(rf"\b{name}\b", value, text_)
    return text_


# --- one runbook per alert, with its sections ---------------------------------------------

def test_every_alert_has_a_runbook_and_every_runbook_an_alert() -> None:
    names = {p.stem for p in runbook_paths()}
    assert names - set(ALERT_NAMES) == set(), "runbooks without an alert"
    assert set(ALERT_NAMES) - names == set(), "alerts without a runbook (run `make runbooks`)"
    config = load_alerts()
    for alert in build(config).alerts:
        url = alert.annotations["runbook_url"]
        assert url == f"{config.runbook_base_url.rstrip('/')}/{alert.name}.md", url
        # Absolute, and it names this repository's file: <scheme>://<host>/<owner>/<repo>/
        # blob/<ref>/docs/runbooks/<Alert>.md (GitHub/GitLab/Gitea layout).
        parts = urlsplit(url)
        assert parts.scheme == "https" and parts.netloc, url
        in_repo = parts.path.split("/", 5)[5]
        assert REPO_ROOT / in_repo == RUNBOOK_DIR / f"{alert.name}.md", url
        assert (REPO_ROOT / in_repo).is_file(), url


def test_the_index_lists_every_runbook() -> None:
    index = (RUNBOOK_DIR / INDEX).read_text(encoding="utf-8")
    for name in ALERT_NAMES:
        assert f"]({name}.md)" in index, f"{INDEX} does not link {name}.md"


@pytest.mark.parametrize("path", runbook_paths(), ids=lambda p: p.stem)
def test_runbook_has_the_required_sections(path: Path) -> None:
    body = path.read_text(encoding="utf-8")
    assert body.startswith(f"# {path.stem}\n"), "the title is the alert name"
    outside = _FENCE.sub("", body)
    headings = re.findall(r"^## (.+?)\s*$", outside, re.M)
    assert tuple(headings) == SECTIONS, f"sections {headings}, want {list(SECTIONS)}"
    sections = re.split(r"^## .+$", body.split(END)[1], flags=re.M)[1:]
    for heading, section in zip(headings, sections, strict=True):
        assert len(section.split()) >= 8, f"section '{heading}' is nearly empty"
    assert "TODO" not in body, "a section still says TODO"
    assert body.index(END) < body.index("## " + SECTIONS[0]), "the generated block comes first"


# --- generated headers --------------------------------------------------------------------

def test_generated_headers_are_fresh() -> None:
    assert main(["runbooks", "--check"]) == 0, "run `make runbooks`"


def test_check_reports_a_stale_header_and_rewrites_only_the_block(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for p in runbook_paths():
        shutil.copy(p, tmp_path / p.name)
    path = tmp_path / "GroundwatchQueueBacklog.md"
    original = path.read_text(encoding="utf-8")
    assert "1000" in original.split(END)[0]
    hand = original.split(END)[1]
    path.write_text(original.replace("> 1000", "> 999", 1) + "\nA line of my own.\n",
                    encoding="utf-8")
    assert main(["runbooks", "--check", "--dir", str(tmp_path)]) == 1
    assert "GroundwatchQueueBacklog.md" in capsys.readouterr().err
    assert main(["runbooks", "--dir", str(tmp_path)]) == 0
    rewritten = path.read_text(encoding="utf-8")
    assert rewritten == original + "\nA line of my own.\n"
    assert rewritten.split(END)[1].startswith(hand)
    # A new alert's runbook is created as a skeleton with the required sections.
    (tmp_path / "GroundwatchSamplerDown.md").unlink()
    assert main(["runbooks", "--dir", str(tmp_path)]) == 0
    skeleton = (tmp_path / "GroundwatchSamplerDown.md").read_text(encoding="utf-8")
    assert BEGIN in skeleton and all(f"## {s}" in skeleton for s in SECTIONS)


# --- commands -----------------------------------------------------------------------------

_SHELL_LANGS = {"sh", "bash", "console", "shell"}
_INLINE = re.compile(r"(?<!`)`(groundwatch [^`]+)`(?!`)")


def _invocation(words: list[str]) -> list[str]:
    """``groundwatch ARGS`` run directly or by ``docker-compose exec [-T] SERVICE``; else []."""
    if words[:2] == ["docker-compose", "exec"]:
        rest = words[2:]
        while rest and rest[0].startswith("-"):  # exec's own options (-T)
            rest = rest[1:]
        words = rest[1:]  # after the service name
    return words if words[:1] == ["groundwatch"] else []


def command_lines() -> list[tuple[Path, str]]:
    """Every `groundwatch ...` invocation: in shell blocks (after `docker-compose exec X`,
    a `$ ` prompt, before a pipe) and in inline code."""
    found = []
    for path in [*runbook_paths(), RUNBOOK_DIR / INDEX]:
        for b in blocks(path):
            if b.lang not in _SHELL_LANGS:
                continue
            for line in b.body.splitlines():
                line = re.split(r"\s(?:\||&&|;|>)\s", line.removeprefix("$ "))[0]
                words = _invocation(shlex.split(line, comments=True))
                if words:
                    found.append((path, shlex.join(words)))
        prose = _FENCE.sub("", path.read_text(encoding="utf-8"))
        found += [(path, m.group(1)) for m in _INLINE.finditer(prose)]
    return found


def test_runbooks_use_the_commands_on_call_needs() -> None:
    used = {shlex.split(line)[1] for _, line in command_lines()}
    assert {"report", "explain", "cursor", "health", "check-config"} <= used


def test_every_groundwatch_command_parses() -> None:
    parser = build_parser()
    lines = command_lines()
    assert len(lines) > 40
    for path, line in lines:
        argv = shlex.split(fill(line))[1:]
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"{path.name}: `{line}` does not parse (exit {exc.code})")


# --- PromQL -------------------------------------------------------------------------------

def _metric_names() -> set[str]:
    names = set(re.findall(r"^\| `(groundwatch_[a-z_]+)` \|",
                           (REPO_ROOT / "docs/metrics.md").read_text(encoding="utf-8"), re.M))
    assert len(names) > 30
    return names


def test_promql_parses_with_promtool(tmp_path: Path) -> None:
    exprs = [b.body.strip() for b in all_blocks("promql")]
    assert len(exprs) >= 3 * len(ALERT_NAMES)
    rules = {"groups": [{"name": "runbooks", "rules": [
        {"record": f"runbook:query_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "runbook-queries.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    exe = shutil.which("promtool")
    assert exe, "promtool not found: install Debian's prometheus package (.ci/run does)"
    result = subprocess.run([exe, "check", "rules", str(path)], capture_output=True, text=True,
                            timeout=PROMTOOL_TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def test_promql_names_only_real_metrics_and_records() -> None:
    known = _metric_names()
    records = {r.name for r in build(load_alerts()).records}
    for b in all_blocks("promql"):
        for name in re.findall(r"\b[a-z_]+:[a-z_:0-9]+\b|\bgroundwatch_[a-z_]+\b", b.body):
            if ":" in name:
                assert name in records, f"{b.path.name}: no recording rule {name}"
                continue
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in known or base in known, f"{b.path.name}: no metric {name}"


def test_prose_names_only_real_metrics() -> None:
    known = _metric_names()
    for path in [*runbook_paths(), RUNBOOK_DIR / INDEX]:
        for name in re.findall(r"(?<![:\w])groundwatch_[a-z_]*[a-z](?![:\w])",
                              path.read_text(encoding="utf-8")):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in known or base in known, f"{path.name}: no metric {name}"


# --- SQL ----------------------------------------------------------------------------------

def sql_blocks() -> list[Block]:
    return all_blocks("sql")


_TABLE_REF = re.compile(r"\b(?:FROM|JOIN)\s+([A-Za-z_][A-Za-z0-9_]*)", re.I)


def test_sql_names_only_store_tables() -> None:
    statements = sql_blocks()
    assert len(statements) >= len(ALERT_NAMES)
    tables = set(models.metadata.tables)
    for b in statements:
        assert '"' not in b.body, f"{b.path.name}: no double quotes (SQLite reads an unknown " \
                                  "quoted column as a string)"
        named = set(_TABLE_REF.findall(b.body))
        assert named, f"{b.path.name}: a SQL block without a table: {b.body}"
        assert named <= tables, f"{b.path.name}: not a store table: {named - tables}"
        assert b.body.strip().upper().startswith(("SELECT", "WITH")), "read-only queries only"


def _run_all(url: str) -> None:
    with Store(url):
        pass  # migrated
    engine = create_engine(url, poolclass=NullPool)
    try:
        for b in sql_blocks():
            with engine.connect() as conn:
                try:
                    conn.execute(text(fill(b.body)))
                except Exception as exc:  # name the runbook, then fail
                    pytest.fail(f"{b.path.name}: {b.body}\n{exc}")
    finally:
        engine.dispose()


def test_sql_runs_on_an_empty_sqlite_store(sqlite_url: str) -> None:
    _run_all(sqlite_url)


@pytest.mark.postgres
def test_sql_runs_on_an_empty_postgresql_store(pg_url: str) -> None:
    _run_all(pg_url)


# --- links --------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [*runbook_paths(), RUNBOOK_DIR / INDEX],
                         ids=lambda p: p.stem)
def test_relative_links_resolve(path: Path) -> None:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", _FENCE.sub("", path.read_text())):
        if "://" in target:
            continue
        assert (path.parent / target).exists(), f"{path.name}: broken link {target}"
