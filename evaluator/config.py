"""One typed configuration model, loaded from TOML, overridden by environment variables.

``load_config(path)`` is the only way in. Every problem becomes a :class:`ConfigError` whose
message is one line naming the file, the key and the problem (the CLI exits with code 2).

Environment overrides use ``GROUNDWATCH__<SECTION>__<KEY>`` (double underscores separate the
levels); a value is parsed as TOML when it can be (``0.5``, ``true``, ``["a", "b"]``) and kept as
text otherwise. ``GROUNDWATCH_CONFIG`` names the file when no path is given.
"""

from __future__ import annotations

import os
import re
import tomllib
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from evaluator.errors import ConfigError

ENV_PREFIX = "GROUNDWATCH__"
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "groundwatch.toml"

Rate = Annotated[float, Field(ge=0.0, le=1.0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Dialects shipped with SQLAlchemy itself; others come from installed plugins.
BUILTIN_DIALECTS = ("mssql", "mysql", "oracle", "postgresql", "sqlite")


def db_url_problem(value: str, *, backends: tuple[str, ...] | None = None) -> str | None:
    """Why ``value`` is not a usable SQLAlchemy URL, or ``None``.

    The dialect is loaded (``url.get_dialect()``), so ``sqlit://`` fails when the config is
    loaded rather than on the first connection; the driver itself (psycopg, ...) is imported
    only when connecting, so a config can be checked on a machine without it.
    """
    try:
        url = make_url(value)
    except ArgumentError:
        return "not a SQLAlchemy URL (e.g. sqlite:///file.db)"
    backend = url.get_backend_name()
    try:
        url.get_dialect()
    except NoSuchModuleError:
        if backend in BUILTIN_DIALECTS:
            return f"unknown driver {url.get_driver_name()!r} for database {backend!r}"
        return (f"unknown database dialect {url.drivername!r}; valid: "
                f"{', '.join(BUILTIN_DIALECTS)} (or a dialect plugin you installed)")
    if backends is not None and backend not in backends:
        return f"runs on {' or '.join(backends)}, not {backend!r}"
    return None


def _check_db_url(value: str, *, backends: tuple[str, ...] | None = None) -> str:
    problem = db_url_problem(value, backends=backends)
    if problem:
        raise ValueError(problem)
    return value


class StoreConfig(_Section):
    url: SecretStr = SecretStr("sqlite:///groundwatch.db")
    retention_days: int = Field(30, ge=1)

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        _check_db_url(value.get_secret_value(), backends=("sqlite", "postgresql"))
        return value


class BrokerConfig(_Section):
    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    queue: str = "groundwatch.score"
    batch_size: int = Field(100, ge=1, le=10_000)
    # Unset: derived from the scorer and batch_size (workers.app.visibility_timeout).
    visibility_timeout_s: int | None = Field(None, ge=10)

    @field_validator("url")
    @classmethod
    def _broker_url(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        scheme, sep, _ = text.partition("://")
        known = {"redis", "rediss", "amqp", "amqps", "pyamqp", "memory", "filesystem", "sqla",
                 "sqlalchemy", "sentinel"}
        if not sep or scheme.split("+")[0] not in known:
            raise ValueError(f"not a broker URL (scheme must be one of {sorted(known)})")
        return value


def check_identifier(value: str | None) -> str | None:
    """A table, schema or column name from config: SQLAlchemy quotes it, so any text is safe
    in SQL; what is refused here are the names that can only be mistakes."""
    if value is None:
        return None
    if not value.strip():
        raise ValueError("a name must not be empty")
    if any(unicodedata.category(c)[0] == "C" or c in "\u2028\u2029" for c in value):
        raise ValueError("a name must not hold control or invisible characters (NUL, newline…)")
    if len(value) > MAX_IDENTIFIER_CHARS:
        raise ValueError(f"a name must be at most {MAX_IDENTIFIER_CHARS} characters")
    return value


# The longest identifier of the databases SQLAlchemy ships (SQL Server, Oracle 12.2+: 128;
# PostgreSQL 63 bytes, MySQL 64 characters: their own errors cover the rest).
MAX_IDENTIFIER_CHARS = 128


class ColumnMap(_Section):
    """The app's column (or JSON key) for each record field; unset fields keep their own name."""

    _names = field_validator("*")(check_identifier)

    request_id: str = "request_id"
    timestamp: str = "timestamp"
    question: str = "question"
    contexts: str = "contexts"
    answer: str = "answer"
    route: str = "route"
    model: str = "model"
    app_version: str = "app_version"
    latency_ms: str = "latency_ms"
    status: str = "status"
    error: str = "error"
    prompt_tokens: str = "prompt_tokens"
    completion_tokens: str = "completion_tokens"
    cost_usd: str = "cost_usd"
    feedback: str = "feedback"
    metadata: str = "metadata"


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a duration text: ``90``, ``"90s"``, ``"5m"``, ``"1h"``, ``"2d"``."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text such as '5m'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        unit = next((u for u in ("ms", "s", "m", "h", "d") if text.endswith(u)), "s")
        number = text[: len(text) - len(unit)] if text.endswith(unit) else text
        try:
            seconds = float(number) * _DURATION_UNITS[unit]
        except ValueError:
            raise ValueError(f"{value!r} is not a duration (e.g. 90, '90s', '5m', '1h')") from None
    else:
        raise ValueError("a duration is a number of seconds or text such as '5m'")
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"a duration must be finite and >= 0, got {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class SqlSourceConfig(_Section):
    """Where the app's log table is, and how groundwatch keeps its place in it.

    ``mode`` (after Kafka Connect's JDBC source):

    * ``timestamp``: rows are taken in the order of the timestamp column compared as a UTC
      time, whatever the column holds (a DATETIME, ISO-8601 text with any offset, epoch
      seconds or milliseconds), ties broken by request id. ``lookback`` re-reads that window
      behind the cursor on every poll, so rows committed late are still read; rows read
      before are recognised and neither re-sent nor counted again.
    * ``incrementing``: rows are taken in the order of ``incrementing_column``, a value the
      database sets and that only grows (an auto-increment id, or an insert time set by a
      default). Exact and index-friendly; the event timestamp may then be anything.
    """

    url: SecretStr = SecretStr("sqlite:///app_logs.db")
    table: str = "llm_requests"
    schema_: str | None = Field(None, alias="schema")
    mode: Literal["timestamp", "incrementing"] = "timestamp"
    incrementing_column: str | None = None
    # None: 60 s in timestamp mode (rows committed up to a minute late are read), 0 in
    # incrementing mode (where it does not apply).
    lookback: Duration | None = None
    # How often rows that cannot be placed in the order (a NULL or unreadable timestamp) are
    # looked for, counted and reported; each look is one scan of the table.
    unplaceable_check: Duration = 300.0
    # timestamp mode: rows whose timestamp is further ahead of now than this are rejected
    # (future_timestamp) instead of becoming the cursor (which would put every later row
    # behind it).
    max_future: Duration = 86400.0
    # A row is decided once its time is this old, so an answer, status or feedback written by
    # a later UPDATE is seen (evaluator/sources/sql/completion.py). It adds to the lag.
    settle: Duration = 30.0
    # A row still missing its question, answer or contexts when read is read again until this
    # long after its time, then rejected `incomplete`.
    complete_within: Duration = 600.0
    # PostgreSQL: reads wait for transactions in flight (they may commit rows before those
    # already visible), each for at most this long; 0 does not wait (then size lookback).
    transaction_wait: Duration = 120.0

    @model_validator(mode="after")
    def _mode_settings(self) -> SqlSourceConfig:
        if self.mode == "incrementing" and not self.incrementing_column:
            raise ValueError("mode = 'incrementing' needs incrementing_column (e.g. 'id')")
        if self.mode == "incrementing" and self.lookback:
            raise ValueError("lookback applies to mode = 'timestamp' only")
        if self.complete_within < self.settle:
            raise ValueError(f"complete_within ({self.complete_within:g} s) must be at least "
                             f"settle ({self.settle:g} s)")
        return self

    @property
    def lookback_s(self) -> float:
        if self.lookback is not None:
            return self.lookback
        return 60.0 if self.mode == "timestamp" else 0.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        _check_db_url(value.get_secret_value())
        return value

    _names = field_validator("table", "schema_", "incrementing_column")(check_identifier)


class FilesSourceConfig(_Section):
    paths: list[str] = Field(default_factory=lambda: ["logs/*.jsonl"])
    format: Literal["auto", "json", "parquet", "csv"] = "auto"
    # A JSON Lines file the globs no longer match (rotated: app.jsonl -> app.jsonl.1) is
    # followed under its new name until it has been read to its end and unchanged this long,
    # like Vector's rotate_wait: the app may write on to the renamed file until it reopens.
    rotate_wait: Duration = 300.0


class SourceConfig(_Section):
    name: str = Field("app", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kind: Literal["sql", "files"] = "sql"
    poll_interval_s: float = Field(5.0, gt=0)
    read_batch_rows: int = Field(1000, ge=1, le=100_000)
    max_field_chars: int = Field(100_000, ge=100)
    max_contexts: int = Field(100, ge=1)
    # Where a passage logged as an object keeps its text (a key or a dotted path); "" reads
    # the common shapes (evaluator.records.CONTEXT_TEXT_KEYS).
    context_text_key: str = Field("", pattern=r"^[A-Za-z0-9_$-]*(\.[A-Za-z0-9_$-]+)*$",
                                  max_length=200)
    sql: SqlSourceConfig = SqlSourceConfig()
    files: FilesSourceConfig = FilesSourceConfig()
    columns: ColumnMap = ColumnMap()


class RuleMatch(_Section):
    """Conditions of a sampling rule; all that are set must hold."""

    route: list[str] | None = None
    model: list[str] | None = None
    status: list[str] | None = None
    feedback: list[int] | None = None
    contexts_empty: bool | None = None
    metadata: dict[str, str | int | float | bool] | None = None

    @field_validator("route", "model", "status", "feedback", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, (str, int)) else value


class SamplingRule(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    match: RuleMatch = RuleMatch()
    rate: Rate
    max_items_per_minute: float | None = Field(None, ge=0)


class SamplingConfig(_Section):
    salt: SecretStr = SecretStr("groundwatch")
    default_rate: Rate = 0.1
    # 0 (or absent from the file) turns the cap off.
    max_items_per_minute: float | None = Field(600.0, ge=0)
    rules: list[SamplingRule] = Field(default_factory=list)
    # Every route gets at least this many items an hour when it has the traffic, on top of its
    # rate, so small routes still get enough samples to alert on; 0 turns it off.
    min_items_per_route_per_hour: float = Field(0.0, ge=0)
    # Per-route minimums (route name -> items an hour), overriding the one above.
    route_minimums: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique_rule_names(self) -> SamplingConfig:
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique, repeated: {dupes}")
        for reserved in ("default", "route_minimum"):
            if reserved in names:
                raise ValueError(f"{reserved!r} is a reserved rule name")
        return self


class EmbeddedConfig(_Section):
    """Settings of the ``embedded`` scorer (all-MiniLM-L6-v2 on CPU)."""

    # Where the model runs: "onnx" (ONNX Runtime, the shipped export; no torch) or "torch"
    # (the [torch] extra: the baseline the export is measured against).
    runtime: Literal["onnx", "torch"] = "onnx"
    # "int8": the dynamically quantised export (onnx runtime only), if the package ships it.
    precision: Literal["fp32", "int8"] = "fp32"
    # Workers scale by process, so one thread per process avoids oversubscribing cores.
    # ``torch_threads``, the name before the ONNX runtime, is still read.
    threads: int = Field(1, ge=1, le=64,
                         validation_alias=AliasChoices("threads", "torch_threads"))
    # Context texts (passages and their sentences) whose encodings are kept per process (LRU
    # by content hash).
    cache_size: int = Field(50_000, ge=0, le=10_000_000)
    # ...and at most this much memory per process (an entry holds token embeddings: ~1.5 KB
    # per word piece, 20-60 KB a sentence). A worker without it holds about 270 MB.
    cache_mb: float = Field(128.0, ge=0.0, le=65536.0)
    # The evidence filter (a BM25 pass before the model): an item whose contexts have more
    # than this many sentences embeds only the best ``evidence_per_query`` sentences for the
    # question and for each claim; 0 embeds every sentence.
    evidence_keep_all: int = Field(64, ge=0, le=100_000)
    evidence_per_query: int = Field(10, ge=1, le=1000)
    # One cache for every worker: "" (none), "broker" (the broker's Redis) or a redis:// URL.
    # Texts a worker's own cache misses are looked up there before they are embedded, and
    # what it embeds is stored there, within shared_cache_mb (least recently used go first).
    shared_cache: str = ""
    shared_cache_mb: float = Field(256.0, gt=0.0, le=1_048_576.0)

    @field_validator("shared_cache")
    @classmethod
    def _shared_cache_url(cls, value: str) -> str:
        value = value.strip()
        if value and value != "broker" and not value.startswith(
                ("redis://", "rediss://", "unix://")):
            raise ValueError('"" (none), "broker" or a redis:// URL')
        return value
    # Longer inputs are cut (and counted) to bound the cost of one item.
    max_answer_chars: int = Field(8000, ge=100)
    max_context_chars: int = Field(40000, ge=100)
    max_question_chars: int = Field(2000, ge=50)

    @model_validator(mode="after")
    def _int8_is_onnx(self) -> EmbeddedConfig:
        if self.precision == "int8" and self.runtime != "onnx":
            raise ValueError('precision = "int8" needs runtime = "onnx" (the torch baseline '
                             "runs the float32 model only)")
        return self


class ScopeConfig(_Section):
    """What the app is for; out_of_scope detection is off while this is empty."""

    description: str = ""
    in_scope: list[str] = Field(default_factory=list)
    out_of_scope: list[str] = Field(default_factory=list)
    # Similarity to the nearest in-scope example below which a question is out of scope;
    # unset uses the calibrated value.
    threshold: float | None = Field(None, ge=-1.0, le=1.0)

    @property
    def configured(self) -> bool:
        return bool(self.description.strip() or self.in_scope)


class JudgeEmbeddingsConfig(_Section):
    """Where ragas's AnswerRelevancy gets its embeddings: the embedded model (offline, the
    default) or an OpenAI-compatible ``/embeddings`` endpoint."""

    source: Literal["embedded", "openai"] = "embedded"
    # For source = "openai"; an empty base_url / api_key_env uses the judge's.
    base_url: str = ""
    model: str = "text-embedding-3-small"
    api_key_env: str = ""


class JudgeBudgetConfig(_Section):
    """Hard limits shared by every worker process (kept in Redis, or in memory for a process
    without a broker: the demo, ``groundwatch score``). 0 means no limit."""

    tokens_per_day: int = Field(2_000_000, ge=0)
    usd_per_hour: float = Field(5.0, ge=0.0)


class JudgePrice(_Section):
    """USD per 1000 tokens."""

    prompt: float = Field(0.0, ge=0.0)
    completion: float = Field(0.0, ge=0.0)


class JudgeCircuitConfig(_Section):
    # After this many consecutive failed calls the judge is not called for cooldown_s; then
    # one trial call decides whether it is back.
    failures: int = Field(5, ge=1)
    cooldown_s: float = Field(60.0, gt=0)


class JudgeCascadeConfig(_Section):
    """Which items the judge scores when it runs beside a cheap scorer."""

    # A random share of all sampled items (by request id, so a retry picks the same items).
    share: Rate = 0.05
    # ...plus the items whose cheap score of ``on`` is below ``low``, or inside ``band``.
    on: Literal["faithfulness", "groundedness", "answer_relevance", "context_relevance"] = \
        "faithfulness"
    low: Rate = 0.3
    band: tuple[Rate, Rate] = (0.4, 0.6)

    @model_validator(mode="after")
    def _band_ordered(self) -> JudgeCascadeConfig:
        if self.band[0] > self.band[1]:
            raise ValueError(f"band must be [low, high], got {list(self.band)}")
        return self


class RedactionPattern(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_]{1,40}$")
    regex: str

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        if pattern.match(""):
            raise ValueError("the pattern matches the empty string")
        return value


class RedactionConfig(_Section):
    """PII is replaced by ``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IBAN]`` (or ``[NAME]`` of a
    custom pattern) before any text leaves the process for a judge."""

    enabled: bool = True
    patterns: list[RedactionPattern] = Field(default_factory=list)


class GoldenConfig(_Section):
    # A JSON Lines file of items (question, contexts, answer; request_id optional) that the
    # judge re-scores every interval_s; the change of its scores is exported. Empty: off.
    path: str = ""
    interval_s: float = Field(3600.0, ge=10)


class JudgeConfig(_Section):
    """An LLM judge on an OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp server).

    ``scoring.judge`` chooses how it is used (``ragas``: ragas's metrics; ``compact``: one call
    per item); with ``scoring.scorer`` a cheap scorer, the judge runs as a cascade."""

    base_url: str = ""
    model: str = ""
    # The NAME of the environment variable that holds the API key; the key itself is never
    # read from, or written to, a config file, a log or the store.
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = Field(60.0, gt=0, le=3600)
    # "on": chat calls are streamed and read piece by piece: timeout_s is then a progress
    # deadline (the longest wait for the next piece, the first included), so a slow but
    # steady judge (a local model on CPU) is not timed out however long its whole reply
    # takes, up to max_call_s; a reply that starts to loop is abandoned at once. The server
    # must stream chat completions (OpenAI, vLLM, llama.cpp server, Ollama do). "auto": on
    # for a server on this host or a private network, off for a public API.
    stream: Literal["auto", "off", "on"] = "auto"
    max_call_s: float = Field(900.0, gt=0, le=7200)
    # Calls in flight per worker process (one event loop per process).
    max_concurrency: int = Field(8, ge=1, le=1024)
    # Re-asks after an unparseable reply, and retries after a 5xx / timeout / refused
    # connection, per prompt: a judge that always fails costs at most 1 + max_retries calls.
    max_retries: int = Field(1, ge=0, le=5)
    # A 429 is waited out (Retry-After, or a jittered backoff) up to this long per call; past
    # it the batch goes back to the queue and waits there.
    rate_limit_max_wait_s: float = Field(30.0, ge=0)
    max_tokens: int = Field(1024, ge=16)
    # How the compact judge asks for its JSON: "json_schema" (OpenAI, vLLM, llama.cpp server,
    # recent Ollama) or "json_object" for servers without schemas.
    structured_output: Literal["json_schema", "json_object"] = "json_schema"
    # Bounds in the compact judge's schema (maxItems on the claims, maxLength on each claim
    # and quote): llama.cpp's server and vLLM turn them into their grammar, so a small model
    # cannot run a reply to max_tokens; some hosted strict modes (OpenAI's) reject the
    # keywords. "auto": on for a server on this host or a private network, off elsewhere.
    schema_bounds: Literal["auto", "on", "off"] = "auto"
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    # AnswerRelevancy's generated questions (ragas's default is 3).
    strictness: int = Field(1, ge=1, le=10)
    # Replies are cached by (metric, model, prompt version, inputs) for this long; 0: off.
    cache_ttl_s: float = Field(7 * 86400.0, ge=0)
    # USD per 1000 tokens, per model name; a model without a price costs 0 (and says so).
    prices: dict[str, JudgePrice] = Field(default_factory=dict)
    embeddings: JudgeEmbeddingsConfig = JudgeEmbeddingsConfig()
    budget: JudgeBudgetConfig = JudgeBudgetConfig()
    circuit: JudgeCircuitConfig = JudgeCircuitConfig()
    cascade: JudgeCascadeConfig = JudgeCascadeConfig()
    redaction: RedactionConfig = RedactionConfig()
    golden: GoldenConfig = GoldenConfig()

    @property
    def configured(self) -> bool:
        return bool(self.base_url.strip())

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {value!r}")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("api_key_env is the NAME of an environment variable "
                             "(e.g. OPENAI_API_KEY), not the key")
        return value


class ScoringConfig(_Section):
    scorer: str = "lexical"
    # The cascade's judge beside the cheap scorer above: "ragas" (ragas's metrics) or
    # "compact" (one call per item); it runs only when [judge] base_url is set. "": never.
    judge: Literal["", "ragas", "compact"] = "ragas"
    thresholds: dict[str, Rate] = Field(
        default_factory=lambda: {
            "faithfulness": 0.5, "groundedness": 0.5, "answer_relevance": 0.5,
            "context_relevance": 0.3,
        }
    )
    embedded: EmbeddedConfig = EmbeddedConfig()
    scope: ScopeConfig = ScopeConfig()


class WorkerConfig(_Section):
    pool: Literal["solo", "threads", "prefork"] = "solo"
    concurrency: int = Field(1, ge=1, le=256)
    prefetch_multiplier: int = Field(1, ge=1)
    max_retries: int = Field(5, ge=0)
    retry_backoff_s: float = Field(2.0, gt=0)
    retry_backoff_max_s: float = Field(300.0, gt=0)
    # A worker told to stop (SIGTERM) finishes its batch, but waits at most this long for
    # judge calls still running; then it cancels them and hands the batch back to the queue
    # unstored (another worker scores it from the start). `groundwatch run` kills a worker
    # that has not exited STOP_MARGIN_S after this; an orchestrator's grace period
    # (docker-compose stop_grace_period, Kubernetes terminationGracePeriodSeconds) should too.
    stop_grace_s: float = Field(10.0, ge=0, le=3600)


class SamplerConfig(_Section):
    lock_ttl_s: float = Field(60.0, ge=5)
    enqueue_batch_size: int | None = Field(None, ge=1)
    # Hold the cursor (and say which config key to fix) when every row of a read of at least
    # this many rows is rejected for the same field and reason; 0 turns it off. Below it, a
    # few bad rows at the end of the table are rejected one by one as usual.
    hold_min_rows: int = Field(50, ge=0)
    # A progress line this often (0: never), and a warning when more than this share of the
    # rows read since the last line was rejected.
    progress_every_s: float = Field(60.0, ge=0)
    warn_reject_share: float = Field(0.2, ge=0.0, le=1.0)


class HealthConfig(_Section):
    # Each long-running process (sampler, worker, exporter) writes a heartbeat this often; a
    # heartbeat lives HEALTH_TTL_FACTOR x this, so two missed beats are tolerated and the
    # third says the process is gone (workers/health.py, docs/deploy.md).
    interval_s: float = Field(10.0, ge=0.1, le=3600.0)
    # The longest one check of the store or the broker may take: at start (a role that cannot
    # reach either exits 2), with every heartbeat (a store that does not answer makes the beat
    # unhealthy) and in `groundwatch health` (workers/dependencies.py).
    check_timeout_s: float = Field(3.0, gt=0, le=60.0)


class RunConfig(_Section):
    # `groundwatch run` restarts a worker process that died, after restart_backoff_s (doubled
    # for each restart still in the window, at most 30 s), and gives up, exiting 1, when a
    # worker would be restarted more than max_restarts times within restart_window_s: a
    # crash loop that restarts cannot fix (workers/supervisor.py, docs/deploy.md).
    max_restarts: int = Field(5, ge=0)
    restart_window_s: float = Field(300.0, gt=0)
    restart_backoff_s: float = Field(1.0, ge=0)


class CalibrationConfig(_Section):
    """Maps that recalibrate the cheap scorer on this deployment's own traffic, fitted from
    the judge's verdicts on the cascade's random share (or a labelled file: ``groundwatch
    calibrate --labels``). docs/calibration.md."""

    # Apply the newest usable map of each route and metric to the cheap scorer's scores
    # (exported as groundwatch_calibrated_score beside the raw groundwatch_score).
    enabled: bool = True
    # How often one worker refits the maps from the judge's pairs (0: never; `groundwatch
    # calibrate` still refits on demand).
    refit_interval_s: float = Field(3600.0, ge=0)
    # The pairs a refit reads: those newer than this.
    window_s: float = Field(7 * 86400.0, gt=0)
    # A map applies only with at least min_pairs pairs and a bootstrap band (90 %) whose
    # half-width, averaged over where the pairs lie, is at most max_band.
    min_pairs: int = Field(50, ge=10)
    max_band: float = Field(0.15, gt=0, le=0.5)
    # At most this many newest pairs per route and metric.
    max_pairs: int = Field(5000, ge=100)
    # How often a worker reloads the maps from the store.
    refresh_s: float = Field(60.0, gt=0)


class MetricsConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)
    multiproc_dir: str = ".groundwatch/prometheus"
    # route only by default: route x model multiplies every labelled family (docs/metrics.md).
    labels: list[Literal["route", "model"]] = Field(
        default_factory=lambda: ["route"])  # type: ignore[arg-type]
    max_label_values: int = Field(10, ge=1, le=1000)
    label_values: dict[str, list[str]] = Field(default_factory=dict)


class Config(_Section):
    """The whole resolved configuration."""

    store: StoreConfig = StoreConfig()
    broker: BrokerConfig = BrokerConfig()
    source: SourceConfig = SourceConfig()
    sampling: SamplingConfig = SamplingConfig()
    scoring: ScoringConfig = ScoringConfig()
    judge: JudgeConfig = JudgeConfig()
    worker: WorkerConfig = WorkerConfig()
    sampler: SamplerConfig = SamplerConfig()
    health: HealthConfig = HealthConfig()
    run: RunConfig = RunConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    metrics: MetricsConfig = MetricsConfig()
    path: str | None = Field(None, exclude=True)

    def masked(self) -> dict[str, Any]:
        """The config as plain data with every secret replaced by ``'**********'``."""
        return self.model_dump(mode="json", by_alias=True, exclude={"path"})


def _load_toml(text: str, path: str | None = None) -> dict[str, Any]:
    """``tomllib.loads`` with every failure a ConfigError: tomllib also lets out a
    RecursionError (``[[[[…]]]]``) and a ValueError (an integer past Python's 4300 digits)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=path) from None
    except RecursionError:
        raise ConfigError("not valid TOML: nested too deeply", path=path) from None
    except ValueError:
        raise ConfigError("not valid TOML: a number too long to read", path=path) from None


def _parse_env_value(text: str) -> Any:
    try:
        return _load_toml(f"v = {text}")["v"]
    except ConfigError:
        return text


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Nested dict of ``GROUNDWATCH__SECTION__KEY=value`` overrides."""
    return _env_overrides(environ)[0]


def env_name_for(key: str, environ: Mapping[str, str]) -> str | None:
    """The ``GROUNDWATCH__…`` variable in ``environ`` that set the dotted ``key`` (or a section
    holding it), or None when the key came from the file or its default."""
    try:
        names = _env_overrides(environ)[1]
    except ConfigError:  # a clash would have stopped load_config already
        return None
    parts = tuple(key.split("."))
    return next((name for path, name in names.items() if parts[:len(path)] == path), None)


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """The overrides, and which variable set each key (a dotted path as a tuple), so that an
    error in a value can name the variable rather than the file."""
    out: dict[str, Any] = {}
    names: dict[tuple[str, ...], str] = {}
    for name, text in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = tuple(p.lower() for p in name[len(ENV_PREFIX):].split("__") if p)
        if not parts:
            continue
        # GROUNDWATCH__BROKER=x beside GROUNDWATCH__BROKER__URL=y: one value cannot be both.
        clash = next((other for key, other in names.items()
                      if key != parts and (key[:len(parts)] == parts
                                           or parts[:len(key)] == key)), None)
        if clash is not None:
            raise ConfigError(f"conflicts with environment variable {clash}: one sets a "
                              f"section, the other a key inside it", key=".".join(parts),
                              env=name)
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _parse_env_value(text)
        names[parts] = name
    return out, names


def _env_culprit(loc: tuple[Any, ...], names: Mapping[tuple[str, ...], str],
                 raw: Mapping[str, Any]) -> str | None:
    """The environment variable behind a validation error at ``loc``, if one is."""
    path = tuple(str(p) for p in loc)
    for n in range(len(path), 0, -1):  # it set this value, or one holding it (a list, a table)
        if path[:n] in names:
            return names[path[:n]]
    # It created or replaced the table the error is about (an unknown section, say).
    inside = sorted(name for key, name in names.items() if key[:len(path)] == path)
    node: Any = raw
    for part in path:
        node = node.get(part) if isinstance(node, Mapping) else None
    return inside[0] if inside and not isinstance(node, Mapping) else None


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(err: Mapping[str, Any]) -> tuple[str, str]:
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
    msg = err.get("msg", "invalid")
    if err.get("type") == "extra_forbidden":
        msg = "unknown key"
    elif err.get("type") == "missing":
        msg = "required key is missing"
    inp = err.get("input")
    if err.get("type") not in ("extra_forbidden", "missing") and isinstance(inp, (str, int, float)):
        shown = "'***'" if any(s in loc for s in ("url", "salt")) else repr(inp)[:60]
        msg = f"{msg} (got {shown})"
    return loc, msg


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load and validate the config file, then apply environment overrides."""
    environ = os.environ if environ is None else environ
    if path is None:
        path = environ.get("GROUNDWATCH_CONFIG") or DEFAULT_CONFIG
    file = Path(path)
    shown = str(path)
    if "\x00" in shown:  # open() would raise ValueError
        raise ConfigError("cannot read: a NUL byte in the file name", path=shown)
    try:
        raw = _load_toml(file.read_text(encoding="utf-8"), shown)
    except FileNotFoundError:
        raise ConfigError("file not found", path=shown) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a file", path=shown) from None
    except OSError as exc:  # no permission, an I/O error
        raise ConfigError(f"cannot read: {exc.strerror or exc}", path=shown) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", path=shown) from None
    overrides, env_names = _env_overrides(environ)
    data = _merge(raw, overrides)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        key, msg = _describe(errors[0])
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        env = _env_culprit(tuple(errors[0].get("loc", ())), env_names, raw)
        raise ConfigError(msg + more, path=None if env else shown, key=key or None,
                          env=env) from None
    return config.model_copy(update={"path": str(file.resolve())})
