"""Alerts are an outbox: one row per alerting event, delivered per channel with backoff.

``record()`` adds the alert row in the event's own transaction (core/events.py), so an
alerting event and its alert exist together or not at all; the partial unique index makes
"one alert per event" a fact of the database. Delivery (core/services/alerts.py) needs to
remember which channels already have an alert (a webhook that succeeded is not called again
when Telegram failed), when the next try is due, and how many later duplicates it stood for.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "alerts",
        sa.Column("suppressed_count", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column("alerts", sa.Column("next_attempt_at", sa.DateTime(timezone=True)))
    op.add_column(
        "alerts",
        sa.Column(
            "delivered",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
    )
    op.create_index(
        "uq_alerts_event_id",
        "alerts",
        ["event_id"],
        unique=True,
        postgresql_where=sa.text("event_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_alerts_event_id", table_name="alerts")
    op.drop_column("alerts", "delivered")
    op.drop_column("alerts", "next_attempt_at")
    op.drop_column("alerts", "suppressed_count")
