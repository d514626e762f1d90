"""Halts: the operator's (or the engine's) stop on new openings, durable and shared.

A halt is a row, not a flag in one process's memory: every worker, the beat and the ingest
read the same table, a restart keeps it, and the row says who stopped openings, when and
why. ``resumed_at`` NULL means in force. ``scope`` is the venue it applies to (``*`` for
all); ``source`` says where it came from (``operator``, ``auth`` for a refused key,
``maintenance`` for a venue that is down, lifted by itself once the venue answers again).

The partial unique index makes "at most one halt in force per (source, scope)" a fact of the
database, so a second ``vigil halt`` or a second guardian that sees a revoked key at the same
moment adds nothing (``INSERT ... ON CONFLICT DO NOTHING``).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "halts",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("scope", sa.String(20), nullable=False, server_default="*"),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("halted_by", sa.String(120), nullable=False),
        sa.Column(
            "halted_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("resumed_at", sa.DateTime(timezone=True)),
        sa.Column("resumed_by", sa.String(120)),
        sa.CheckConstraint(
            "source IN ('operator', 'auth', 'maintenance')", name="ck_halts_source"
        ),
    )
    op.create_index(
        "uq_halts_in_force",
        "halts",
        ["source", "scope"],
        unique=True,
        postgresql_where=sa.text("resumed_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_halts_in_force", table_name="halts")
    op.drop_table("halts")
