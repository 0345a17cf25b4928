"""Source bookkeeping: ids read inside a lookback window; indexes for take time and rejections.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

* ``gw_source_reads``: the rows a source read (request id and log time: a second row with the
  same id is another entry; ``rows`` counts rows that share both), kept for the length of the
  source's lookback window, so that re-reading the window takes only rows committed late and
  counts nothing twice.
* ``gw_items.committed``: true once the cursor moved past the item (same transaction), so a
  row sent again before that (a crash, a failed enqueue) is told from a replayed one.
* ``gw_items (status, sampled_at)``: the oldest unscored item by take time (backlog age).
* ``gw_rejections (row_ref)``: ``groundwatch explain`` of a rejected row.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gw_source_reads",
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("log_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("source", "request_id", "log_timestamp",
                                name="pk_gw_source_reads"),
    )
    op.create_index("ix_gw_source_reads_source_log_timestamp", "gw_source_reads",
                    ["source", "log_timestamp"])
    # Items stored before this revision were sent by a sampler whose cursor moved on.
    op.add_column("gw_items", sa.Column("committed", sa.Boolean(), nullable=False,
                                        server_default=sa.false()))
    op.execute(sa.text("UPDATE gw_items SET committed = :yes").bindparams(yes=True))
    op.create_index("ix_gw_items_status_sampled_at", "gw_items", ["status", "sampled_at"])
    op.create_index("ix_gw_rejections_row_ref", "gw_rejections", ["row_ref"])


def downgrade() -> None:
    op.drop_index("ix_gw_rejections_row_ref", table_name="gw_rejections")
    op.drop_index("ix_gw_items_status_sampled_at", table_name="gw_items")
    with op.batch_alter_table("gw_items") as batch:
        batch.drop_column("committed")
    op.drop_index("ix_gw_source_reads_source_log_timestamp", table_name="gw_source_reads")
    op.drop_table("gw_source_reads")
