"""``groundwatch check-config``: a preflight of a loaded config against the real world.

Beside the schema (already checked by :func:`~evaluator.config.load_config`) and the scorer
name, :func:`run_preflight` connects, read-only and with short timeouts, to

* the **source**: opens it as the sampler would (SQLite read-only and never created; the table
  and every mapped column reflected), reads a sample from the beginning with the source's own
  ``read`` and counts what would be rejected, by field and reason; a ``files`` source must
  match at least one file (each source says what it checks through the protocol's
  ``check_connection``, ``preflight_scope`` and ``preflight_notes``, see
  :class:`~evaluator.sources.base.Source`);
* the **store**: reachable, and its Alembic revision against the shipped head (information:
  migrations run at the next start). Nothing is created or migrated: a SQLite file that does not
  exist yet is reported, not made;
* the **broker**: one connection attempt bounded by ``broker_timeout_s``.

Every problem found becomes one :class:`Finding`, so one run lists them all. The report's
``summary`` says in a few lines what the config amounts to (source, mode, cursor, what the
sample would give at the configured rules and rates, broker, store, judge), each value with
where it came from: the file, a default, or an environment variable. ``offline=True``
skips every connection. The module imports kombu (for the broker) only inside that check.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import BaseModel, SecretStr
from sqlalchemy import select
from sqlalchemy.engine import make_url

from evaluator.config import ENV_PREFIX, Config, env_name_for
from evaluator.errors import ConfigError, InvalidRecordError, TransientError, describe_error
from evaluator.judge.bounds import streamed
from evaluator.judge.golden import load_golden
from evaluator.plugins import source_plugin
from evaluator.records import ALL_FIELDS, LogRecord
from evaluator.sampling import SamplingPolicy
from evaluator.scorers import JUDGES, check_scorer_name
from evaluator.scorers.gates import apply_gates
from evaluator.sources import build_source
from evaluator.sources.base import Source, SourceNote
from evaluator.sources.engine import create_readonly_engine, masked_url, sqlite_file
from evaluator.store.database import alembic_config
from evaluator.store.models import VERSION_TABLE, cursors

__all__ = ["DEFAULT_SAMPLE_ROWS", "REJECT_PROBLEM_SHARE", "Finding", "PreflightReport",
           "run_preflight"]

#: Rows read from the start of the source to estimate rejections.
DEFAULT_SAMPLE_ROWS = 200
#: A (field, reason) that rejects every sampled row, or rejections over this share of the
#: sample, fail the preflight: the mapping is wrong, not a few rows broken. Fewer are warnings.
REJECT_PROBLEM_SHARE = 0.5
DEFAULT_TIMEOUT_S = 3.0

Level = Literal["problem", "warning"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem (exit 2) or warning, about one config key, rendered as one line."""

    level: Level
    where: str
    what: str
    key: str | None = None

    def line(self) -> str:
        text = " ".join(f"{self.where}: {self.what}".split())  # driver messages span lines
        return f"{self.level}: {text}"


@dataclass(slots=True)
class PreflightReport:
    """What was checked (``checked``: one summary line each) and what was found."""

    checked: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    #: (what, value with where it came from), in the order printed.
    summary: list[tuple[str, str]] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "problem"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.problems


class _Checker:
    def __init__(self, config: Config, environ: Mapping[str, str]) -> None:
        self.config = config
        self.environ = environ
        self.report = PreflightReport()
        self.sample_line: str | None = None  # for the summary: what the sample gave
        self.cursor_line: str | None = None  # the stored cursor, when the store was read

    # -- naming the place of a finding ------------------------------------------------------
    def where(self, key: str | None) -> str:
        """``env NAME, key 'k'`` when an environment variable set ``key`` (or a section above
        it), else ``file PATH, key 'k'``."""
        parts = key.split(".") if key else []
        for name in sorted(self.environ):
            if not name.startswith(ENV_PREFIX):
                continue
            env_parts = [p.lower() for p in name[len(ENV_PREFIX):].split("__") if p]
            if env_parts and parts[:len(env_parts)] == env_parts:
                return f"env {name}, key '{key}'"
        bits = [f"file {self.config.path}" if self.config.path else "",
                f"key '{key}'" if key else ""]
        return ", ".join(b for b in bits if b) or "config"

    def add(self, level: Level, key: str | None, what: str) -> None:
        self.report.findings.append(Finding(level, self.where(key), what, key))

    def problem(self, key: str | None, what: str) -> None:
        self.add("problem", key, what)

    def config_error(self, exc: ConfigError) -> None:
        self.problem(exc.key, exc.problem)

    def checked(self, line: str) -> None:
        self.report.checked.append(line)

    # -- scorer -----------------------------------------------------------------------------
    def scorer(self) -> None:
        name = self.config.scoring.scorer
        try:
            check_scorer_name(name, path=self.config.path)
        except ConfigError as exc:
            self.config_error(exc)
        else:
            self.checked(f"scorer {name!r}: available")
            if name == "embedded":
                self.embedded_model()

    def embedded_model(self) -> None:
        """The shipped model files match their manifest (a damaged install fails here, not at
        a worker's first batch); the torch runtime's extra is installed."""
        # the [embedded] extra is installed (checked just before); numpy and the scorer's
        # modules load only for this check, not for every command
        from evaluator.scorers.embedded import runtime
        from evaluator.scorers.embedded.scorer import EmbeddedScorer

        settings = self.config.scoring.embedded
        try:
            EmbeddedScorer.from_config(self.config).close()
            if settings.runtime == "onnx":
                model = runtime.verified_files(settings.precision)[0].name
                self.checked(f"embedded model: {model} ({settings.precision}) matches its "
                             "manifest")
                cpu = runtime.int8_instructions()
                if settings.precision == "int8" and cpu not in ("VNNI", "unknown"):
                    self.checked(f"int8 on this CPU ({cpu}): ONNX Runtime's exact int8 kernel "
                                 "without VNNI, about 1.1-1.3x float32's items per CPU-second "
                                 "(about 2x with VNNI; decision 0024)")
        except ConfigError as exc:
            self.config_error(exc)
        except runtime.ModelFileError as exc:
            self.problem("scoring.embedded.precision", str(exc))

    # -- source -----------------------------------------------------------------------------
    def source(self, sample_rows: int, timeout_s: float) -> None:
        try:
            plugin = source_plugin(self.config.source.kind, path=self.config.path)
            # Connect once, bounded, before building the source: a clear line for a database
            # that does not exist or does not answer, instead of the reflection's error.
            unreachable = plugin.load().check_connection(self.config, timeout_s)
        except ConfigError as exc:
            self.config_error(exc)
            return
        if unreachable is not None:
            self.add("problem", unreachable.key or plugin.connect_key, unreachable.text)
            return
        try:
            source = build_source(self.config)
        except ConfigError as exc:
            self.config_error(exc)
            return
        except TransientError as exc:
            self.problem(plugin.connect_key, f"source unreachable: {exc.detail}")
            return
        try:
            scope = source.preflight_scope()
            if scope.problem is not None:
                self.add("problem", scope.problem.key or plugin.key, scope.problem.text)
                return
            if scope.line is not None:
                self.checked(scope.line)
            self._sample(source, sample_rows, plugin.key, scope.label)
            self._source_notes(source, plugin.key)
        finally:
            source.close()

    def _sample(self, source: Source, sample_rows: int, source_key: str, label: str) -> None:
        src = self.config.source
        try:
            batch = source.read(None, sample_rows)
        except ConfigError as exc:
            self.config_error(exc)
            return
        except Exception as exc:  # the preflight reports, the sampler would have crashed
            self.problem(source_key, f"reading a sample of the source failed: "
                         f"{describe_error(exc)}")
            return
        # Rows a source cannot place in its order are not "read" but reported as no_position
        # rejections: they count as examined, or a timestamp mapped to the wrong column would
        # look like an empty table.
        unplaced = sum(1 for e in batch.rejections if e.reason == "no_position")
        read, rejected = batch.rows_read + unplaced, len(batch.rejections)
        line = f"source {src.name!r} ({src.kind}):{label} read {read} sample row(s)"
        if batch.unplaceable and batch.unplaceable > unplaced:
            self.add("warning", "source.sql.mode",
                     f"{batch.unplaceable} row(s) of the whole table have no position in the "
                     f"{src.sql.mode} order (NULL or unreadable value, or NULL request id): the "
                     "sampler never reads them until they are fixed")
        if read == 0:
            self.checked(line + ": the source is empty, nothing to check the mapping against")
            self.add("warning", source_key,
                     "the source has no rows yet: the column mapping is checked, the values not")
            return
        groups: dict[tuple[str, str], list[InvalidRecordError]] = {}
        for err in batch.rejections:
            groups.setdefault((err.field, err.reason), []).append(err)
        # What the sampler would take: the policy's deterministic decision (rule and rate, as
        # the sampler hashes the request id); the per-minute caps and route minimums depend on
        # time and are left out.
        policy = SamplingPolicy(self.config.sampling)
        by_rule: dict[tuple[str, float], list[int]] = {}
        for record in batch.records:
            decision = policy.wants(record)
            counts = by_rule.setdefault((decision.rule, decision.rate), [0, 0])
            counts[0] += decision.sampled
            counts[1] += 1
        wanted = sum(c[0] for c in by_rule.values())
        self.checked(f"{line}: {read - rejected} valid, {rejected} rejected; {wanted} would be "
                     "sampled at the configured rules and rates")
        rejects = ", ".join(f"{f}/{r} {len(e)}" for (f, r), e in
                            sorted(groups.items(), key=lambda kv: -len(kv[1])))
        rules = ", ".join(f"{rule} at {rate:g}: {n} of {of}"
                          for (rule, rate), (n, of) in sorted(by_rule.items()))
        self.sample_line = (f"{read} row(s) read, {rejected} rejected"
                            + (f" ({rejects})" if rejects else "")
                            + f"; {wanted} would be sampled at the configured rules and rates"
                            + (f" ({rules}; caps and route minimums apply at run time)"
                               if rules else ""))
        too_many = rejected > REJECT_PROBLEM_SHARE * read
        for (fname, reason), errs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            level: Level = "problem" if too_many or len(errs) == read else "warning"
            key = f"source.columns.{fname}" if fname in ALL_FIELDS else source_key
            example = errs[0]
            self.add(level, key, f"{len(errs)} of {read} sampled row(s) would be rejected as "
                     f"{reason} (field {fname!r}), e.g. row {example.row_ref}: "
                     f"{_short(example.detail)}")

    def _source_notes(self, source: Source, source_key: str) -> None:
        try:
            for note in source.preflight_notes():
                if isinstance(note, str):  # a team's own source may say plain text
                    note = SourceNote(note)
                self.add("problem" if note.problem else "warning", note.key or source_key,
                         note.text)
        except Exception as exc:
            self.problem(source_key, f"the source's own checks failed: {describe_error(exc)}")

    # -- store ------------------------------------------------------------------------------
    def store(self, timeout_s: float) -> None:
        url = self.config.store.url.get_secret_value()
        shown = masked_url(url)
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            file = sqlite_file(parsed)
            if file is None:
                self.add("warning", "store.url", "the store is in memory: nothing outlives the "
                         "process, and processes do not share it")
                return
            if not file.exists():
                self.cursor_line = ("none: the store does not exist yet, the sampler starts at "
                                    "the beginning of the source")
                self._store_file_creatable(file)
                return
        try:
            engine = create_readonly_engine(url, key="store.url", path=self.config.path,
                                            connect_timeout_s=timeout_s, role="store")
        except ConfigError as exc:
            self.config_error(exc)
            return
        try:
            with engine.connect() as conn:
                current, head, pending = _migration_state(conn)
        except Exception as exc:
            self.problem("store.url", f"cannot open the store {shown}: {describe_error(exc)}")
            return
        finally:
            engine.dispose()
        if current is None:
            state = f"not migrated yet: {pending} migration(s) to head {head} run at first start"
        elif pending:
            state = (f"schema at {current}, head {head}: {pending} migration(s) pending, "
                     f"applied at the next start")
        elif current == head:
            state = f"schema at head {head}"
        else:
            state = f"schema at {current}, unknown to this version (head {head}): newer groundwatch?"
            self.add("warning", "store.url", f"the store's schema revision {current!r} is not "
                     "one this groundwatch ships: was it migrated by a newer version?")
        self.checked(f"store: {shown}: reachable, {state}")
        if current is not None:
            self._read_cursor(url, timeout_s)
        else:
            self.cursor_line = ("none: the store is not migrated yet, the sampler starts at "
                                "the beginning of the source")

    def _read_cursor(self, url: str, timeout_s: float) -> None:
        name = self.config.source.name
        engine = create_readonly_engine(url, key="store.url", path=self.config.path,
                                        connect_timeout_s=timeout_s, role="store")
        try:
            with engine.connect() as conn:
                position = conn.scalar(select(cursors.c.position)
                                       .where(cursors.c.source == name))
        except Exception as exc:
            self.cursor_line = f"could not be read: {describe_error(exc)}"
            return
        finally:
            engine.dispose()
        self.cursor_line = (f"stored for source {name!r}: {_short(str(position), 100)}"
                            if position is not None else
                            f"none stored for source {name!r}: the sampler starts at the "
                            "beginning of the source")

    def _store_file_creatable(self, file: Path) -> None:
        parent = file.resolve().parent
        existing = parent
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            self.problem("store.url", f"store database file {str(file)!r} does not exist and "
                         f"cannot be created: {str(existing)!r} is not a writable directory")
            return
        self.checked(f"store: {str(file)!r} does not exist yet: it is created and migrated at "
                     "first start")

    # -- broker -----------------------------------------------------------------------------
    def broker(self, timeout_s: float) -> None:
        url = self.config.broker.url.get_secret_value()
        scheme = url.partition("://")[0].split("+")[0]
        if scheme == "memory":
            self.add("warning", "broker.url", "the memory broker only works inside one process "
                     "(tests): the sampler and workers cannot share it")
            return
        if scheme == "filesystem":
            folder = url.removeprefix("filesystem://") or ".groundwatch/broker"
            self.checked(f"broker: filesystem folder {folder!r} (no connection to make)")
            return
        # kombu takes a while to import and only this check needs it.
        from kombu import Connection

        conn = Connection(url, connect_timeout=timeout_s,
                          transport_options={"socket_timeout": timeout_s,
                                             "socket_connect_timeout": timeout_s})
        try:
            # One retry at once: a refused port answers in milliseconds, a black hole within
            # the timeout; kombu's own default backoff would wait seconds for nothing.
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0,
                                   interval_max=0, timeout=timeout_s)
        except Exception as exc:
            self.problem("broker.url", f"cannot reach the broker {masked_url(url)}: "
                         f"{describe_error(exc)}")
            return
        finally:
            conn.release()
        self.checked(f"broker: {masked_url(url)}: reachable")


class _JudgeChecks:
    """The judge: its extra installed, its key's variable set, its endpoint answering."""

    @staticmethod
    def offline(checker: _Checker) -> str | None:
        """The mode that will run, or None (no judge); records what it finds."""
        config = checker.config
        mode = config.scoring.scorer if config.scoring.scorer in JUDGES \
            else config.scoring.judge
        if not mode:
            return None
        if not config.judge.configured:
            if config.scoring.scorer in JUDGES:
                checker.problem("judge.base_url", f"scorer {mode!r} needs a judge endpoint")
            else:
                checker.checked("judge: none configured (judge.base_url is empty): the cascade "
                                "is off")
            return None
        try:
            check_scorer_name(mode, path=config.path)
        except ConfigError as exc:
            checker.problem("scoring.judge", exc.problem)
            return None
        if not config.judge.model.strip():
            checker.problem("judge.model", "the judge needs a model name")
        name = config.judge.api_key_env
        if name and not checker.environ.get(name):
            checker.add("warning", "judge.api_key_env",
                        f"environment variable {name} is not set: the judge is called without "
                        "a key (fine for a local vLLM, Ollama or llama.cpp server)")
        if config.judge.golden.path:
            try:
                checker.checked(f"judge golden set: {len(load_golden(config.judge.golden.path))}"
                                " items")
            except ConfigError as exc:
                checker.problem("judge.golden.path", exc.problem)
        return mode

    @staticmethod
    def online(checker: _Checker, mode: str, timeout_s: float) -> bool:
        """``GET {base_url}/models`` with the key: reachable, key accepted, model listed.
        True when the judge can be asked for a judgement."""
        import httpx  # the [judge] extra: checked above, imported only when installed

        cfg = checker.config.judge
        key = checker.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        url = cfg.base_url.rstrip("/") + "/models"
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            reply = httpx.get(url, headers=headers, timeout=timeout_s)
        except httpx.HTTPError as exc:
            checker.problem("judge.base_url", f"cannot reach the judge at {cfg.base_url}: "
                            f"{type(exc).__name__}: {_short(str(exc))}")
            return False
        if reply.status_code in (401, 403):
            checker.problem("judge.api_key_env", f"the judge at {cfg.base_url} refused the key "
                            f"from {cfg.api_key_env or '(no variable)'} (HTTP "
                            f"{reply.status_code})")
            return False
        if reply.status_code >= 400:
            checker.add("warning", "judge.base_url", f"{url} answered HTTP {reply.status_code} "
                        "(some servers have no /models); calls may still work")
            return True
        try:
            models = {m.get("id") for m in reply.json().get("data", [])}
        except (ValueError, AttributeError, TypeError):
            models = set()
        if models and cfg.model not in models:
            # The server says what it serves: a call for another model fails (issue 20: this
            # was a warning, and check-config passed).
            checker.problem("judge.model", f"model {cfg.model!r} is not served by the judge "
                            f"at {cfg.base_url} (it lists "
                            f"{', '.join(sorted(str(m) for m in models)[:5])})")
            return False
        checker.checked(f"judge {mode!r}: {cfg.base_url} reachable, model {cfg.model!r}")
        return True

    @staticmethod
    def probe(checker: _Checker, mode: str) -> None:
        """One real judgement of :data:`PROBE`: a problem when the judge cannot judge it (a
        reply that does not parse, a failed call), a warning when it rates the contradicted
        answer no lower than the supported one; the measured speed and what it can keep up
        with."""
        # the [judge] extra (httpx, openai; checked above): imported only to probe
        from evaluator.judge.scorer import JudgeScorer

        config = checker.config
        # No shared budget or cache: the probe must be asked, not answered from a cache.
        probe_config = config.model_copy(update={
            "broker": config.broker.model_copy(update={"url": SecretStr("memory://probe")}),
            "judge": config.judge.model_copy(update={"cache_ttl_s": 0.0})})
        judge = JudgeScorer(probe_config, mode)
        started = time.monotonic()
        try:
            judge.warm_up()
            results, usage = judge.score_gated(apply_gates(probe_records()))
        except Exception as exc:  # any reason the judge cannot judge: say it
            checker.problem("judge.model", f"the probe judgement failed: "
                            f"{type(exc).__name__}: {_short(str(exc))}")
            return
        finally:
            judge.close()
        seconds = time.monotonic() - started
        faithful: dict[str, float] = {}
        for result in results:
            for m in result.metrics:
                if m.outcome.value == "error":
                    trace = result.explanation.judge if result.explanation else None
                    why = f": {_short(trace.parse_error)}" if trace and trace.parse_error \
                        else ""
                    checker.problem("judge.model", f"model {config.judge.model!r} could not "
                                    f"judge the probe item {result.request_id!r}: {m.metric} "
                                    f"error ({m.reason}){why}")
                    return
                if m.metric == "faithfulness" and m.value is not None:
                    faithful[result.request_id] = m.value
        good, bad = faithful.get(PROBE_IDS[0]), faithful.get(PROBE_IDS[1])
        if good is not None and bad is not None and bad >= good:
            checker.add("warning", "judge.model",
                        f"model {config.judge.model!r} rated the contradicted probe answer as "
                        f"faithful as the supported one ({bad:.2f} vs {good:.2f}): its scores "
                        "may not mean much")
        per_item = seconds / len(results)
        per_hour = 3600.0 / per_item if per_item > 0 else float("inf")
        share = config.judge.cascade.share
        keeps_up = f"{per_hour / share:,.0f} sampled items an hour at cascade share " \
            f"{share:g}" if share > 0 else "every low or uncertain item"
        checker.checked(
            f"judge probe: {len(results)} items judged in {seconds:.1f} s ({per_item:.1f} s, "
            f"{usage.judge_calls / len(results):.1f} calls, "
            f"{(usage.prompt_tokens + usage.completion_tokens) / len(results):,.0f} tokens per "
            f"item); faithfulness {good if good is None else round(good, 2)} supported, "
            f"{bad if bad is None else round(bad, 2)} contradicted; at this speed it judges "
            f"about {per_hour:,.0f} items an hour, enough for {keeps_up} (plus the low and "
            f"uncertain ones it is sent); {_stream_note(config)}")


def _stream_note(config: Config) -> str:
    """How the judge's calls are read, and so what judge.timeout_s bounds."""
    cfg = config.judge
    on = streamed(cfg.stream, cfg.base_url)
    why = f'judge.stream "{cfg.stream}"' + (
        (": a server on this host or a private network" if on else ": a public API")
        if cfg.stream == "auto" else "")
    if on:
        return (f"calls streamed ({why}): timeout_s {cfg.timeout_s:g} s is the wait for each "
                f"piece, max_call_s {cfg.max_call_s:g} s the whole call")
    return f"whole calls ({why}): timeout_s {cfg.timeout_s:g} s bounds each call"


# The probe: one passage, a supported and a contradicted answer to one question.
PROBE_IDS = ("probe-supported", "probe-contradicted")
PROBE_CONTEXT = ("Deleted storage buckets are kept for 30 days, then purged. During those 30 "
                 "days an administrator can restore them from the console.")


def probe_records() -> list[LogRecord]:
    now = datetime.now(UTC)
    question = "How long are deleted buckets kept?"
    return [LogRecord(PROBE_IDS[0], now, question, (PROBE_CONTEXT,),
                      "Deleted buckets are kept for 30 days before they are purged."),
            LogRecord(PROBE_IDS[1], now, question, (PROBE_CONTEXT,),
                      "Deleted buckets are purged at once and can never be restored.")]


def run_preflight(
    config: Config,
    *,
    offline: bool = False,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    environ: Mapping[str, str] | None = None,
    judge_probe: bool = True,
) -> PreflightReport:
    """Check ``config`` (already loaded and schema-valid) and return every finding.

    ``environ`` (default ``os.environ``) tells which keys came from environment variables, so
    findings name the variable instead of the file. Never raises for a problem it can name.
    """
    checker = _Checker(config, os.environ if environ is None else environ)
    checker.checked(f"schema: valid ({config.path or 'built-in defaults'})")
    checker.scorer()
    judge = _JudgeChecks.offline(checker)
    if offline:
        checker.checked("connections: skipped (--offline)")
    else:
        checker.source(sample_rows, timeout_s)
        checker.store(timeout_s)
        checker.broker(timeout_s)
        if judge is not None and _JudgeChecks.online(checker, judge, timeout_s):
            if judge_probe:
                _JudgeChecks.probe(checker, judge)
            else:
                checker.checked("judge probe: skipped (--no-judge-probe)")
    checker.report.summary = _summary(checker, judge, offline=offline)
    return checker.report


# -- the summary ------------------------------------------------------------------------------
def origin(config: Config, key: str, environ: Mapping[str, str]) -> str:
    """Where the value of the dotted ``key`` came from: ``env NAME``, ``file`` or
    ``default``."""
    name = env_name_for(key, environ)
    if name is not None:
        return f"env {name}"
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, BaseModel) or part not in node.model_fields_set:
            return "default"
        node = getattr(node, part)
    return "file"


def _summary(checker: _Checker, judge: str | None, *, offline: bool) -> list[tuple[str, str]]:
    config, environ = checker.config, checker.environ

    def val(key: str, shown: object) -> str:
        return f"{shown} ({origin(config, key, environ)})"

    src = config.source
    lines = [("scorer", val("scoring.scorer", config.scoring.scorer))]
    if src.kind == "sql":
        where = (f"{val('source.sql.url', masked_url(src.sql.url.get_secret_value()))}, "
                 f"table {val('source.sql.table', src.sql.table)}")
        mode = val("source.sql.mode", src.sql.mode)
        if src.sql.mode == "incrementing":
            mode += f", column {val('source.sql.incrementing_column', src.sql.incrementing_column)}"
        else:
            mode += f", lookback {val('source.sql.lookback', f'{src.sql.lookback_s:g} s')}"
        mode += f", settle {val('source.sql.settle', f'{src.sql.settle:g} s')}"
    else:
        where = f"paths {val('source.files.paths', ', '.join(src.files.paths))}"
        mode = f"files, format {val('source.files.format', src.files.format)}"
    lines += [("source", f"{val('source.name', src.name)}, kind {val('source.kind', src.kind)}, "
                         f"{where}"),
              ("mode", mode)]
    skipped = "not read (--offline)" if offline else "not read (see the findings)"
    lines.append(("cursor", checker.cursor_line or skipped))
    rates = f"default rate {val('sampling.default_rate', f'{config.sampling.default_rate:g}')}"
    if config.sampling.rules:
        rates += f", {val('sampling.rules', f'{len(config.sampling.rules)} rule(s)')}"
    lines.append(("sampling", rates))
    lines.append(("sample", checker.sample_line or skipped))
    lines.append(("broker", f"{val('broker.url', masked_url(config.broker.url.get_secret_value()))}"
                            f", queue {val('broker.queue', config.broker.queue)}"))
    lines.append(("store", val("store.url", masked_url(config.store.url.get_secret_value()))))
    if judge is None:
        # scoring.judge defaults to "ragas", but without an endpoint no judge runs.
        key = "judge.base_url" if config.scoring.scorer in JUDGES or config.scoring.judge \
            else "scoring.judge"
        why = "is empty" if key == "scoring.judge" or not config.judge.configured \
            else "is set but the judge did not pass its checks"
        lines.append(("judge", f"none ({key} {why}: {origin(config, key, environ)})"))
    else:
        lines.append(("judge", f"{val('scoring.judge', judge)} at "
                               f"{val('judge.base_url', config.judge.base_url)}, model "
                               f"{val('judge.model', config.judge.model)}"))
    return lines


# -- helpers ----------------------------------------------------------------------------------
def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _migration_state(conn: Any) -> tuple[str | None, str | None, int]:
    """(current revision, head revision, migrations between them), read without writing."""
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    current = context.get_current_revision()
    if head is None:
        return current, head, 0
    try:
        pending = sum(1 for _ in script.iterate_revisions(head, current))
    except Exception:  # a revision this version does not know
        return current, head, 0
    return current, head, pending
