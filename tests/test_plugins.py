"""The plugin seam: every backend declares itself beside its code, found one way."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from evaluator import plugins
from evaluator.config import Config
from evaluator.errors import ConfigError
from evaluator.records import LogRecord
from evaluator.scorers import (
    JUDGES,
    ForeignScorer,
    Scorer,
    build_scorer,
    check_scorer_name,
    item_seconds_estimate,
)
from evaluator.scorers.base import ItemResult, MetricResult
from evaluator.scorers.gates import apply_gates
from evaluator.sources.base import Source

OPTIONAL = ("torch", "numpy", "sentence_transformers", "wordfreq", "ragas", "openai", "httpx",
            "langchain_community", "datasets", "pyarrow")


def test_finding_the_backends_imports_no_optional_dependency() -> None:
    code = textwrap.dedent(f"""
        import sys
        from evaluator.plugins import scorer_plugins, source_plugins
        print(sorted(scorer_plugins()), sorted(source_plugins()))
        print([m for m in {OPTIONAL!r} if m in sys.modules])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.splitlines()
    assert out == ["['compact', 'embedded', 'lexical', 'noop', 'ragas'] ['files', 'sql']", "[]"]


def test_every_declared_backend_builds_from_its_factory() -> None:
    for plugin in [*plugins.scorer_plugins().values(), *plugins.source_plugins().values()]:
        assert plugin.missing() == [], plugin  # the dev install has every extra
        assert callable(plugin.load().from_config), plugin


def test_every_source_implements_the_whole_protocol() -> None:
    wanted = {name for name in dir(Source) if not name.startswith("_")} | {
        "name", "kind", "positions_by_time"}
    for kind, plugin in plugins.source_plugins().items():
        cls = plugin.load()
        assert cls.kind == kind
        missing = {name for name in wanted if not hasattr(cls, name) and name != "name"}
        assert not missing, f"{cls.__name__} lacks {sorted(missing)}"
        assert callable(cls.check_connection)


def test_the_judges_and_their_item_times_come_from_the_declarations() -> None:
    assert JUDGES == ("ragas", "compact")
    assert item_seconds_estimate("embedded") == 1.0
    assert item_seconds_estimate("lexical") == 0.01
    assert item_seconds_estimate("mypkg.mod:Mine") == plugins.UNKNOWN_ITEM_SECONDS


def test_an_unknown_source_kind_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        plugins.source_plugin("kafka", path="g.toml")
    assert info.value.key == "source.kind"
    assert "unknown source kind 'kafka'; valid: files, sql" in str(info.value)


@pytest.fixture
def extra_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A package of backends outside groundwatch, searched like the shipped homes."""
    home = tmp_path / "gw_extra_backends"
    home.mkdir()
    (home / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "SCORER_HOMES", (*plugins.SCORER_HOMES, "gw_extra_backends.*"))
    plugins.scorer_plugins.cache_clear()
    yield home
    plugins.scorer_plugins.cache_clear()
    for name in [m for m in sys.modules if m.startswith("gw_extra_backends")]:
        del sys.modules[name]


def test_a_new_backend_is_one_module_with_its_declaration(extra_home: Path) -> None:
    (extra_home / "constant.py").write_text(textwrap.dedent("""
        from evaluator.plugins import ScorerPlugin
        from evaluator.scorers.base import ItemResult, MetricResult, WholeBatchScorer

        PLUGINS = (ScorerPlugin("constant", "gw_extra_backends.constant:Constant",
                                item_seconds=0.5),)

        class Constant(WholeBatchScorer):
            name, version = "constant", "1"

            @classmethod
            def from_config(cls, config):
                return cls()

            def score_batch(self, records):
                return [ItemResult(r.request_id, (MetricResult.ok("faithfulness", 0.25),))
                        for r in records]
    """))
    scorer = build_scorer(Config(), "constant")
    assert isinstance(scorer, Scorer) and scorer.name == "constant"
    assert item_seconds_estimate("constant") == 0.5
    with pytest.raises(ConfigError) as info:
        check_scorer_name("nope")
    assert "valid: compact, constant, embedded, lexical, noop, ragas" in str(info.value)


def test_a_missing_extra_fails_at_start_up_naming_the_extra(extra_home: Path) -> None:
    (extra_home / "needy.py").write_text(textwrap.dedent("""
        from evaluator.plugins import ScorerPlugin
        PLUGINS = (ScorerPlugin("needy", "gw_extra_backends.needy:Needy", extra="needy",
                                requires=("gw_module_nobody_has",)),)
    """))
    with pytest.raises(ConfigError) as info:
        check_scorer_name("needy", path="g.toml")
    assert info.value.key == "scoring.scorer"
    assert ("scorer 'needy' needs gw_module_nobody_has, which is not installed: pip install "
            "'groundwatch[needy]'") in str(info.value)


class _OnlyScoreBatch:
    """A team's own scorer written against the smallest protocol."""

    name, version = "mine", "3"

    def __init__(self) -> None:
        self.closed = False

    @classmethod
    def from_config(cls, config: Config) -> _OnlyScoreBatch:
        return cls()

    def score_batch(self, records: Sequence[LogRecord]) -> list[ItemResult]:
        return [ItemResult(r.request_id, (MetricResult.ok("faithfulness", 0.5),))
                for r in records]

    def close(self) -> None:
        self.closed = True


def test_a_scorer_with_only_score_batch_is_adapted_to_the_whole_protocol() -> None:
    scorer = build_scorer(Config(), f"{__name__}:_OnlyScoreBatch")
    assert isinstance(scorer, ForeignScorer) and isinstance(scorer, Scorer)
    assert (scorer.name, scorer.version, scorer.judge_up) == ("mine", "3", None)
    records = [LogRecord.from_message({"request_id": f"r{i}", "timestamp": 0.0,
                                       "question": "q", "contexts": ["c"], "answer": "a"})
               for i in range(3)]
    results, usage = scorer.score_gated(apply_gates(records))
    assert [r.request_id for r in results] == ["r0", "r1", "r2"]
    assert usage.judge_calls == 0 and usage.latency_s == 0.0
    scorer.warm_up()  # it has none: nothing happens
    scorer.close()
    assert isinstance(scorer.inner, _OnlyScoreBatch) and scorer.inner.closed
