"""Environment overrides (``GROUNDWATCH__SECTION__KEY``): an error in one names the variable,
not the file it did not come from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from evaluator.config import load_config
from evaluator.errors import ConfigError
from groundwatch.cli import main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "gw.toml"
    p.write_text("[broker]\nbatch_size = 50\n[sampling]\ndefault_rate = 0.2\n")
    return p


def _error(path: Path, env: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=env)
    return info.value


def test_a_bad_value_names_the_variable_and_the_key(path: Path) -> None:
    err = _error(path, {"GROUNDWATCH__BROKER__BATCH_SIZE": "0"})
    assert (err.env, err.key, err.path) == ("GROUNDWATCH__BROKER__BATCH_SIZE",
                                            "broker.batch_size", None)
    assert str(err) == ("config error: environment variable GROUNDWATCH__BROKER__BATCH_SIZE "
                        "(key 'broker.batch_size'): Input should be greater than or equal to 1 "
                        "(got 0)")
    assert str(path) not in str(err)


def test_an_unknown_key_or_section_names_the_variable(path: Path) -> None:
    err = _error(path, {"GROUNDWATCH__BROKER__BATCHSIZE": "5"})
    assert (err.env, err.key, err.problem) == ("GROUNDWATCH__BROKER__BATCHSIZE",
                                               "broker.batchsize", "unknown key")
    err = _error(path, {"GROUNDWATCH__NOPE__KEY": "5"})
    assert (err.env, err.key, err.problem) == ("GROUNDWATCH__NOPE__KEY", "nope", "unknown key")
    # A value set inside a setting that is not a table replaces it: the variable is to blame.
    err = _error(path, {"GROUNDWATCH__SAMPLING__DEFAULT_RATE__X": "1"})
    assert (err.env, err.key) == ("GROUNDWATCH__SAMPLING__DEFAULT_RATE__X", "sampling.default_rate")


def test_a_list_value_is_blamed_on_its_variable_and_secrets_stay_hidden(path: Path) -> None:
    err = _error(path, {"GROUNDWATCH__SAMPLING__RULES": '[{name = "x", rate = 7}]'})
    assert err.env == "GROUNDWATCH__SAMPLING__RULES" and err.key == "sampling.rules.0.rate"
    err = _error(path, {"GROUNDWATCH__BROKER__URL": "smtp://user:hunter2@h"})
    assert err.env == "GROUNDWATCH__BROKER__URL" and "hunter2" not in str(err)


def test_an_error_in_the_file_still_names_the_file(path: Path) -> None:
    path.write_text("[broker]\nbatch_size = 0\n")
    err = _error(path, {"GROUNDWATCH__SAMPLING__DEFAULT_RATE": "0.5"})
    assert (err.env, err.path, err.key) == (None, str(path), "broker.batch_size")
    assert str(err).startswith(f"config error: file {path}, key 'broker.batch_size': ")


def test_a_section_and_a_key_inside_it_conflict(path: Path) -> None:
    env = {"GROUNDWATCH__BROKER": "x", "GROUNDWATCH__BROKER__URL": "redis://h/0"}
    err = _error(path, env)
    assert err.env == "GROUNDWATCH__BROKER__URL" and "GROUNDWATCH__BROKER:" in str(err)


def test_the_cli_prints_one_line_naming_the_variable(
        path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GROUNDWATCH__BROKER__BATCH_SIZE", "many")
    assert main(["--config", str(path), "report"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("config error: environment variable GROUNDWATCH__BROKER__BATCH_SIZE "
                          "(key 'broker.batch_size'): ")


def test_check_config_as_a_process_names_the_variable(path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
           "GROUNDWATCH__SAMPLING__DEFAULT_RATE": "2"}
    proc = subprocess.run([sys.executable, "-m", "groundwatch", "--config", str(path),
                           "check-config"], capture_output=True, text=True, env=env, timeout=60,
                          cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "config error: environment variable GROUNDWATCH__SAMPLING__DEFAULT_RATE "
        "(key 'sampling.default_rate'): Input should be less than or equal to 1 (got 2)")
