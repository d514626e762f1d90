"""Trailing stops remember the move the rate limit deferred.

``trailing_stops.pending_stop`` is the stop a decision wanted but the per-symbol rate limit
held back (``core.domain.trailing.TrailingState.pending_stop``). Durable for two reasons: the
band published for the ingest must know a move is due at ``last_update_at + interval`` (so
the first tick after that wakes the price task), and the "rate limited" event is written once
per deferred stop rather than on every tick of the interval.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "trailing_stops",
        sa.Column("pending_stop", sa.Numeric(20, 8), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("trailing_stops", "pending_stop")
