"""Positions remember since when they have been without a live stop.

Protection (core/services/protection.py) sets ``positions.unprotected_since`` the first time
it finds an open position without a full stop on the exchange and clears it once one is
live again. Durable, so the "unprotected longer than N seconds" alert keeps counting across
worker restarts, and /health can count unprotected positions with one query. A partial
index keeps that query cheap: almost every row has it NULL.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "positions",
        sa.Column("unprotected_since", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_positions_unprotected_since",
        "positions",
        ["unprotected_since"],
        unique=False,
        postgresql_where=sa.text("unprotected_since IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_positions_unprotected_since", table_name="positions")
    op.drop_column("positions", "unprotected_since")
