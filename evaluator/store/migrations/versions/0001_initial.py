"""Initial store: items, scores, explanations, failures, cursors, rejections.

Revision ID: 0001
Revises:
Create Date: 2026-01-01

Types are spelled out here rather than imported from ``models`` so that this revision keeps
describing the schema it created even after the models move on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json(*, none_as_null: bool = False) -> sa.JSON:
    return sa.JSON(none_as_null=none_as_null).with_variant(
        postgresql.JSONB(none_as_null=none_as_null), "postgresql"
    )


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "gw_items",
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("log_timestamp", _ts(), nullable=False),
        sa.Column("route", sa.String(), nullable=True),
        sa.Column("model", sa.String(), nullable=True),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("sampled_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name="pk_gw_items"),
        sa.CheckConstraint("status IN ('queued', 'scored', 'failed')",
                           name="ck_gw_items_status"),
    )
    op.create_index("ix_gw_items_status_log_timestamp", "gw_items", ["status", "log_timestamp"])

    op.create_table(
        "gw_scores",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("scorer", sa.String(64), nullable=False),
        sa.Column("scorer_version", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("route", sa.String(), nullable=True),
        sa.Column("model", sa.String(), nullable=True),
        sa.Column("log_timestamp", _ts(), nullable=False),
        sa.Column("scored_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_gw_scores"),
        sa.UniqueConstraint("request_id", "metric", "scorer", "scorer_version",
                            name="uq_gw_scores_request_id_metric_scorer_scorer_version"),
        sa.CheckConstraint("outcome IN ('ok', 'not_applicable', 'error')",
                           name="ck_gw_scores_outcome"),
        sa.CheckConstraint("(outcome = 'ok') = (value IS NOT NULL)",
                           name="ck_gw_scores_value_iff_ok"),
    )
    op.create_index("ix_gw_scores_scored_at", "gw_scores", ["scored_at"])
    op.create_index("ix_gw_scores_route_metric", "gw_scores", ["route", "metric"])

    op.create_table(
        "gw_explanations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("scorer", sa.String(64), nullable=False),
        sa.Column("scorer_version", sa.String(64), nullable=False),
        sa.Column("body", _json(), nullable=False),
        sa.Column("detections", _json(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_gw_explanations"),
        sa.UniqueConstraint("request_id", "scorer", "scorer_version",
                            name="uq_gw_explanations_request_id_scorer_scorer_version"),
    )
    op.create_index("ix_gw_explanations_created_at", "gw_explanations", ["created_at"])

    op.create_table(
        "gw_failures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(200), nullable=True),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.String(200), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_gw_failures"),
    )
    op.create_index("ix_gw_failures_request_id", "gw_failures", ["request_id"])
    op.create_index("ix_gw_failures_created_at", "gw_failures", ["created_at"])

    op.create_table(
        "gw_cursors",
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("position", _json(none_as_null=True), nullable=True),
        sa.Column("lock_owner", sa.String(200), nullable=True),
        sa.Column("lock_expires_at", _ts(), nullable=True),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("source", name="pk_gw_cursors"),
    )

    op.create_table(
        "gw_rejections",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("row_ref", sa.String(), nullable=False),
        sa.Column("field", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_gw_rejections"),
    )
    op.create_index("ix_gw_rejections_created_at", "gw_rejections", ["created_at"])


def downgrade() -> None:
    for table in ("gw_rejections", "gw_cursors", "gw_failures", "gw_explanations", "gw_scores",
                  "gw_items"):
        op.drop_table(table)
