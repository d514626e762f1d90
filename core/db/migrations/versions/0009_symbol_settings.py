"""Per-symbol settings: overrides of stop-loss, trailing, leverage, size and enabled.

One row per (exchange, symbol); ``symbol`` ``*`` is the venue's default. Every value column
is nullable: NULL means "not overridden at this level", so precedence (symbol, then venue
default, then environment) is a plain merge of non-NULL columns.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "symbol_settings",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("exchange", sa.String(20), nullable=False),
        sa.Column("symbol", sa.String(40), nullable=False),
        sa.Column("stop_loss_percent", sa.Numeric(12, 6)),
        sa.Column("trailing_activation_percent", sa.Numeric(12, 6)),
        sa.Column("trailing_callback_percent", sa.Numeric(12, 6)),
        sa.Column("trailing_breakeven_percent", sa.Numeric(12, 6)),
        sa.Column("trailing_min_step_percent", sa.Numeric(12, 6)),
        sa.Column("leverage", sa.Integer()),
        sa.Column("position_size_usdt", sa.Numeric(20, 8)),
        sa.Column("enabled", sa.Boolean()),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("updated_by", sa.String(120)),
        sa.UniqueConstraint("exchange", "symbol", name="uq_symbol_settings_key"),
    )


def downgrade() -> None:
    op.drop_table("symbol_settings")
