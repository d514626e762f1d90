"""Waves are claimed, resumed and expired; a signal opens at most one position.

``waves.claimed_at`` / ``progress_at`` / ``attempts`` make wave processing resumable: a wave
is claimed by a conditional UPDATE (``open -> processing``), every step that moves it on
stamps ``progress_at``, and a wave in ``processing`` without progress for a while is resumed
by the beat's dispatcher (``attempts`` bounds how often). A wave whose deadline passed long
ago without being processed becomes ``expired`` (its signals too) instead of trading stale
signals. ``uq_positions_signal`` lets the database refuse a second position for one signal,
whatever a re-run or a concurrent delivery does.

Revision ID: 0003
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("waves", sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("waves", sa.Column("progress_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("waves", sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
    op.drop_constraint("ck_waves_status", "waves", type_="check")
    op.create_check_constraint(
        "ck_waves_status", "waves", "status IN ('open', 'processing', 'completed', 'expired')"
    )
    op.create_index(
        "uq_positions_signal",
        "positions",
        ["signal_id"],
        unique=True,
        postgresql_where=sa.text("signal_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_positions_signal", table_name="positions")
    op.execute("UPDATE waves SET status = 'completed' WHERE status = 'expired'")
    op.drop_constraint("ck_waves_status", "waves", type_="check")
    op.create_check_constraint(
        "ck_waves_status", "waves", "status IN ('open', 'processing', 'completed')"
    )
    op.drop_column("waves", "attempts")
    op.drop_column("waves", "progress_at")
    op.drop_column("waves", "claimed_at")
