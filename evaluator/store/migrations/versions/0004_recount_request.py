"""A backfill's request that the live sampler count its missed rows afresh.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

* ``gw_cursors.recount_requested_at`` / ``recount_requested_by``: set on the live source's row
  by a backfill that ran to its end (``groundwatch backfill``). The backfill cannot write the
  live cursor (the live sampler holds its lock and overwrites it), so it leaves this request;
  the live sampler's next step makes the source count what it has read afresh, and clears the
  request in the transaction that stores the cursor carrying the new count.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("gw_cursors") as batch:
        batch.add_column(sa.Column("recount_requested_at", sa.DateTime(timezone=True),
                                   nullable=True))
        batch.add_column(sa.Column("recount_requested_by", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gw_cursors") as batch:
        batch.drop_column("recount_requested_by")
        batch.drop_column("recount_requested_at")
