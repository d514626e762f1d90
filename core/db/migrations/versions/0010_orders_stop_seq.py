"""An index on a position's ``stop`` orders by the sequence number in their client ids.

A trailing move needs the position's newest stop intent (core/services/stop_rows.py); without
this index PostgreSQL read and parsed every stop the position ever had, once per move. The
expression is ``core.db.models.STOP_SEQ_SQL``, written out here so this migration stays what
it was whatever the model becomes.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

STOP_SEQ = "CAST(substring(client_order_id, '^v[0-9]+-[0-9a-z]{1,10}-s([0-9]{1,18})$') AS BIGINT)"


def upgrade() -> None:
    op.create_index(
        "ix_orders_position_stop_seq",
        "orders",
        ["position_id", sa.text(STOP_SEQ)],
        postgresql_where=sa.text("purpose = 'stop'"),
    )


def downgrade() -> None:
    op.drop_index("ix_orders_position_stop_seq", table_name="orders")
