"""Config fuzz: every broken config is one ConfigError line (exit 2 from the CLI), never a traceback.

The documents are generated from the schema itself (every key of :class:`Config`, nested
sections and sampling rules included), so a key added later is fuzzed without touching this
file. ``load_config`` is driven directly for many examples, the CLI for a few.
"""

from __future__ import annotations

import contextlib
import io
import math
import string
import types
import typing
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import annotated_types
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from evaluator.config import Config, load_config
from evaluator.errors import ConfigError
from groundwatch.cli import main

FUZZ = settings(max_examples=150, deadline=2000, database=None,
                suppress_health_check=[HealthCheck.too_slow])
FEW = settings(FUZZ, max_examples=12)

# A rule needs these to exist at all; the fuzz then breaks one key of it.
RULE = {"name": "fuzz_rule", "rate": 0.5}


# -- the schema, as key paths ----------------------------------------------------------------
def _unwrap(annotation: Any) -> Any:
    """``X | None`` -> ``X``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _model(annotation: Any) -> type[BaseModel] | None:
    annotation = _unwrap(annotation)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) \
        else None


class Leaf(typing.NamedTuple):
    path: tuple[str | int, ...]  # an int is an index into a list of sections (rules)
    annotation: Any
    metadata: list[Any]
    section: bool  # a whole section (a table) rather than a value

    @property
    def dotted(self) -> str:
        return ".".join(str(p) for p in self.path)


def _leaves(model: type[BaseModel], prefix: tuple[str | int, ...] = ()) -> Iterator[Leaf]:
    for name, field in model.model_fields.items():
        if field.exclude:  # Config.path: set by the loader, not a key of the file
            continue
        key = field.alias or name
        path = (*prefix, key)
        sub = _model(field.annotation)
        if sub is not None:
            yield Leaf(path, field.annotation, [], True)
            yield from _leaves(sub, path)
            continue
        inner = _unwrap(field.annotation)
        if typing.get_origin(inner) is list and _model(typing.get_args(inner)[0]):
            yield Leaf(path, field.annotation, field.metadata, False)
            element = _model(typing.get_args(inner)[0])
            assert element is not None
            yield from _leaves(element, (*path, 0))
            continue
        yield Leaf(path, field.annotation, field.metadata, False)


LEAVES = list(_leaves(Config))
SECTIONS = [()] + [leaf.path for leaf in LEAVES if leaf.section] + [("sampling", "rules", 0)]


def test_the_schema_walk_sees_every_section() -> None:
    dotted = {leaf.dotted for leaf in LEAVES}
    assert {"store.url", "source.sql.table", "source.columns.request_id", "metrics.port",
            "sampling.rules.0.match.route", "scoring.embedded.cache_mb"} <= dotted


# -- writing TOML ------------------------------------------------------------------------------
def _toml_string(text: str) -> str:
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_string(str(k))} = {toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_document(data: dict[str, Any]) -> str:
    """Top-level keys, each an inline table or a value: enough for any nesting."""
    return "\n".join(f"{_toml_string(k)} = {toml_value(v)}" for k, v in data.items()) + "\n"


def _with(data: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """``data`` with ``value`` at ``path``, creating tables (and the one rule) on the way."""
    root: dict[str, Any] = dict(data)
    node: Any = root
    for i, part in enumerate(path[:-1]):
        nxt = path[i + 1]
        if isinstance(part, int):
            node = node[part]
            continue
        if isinstance(nxt, int):  # a list of sections: the rules
            node[part] = [dict(RULE)]
        else:
            node[part] = dict(node.get(part) or {}) if isinstance(node.get(part), dict) else {}
        node = node[part]
    last = path[-1]
    if isinstance(last, int):
        node[last] = value
    else:
        node[last] = value
    return root


# -- values ------------------------------------------------------------------------------------
keys = st.text(max_size=20) | st.sampled_from(["", " ", "a.b", "\n", "\x00", "ключ", "🔑" * 40])
scalars = (
    st.integers() | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40) | st.booleans()
    | st.datetimes(timezones=st.just(UTC)) | st.datetimes()
    | st.sampled_from(["x" * 200_000, "\n" * 1000, "-1", "1e999", "NaN", "sqlite://", "0" * 5000,
                      "postgresql://u:p@h:notaport/db", "🙂" * 1000])
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12)
# Certainly wrong for any key whose type is not a table: a table of garbage.
garbage_tables = st.dictionaries(keys, values, min_size=0, max_size=3)


def _is_mapping_type(annotation: Any) -> bool:
    return typing.get_origin(_unwrap(annotation)) is dict


def certainly_wrong(leaf: Leaf) -> st.SearchStrategy[Any]:
    """Values that no key of this kind accepts."""
    if leaf.section or _is_mapping_type(leaf.annotation):
        # A table-typed key given a list or a scalar.
        return st.lists(values, max_size=3) | st.integers() | st.datetimes()
    return garbage_tables


def out_of_range(leaf: Leaf) -> list[Any]:
    """Numbers just past each bound of a constrained number, and far past it."""
    base = _unwrap(leaf.annotation)
    if base not in (int, float):
        return []
    out: list[Any] = []
    for m in leaf.metadata:
        if isinstance(m, annotated_types.Ge):
            out += [m.ge - 1, -(10**30)]
        elif isinstance(m, annotated_types.Gt):
            out += [m.gt, m.gt - 1]
        elif isinstance(m, annotated_types.Le):
            out += [m.le + 1, 10**30]
        elif isinstance(m, annotated_types.Lt):
            out += [m.lt, m.lt + 1]
    if base is float and out:
        out.append(math.nan)
    return out


RANGED = [(leaf, v) for leaf in LEAVES for v in out_of_range(leaf)]


# -- the invariant -----------------------------------------------------------------------------
def _write(directory: Path, content: bytes | str) -> Path:
    path = directory / "fuzz.toml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def _one_line(err: ConfigError) -> str:
    text = str(err)
    assert text.splitlines() == [text], f"not one line: {text!r}"
    assert text.startswith("config error: ")
    assert "Traceback" not in text
    return text


def _outcome(path: Path, environ: dict[str, str] | None = None) -> Config | ConfigError:
    """load_config's answer: a Config or a one-line ConfigError, and nothing else."""
    try:
        return load_config(path, environ=environ or {})
    except ConfigError as err:
        _one_line(err)
        return err


def _broken(path: Path, environ: dict[str, str] | None = None) -> str:
    outcome = _outcome(path, environ)
    assert isinstance(outcome, ConfigError), "a broken config was accepted"
    return str(outcome)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config_fuzz")


@pytest.mark.parametrize("leaf", LEAVES, ids=lambda leaf: leaf.dotted)
def test_a_table_or_list_at_the_wrong_key_names_that_key(fuzz_dir: Path, leaf: Leaf) -> None:
    wrong = [1, "x"] if leaf.section or _is_mapping_type(leaf.annotation) else {"x": [1, {}]}
    message = _broken(_write(fuzz_dir, toml_document(_with({}, leaf.path, wrong))))
    assert f"key '{leaf.dotted}" in message, message


@FUZZ
@given(leaf=st.sampled_from(LEAVES), data=st.data())
def test_wrong_types_at_every_key(fuzz_dir: Path, leaf: Leaf, data: st.DataObject) -> None:
    value = data.draw(certainly_wrong(leaf))
    message = _broken(_write(fuzz_dir, toml_document(_with({}, leaf.path, value))))
    assert leaf.dotted.split(".")[0] in message


@FUZZ
@given(leaf=st.sampled_from(LEAVES), value=values)
def test_any_value_at_any_key_is_a_config_or_one_line(fuzz_dir: Path, leaf: Leaf,
                                                      value: Any) -> None:
    _outcome(_write(fuzz_dir, toml_document(_with({}, leaf.path, value))))


@pytest.mark.parametrize("leaf,value", RANGED,
                         ids=[f"{leaf.dotted}={value!r}"[:60] for leaf, value in RANGED])
def test_out_of_range_numbers(fuzz_dir: Path, leaf: Leaf, value: Any) -> None:
    message = _broken(_write(fuzz_dir, toml_document(_with({}, leaf.path, value))))
    assert f"key '{leaf.dotted}'" in message, message


@FUZZ
@given(section=st.sampled_from(SECTIONS), key=keys, value=values)
def test_unknown_keys_in_every_section(fuzz_dir: Path, section: tuple[str | int, ...], key: str,
                                       value: Any) -> None:
    known = {leaf.path[-1] for leaf in LEAVES if leaf.path[:-1] == section}
    if key in known or (section == () and key == "path"):
        return
    message = _broken(_write(fuzz_dir, toml_document(_with({}, (*section, key), value))))
    assert "unknown key" in message or "Input should be" in message, message


@FUZZ
@given(content=st.binary(max_size=300), cut=st.integers(0, 300))
def test_invalid_utf8(fuzz_dir: Path, content: bytes, cut: int) -> None:
    cut = min(cut, len(content))
    message = _broken(_write(fuzz_dir, content[:cut] + b"\xff\xfe" + content[cut:]))
    assert "not UTF-8" in message


@FUZZ
@given(content=st.binary(max_size=300))
def test_arbitrary_bytes(fuzz_dir: Path, content: bytes) -> None:
    _outcome(_write(fuzz_dir, content))


@FUZZ
@given(text=st.text(max_size=200))
def test_invalid_toml(fuzz_dir: Path, text: str) -> None:
    message = _broken(_write(fuzz_dir, text + "\n[= =\n"))
    assert "not valid TOML" in message


_env_names = st.lists(
    st.sampled_from([str(p).upper() for leaf in LEAVES for p in leaf.path])
    | st.text(string.ascii_letters + "_", min_size=1, max_size=8),
    min_size=1, max_size=5).map(lambda parts: "GROUNDWATCH__" + "__".join(parts))
_env_values = (st.text(max_size=50).filter(lambda t: "\x00" not in t)
               | st.sampled_from(["[" * 3000, "{a = " * 2000, "9" * 5000, "1e999", "nan",
                                  '"\n"', "[1, {}]", "x" * 100_000, "true", "{}"]))


def _without_prefix_clashes(names: list[str]) -> bool:
    """Two variables for a section and a key inside it are another test's case."""
    paths = [tuple(p.lower() for p in n[len("GROUNDWATCH__"):].split("__") if p) for n in names]
    return not any(a != b and (a[: len(b)] == b or b[: len(a)] == a)
                   for a in paths for b in paths) and len(set(paths)) == len(paths)


@FUZZ
@given(environ=st.dictionaries(_env_names, _env_values, min_size=1, max_size=4).filter(
    lambda env: _without_prefix_clashes(list(env))))
def test_environment_overrides(fuzz_dir: Path, environ: dict[str, str]) -> None:
    _outcome(_write(fuzz_dir, ""), environ)


@pytest.mark.parametrize("value", ["[" * 3000 + "]" * 3000, "9" * 5000, "{a = " * 2000])
def test_environment_garbage_values(fuzz_dir: Path, value: str) -> None:
    message = _broken(_write(fuzz_dir, ""), {"GROUNDWATCH__METRICS__PORT": value})
    assert "metrics.port" in message


@pytest.mark.parametrize("environ", [
    {"GROUNDWATCH__METRICS": "1", "GROUNDWATCH__METRICS__PORT": "2"},
    {"GROUNDWATCH__METRICS__PORT": "2", "GROUNDWATCH__METRICS": "1"},
    {"GROUNDWATCH__STORE": '"x"', "GROUNDWATCH__STORE__URL": "sqlite://"},
])
def test_a_section_and_a_key_inside_it_from_two_variables(
        fuzz_dir: Path, environ: dict[str, str]) -> None:
    message = _broken(_write(fuzz_dir, ""), environ)
    assert all(name in message for name in environ), message


# -- the files a human might write ------------------------------------------------------------
def _check_config_offline() -> list[str]:
    """``check-config --offline`` where the preflight exists (it connects otherwise, and
    reports every problem, one line each), plain ``check-config`` before it."""
    from groundwatch.cli import build_parser

    _, unknown = build_parser().parse_known_args(["check-config", "--offline"])
    return ["check-config"] if unknown else ["check-config", "--offline"]


CHECK_CONFIG = _check_config_offline()


HAND_WRITTEN = {
    "deep-array": "x = " + "[" * 5000 + "]" * 5000,
    "deep-inline-table": "x = " + "{a = " * 3000 + "1" + "}" * 3000,
    "deep-dotted-tables": "[" + ".".join(["a"] * 3000) + "]\nb = 1",
    "5000-digit-port": "[metrics]\nport = " + "9" * 5000,
    "newline-in-key": '[metrics]\n"a\\nb" = 1',
    "line-separator-in-key": '[metrics]\n"a\\u2028b" = 1',
    "10k-key": '[metrics]\n"' + "k" * 10_000 + '" = 1',
    "huge-string": '[source]\nname = "' + "n" * 1_000_000 + '"',
    "integer-keys": "[sampling.route_minimums]\n1 = 2\n[scoring.thresholds]\n2 = 3.0",
    "nan-rate": "[sampling]\ndefault_rate = nan",
    "inf-port": "[metrics]\nport = inf",
    "datetime-port": "[metrics]\nport = 1979-05-27T07:32:00Z",
    "empty-scorer-module": '[scoring]\nscorer = ":Factory"',
    "relative-scorer-module": '[scoring]\nscorer = ".nowhere:Factory"',
    "nul-in-table-name": '[source.sql]\ntable = "a\\u0000b"',
    "unicode-garbage": "ключ = 1\n[🙂]\n",
}


@pytest.mark.parametrize("name", HAND_WRITTEN)
def test_hand_written_broken_files_through_the_cli(tmp_path: Path, name: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, HAND_WRITTEN[name])
    assert main(["--config", str(path), *CHECK_CONFIG]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err[:3000]
    assert "Traceback" not in err


@FEW
@given(leaf=st.sampled_from(LEAVES), data=st.data())
def test_generated_broken_files_through_the_cli(fuzz_dir: Path, leaf: Leaf,
                                                data: st.DataObject) -> None:
    path = _write(fuzz_dir, toml_document(_with({}, leaf.path, data.draw(certainly_wrong(leaf)))))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["--config", str(path), *CHECK_CONFIG])
    assert code == 2
    text = err.getvalue()
    assert len(text.splitlines()) == 1, text[:3000]
    assert "Traceback" not in text


@pytest.mark.parametrize("environ", [
    {"GROUNDWATCH__METRICS__PORT": "[" * 3000},
    {"GROUNDWATCH__METRICS__PORT": "9" * 5000},
    {"GROUNDWATCH__SOURCE__NAME": "a\nb"},
    {"GROUNDWATCH__NO__SUCH__KEY": "1"},
    {"GROUNDWATCH__SAMPLING__RULES": "[{name = 'r'}]"},
])
def test_broken_environment_overrides_through_the_cli(
        tmp_path: Path, environ: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    path = _write(tmp_path, "")
    assert main(["--config", str(path), *CHECK_CONFIG]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err[:3000]
    assert "Traceback" not in err
