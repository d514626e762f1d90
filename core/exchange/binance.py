"""Binance USD-M, as the adapter speaks it through ccxt's ``binanceusdm``.

- Conditional orders (stops) live in Binance's algo-order service; ccxt routes them there
  when ``trigger=True`` is passed, so every stop call here passes it. Plain order endpoints
  never see them.
- Filters come from the venue's own ``PRICE_FILTER`` / ``LOT_SIZE`` / ``MARKET_LOT_SIZE``.
- Open orders: two calls (regular, then algo), any count; positions: one call.
- "No need to change margin type" (-4046) is success.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from core.exchange.dialect import Dialect, MarketFilters
from core.exchange.errors import OrderNotFound
from core.exchange.parsing import dec, dec0, first_nonzero, truthy, ts
from core.exchange.types import OrderSnapshot, PositionSnapshot, StopRequest, TradeSnapshot

STOP_TYPES = {"stop_market", "take_profit_market", "stop", "take_profit", "trailing_stop_market"}
MARGIN_UNCHANGED = -4046


class BinanceDialect(Dialect):
    def market_filters(self, market: dict[str, Any]) -> MarketFilters:
        filters = {f.get("filterType"): f for f in market.get("info", {}).get("filters", [])}
        return MarketFilters(
            tick_size=dec(filters.get("PRICE_FILTER", {}).get("tickSize")),
            step_size=dec(filters.get("LOT_SIZE", {}).get("stepSize")),
            market_max_qty=dec(filters.get("MARKET_LOT_SIZE", {}).get("maxQty")),
        )

    def setup(self, symbol: str, leverage: int, margin_mode: str) -> None:
        unified = self.venue.unified(symbol)
        self.set_unless_already(MARGIN_UNCHANGED, self.client.set_margin_mode, margin_mode, unified)
        self.venue.call(self.client.set_leverage, leverage, unified, mutating=True)

    def fetch_mark(self, unified: str) -> dict[str, Any]:
        return self.client.fetch_mark_price(unified)

    def fetch_marks(self) -> dict[str, dict[str, Any]]:
        return self.client.fetch_mark_prices()

    def create_market_order(
        self, symbol: str, side: str, quantity: Decimal, client_id: str, reduce_only: bool
    ) -> OrderSnapshot:
        params: dict[str, Any] = {"newClientOrderId": client_id}
        if reduce_only:
            params["reduceOnly"] = True
        raw = self.venue.call(
            self.client.create_order,
            self.venue.unified(symbol),
            "market",
            side,
            float(quantity),
            None,
            params,
            mutating=True,
        )
        return self.parse_order(raw, symbol)

    def create_stop(self, stop: StopRequest) -> OrderSnapshot:
        params: dict[str, Any] = {
            "stopPrice": float(stop.trigger_price),
            "workingType": "MARK_PRICE",
            "newClientOrderId": stop.client_id,
        }
        if stop.close_position:
            params["closePosition"] = True
        else:
            params["reduceOnly"] = True
        raw = self.venue.call(
            self.client.create_order,
            self.venue.unified(stop.symbol),
            "STOP_MARKET",
            stop.side,
            None if stop.close_position else float(stop.quantity),
            None,
            params,
            mutating=True,
        )
        return self.parse_order(raw, stop.symbol, conditional=True)

    def fetch_order(
        self,
        symbol: str,
        *,
        client_id: str | None = None,
        order_id: str | None = None,
        conditional: bool = False,
    ) -> OrderSnapshot | None:
        params: dict[str, Any] = {"clientOrderId": client_id} if client_id else {}
        if conditional:
            params["trigger"] = True
        try:
            raw = self.venue.call(
                self.client.fetch_order, order_id, self.venue.unified(symbol), params
            )
        except OrderNotFound:
            return None
        return self.parse_order(raw, symbol, conditional=conditional)

    def cancel_order(self, symbol: str, order_id: str, conditional: bool) -> bool:
        params: dict[str, Any] = {"trigger": True} if conditional else {}
        try:
            self.venue.call(
                self.client.cancel_order,
                order_id,
                self.venue.unified(symbol),
                params,
                mutating=True,
            )
        except OrderNotFound:
            return False
        return True

    def open_orders(self, symbol: str | None = None) -> list[OrderSnapshot]:
        unified = self.venue.unified(symbol) if symbol else None
        regular = self.venue.call(self.client.fetch_open_orders, unified)
        conditional = self.venue.call(
            self.client.fetch_open_orders, unified, None, None, {"trigger": True}
        )
        orders = [self.parse_order(o, symbol) for o in regular]
        orders += [self.parse_order(o, symbol, conditional=True) for o in conditional]
        return orders

    def positions(self) -> list[PositionSnapshot]:
        raw = self.venue.call(self.client.fetch_positions)
        return [s for s in (self.position_snapshot(p) for p in raw) if s is not None]

    def trades(self, symbol: str, since: datetime | None) -> list[TradeSnapshot]:
        since_ms = int(since.timestamp() * 1000) if since else None
        raw = self.venue.call(self.client.fetch_my_trades, self.venue.unified(symbol), since_ms)
        return [self.trade_snapshot(t, symbol, "realizedPnl") for t in raw]

    def parse_order(
        self, raw: dict[str, Any], symbol: str | None, *, conditional: bool | None = None
    ) -> OrderSnapshot:
        info = raw.get("info", {}) or {}
        venue_type = str(info.get("orderType") or info.get("type") or "").lower()
        order_type = str(raw.get("type") or venue_type).lower()
        if venue_type in STOP_TYPES:
            order_type = venue_type  # ccxt reports an algo STOP_MARKET as plain "market"
        trigger = first_nonzero(
            raw.get("triggerPrice"),
            raw.get("stopPrice"),
            info.get("triggerPrice"),
            info.get("stopPrice"),
        )
        is_conditional = (
            conditional
            if conditional is not None
            else (order_type in STOP_TYPES or "algoId" in info)
        )
        native = symbol or (self.venue.native(raw["symbol"]) if raw.get("symbol") else "")
        return OrderSnapshot(
            id=str(raw.get("id") or info.get("algoId") or info.get("orderId")),
            client_id=raw.get("clientOrderId")
            or info.get("clientAlgoId")
            or info.get("clientOrderId"),
            symbol=native,
            side=str(raw.get("side") or str(info.get("side", "")).lower()),
            type=order_type,
            status=str(raw.get("status") or "open"),
            amount=dec0(raw.get("amount")),
            filled=dec0(raw.get("filled")),
            average=dec(raw.get("average")),
            price=dec(raw.get("price")),
            trigger_price=trigger,
            reduce_only=truthy(raw.get("reduceOnly")) or truthy(info.get("reduceOnly")),
            close_position=truthy(info.get("closePosition")),
            conditional=bool(is_conditional),
            position_idx=int(info.get("positionIdx", 0) or 0),
            created_at=ts(raw.get("timestamp")),
        )
