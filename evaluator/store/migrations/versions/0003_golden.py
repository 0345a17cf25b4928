"""The judge's golden set: baseline and newest score per item, and the run schedule.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

* ``gw_golden_scores``: per (judge version, request id, metric) the first value the judge gave
  (``baseline_value``, ``baseline_at``) and the newest (``last_value``, ``last_at``); the drift
  exported after each run is the mean distance between the two.
* ``gw_golden_runs``: per schedule name, when the golden set is due next (``next_at``) and when
  it last ran; a worker process runs it only after moving ``next_at`` on in one conditional
  UPDATE, so several processes run it once per interval between them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "gw_golden_scores",
        sa.Column("judge_version", sa.String(200), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("baseline_value", sa.Double(), nullable=False),
        sa.Column("baseline_at", _ts(), nullable=False),
        sa.Column("last_value", sa.Double(), nullable=False),
        sa.Column("last_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("judge_version", "request_id", "metric",
                                name="pk_gw_golden_scores"),
    )
    op.create_table(
        "gw_golden_runs",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("next_at", _ts(), nullable=False),
        sa.Column("last_run_at", _ts(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_gw_golden_runs"),
    )


def downgrade() -> None:
    op.drop_table("gw_golden_runs")
    op.drop_table("gw_golden_scores")
