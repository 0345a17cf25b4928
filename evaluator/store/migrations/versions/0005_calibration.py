"""Calibration maps fitted from the judge's random share (or a labelled file).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

* ``gw_scores.calibrated`` / ``calibration``: the score after the map that applied, and the
  map's name (``judge#12``); null where none applied.
* ``gw_calibration_pairs``: per cheap scorer version, item and metric, the cheap score and the
  judge's value on the cascade's random share: what the maps are fitted from.
* ``gw_calibration_maps``: the fitted maps with their figures (pairs, band, ROC-AUC, ECE).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("gw_scores") as batch:
        batch.add_column(sa.Column("calibrated", sa.Double(), nullable=True))
        batch.add_column(sa.Column("calibration", sa.String(64), nullable=True))
    op.create_table(
        "gw_calibration_pairs",
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("scorer", sa.String(64), nullable=False),
        sa.Column("scorer_version", sa.String(64), nullable=False),
        sa.Column("judge", sa.String(200), nullable=False),
        sa.Column("route", sa.String(), nullable=False),
        sa.Column("cheap", sa.Double(), nullable=False),
        sa.Column("target", sa.Double(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", "metric", "scorer", "scorer_version",
                                name="pk_gw_calibration_pairs"),
    )
    op.create_index("ix_gw_calibration_pairs_scorer",
                    "gw_calibration_pairs", ["scorer", "scorer_version", "created_at"])
    op.create_index("ix_gw_calibration_pairs_created_at", "gw_calibration_pairs",
                    ["created_at"])
    op.create_table(
        "gw_calibration_maps",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("scorer", sa.String(64), nullable=False),
        sa.Column("scorer_version", sa.String(64), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("route", sa.String(), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("fitted_at", _ts(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("usable", sa.Boolean(), nullable=False),
        sa.Column("body", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                  nullable=False),
        sa.CheckConstraint("source IN ('judge', 'labels')", name="ck_gw_calibration_maps_source"),
        sa.PrimaryKeyConstraint("id", name="pk_gw_calibration_maps"),
    )
    op.create_index("ix_gw_calibration_maps_key", "gw_calibration_maps",
                    ["scorer", "scorer_version", "route", "metric", "fitted_at"])


def downgrade() -> None:
    op.drop_table("gw_calibration_maps")
    op.drop_table("gw_calibration_pairs")
    with op.batch_alter_table("gw_scores") as batch:
        batch.drop_column("calibration")
        batch.drop_column("calibrated")
