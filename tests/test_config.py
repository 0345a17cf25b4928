"""Config loading: every bad setting exits with code 2 and one line naming file, key, problem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evaluator.config import DEFAULT_CONFIG, env_overrides, load_config
from evaluator.errors import ConfigError
from groundwatch.cli import main

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(text)
    return path


def test_shipped_config_is_valid_and_documented() -> None:
    config = load_config(DEFAULT_CONFIG, environ={})
    assert config.scoring.scorer == "embedded"
    assert [r.name for r in config.sampling.rules] == ["thumbs_down", "no_contexts"]
    # Every key in the shipped file is commented: a comment stands between its section header
    # and the key (a block comment may cover a run of keys, as in [source.columns]).
    seen_comment = False
    for line in DEFAULT_CONFIG.read_text().splitlines():
        text = line.strip()
        if text.startswith("["):
            seen_comment = False
        elif text.startswith("#"):
            seen_comment = True
        elif "=" in text:
            assert seen_comment, f"uncommented key: {text}"


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[sampling]\ndefault_rate = 1.5\n", "sampling.default_rate", "less than or equal to 1"),
        ("[sampling]\ndefault_rate = -0.1\n", "sampling.default_rate", "greater than or equal"),
        ("[store]\nurl = 'not a url'\n", "store.url", "not a SQLAlchemy URL"),
        ("[broker]\nurl = 'http://x'\n", "broker.url", "not a broker URL"),
        ("[worker]\nconcurrency = 'many'\n", "worker.concurrency", "valid integer"),
        ("[sampling]\ndefault_rte = 0.2\n", "sampling.default_rte", "unknown key"),
        ("[nonsense]\nx = 1\n", "nonsense", "unknown key"),
        ("[[sampling.rules]]\nname = 'a'\nrate = 2\n", "sampling.rules.0.rate", "less than"),
        ("[[sampling.rules]]\nname = 'a'\n", "sampling.rules.0.rate", "required key is missing"),
        ("[source]\nkind = 'kafka'\n", "source.kind", "'sql' or 'files'"),
        ("[worker]\npool = 'gevent'\n", "worker.pool", "'solo', 'threads' or 'prefork'"),
    ],
)
def test_bad_settings_name_file_key_and_problem(tmp_path: Path, text: str, key: str,
                                                problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert f"key '{key}'" in message
    assert problem in message


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml", environ={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[store\n"), environ={})


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[sampling]\ndefault_rate = 0.2\n")
    env = {"GROUNDWATCH__SAMPLING__DEFAULT_RATE": "0.7",
           "GROUNDWATCH__STORE__URL": "postgresql+psycopg://u:secret@db/gw",
           "GROUNDWATCH__METRICS__LABELS": '["route"]'}
    config = load_config(path, environ=env)
    assert config.sampling.default_rate == 0.7
    assert config.store.url.get_secret_value().endswith("@db/gw")
    assert config.metrics.labels == ["route"]
    assert env_overrides({"OTHER": "1"}) == {}


def test_bad_environment_value_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    with pytest.raises(ConfigError, match=r"key 'sampling.default_rate'"):
        load_config(path, environ={"GROUNDWATCH__SAMPLING__DEFAULT_RATE": "2"})


def test_secrets_are_masked(tmp_path: Path) -> None:
    path = write(tmp_path, "[store]\nurl = 'postgresql+psycopg://u:hunter2@db/gw'\n"
                           "[sampling]\nsalt = 'pepper'\n")
    dumped = json.dumps(load_config(path, environ={}).masked())
    assert "hunter2" not in dumped and "pepper" not in dumped


def test_check_config_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "[store]\nurl = 'sqlite:///x.db'\n[broker]\nurl = 'redis://:pw@h/0'\n")
    # --offline: the broker host 'h' is not meant to be reached (tests/test_preflight.py does).
    assert main(["--config", str(good), "check-config", "--offline"]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and ":pw@" not in out
    bad = tmp_path / "bad.toml"
    bad.write_text("[sampling]\ndefault_rate = 3\n")
    assert main(["--config", str(bad), "check-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "sampling.default_rate" in err and str(bad) in err
    unknown = tmp_path / "scorer.toml"
    unknown.write_text("[scoring]\nscorer = 'magic'\n")
    assert main(["--config", str(unknown), "check-config"]) == 2
    err = capsys.readouterr().err
    assert "unknown scorer 'magic'; valid: " in err and "lexical" in err and "noop" in err


def test_check_config_as_a_process_exits_2(tmp_path: Path) -> None:
    bad = write(tmp_path, "[metrics]\nport = 70000\n")
    proc = subprocess.run([sys.executable, "-m", "groundwatch", "--config", str(bad),
                           "check-config"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2
    assert "metrics.port" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_domain_does_not_import_celery_or_prometheus() -> None:
    code = ("import sys, evaluator.config, evaluator.records, evaluator.sampling, "
            "evaluator.scorers.lexical, groundwatch.report, groundwatch.report_html, groundwatch.cli, "
            "groundwatch.commands.store, groundwatch.commands.offline; "
            "bad = [m for m in ('celery', 'prometheus_client', 'kombu') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_worker_command_does_not_import_the_demo() -> None:
    """A cold worker's start is a goal (issue 19: ready in <= 3 s): the demo's report and
    HTML modules are not a worker's (about 0.1 s of imports)."""
    code = ("import sys, groundwatch.commands.processes; "
            "bad = [m for m in ('groundwatch.demo', 'groundwatch.report_html') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
