"""What the Binance paper account shows: position risk rows and the account's assets.

Why apart from the engine (sim/matching.py): the engine changes the account (orders, fills,
triggers); this module only reads it, in Binance USD-M's shapes, for ``positionRisk``,
``account`` / ``balance`` and the admin state (the Bybit dialect's: sim/bybit/views.py).
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from sim.orders import ZERO, Position, fmt, now_ms

if TYPE_CHECKING:
    from sim.matching import Engine

MAINT_MARGIN_RATE = Decimal("0.004")


def position_risk(engine: Engine, pos: Position, version: int) -> dict[str, object]:
    mark = engine.mark(pos.symbol)
    notional = pos.amount * mark
    initial = abs(notional) / pos.leverage
    row: dict[str, object] = {
        "symbol": pos.symbol,
        "positionSide": "BOTH",
        "positionAmt": fmt(pos.amount),
        "entryPrice": fmt(pos.entry_price),
        "breakEvenPrice": fmt(break_even(engine, pos)),
        "markPrice": fmt(mark),
        "unRealizedProfit": fmt(engine.unrealized(pos)),
        "liquidationPrice": fmt(liquidation(pos)),
        "isolatedMargin": fmt(initial if pos.margin_type == "isolated" else ZERO),
        "notional": fmt(notional),
        "isolatedWallet": fmt(initial if pos.margin_type == "isolated" else ZERO),
        "updateTime": pos.update_time,
    }
    if version == 2:
        row.update(
            marginType=pos.margin_type,
            isAutoAddMargin="false",
            leverage=str(pos.leverage),
            maxNotionalValue="1000000",
        )
    else:
        row.update(
            marginAsset="USDT",
            initialMargin=fmt(initial),
            maintMargin=fmt(abs(notional) * MAINT_MARGIN_RATE),
            positionInitialMargin=fmt(initial),
            openOrderInitialMargin="0",
            adl=0,
            bidNotional="0",
            askNotional="0",
        )
    return row


def break_even(engine: Engine, pos: Position) -> Decimal:
    if not pos.amount:
        return ZERO
    fee = pos.entry_price * engine.config.taker_fee * 2
    return pos.entry_price + fee if pos.amount > 0 else pos.entry_price - fee


def liquidation(pos: Position) -> Decimal:
    if not pos.amount:
        return ZERO
    margin = Decimal(1) / pos.leverage - MAINT_MARGIN_RATE
    factor = 1 - margin if pos.amount > 0 else 1 + margin
    return (pos.entry_price * factor).quantize(Decimal("0.00000001"))


def account_assets(engine: Engine) -> dict[str, object]:
    upnl = sum((engine.unrealized(p) for p in engine.positions.values()), ZERO)
    initial = sum((engine.position_margin(p) for p in engine.positions.values()), ZERO)
    order_margin = engine.order_margin()
    available = engine.available()
    return {
        "asset": "USDT",
        "walletBalance": fmt(engine.wallet),
        "unrealizedProfit": fmt(upnl),
        "marginBalance": fmt(engine.wallet + upnl),
        "maintMargin": fmt(initial * MAINT_MARGIN_RATE * 20),
        "initialMargin": fmt(initial + order_margin),
        "positionInitialMargin": fmt(initial),
        "openOrderInitialMargin": fmt(order_margin),
        "crossWalletBalance": fmt(engine.wallet),
        "crossUnPnl": fmt(upnl),
        "availableBalance": fmt(available),
        "maxWithdrawAmount": fmt(max(ZERO, available)),
        "marginAvailable": True,
        "updateTime": now_ms(),
    }
