"""Initial schema: signals, waves, positions, orders, trailing and aged state, events, alerts.

The partial unique index uq_positions_one_open_per_symbol covers every non-terminal status;
the fencing_token_seq sequence issues lock fencing tokens (core/locks.py).

Revision ID: 0001
Revises: 
Create Date: 2026-11-28 04:17:29.258461
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute('CREATE SEQUENCE fencing_token_seq START 1')
    op.create_table('events',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('clock_timestamp()'), nullable=False),
    sa.Column('type', sa.String(length=60), nullable=False),
    sa.Column('severity', sa.String(length=10), nullable=False),
    sa.Column('exchange', sa.String(length=20), nullable=True),
    sa.Column('symbol', sa.String(length=40), nullable=True),
    sa.Column('position_id', sa.BigInteger(), nullable=True),
    sa.Column('order_id', sa.String(length=64), nullable=True),
    sa.Column('correlation_id', sa.String(length=64), nullable=True),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.CheckConstraint("severity IN ('debug', 'info', 'warning', 'error', 'critical')", name='ck_events_severity'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_events_correlation_id', 'events', ['correlation_id'], unique=False)
    op.create_index('ix_events_created_at', 'events', ['created_at'], unique=False)
    op.create_index('ix_events_position_id', 'events', ['position_id'], unique=False)
    op.create_index('ix_events_symbol_created_at', 'events', ['symbol', 'created_at'], unique=False)
    op.create_index('ix_events_type_created_at', 'events', ['type', 'created_at'], unique=False)
    op.create_table('heartbeats',
    sa.Column('component', sa.String(length=80), nullable=False),
    sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('info', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.PrimaryKeyConstraint('component')
    )
    op.create_table('waves',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('exchange', sa.String(length=20), nullable=False),
    sa.Column('window_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('window_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deadline', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('stats', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('open', 'processing', 'completed')", name='ck_waves_status'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('exchange', 'window_start', name='uq_waves_exchange_window')
    )
    op.create_index('ix_waves_status_deadline', 'waves', ['status', 'deadline'], unique=False)
    op.create_table('alerts',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('event_id', sa.BigInteger(), nullable=True),
    sa.Column('severity', sa.String(length=10), nullable=False),
    sa.Column('kind', sa.String(length=60), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('dedup_key', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'sent', 'failed', 'suppressed')", name='ck_alerts_status'),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_alerts_dedup_key_created_at', 'alerts', ['dedup_key', 'created_at'], unique=False)
    op.create_index('ix_alerts_status', 'alerts', ['status'], unique=False)
    op.create_table('signals',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('signal_id', sa.String(length=100), nullable=False),
    sa.Column('exchange', sa.String(length=20), nullable=False),
    sa.Column('symbol', sa.String(length=40), nullable=False),
    sa.Column('action', sa.String(length=4), nullable=False),
    sa.Column('score_week', sa.Numeric(precision=20, scale=8), nullable=False),
    sa.Column('score_month', sa.Numeric(precision=20, scale=8), nullable=False),
    sa.Column('signal_ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('wave_id', sa.BigInteger(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('outcome_reason', sa.Text(), nullable=True),
    sa.Column('correlation_id', sa.String(length=64), nullable=False),
    sa.Column('raw', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.CheckConstraint("action IN ('BUY', 'SELL')", name='ck_signals_action'),
    sa.CheckConstraint("status IN ('received', 'selected', 'filtered', 'opened', 'failed', 'expired')", name='ck_signals_status'),
    sa.ForeignKeyConstraint(['wave_id'], ['waves.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('signal_id')
    )
    op.create_index('ix_signals_status', 'signals', ['status'], unique=False)
    op.create_index('ix_signals_wave', 'signals', ['wave_id'], unique=False)
    op.create_table('positions',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('exchange', sa.String(length=20), nullable=False),
    sa.Column('symbol', sa.String(length=40), nullable=False),
    sa.Column('side', sa.String(length=5), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('quantity', sa.Numeric(precision=20, scale=8), nullable=False),
    sa.Column('requested_quantity', sa.Numeric(precision=20, scale=8), nullable=True),
    sa.Column('entry_price', sa.Numeric(precision=20, scale=8), nullable=True),
    sa.Column('stop_price', sa.Numeric(precision=20, scale=8), nullable=True),
    sa.Column('exit_price', sa.Numeric(precision=20, scale=8), nullable=True),
    sa.Column('realized_pnl', sa.Numeric(precision=20, scale=8), nullable=True),
    sa.Column('fees', sa.Numeric(precision=20, scale=8), nullable=True),
    sa.Column('leverage', sa.Integer(), nullable=True),
    sa.Column('signal_id', sa.BigInteger(), nullable=True),
    sa.Column('correlation_id', sa.String(length=64), nullable=False),
    sa.Column('close_reason', sa.String(length=40), nullable=True),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('fence', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("side IN ('long', 'short')", name='ck_positions_side'),
    sa.CheckConstraint("status IN ('pending_entry', 'entry_placed', 'pending_sl', 'active', 'closing', 'closed', 'failed', 'rolled_back')", name='ck_positions_status'),
    sa.CheckConstraint('quantity >= 0', name='ck_positions_quantity_nonneg'),
    sa.ForeignKeyConstraint(['signal_id'], ['signals.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_positions_exchange_symbol_status', 'positions', ['exchange', 'symbol', 'status'], unique=False)
    op.create_index('ix_positions_status', 'positions', ['status'], unique=False)
    op.create_index('uq_positions_one_open_per_symbol', 'positions', ['exchange', 'symbol'], unique=True, postgresql_where=sa.text("status IN ('active', 'closing', 'entry_placed', 'pending_entry', 'pending_sl')"))
    op.create_table('aged_position_transitions',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('position_id', sa.BigInteger(), nullable=False),
    sa.Column('from_phase', sa.String(length=20), nullable=True),
    sa.Column('to_phase', sa.String(length=20), nullable=False),
    sa.Column('target_price', sa.Numeric(precision=20, scale=8), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['position_id'], ['positions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_aged_transitions_position', 'aged_position_transitions', ['position_id', 'created_at'], unique=False)
    op.create_table('aged_positions',
    sa.Column('position_id', sa.BigInteger(), nullable=False),
    sa.Column('phase', sa.String(length=20), nullable=False),
    sa.Column('target_price', sa.Numeric(precision=20, scale=8), nullable=True),
    sa.Column('accepted_loss_percent', sa.Numeric(precision=20, scale=8), nullable=True),
    sa.Column('detected_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('close_attempts', sa.Integer(), nullable=False),
    sa.CheckConstraint("phase IN ('profit_close', 'grace', 'progressive', 'market_close')", name='ck_aged_phase'),
    sa.ForeignKeyConstraint(['position_id'], ['positions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('position_id')
    )
    op.create_table('orders',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('position_id', sa.BigInteger(), nullable=True),
    sa.Column('exchange', sa.String(length=20), nullable=False),
    sa.Column('symbol', sa.String(length=40), nullable=False),
    sa.Column('client_order_id', sa.String(length=64), nullable=False),
    sa.Column('exchange_order_id', sa.String(length=64), nullable=True),
    sa.Column('purpose', sa.String(length=20), nullable=False),
    sa.Column('side', sa.String(length=4), nullable=False),
    sa.Column('order_type', sa.String(length=30), nullable=False),
    sa.Column('quantity', sa.Numeric(precision=20, scale=8), nullable=False),
    sa.Column('price', sa.Numeric(precision=20, scale=8), nullable=True),
    sa.Column('trigger_price', sa.Numeric(precision=20, scale=8), nullable=True),
    sa.Column('reduce_only', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('filled_quantity', sa.Numeric(precision=20, scale=8), nullable=False),
    sa.Column('average_price', sa.Numeric(precision=20, scale=8), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("purpose IN ('entry', 'stop', 'close', 'rollback', 'emergency', 'protection', 'aged')", name='ck_orders_purpose'),
    sa.CheckConstraint("side IN ('buy', 'sell')", name='ck_orders_side'),
    sa.CheckConstraint("status IN ('intent', 'open', 'filled', 'partially_filled', 'cancelled', 'rejected', 'expired', 'unknown')", name='ck_orders_status'),
    sa.ForeignKeyConstraint(['position_id'], ['positions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('client_order_id')
    )
    op.create_index('ix_orders_exchange_order_id', 'orders', ['exchange_order_id'], unique=False)
    op.create_index('ix_orders_exchange_symbol_status', 'orders', ['exchange', 'symbol', 'status'], unique=False)
    op.create_index('ix_orders_position', 'orders', ['position_id'], unique=False)
    op.create_table('trailing_stops',
    sa.Column('position_id', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('highest_price', sa.Numeric(precision=20, scale=8), nullable=True),
    sa.Column('lowest_price', sa.Numeric(precision=20, scale=8), nullable=True),
    sa.Column('current_stop', sa.Numeric(precision=20, scale=8), nullable=True),
    sa.Column('activation_price', sa.Numeric(precision=20, scale=8), nullable=True),
    sa.Column('activated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('breakeven_done', sa.Boolean(), nullable=False),
    sa.Column('update_count', sa.Integer(), nullable=False),
    sa.Column('last_update_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('owner', sa.String(length=20), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("owner IN ('trailing', 'protection')", name='ck_trailing_owner'),
    sa.CheckConstraint("state IN ('inactive', 'active')", name='ck_trailing_state'),
    sa.ForeignKeyConstraint(['position_id'], ['positions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('position_id')
    )


def downgrade() -> None:
    op.execute('DROP SEQUENCE fencing_token_seq')
    op.drop_table('trailing_stops')
    op.drop_index('ix_orders_position', table_name='orders')
    op.drop_index('ix_orders_exchange_symbol_status', table_name='orders')
    op.drop_index('ix_orders_exchange_order_id', table_name='orders')
    op.drop_table('orders')
    op.drop_table('aged_positions')
    op.drop_index('ix_aged_transitions_position', table_name='aged_position_transitions')
    op.drop_table('aged_position_transitions')
    op.drop_index('uq_positions_one_open_per_symbol', table_name='positions', postgresql_where=sa.text("status IN ('active', 'closing', 'entry_placed', 'pending_entry', 'pending_sl')"))
    op.drop_index('ix_positions_status', table_name='positions')
    op.drop_index('ix_positions_exchange_symbol_status', table_name='positions')
    op.drop_table('positions')
    op.drop_index('ix_signals_wave', table_name='signals')
    op.drop_index('ix_signals_status', table_name='signals')
    op.drop_table('signals')
    op.drop_index('ix_alerts_status', table_name='alerts')
    op.drop_index('ix_alerts_dedup_key_created_at', table_name='alerts')
    op.drop_table('alerts')
    op.drop_index('ix_waves_status_deadline', table_name='waves')
    op.drop_table('waves')
    op.drop_table('heartbeats')
    op.drop_index('ix_events_type_created_at', table_name='events')
    op.drop_index('ix_events_symbol_created_at', table_name='events')
    op.drop_index('ix_events_position_id', table_name='events')
    op.drop_index('ix_events_created_at', table_name='events')
    op.drop_index('ix_events_correlation_id', table_name='events')
    op.drop_table('events')
