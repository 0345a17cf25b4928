"""The store's tables, as SQLAlchemy Core metadata.

Every table is prefixed ``gw_`` (and Alembic's version table is ``gw_alembic_version``) so that
groundwatch can live in the watched app's own database without touching its tables.

The migrations in ``migrations/versions`` create exactly these tables; a test compares the two.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

VERSION_TABLE = "gw_alembic_version"

ITEM_STATUSES = ("queued", "scored", "failed")
OUTCOMES = ("ok", "not_applicable", "error")

# Deterministic constraint names, so later migrations can refer to them on every backend.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so values are stored as naive
    UTC text (which sorts and compares correctly) and come back with ``tzinfo=UTC``. Naive
    datetimes are refused rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given to the store; "
                             "pass a timezone-aware (UTC) datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def json_type(*, none_as_null: bool = False) -> JSON:
    """JSON on SQLite, JSONB on PostgreSQL."""
    return JSON(none_as_null=none_as_null).with_variant(
        JSONB(none_as_null=none_as_null), "postgresql"
    )


items = Table(
    "gw_items",
    metadata,
    Column("request_id", String(200), primary_key=True),
    Column("source", String(64), nullable=False),
    Column("log_timestamp", UTCDateTime(), nullable=False),
    Column("route", String(), nullable=True),
    Column("model", String(), nullable=True),
    Column("rule", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("sampled_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("payload", json_type(), nullable=False),
    # Set in the transaction that moves the source's cursor past the item: until then the
    # sampler may send the same row again (a crash, a failed enqueue) and count it then.
    Column("committed", Boolean(), nullable=False, server_default=false()),
    CheckConstraint("status IN ('queued', 'scored', 'failed')", name="status"),
    Index(None, "status", "log_timestamp"),
    Index(None, "status", "sampled_at"),
)

scores = Table(
    "gw_scores",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(200), nullable=False),
    Column("metric", String(64), nullable=False),
    Column("scorer", String(64), nullable=False),
    Column("scorer_version", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("value", Double(), nullable=True),
    Column("reason", Text(), nullable=True),
    Column("route", String(), nullable=True),
    Column("model", String(), nullable=True),
    Column("log_timestamp", UTCDateTime(), nullable=False),
    Column("scored_at", UTCDateTime(), nullable=False),
    # The value after the calibration map that applied (evaluator/calibration), and the map's
    # name (``judge#12``); both null where no map applied (``value`` is then what counts).
    Column("calibrated", Double(), nullable=True),
    Column("calibration", String(64), nullable=True),
    UniqueConstraint("request_id", "metric", "scorer", "scorer_version"),
    CheckConstraint("outcome IN ('ok', 'not_applicable', 'error')", name="outcome"),
    CheckConstraint("(outcome = 'ok') = (value IS NOT NULL)", name="value_iff_ok"),
    Index(None, "scored_at"),
    Index(None, "route", "metric"),
)

explanations = Table(
    "gw_explanations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(200), nullable=False),
    Column("scorer", String(64), nullable=False),
    Column("scorer_version", String(64), nullable=False),
    Column("body", json_type(), nullable=False),
    Column("detections", json_type(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    UniqueConstraint("request_id", "scorer", "scorer_version"),
    Index(None, "created_at"),
)

failures = Table(
    "gw_failures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(200), nullable=True),
    Column("stage", String(32), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("reason", Text(), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("task_id", String(200), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Index(None, "request_id"),
    Index(None, "created_at"),
)

cursors = Table(
    "gw_cursors",
    metadata,
    Column("source", String(64), primary_key=True),
    Column("position", json_type(none_as_null=True), nullable=True),
    Column("lock_owner", String(200), nullable=True),
    Column("lock_expires_at", UTCDateTime(), nullable=True),
    Column("updated_at", UTCDateTime(), nullable=False),
    # A backfill that ran to its end asks the live sampler to count its missed rows afresh
    # (Ledger.request_recount); cleared with the cursor that carries the new count.
    Column("recount_requested_at", UTCDateTime(), nullable=True),
    Column("recount_requested_by", String(200), nullable=True),
)

rejections = Table(
    "gw_rejections",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(64), nullable=False),
    Column("row_ref", String(), nullable=False),
    Column("field", String(64), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("detail", Text(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index(None, "created_at"),
    Index(None, "row_ref"),
)

# The ids a source read inside its lookback window (see evaluator/sources/sql.py), forgotten
# once they fall behind it.
source_reads = Table(
    "gw_source_reads",
    metadata,
    Column("source", String(64), primary_key=True),
    Column("request_id", String(200), primary_key=True),
    Column("log_timestamp", UTCDateTime(), primary_key=True),
    Column("rows", Integer, nullable=False),  # rows read with this id and time (usually 1)
    Index(None, "source", "log_timestamp"),
)

# The judge's golden set (evaluator/judge/golden.py): per judge version, item and metric, the
# first value the judge gave (the baseline) and the newest. A few hundred rows at most, so the
# retention purge leaves them alone: purging would silently reset every baseline.
golden_scores = Table(
    "gw_golden_scores",
    metadata,
    Column("judge_version", String(200), primary_key=True),
    Column("request_id", String(200), primary_key=True),
    Column("metric", String(64), primary_key=True),
    Column("baseline_value", Double(), nullable=False),
    Column("baseline_at", UTCDateTime(), nullable=False),
    Column("last_value", Double(), nullable=False),
    Column("last_at", UTCDateTime(), nullable=False),
)

# When the golden set is due next, per schedule name: the row every worker process races for
# (Store.claim_golden_run), so that one of them runs it per interval.
golden_runs = Table(
    "gw_golden_runs",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("next_at", UTCDateTime(), nullable=False),
    Column("last_run_at", UTCDateTime(), nullable=True),
)

# The calibration's pairs (evaluator/calibration): per cheap scorer version, item and metric,
# the cheap score and what it should have been -- the judge's value on an item of the
# cascade's random share. Purged with the scores (by created_at).
calibration_pairs = Table(
    "gw_calibration_pairs",
    metadata,
    Column("request_id", String(200), primary_key=True),
    Column("metric", String(64), primary_key=True),
    Column("scorer", String(64), primary_key=True),
    Column("scorer_version", String(64), primary_key=True),
    Column("judge", String(200), nullable=False),
    Column("route", String(), nullable=False),
    Column("cheap", Double(), nullable=False),
    Column("target", Double(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_gw_calibration_pairs_scorer", "scorer", "scorer_version", "created_at"),
    Index(None, "created_at"),
)

# The fitted maps, per cheap scorer version, route and metric: the newest usable one applies.
# A few of each key are kept (CalibrationStore.KEEP_PER_KEY); the retention purge leaves them.
calibration_maps = Table(
    "gw_calibration_maps",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("scorer", String(64), nullable=False),
    Column("scorer_version", String(64), nullable=False),
    Column("source", String(16), nullable=False),
    Column("route", String(), nullable=False),
    Column("metric", String(64), nullable=False),
    Column("fitted_at", UTCDateTime(), nullable=False),
    Column("n", Integer, nullable=False),
    Column("usable", Boolean(), nullable=False),
    Column("body", json_type(), nullable=False),
    CheckConstraint("source IN ('judge', 'labels')", name="source"),
    Index("ix_gw_calibration_maps_key", "scorer", "scorer_version", "route", "metric",
          "fitted_at"),
)
