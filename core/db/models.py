"""The durable record, as SQLAlchemy 2 models.

The schema itself changes only through alembic migrations (``core/db/migrations/versions``);
these models mirror it for queries. What must never happen is enforced here by the database,
not by code: one non-terminal position per (exchange, symbol), status CHECKs, cascades from a
position to its trailing and aged state.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from core.domain.client_ids import seq_pattern
from core.domain.orders import ORDER_PURPOSES, ORDER_STATUSES
from core.domain.positions import NON_TERMINAL, PositionStatus

Money = Numeric(20, 8)

POSITION_STATUSES = tuple(s.value for s in PositionStatus)
STOP_SEQ_SQL = f"CAST(substring(client_order_id, '{seq_pattern('stop')}') AS BIGINT)"
"""The sequence number of a ``stop`` order's client id (NULL for an id not of that form)."""
NON_TERMINAL_SQL = ", ".join(f"'{s.value}'" for s in sorted(NON_TERMINAL))
SIGNAL_STATUSES = ("received", "selected", "filtered", "opened", "failed", "expired")
WAVE_STATUSES = ("open", "processing", "completed", "expired")
ALERT_STATUSES = ("pending", "sent", "failed", "suppressed")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    pass


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class Wave(Timestamped, Base):
    __tablename__ = "waves"
    __table_args__ = (
        UniqueConstraint("exchange", "window_start", name="uq_waves_exchange_window"),
        CheckConstraint(_in("status", WAVE_STATUSES), name="ck_waves_status"),
        Index("ix_waves_status_deadline", "status", "deadline"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    exchange: Mapped[str] = mapped_column(String(20))
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deadline: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(20), default="open")
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # claimed by a conditional UPDATE open -> processing; progress_at is stamped by every step
    # that moves the wave on, so a stalled one is found and resumed (core/services/waves.py)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    progress_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Signal(Base):
    __tablename__ = "signals"
    __table_args__ = (
        CheckConstraint("action IN ('BUY', 'SELL')", name="ck_signals_action"),
        CheckConstraint(_in("status", SIGNAL_STATUSES), name="ck_signals_status"),
        Index("ix_signals_wave", "wave_id"),
        Index("ix_signals_status", "status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    signal_id: Mapped[str] = mapped_column(String(100), unique=True)
    exchange: Mapped[str] = mapped_column(String(20))
    symbol: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(4))
    score_week: Mapped[Decimal] = mapped_column(Money)
    score_month: Mapped[Decimal] = mapped_column(Money)
    signal_ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    wave_id: Mapped[int | None] = mapped_column(ForeignKey("waves.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(20), default="received")
    outcome_reason: Mapped[str | None] = mapped_column(Text)
    correlation_id: Mapped[str] = mapped_column(String(64))
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class Position(Timestamped, Base):
    __tablename__ = "positions"
    __table_args__ = (
        CheckConstraint(_in("status", POSITION_STATUSES), name="ck_positions_status"),
        CheckConstraint("side IN ('long', 'short')", name="ck_positions_side"),
        CheckConstraint("quantity >= 0", name="ck_positions_quantity_nonneg"),
        # The rule the old bot broke 120-150 times a day: its index covered only 'active',
        # so a second opening slipped in while the first was still in an intermediate state.
        Index(
            "uq_positions_one_open_per_symbol",
            "exchange",
            "symbol",
            unique=True,
            postgresql_where=text(f"status IN ({NON_TERMINAL_SQL})"),
        ),
        Index("ix_positions_status", "status"),
        # a signal opens at most one position, whatever re-runs or concurrent deliveries do
        Index(
            "uq_positions_signal",
            "signal_id",
            unique=True,
            postgresql_where=text("signal_id IS NOT NULL"),
        ),
        Index("ix_positions_exchange_symbol_status", "exchange", "symbol", "status"),
        Index(
            "ix_positions_unprotected_since",
            "unprotected_since",
            postgresql_where=text("unprotected_since IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    exchange: Mapped[str] = mapped_column(String(20))
    symbol: Mapped[str] = mapped_column(String(40))
    side: Mapped[str] = mapped_column(String(5))
    status: Mapped[str] = mapped_column(String(20))
    quantity: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    requested_quantity: Mapped[Decimal | None] = mapped_column(Money)
    entry_price: Mapped[Decimal | None] = mapped_column(Money)
    stop_price: Mapped[Decimal | None] = mapped_column(Money)
    exit_price: Mapped[Decimal | None] = mapped_column(Money)
    realized_pnl: Mapped[Decimal | None] = mapped_column(Money)
    fees: Mapped[Decimal | None] = mapped_column(Money)
    leverage: Mapped[int | None] = mapped_column(Integer)
    signal_id: Mapped[int | None] = mapped_column(ForeignKey("signals.id", ondelete="SET NULL"))
    correlation_id: Mapped[str] = mapped_column(String(64))
    close_reason: Mapped[str | None] = mapped_column(String(40))
    opened_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    # the fencing token of the last lock holder that wrote this row (see core/locks.py)
    fence: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # how many times a worker has started work on this opening; bounds redelivery loops
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # when protection first found this position without a full live stop; cleared once one
    # is live again (core/services/protection.py). Durable so the unprotected-alert clock
    # survives restarts; /health counts the rows where it is set.
    unprotected_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Order(Timestamped, Base):
    """Every order the engine placed or meant to place, keyed by its deterministic client id."""

    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint(_in("purpose", ORDER_PURPOSES), name="ck_orders_purpose"),
        CheckConstraint(_in("status", ORDER_STATUSES), name="ck_orders_status"),
        CheckConstraint("side IN ('buy', 'sell')", name="ck_orders_side"),
        Index("ix_orders_position", "position_id"),
        Index("ix_orders_exchange_symbol_status", "exchange", "symbol", "status"),
        Index("ix_orders_exchange_order_id", "exchange_order_id"),
        # a move's newest stop by sequence (core/services/stop_rows.py), without a scan of
        # every stop the position ever had (migration 0010 creates it with this text)
        Index(
            "ix_orders_position_stop_seq",
            "position_id",
            text(STOP_SEQ_SQL),
            postgresql_where=text("purpose = 'stop'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    position_id: Mapped[int | None] = mapped_column(ForeignKey("positions.id", ondelete="CASCADE"))
    exchange: Mapped[str] = mapped_column(String(20))
    symbol: Mapped[str] = mapped_column(String(40))
    client_order_id: Mapped[str] = mapped_column(String(64), unique=True)
    exchange_order_id: Mapped[str | None] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(20))
    side: Mapped[str] = mapped_column(String(4))
    order_type: Mapped[str] = mapped_column(String(30))
    quantity: Mapped[Decimal] = mapped_column(Money)
    price: Mapped[Decimal | None] = mapped_column(Money)
    trigger_price: Mapped[Decimal | None] = mapped_column(Money)
    reduce_only: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(20), default="intent")
    filled_quantity: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    average_price: Mapped[Decimal | None] = mapped_column(Money)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class TrailingStop(Base):
    __tablename__ = "trailing_stops"
    __table_args__ = (
        CheckConstraint("state IN ('inactive', 'active')", name="ck_trailing_state"),
        CheckConstraint("owner IN ('trailing', 'protection')", name="ck_trailing_owner"),
    )

    position_id: Mapped[int] = mapped_column(
        ForeignKey("positions.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[str] = mapped_column(String(20), default="inactive")
    highest_price: Mapped[Decimal | None] = mapped_column(Money)
    lowest_price: Mapped[Decimal | None] = mapped_column(Money)
    current_stop: Mapped[Decimal | None] = mapped_column(Money)
    activation_price: Mapped[Decimal | None] = mapped_column(Money)
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    breakeven_done: Mapped[bool] = mapped_column(Boolean, default=False)
    update_count: Mapped[int] = mapped_column(Integer, default=0)
    last_update_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    owner: Mapped[str] = mapped_column(String(20), default="trailing")
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # a move the per-symbol rate limit deferred (migration 0004; core/services/trailing.py)
    pending_stop: Mapped[Decimal | None] = mapped_column(Money)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AgedPosition(Base):
    __tablename__ = "aged_positions"
    __table_args__ = (
        # the domain's phases (core.domain.aged.AgedPhase); migration 0006
        CheckConstraint("phase IN ('grace', 'progressive', 'emergency')", name="ck_aged_phase"),
    )

    position_id: Mapped[int] = mapped_column(
        ForeignKey("positions.id", ondelete="CASCADE"), primary_key=True
    )
    phase: Mapped[str] = mapped_column(String(20))
    target_price: Mapped[Decimal | None] = mapped_column(Money)
    accepted_loss_percent: Mapped[Decimal | None] = mapped_column(Money)
    detected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    close_attempts: Mapped[int] = mapped_column(Integer, default=0)
    # a failed close backs off from here (core/services/aged.py)
    last_close_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_close_error: Mapped[str | None] = mapped_column(Text)


class AgedPositionTransition(Base):
    """History of aged phases; kept after the aged row goes, hence keyed to the position."""

    __tablename__ = "aged_position_transitions"
    __table_args__ = (
        Index("ix_aged_transitions_position", "position_id", "created_at"),
        CheckConstraint(
            "to_phase IN ('not_aged', 'grace', 'progressive', 'emergency') AND (from_phase IS NULL"
            " OR from_phase IN ('not_aged', 'grace', 'progressive', 'emergency'))",
            name="ck_aged_transition_phases",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    position_id: Mapped[int] = mapped_column(ForeignKey("positions.id", ondelete="CASCADE"))
    from_phase: Mapped[str | None] = mapped_column(String(20))
    to_phase: Mapped[str] = mapped_column(String(20))
    target_price: Mapped[Decimal | None] = mapped_column(Money)
    accepted_loss_percent: Mapped[Decimal | None] = mapped_column(Money)
    mark_price: Mapped[Decimal | None] = mapped_column(Money)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        CheckConstraint(
            "severity IN ('debug', 'info', 'warning', 'error', 'critical')",
            name="ck_events_severity",
        ),
        Index("ix_events_created_at", "created_at"),
        Index("ix_events_symbol_created_at", "symbol", "created_at"),
        Index("ix_events_type_created_at", "type", "created_at"),
        Index("ix_events_correlation_id", "correlation_id"),
        Index("ix_events_position_id", "position_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.clock_timestamp()
    )
    type: Mapped[str] = mapped_column(String(60))
    severity: Mapped[str] = mapped_column(String(10), default="info")
    exchange: Mapped[str | None] = mapped_column(String(20))
    symbol: Mapped[str | None] = mapped_column(String(40))
    # no FK: events outlive anything they mention, and must never block a delete or insert
    position_id: Mapped[int | None] = mapped_column(BigInteger)
    order_id: Mapped[str | None] = mapped_column(String(64))
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)


class Alert(Base):
    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint(_in("status", ALERT_STATUSES), name="ck_alerts_status"),
        Index("ix_alerts_status", "status"),
        Index("ix_alerts_dedup_key_created_at", "dedup_key", "created_at"),
        # one alert per event (migration 0007): the outbox row is written with its event
        Index(
            "uq_alerts_event_id",
            "event_id",
            unique=True,
            postgresql_where=text("event_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id", ondelete="SET NULL"))
    severity: Mapped[str] = mapped_column(String(10))
    kind: Mapped[str] = mapped_column(String(60))
    message: Mapped[str] = mapped_column(Text)
    dedup_key: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # delivery state (migration 0007; core/services/alerts.py)
    suppressed_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default="[]")
    event: Mapped[Event | None] = relationship()


class Heartbeat(Base):
    """Last sign of life per component (beat, worker, ingest), for /health and diagnose."""

    __tablename__ = "heartbeats"

    component: Mapped[str] = mapped_column(String(80), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    info: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


HALT_SOURCES = ("operator", "auth", "maintenance")


class Halt(Base):
    """A stop on new openings (migration 0008; core/services/halts.py).

    In force while ``resumed_at`` is NULL; ``scope`` is a venue name or ``*`` for all.
    """

    __tablename__ = "halts"
    __table_args__ = (
        CheckConstraint(_in("source", HALT_SOURCES), name="ck_halts_source"),
        Index(
            "uq_halts_in_force",
            "source",
            "scope",
            unique=True,
            postgresql_where=text("resumed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    scope: Mapped[str] = mapped_column(String(20), default="*", server_default="*")
    source: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text)
    halted_by: Mapped[str] = mapped_column(String(120))
    halted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    resumed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resumed_by: Mapped[str | None] = mapped_column(String(120))


class SymbolSetting(Base):
    """Per-symbol overrides of trading values (migration 0009; core/services/symbol_settings.py).

    ``symbol`` is a venue symbol or ``*`` (the venue's default); a NULL column means "not
    overridden here": the venue default, then the environment, decide.
    """

    __tablename__ = "symbol_settings"
    __table_args__ = (UniqueConstraint("exchange", "symbol", name="uq_symbol_settings_key"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    exchange: Mapped[str] = mapped_column(String(20))
    symbol: Mapped[str] = mapped_column(String(40))
    stop_loss_percent: Mapped[Decimal | None] = mapped_column(Numeric(12, 6))
    trailing_activation_percent: Mapped[Decimal | None] = mapped_column(Numeric(12, 6))
    trailing_callback_percent: Mapped[Decimal | None] = mapped_column(Numeric(12, 6))
    trailing_breakeven_percent: Mapped[Decimal | None] = mapped_column(Numeric(12, 6))
    trailing_min_step_percent: Mapped[Decimal | None] = mapped_column(Numeric(12, 6))
    leverage: Mapped[int | None] = mapped_column(Integer)
    position_size_usdt: Mapped[Decimal | None] = mapped_column(Money)
    enabled: Mapped[bool | None] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    updated_by: Mapped[str | None] = mapped_column(String(120))
