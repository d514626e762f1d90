"""Aged positions speak the domain's phases; close retries and transition snapshots are stored.

The initial schema named aged phases after the old bot ('profit_close', 'market_close');
``core.domain.aged`` calls them GRACE / PROGRESSIVE / EMERGENCY (and NOT_AGED before and
after), and "in profit" is a close reason, not a phase. The CHECKs now allow exactly the
domain's values. The aged row also remembers its last close attempt (time and error) so a
failing close backs off instead of hammering the venue, and each transition keeps the
accepted loss and mark price it was decided at (seeds/002's history table).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

PHASES = "'grace', 'progressive', 'emergency'"
TRANSITION_PHASES = "'not_aged', 'grace', 'progressive', 'emergency'"


def upgrade() -> None:
    op.drop_constraint("ck_aged_phase", "aged_positions", type_="check")
    op.execute("UPDATE aged_positions SET phase = 'emergency' WHERE phase = 'market_close'")
    # 'profit_close' was a close in progress, not a time phase: the next evaluation derives
    # the real phase from the open time and records the transition.
    op.execute("UPDATE aged_positions SET phase = 'grace' WHERE phase = 'profit_close'")
    op.create_check_constraint("ck_aged_phase", "aged_positions", f"phase IN ({PHASES})")
    op.add_column(
        "aged_positions",
        sa.Column("last_close_attempt_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column("aged_positions", sa.Column("last_close_error", sa.Text(), nullable=True))
    op.add_column(
        "aged_position_transitions",
        sa.Column("accepted_loss_percent", sa.Numeric(precision=20, scale=8), nullable=True),
    )
    op.add_column(
        "aged_position_transitions",
        sa.Column("mark_price", sa.Numeric(precision=20, scale=8), nullable=True),
    )
    history = sa.table("aged_position_transitions", sa.column("from_phase"), sa.column("to_phase"))
    for old, new in (("market_close", "emergency"), ("profit_close", "grace")):
        for column in ("from_phase", "to_phase"):
            op.execute(history.update().where(history.c[column] == old).values({column: new}))
    op.create_check_constraint(
        "ck_aged_transition_phases",
        "aged_position_transitions",
        f"to_phase IN ({TRANSITION_PHASES}) "
        f"AND (from_phase IS NULL OR from_phase IN ({TRANSITION_PHASES}))",
    )


def downgrade() -> None:
    op.drop_constraint("ck_aged_transition_phases", "aged_position_transitions", type_="check")
    op.drop_column("aged_position_transitions", "mark_price")
    op.drop_column("aged_position_transitions", "accepted_loss_percent")
    op.drop_column("aged_positions", "last_close_error")
    op.drop_column("aged_positions", "last_close_attempt_at")
    op.drop_constraint("ck_aged_phase", "aged_positions", type_="check")
    op.execute("UPDATE aged_positions SET phase = 'market_close' WHERE phase = 'emergency'")
    op.create_check_constraint(
        "ck_aged_phase",
        "aged_positions",
        "phase IN ('profit_close', 'grace', 'progressive', 'market_close')",
    )
