"""The command line as a user meets it: option order, closed pipes, ``explain`` of a rejected
row, and progress (a live bar on a terminal, a line per step of progress in a pipe)."""

from __future__ import annotations

import argparse
import json
import os
import pty
import re
import select
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from evaluator import demo_traffic
from evaluator.config import load_config
from evaluator.records import FieldDrop, LogRecord, RowLimits, map_row
from evaluator.scorers import build_scorer
from evaluator.scorers.base import ItemResult, MetricResult
from evaluator.scorers.explanation import ContextRelevanceParts, Explanation
from evaluator.store import Store
from groundwatch.cli import EXIT_BROKEN_PIPE, build_parser, main
from groundwatch.explain import format_explanation
from groundwatch.progress import StepProgress
from metrics.registry import Metrics
from tests.store_helpers import T0, FakeClock, ok_result, record
from tests.test_sampler import Queue
from tests.test_sampler import write_config as write_sampler_config
from workers.sampler import build_sampler

REPO = Path(__file__).resolve().parent.parent
ROUTES = 400  # report --json of this many routes is ~1 MB: more than a pipe holds


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROUNDWATCH__")}
    return {**env, "PYTHONPATH": str(REPO), "GROUNDWATCH_LOG_LEVEL": "WARNING"}


def groundwatch(*args: str) -> list[str]:
    return [sys.executable, "-m", "groundwatch", *args]


@pytest.fixture
def scored(tmp_path: Path) -> Path:
    """A config whose store holds lexical scores of one item on each of ROUTES routes; its
    source, store and broker all exist, so a preflight of the config finds nothing to fix."""
    demo_traffic.create_log_table(f"sqlite:///{tmp_path}/logs.db")
    (tmp_path / "broker").mkdir()
    path = tmp_path / "gw.toml"
    path.write_text(f'[store]\nurl = "sqlite:///{tmp_path}/gw.db"\n'
                    f'[broker]\nurl = "filesystem://{tmp_path}/broker"\n'
                    f'[source.sql]\nurl = "sqlite:///{tmp_path}/logs.db"\n'
                    f'table = "{demo_traffic.TABLE}"\n'
                    f'[metrics]\nmultiproc_dir = "{tmp_path}/prom"\n')
    config = load_config(path, environ={})
    now = datetime.now(UTC)
    records = [LogRecord(request_id=f"r{i}", timestamp=now - timedelta(minutes=1),
                         question=f"Where is bucket {i} stored?",
                         contexts=(f"Bucket {i} is stored in region eu-{i}.",),
                         answer=f"Bucket {i} is stored in region eu-{i}.", route=f"route-{i:04d}")
               for i in range(ROUTES)]
    scorer = build_scorer(config, "lexical")
    store = Store.from_config(config.store)
    store.results.record_results(scorer.score_batch(records), {r.request_id: r for r in records},
                         scorer=scorer.name, scorer_version=scorer.version)
    store.close()
    scorer.close()
    return path


# -- 1. --config and --log-level before or after the command ---------------------------------

def test_global_options_parse_before_and_after_the_command() -> None:
    parser = build_parser()
    for argv in (["--config", "x.toml", "report"], ["report", "--config", "x.toml"],
                 ["-c", "x.toml", "report"], ["report", "-c", "x.toml"]):
        assert parser.parse_args(argv).config == "x.toml", argv
    # Not given after the command: the value given before it stands (no default overwrites it).
    args = parser.parse_args(["--config", "x.toml", "--log-level", "DEBUG", "explain", "id"])
    assert (args.config, args.log_level) == ("x.toml", "DEBUG")
    assert parser.parse_args(["explain", "id", "--log-level", "ERROR"]).log_level == "ERROR"
    # After the command wins over before it, as a later option does.
    assert parser.parse_args(["-c", "a.toml", "report", "-c", "b.toml"]).config == "b.toml"
    assert parser.parse_args(["report"]).config is None


def _parsers(parser: argparse.ArgumentParser, path: str
             ) -> list[tuple[str, argparse.ArgumentParser]]:
    """``parser`` and every sub-parser under it, recursively, each with its command line."""
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _parsers(sub, f"{path} {name}")
    return found


def _help_offenders(parser: argparse.ArgumentParser) -> list[str]:
    """What the help of ``parser`` lacks: a command without a description or an example that
    parses, an option or argument without help, two spellings of one option."""
    offenders = []
    for path, p in _parsers(parser, "groundwatch"):
        p.format_help()  # a stray % in a help text fails here, not in front of a user
        if not (p.description or "").strip():
            offenders.append(f"{path}: no description")
        examples = [line.strip().removeprefix("$ ") for line in (p.epilog or "").splitlines()
                    if line.strip().removeprefix("$ ").startswith(path + " ")
                    or line.strip() == path]
        if not examples:
            offenders.append(f"{path}: no example in its epilog")
        for example in examples:
            try:
                build_parser().parse_args(shlex.split(example)[1:])
            except SystemExit:
                offenders.append(f"{path}: its example does not parse: {example}")
        spellings: dict[str, str] = {}
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                offenders += [f"{path} {choice.dest}: no help in the list of commands"
                              for choice in action._choices_actions if not choice.help]
                continue
            name = "/".join(action.option_strings) or action.dest
            if action.help == argparse.SUPPRESS:
                if not getattr(action, "deprecated", False):
                    offenders.append(f"{path} {name}: hidden but not a deprecated alias")
                continue
            if not (action.help or "").strip():
                offenders.append(f"{path} {name}: no help")
            for option in action.option_strings:
                key = option.lstrip("-").replace("-", "").replace("_", "")
                if len(option) > 2 and spellings.setdefault(key, option) != option:
                    offenders.append(f"{path}: two spellings of one option: "
                                     f"{spellings[key]} and {option}")
    return offenders


def test_every_command_and_option_has_help_and_every_command_an_example() -> None:
    offenders = _help_offenders(build_parser())
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("order", ["before", "after"])
def test_config_before_or_after_the_command(
        scored: Path, order: str, capsys: pytest.CaptureFixture[str]) -> None:
    command = ["report", "--json", "--worst", "0"]
    argv = (["--config", str(scored), *command] if order == "before"
            else [*command, "--config", str(scored), "--log-level", "WARNING"])
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len({r["route"] for r in rows}) == ROUTES


def test_config_after_the_command_in_a_process(scored: Path) -> None:
    proc = subprocess.run(groundwatch("explain", "r7", "-c", str(scored), "--log-level", "ERROR"),
                          capture_output=True, text=True, timeout=120, env=_env(), cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "request r7" in proc.stdout and "route: route-0007" in proc.stdout
    # --offline: the order of the options is under test here, not the preflight.
    proc = subprocess.run(groundwatch("check-config", "--offline", "--config", str(scored)),
                          capture_output=True, text=True, timeout=120, env=_env(), cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert str(scored) in proc.stdout


# -- 2. no traceback for a closed pipe -----------------------------------------------------

def _read_one_line_then_close(argv: list[str], cwd: Path) -> tuple[int, str]:
    """Like `argv | head -1`: read a line of stdout, close the pipe, return (exit code,
    stderr)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
                            cwd=cwd)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        first = proc.stdout.readline()
        proc.stdout.close()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert first, err.decode()
    return proc.returncode, err.decode()


def _many_rules_config(scored: Path) -> Path:
    rules = "".join(f'[[sampling.rules]]\nname = "rule_{i}"\nmatch = {{ route = "r{i}" }}\n'
                    f"rate = 1.0\n" for i in range(1500))
    path = scored.with_name("many_rules.toml")
    path.write_text(scored.read_text() + rules)
    return path


@pytest.mark.parametrize("command", ["report", "check-config", "score"])
def test_closed_pipe_ends_quietly(scored: Path, tmp_path: Path, command: str) -> None:
    if command == "report":
        argv = groundwatch("--config", str(scored), "report", "--json")
    elif command == "check-config":  # ~300 KB of config, as JSON
        argv = groundwatch("--config", str(_many_rules_config(scored)), "check-config", "--offline",
                           "--show-config")
    else:
        src = tmp_path / "many.jsonl"
        src.write_text("".join(json.dumps({"id": f"q{i}", "question": "Where is it?",
                                           "contexts": ["It is in Paris."],
                                           "answer": "It is in Paris."}) + "\n"
                               for i in range(3000)))
        argv = groundwatch("-c", str(scored), "score", str(src), "--scorer", "lexical", "--quiet")
    code, err = _read_one_line_then_close(argv, tmp_path)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert code == EXIT_BROKEN_PIPE, err


def test_an_open_pipe_still_gets_everything(scored: Path) -> None:
    proc = subprocess.run(groundwatch("-c", str(scored), "report", "--json"),
                          capture_output=True, timeout=120, env=_env(), cwd=REPO)
    assert proc.returncode == 0
    assert len(json.loads(proc.stdout)) == 4 * ROUTES


# -- 3. explain shows a rejected row -------------------------------------------------------

def test_explain_shows_the_rejection_of_a_row_that_was_not_sampled(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = demo_traffic.make_rows(60, seed=3)
    rows[9]["user_question"] = None
    rows[12]["retrieved_docs"] = "{not json"
    demo_traffic.create_log_table(f"sqlite:///{tmp_path}/logs.db")
    demo_traffic.write_rows(f"sqlite:///{tmp_path}/logs.db", rows)
    path = write_sampler_config(tmp_path)
    config = load_config(path, environ={})
    store = Store.from_config(config.store)
    queue = Queue()
    sampler = build_sampler(config, store.ledger, Metrics(config.metrics, multiprocess=False), queue)
    while not sampler.step().idle:
        pass
    store.close()
    rejected = str(rows[9]["req_uuid"])
    assert rejected not in queue.ids()

    assert main(["--config", str(path), "explain", rejected]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"request {rejected}"
    assert "not sampled" in out
    assert re.search(r"rejected \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00 by source 'app': "
                     r"field 'question': missing_field: ", out), out

    assert main(["explain", str(rows[12]["req_uuid"]), "-c", str(path)]) == 0
    assert "field 'contexts': bad_contexts: not valid JSON" in capsys.readouterr().out

    assert main(["explain", "no-such-id", "-c", str(path)]) == 1
    assert "no item, score or rejection" in capsys.readouterr().err


# -- 4. progress -----------------------------------------------------------------------------

def _progress_lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def test_piped_progress_writes_a_line_per_step_of_progress() -> None:
    class Stream:
        def __init__(self) -> None:
            self.text = ""

        def write(self, s: str) -> None:
            self.text += s

        def flush(self) -> None:
            pass

        def isatty(self) -> bool:
            return False

    stream = Stream()
    with StepProgress("scored", total=1000, stream=stream, interval_s=3600) as p:
        for done in range(0, 1001, 5):
            p.update(done, "0 failed")
        p.update(1000, "0 failed")  # the same state again: no new line
    lines = stream.text.splitlines()
    assert len(lines) == len(set(lines)) == 11  # the first, then every tenth
    assert lines[0] == "scored 0/1000 items, 0 failed"
    assert lines[-1] == "scored 1000/1000 items, 0 failed"
    # An unknown total: the first line, then one when something changed and time has passed.
    stream.text = ""
    with StepProgress("read", unit="rows", stream=stream, interval_s=0.0) as p:
        for done in (10, 10, 20, 20):
            p.update(done)
    assert stream.text.splitlines() == ["read 10 rows", "read 20 rows"]


def test_piped_demo_progress_has_no_repeated_lines_and_ends_complete(tmp_path: Path) -> None:
    proc = subprocess.run(groundwatch("demo", "--items", "100", "--scorer", "lexical",
                                      "--workdir", str(tmp_path / "demo")),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=240, env=_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    lines = _progress_lines(proc.stdout, "sampler: ") + _progress_lines(proc.stdout, "workers: ")
    assert lines and len(lines) == len(set(lines)), lines
    assert len(lines) <= 24
    assert "\r" not in proc.stdout
    assert _progress_lines(proc.stdout, "sampler: ")[-1].startswith("sampler: read 100/100 rows")
    last = _progress_lines(proc.stdout, "workers: ")[-1]
    match = re.fullmatch(r"workers: finished (\d+)/(\d+) items, scored \d+, failed 0, "
                         r"waiting 0", last)
    assert match and match.group(1) == match.group(2), last


def test_piped_score_progress_has_no_repeated_lines(tmp_path: Path) -> None:
    src = tmp_path / "items.jsonl"
    src.write_text("".join(json.dumps({"id": f"q{i}", "question": "Where is it?",
                                       "contexts": ["It is in Paris."],
                                       "answer": "It is in Paris."}) + "\n" for i in range(500)))
    proc = subprocess.run(groundwatch("score", str(src), "--scorer", "lexical", "--batch-size",
                                      "5", "--out", str(tmp_path / "out.jsonl")),
                          capture_output=True, text=True, timeout=120, env=_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = _progress_lines(proc.stderr, "scored ")
    assert 2 <= len(lines) <= 22 and len(lines) == len(set(lines)), lines
    assert lines[-1].startswith("scored 500/500 items, 0 failed")


def _run_in_pty(argv: list[str], cwd: Path, timeout_s: float) -> tuple[int, str]:
    """Run ``argv`` with stdout and stderr on a pseudo-terminal 120 columns wide."""
    import fcntl
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
                            env=_env(), cwd=cwd, close_fds=True)
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # EIO: every writer has closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(leader)
    return code, b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.parametrize("columns", [0, 100])
def test_the_bar_is_drawn_on_a_terminal_that_reports_no_size(columns: int) -> None:
    """Under `script` a pty has 0 x 0 cells until someone sizes it (`stty cols 100` leaves
    0 lines): tqdm then drew nothing at all."""
    import fcntl
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 0, columns, 0, 0))
    try:
        assert os.get_terminal_size(follower) == (columns, 0)
        with open(follower, "w", encoding="utf-8", closefd=False) as stream, \
                StepProgress("scored", total=10, stream=stream) as p:
            p.update(10, "0 failed")
        out, deadline = "", time.monotonic() + 10
        while "\n" not in out and time.monotonic() < deadline:  # the bar ends with one
            if select.select([leader], [], [], 0.5)[0]:
                out += os.read(leader, 65536).decode()
    finally:
        os.close(follower)
        os.close(leader)
    assert re.search(r"\rscored: 100%\|█+\| 10/10 .*0 failed", out), repr(out)


def test_demo_on_a_terminal_draws_a_live_bar(tmp_path: Path) -> None:
    code, out = _run_in_pty(groundwatch("demo", "--items", "100", "--scorer", "lexical",
                                        "--workdir", str(tmp_path / "demo")), tmp_path, 240)
    assert code == 0, out[-3000:]
    assert re.search(r"\rsampler: read: +100%\|█+\| 100/100", out), out[-3000:]
    assert re.search(r"\rworkers: finished: +100%\|█+\| (\d+)/\1 ", out), out[-3000:]
    assert "rows read 100, sampled" in out


def test_piped_backfill_progress_ends_with_the_totals(tmp_path: Path) -> None:
    rows = demo_traffic.make_rows(120, seed=3)
    demo_traffic.create_log_table(f"sqlite:///{tmp_path}/logs.db")
    demo_traffic.write_rows(f"sqlite:///{tmp_path}/logs.db", rows)
    path = write_sampler_config(tmp_path, rate=1.0)
    path.write_text(path.read_text() + f'url = "filesystem://{tmp_path}/broker"\n'
                    f'[metrics]\nmultiproc_dir = "{tmp_path}/prom"\n')
    (tmp_path / "broker").mkdir()
    proc = subprocess.run(groundwatch("backfill", "all", "--config", str(path)),
                          capture_output=True, text=True, timeout=120, env=_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = _progress_lines(proc.stderr, "backfill 'all': read ")
    assert lines and len(lines) == len(set(lines)), proc.stderr
    assert lines[-1] == ("backfill 'all': read 120 rows, enqueued 120, rejected 0, "
                         "0 outside the range")
    assert "read 120 rows (0 outside the range, 0 rejected); enqueued 120 items" in proc.stdout


def test_sampler_until_idle_prints_a_summary(tmp_path: Path) -> None:
    # Finding 8 of issue 7: `sampler --until-idle` printed nothing at all.
    rows = demo_traffic.make_rows(60, seed=5)
    rows[3]["user_question"] = None
    demo_traffic.create_log_table(f"sqlite:///{tmp_path}/logs.db")
    demo_traffic.write_rows(f"sqlite:///{tmp_path}/logs.db", rows)
    path = write_sampler_config(tmp_path, rate=1.0)
    path.write_text(path.read_text() + f'url = "filesystem://{tmp_path}/broker"\n'
                    f'[metrics]\nmultiproc_dir = "{tmp_path}/prom"\n')
    (tmp_path / "broker").mkdir()
    proc = subprocess.run(groundwatch("sampler", "--until-idle", "--config", str(path),
                                      "--log-level", "INFO"),
                          capture_output=True, text=True, timeout=120, env=_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert ("sampler: read 60 rows: 59 sampled, 0 skipped by the rate, 0 capped, 1 rejected "
            "(missing_field 1)") in proc.stdout
    assert "sampler for source 'app' (sql table 'chat_logs'" in proc.stderr  # the start line


def test_explain_shows_what_the_retriever_said_beside_each_passage(tmp_path: Path) -> None:
    # Issue 16: a passage's retriever score, id and source were dropped at mapping; explain
    # now shows them beside the passage and beside the scorer's relevance of it.
    docs = [{"text": "Refunds take 5 days.", "score": 0.83, "id": "doc-17",
             "metadata": {"source": "handbook.pdf"}},
            "   ",
            {"page_content": "Shipping is free.", "metadata": {"url": "https://kb/ship"}}]
    dropped: list[FieldDrop] = []
    record = map_row({"request_id": "r1", "timestamp": "2026-11-01T10:00:00Z",
                      "question": "How long do refunds take?", "contexts": docs,
                      "answer": "5 days."}, {}, limits=RowLimits(), position="t:0",
                     dropped=dropped)
    assert dropped == []
    store = Store(f"sqlite:///{tmp_path / 'gw.db'}")
    try:
        store.ledger.add_items([(record, "default")], source="app")
        relevance = ContextRelevanceParts(best=0.9, mean=0.5, best_context=0,
                                          per_context=(0.9, 0.1))
        result = ItemResult("r1", (MetricResult.ok("context_relevance", 0.9),),
                            Explanation(scorer="s", version="1", context_relevance=relevance))
        store.results.record_results([result], {"r1": record}, scorer="s", scorer_version="1")
        out = format_explanation(store.queries, "r1")
    finally:
        store.close()
    assert out is not None
    assert ("context[0] [id doc-17, retriever score 0.830, source handbook.pdf]: Refunds take"
            in out)
    assert "context[1]:    " in out
    assert "context[2] [source https://kb/ship]: Shipping is free." in out
    # The scorer left the blank passage out: its second relevance is context[2]'s.
    assert ("context relevance per passage (s): [0] 0.900 (retriever score 0.830), [1] 0.100"
            in out)


class _Terminal:
    """A stdin that is a terminal on which the operator types ``answer``."""

    def __init__(self, answer: str) -> None:
        self.answer = answer

    def isatty(self) -> bool:
        return True

    def readline(self) -> str:
        return self.answer


def _old_scores_config(tmp_path: Path) -> tuple[Path, str]:
    """A config whose SQLite store holds three items scored on T0 (2025), long out of the
    default retention, and the store's URL."""
    url = f"sqlite:///{tmp_path}/gw.db"
    demo_traffic.create_log_table(f"sqlite:///{tmp_path}/logs.db")
    path = tmp_path / "gw.toml"
    path.write_text(f'[store]\nurl = "{url}"\n[broker]\nurl = "memory://"\n'
                    f'[source.sql]\nurl = "sqlite:///{tmp_path}/logs.db"\n'
                    f'table = "{demo_traffic.TABLE}"\n[source.columns]\n'
                    + "".join(f'{k} = "{v}"\n' for k, v in demo_traffic.COLUMNS.items()))
    recs = {rid: record(rid) for rid in ("a", "b", "c")}
    with Store(url, clock=FakeClock(T0)) as store:
        store.ledger.add_items([(r, "default") for r in recs.values()], source="app")
        store.results.record_results([ok_result(rid) for rid in recs], recs, scorer="s",
                                     scorer_version="1")
    return path, url


def _rows(url: str) -> tuple[int, int]:
    with Store(url) as store:
        return (sum(store.queries.count_items_by_status().values()),
                len(store.queries.scores()))


def test_purge_dry_run_counts_per_table_and_deletes_only_when_confirmed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, url = _old_scores_config(tmp_path)
    before = _rows(url)
    assert before[0] == 3 and before[1] > 3

    assert main(["purge", "--dry-run", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "rows older than 30 days" in out and "dry run: nothing deleted" in out
    assert re.search(r"gw_items\s+3\n", out) and re.search(rf"gw_scores\s+{before[1]}\n", out)
    assert _rows(url) == before

    # No terminal to ask on and no --yes: one line, exit 2, nothing deleted.
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # noqa: SIM115
    assert main(["purge", "-c", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "without --yes" in err
    assert _rows(url) == before

    # A terminal: the operator is asked, and "no" deletes nothing.
    monkeypatch.setattr(sys, "stdin", _Terminal("n\n"))
    assert main(["purge", "-c", str(cfg)]) == 1
    assert "delete these" in capsys.readouterr().out and _rows(url) == before

    assert main(["purge", "--yes", "-c", str(cfg)]) == 0
    assert f"removed {3 + before[1] + 3} rows older than 30 days" in capsys.readouterr().out
    assert _rows(url) == (0, 0)


def test_cursor_dry_run_shows_old_and_new_and_changes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, url = _old_scores_config(tmp_path)
    name = load_config(cfg, environ={}).source.name
    assert main(["cursor", "set", "--at", "2026-11-24T09:00:00Z", "--yes", "-c", str(cfg)]) == 0
    with Store(url) as store:
        old = store.ledger.get_cursor(name)
    capsys.readouterr()
    argv = ["cursor", "set", "--at", "2026-11-25T10:00:00Z", "-c", str(cfg)]
    assert main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    before, after = out.split("to:")
    assert "2026-11-24T09:00:00+00:00" in before and json.dumps(old) in before
    assert "2026-11-25T10:00:00+00:00" in after and "dry run: nothing changed" in after
    assert main(["cursor", "reset", "--dry-run", "-c", str(cfg)]) == 0
    assert "at the start" in capsys.readouterr().out.split("to:")[1]

    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # noqa: SIM115
    assert main(["cursor", "reset", "-c", str(cfg)]) == 2
    assert "without --yes" in capsys.readouterr().err
    with Store(url) as store:
        assert store.ledger.get_cursor(name) == old

    assert main([*argv, "--yes"]) == 0
    with Store(url) as store:
        assert store.ledger.get_cursor(name) != old


def test_worker_loglevel_is_a_deprecated_alias_of_log_level(
        capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["worker", "--loglevel", "DEBUG"])
    assert args.log_level == "DEBUG"
    assert "--loglevel is deprecated" in capsys.readouterr().err
    assert build_parser().parse_args(["worker", "--log-level", "ERROR"]).log_level == "ERROR"
    assert "--loglevel" not in build_parser()._subparsers._group_actions[0].choices[  # type: ignore[union-attr]
        "worker"].format_help()
