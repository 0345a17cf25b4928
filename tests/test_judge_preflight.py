"""`groundwatch check-config` and the judge: the extra, the key's variable, the endpoint."""

from __future__ import annotations

from typing import Any

from evaluator.config import load_config
from groundwatch import preflight
from groundwatch.preflight import run_preflight
from tests.judge_server import JudgeServer, free_port


def config(url: str, **extra: str) -> Any:
    env = {"GROUNDWATCH__SCORING__SCORER": "lexical", "GROUNDWATCH__SCORING__JUDGE": "compact",
           "GROUNDWATCH__JUDGE__BASE_URL": url, "GROUNDWATCH__JUDGE__MODEL": "stub",
           "GROUNDWATCH__JUDGE__API_KEY_ENV": "GW_PREFLIGHT_KEY", **extra}
    return load_config(None, environ=env), env


def judge_lines(report: Any) -> list[str]:
    return [f.line() for f in report.findings if "judge" in (f.key or "")] + [
        c for c in report.checked if c.startswith("judge")]


def _check(cfg: Any, env: dict[str, str]) -> Any:
    from groundwatch import preflight

    checker = preflight._Checker(cfg, env)
    mode = preflight._JudgeChecks.offline(checker)
    if mode is not None:
        preflight._JudgeChecks.online(checker, mode, 2.0)
    return checker.report


def test_a_reachable_judge_that_takes_the_key_passes() -> None:
    with JudgeServer() as server:
        server.require_key = "sk-pre-1"
        cfg, env = config(server.url)
        report = _check(cfg, {**env, "GW_PREFLIGHT_KEY": "sk-pre-1"})
    assert report.ok, judge_lines(report)
    assert f"judge 'compact': {server.url} reachable, model 'stub'" in report.checked


def test_a_rejected_key_names_the_variable() -> None:
    with JudgeServer() as server:
        server.require_key = "sk-right"
        cfg, env = config(server.url)
        report = _check(cfg, {**env, "GW_PREFLIGHT_KEY": "sk-wrong"})
    [problem] = report.problems
    assert problem.key == "judge.api_key_env" and "GW_PREFLIGHT_KEY" in problem.line()
    assert "sk-wrong" not in problem.line()


def test_an_unreachable_judge_is_a_problem_and_a_missing_key_a_warning() -> None:
    cfg, env = config(f"http://127.0.0.1:{free_port()}/v1")
    report = _check(cfg, env)
    assert [f.key for f in report.problems] == ["judge.base_url"]
    assert [f.key for f in report.warnings] == ["judge.api_key_env"]


def test_a_model_the_server_does_not_serve_is_a_problem() -> None:
    with JudgeServer() as server:
        cfg, env = config(server.url, GROUNDWATCH__JUDGE__MODEL="gpt-9")
        report = _check(cfg, {**env, "GW_PREFLIGHT_KEY": "k"})
    assert [f.key for f in report.problems] == ["judge.model"]
    assert "not served by the judge" in report.problems[0].line()
    assert not report.ok


def test_no_judge_url_turns_the_cascade_off_in_one_line() -> None:
    cfg, env = config("")
    report = run_preflight(cfg, offline=True, environ=env)
    assert any("judge: none configured" in c for c in report.checked)
    cfg, env = config("", GROUNDWATCH__SCORING__SCORER="compact")
    report = run_preflight(cfg, offline=True, environ=env)
    assert [f.key for f in report.problems] == ["judge.base_url"]


# -- the probe: one real judgement (issue 20) --------------------------------------------------

def _probe(cfg: Any, env: dict[str, str]) -> Any:
    from groundwatch import preflight

    checker = preflight._Checker(cfg, env)
    mode = preflight._JudgeChecks.offline(checker)
    assert mode is not None and preflight._JudgeChecks.online(checker, mode, 2.0)
    preflight._JudgeChecks.probe(checker, mode)
    return checker.report


def test_the_probe_judges_two_items_and_reports_the_speed(monkeypatch: Any) -> None:
    monkeypatch.setenv("GW_PREFLIGHT_KEY", "k")
    with JudgeServer() as server:
        cfg, env = config(server.url, GROUNDWATCH__JUDGE__CASCADE__SHARE="0.5")
        report = _probe(cfg, {**env, "GW_PREFLIGHT_KEY": "k"})
        calls = server.count("/v1/chat/completions")
    assert report.ok, judge_lines(report)
    [line] = [c for c in report.checked if c.startswith("judge probe:")]
    assert "2 items judged in" in line and "1.0 calls" in line
    assert "faithfulness 1.0 supported, 0.0 contradicted" in line
    assert "items an hour" in line and "at cascade share 0.5" in line
    # The scripted server is on 127.0.0.1: streamed by default, and the line says what
    # timeout_s then bounds.
    assert 'calls streamed (judge.stream "auto": a server on this host' in line
    assert "is the wait for each piece" in line
    assert calls == 2  # asked, not answered from a cache


def test_the_probe_line_says_when_calls_are_whole() -> None:
    cfg = load_config(None, environ={"GROUNDWATCH__JUDGE__BASE_URL": "https://api.openai.com/v1",
                                     "GROUNDWATCH__JUDGE__MODEL": "gpt-4o-mini"})
    assert preflight._stream_note(cfg) == (
        'whole calls (judge.stream "auto": a public API): timeout_s 60 s bounds each call')


def test_a_probe_reply_that_does_not_parse_is_a_problem(monkeypatch: Any) -> None:
    monkeypatch.setenv("GW_PREFLIGHT_KEY", "k")
    with JudgeServer() as server:
        server.default = "malformed"
        cfg, env = config(server.url)
        report = _probe(cfg, {**env, "GW_PREFLIGHT_KEY": "k"})
    assert not report.ok
    [problem] = report.problems
    assert problem.key == "judge.model" and "could not judge the probe item" in problem.line()
    assert "(unparseable)" in problem.line()


def test_a_judge_that_cannot_tell_the_probes_apart_is_a_warning(monkeypatch: Any) -> None:
    monkeypatch.setenv("GW_PREFLIGHT_KEY", "k")
    with JudgeServer() as server:
        # Every claim the answer's own words, every verdict "supported".
        server.policy("GroundwatchJudgement", lambda schema, messages: {
            "claims": [{"claim": messages[-1]["content"].rsplit("ANSWER:", 1)[1].strip(),
                        "verdict": "supported", "passage": 1,
                        "quote": "Deleted storage buckets are kept for 30 days"}],
            "answer_rating": 2, "noncommittal": False, "context_rating": 2})
        cfg, env = config(server.url)
        report = _probe(cfg, {**env, "GW_PREFLIGHT_KEY": "k"})
    assert report.ok  # it judged: a warning, not a problem
    assert [f.key for f in report.warnings] == ["judge.model"]
    assert "rated the contradicted probe answer as faithful" in report.warnings[0].line()
