"""The engine's one door to an exchange: typed calls over ccxt, errors by kind, Decimal money.

Design points:
- Symbols are exchange-native ids (``BTCUSDT``) everywhere in the engine; ccxt's unified
  symbols (``BTC/USDT:USDT``) stay inside this module.
- Every number from the exchange becomes ``Decimal(str(x))`` here.
- Batch reads (all positions, all open orders, regular and conditional) so a guardian cycle
  costs a constant number of calls, whatever the number of positions.
- Conditional orders (stops) live in Binance's algo-order service; ccxt routes them there when
  ``trigger=True`` is passed, so every stop call here passes it.
- Leverage and margin mode are set once per symbol per process (cached; losing the cache only
  costs a repeat of an idempotent call).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import ccxt

from core.domain.sizing import MarketRules
from core.exchange.errors import ExchangeFailure, OrderNotFound, SymbolUnavailable, classify
from core.exchange.types import OrderSnapshot, PositionSnapshot, TradeSnapshot

log = logging.getLogger(__name__)
T = TypeVar("T")

_STOP_TYPES = {"stop_market", "take_profit_market", "stop", "take_profit", "trailing_stop_market"}


def dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    return Decimal(str(value))


def _dec0(value: Any) -> Decimal:
    return dec(value) or Decimal(0)


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _ts(ms: Any) -> datetime | None:
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC) if ms else None


class ExchangeAdapter:
    """One exchange account, synchronous (Celery workers are synchronous)."""

    def __init__(self, client: ccxt.Exchange, name: str = "binance") -> None:
        self.client = client
        self.name = name  # how the engine calls this exchange in the database
        self._setup_done: set[str] = set()
        self.calls = 0

    # --- plumbing --------------------------------------------------------------------------

    def _call(self, fn: Callable[..., T], *args: Any, mutating: bool = False, **kw: Any) -> T:
        self.calls += 1
        try:
            return fn(*args, **kw)
        except ccxt.BaseError as exc:
            raise classify(exc, mutating=mutating) from exc

    def load_markets(self, reload: bool = False) -> None:
        if self.client.markets and not reload:
            return  # cached: no request, not counted
        self._call(self.client.load_markets, reload)

    def unified(self, symbol: str) -> str:
        """``BTCUSDT`` -> ``BTC/USDT:USDT`` (the linear perpetual)."""
        self.load_markets()
        for market in self.client.markets_by_id.get(symbol, []) or []:
            if market.get("linear") and market.get("swap"):
                return str(market["symbol"])
        if symbol in self.client.markets:
            return symbol
        raise SymbolUnavailable(f"unknown symbol {symbol}")

    def native(self, unified_symbol: str) -> str:
        self.load_markets()
        market = self.client.markets.get(unified_symbol)
        return str(market["id"]) if market else unified_symbol.replace("/", "").split(":")[0]

    # --- markets and account -----------------------------------------------------------------

    def rules(self, symbol: str) -> MarketRules:
        """Precision and limits; a market that is not trading is SymbolUnavailable."""
        market = self.client.market(self.unified(symbol))
        if not market.get("active", True):
            raise SymbolUnavailable(f"{symbol} is not trading")
        limits, precision = market.get("limits", {}), market.get("precision", {})
        info_filters = {f.get("filterType"): f for f in market.get("info", {}).get("filters", [])}
        tick = dec(info_filters.get("PRICE_FILTER", {}).get("tickSize")) or _dec0(
            precision.get("price")
        )
        step = dec(info_filters.get("LOT_SIZE", {}).get("stepSize")) or _dec0(
            precision.get("amount")
        )
        return MarketRules(
            tick_size=tick,
            step_size=step,
            min_qty=_dec0(limits.get("amount", {}).get("min")),
            # entries and closes are market orders: MARKET_LOT_SIZE bounds them too
            max_qty=min(
                (
                    q
                    for q in (
                        dec(limits.get("amount", {}).get("max")),
                        dec(limits.get("market", {}).get("max")),
                        dec(info_filters.get("MARKET_LOT_SIZE", {}).get("maxQty")),
                    )
                    if q
                ),
                default=None,
            ),
            min_notional=_dec0(limits.get("cost", {}).get("min")),
        )

    def ensure_trading_setup(self, symbol: str, leverage: int, margin_mode: str) -> None:
        """Set leverage and margin mode once per symbol; 'no change needed' is success."""
        if symbol in self._setup_done:
            return
        unified = self.unified(symbol)
        try:
            self._call(self.client.set_margin_mode, margin_mode, unified, mutating=True)
        except ExchangeFailure as exc:
            # -4046 "No need to change margin type" and Bybit's 110026 mean it is already set
            if exc.code not in (-4046, 110026):
                raise
        self._call(self.client.set_leverage, leverage, unified, mutating=True)
        self._setup_done.add(symbol)

    def free_balance(self, asset: str = "USDT") -> Decimal:
        balance = self._call(self.client.fetch_balance)
        return _dec0(balance.get(asset, {}).get("free"))

    def mark_price(self, symbol: str) -> Decimal:
        data = self._call(self.client.fetch_mark_price, self.unified(symbol))
        price = dec(data.get("markPrice")) or dec(data.get("info", {}).get("markPrice"))
        if price is None:
            raise SymbolUnavailable(f"no mark price for {symbol}")
        return price

    def mark_prices(self) -> dict[str, Decimal]:
        data = self._call(self.client.fetch_mark_prices)
        prices: dict[str, Decimal] = {}
        for unified, ticker in data.items():
            price = dec(ticker.get("markPrice")) or dec(ticker.get("info", {}).get("markPrice"))
            if price is not None:
                prices[self.native(unified)] = price
        return prices

    # --- orders ------------------------------------------------------------------------------

    def create_market_order(
        self,
        symbol: str,
        side: str,
        quantity: Decimal,
        client_id: str,
        *,
        reduce_only: bool = False,
    ) -> OrderSnapshot:
        params: dict[str, Any] = {"newClientOrderId": client_id}
        if reduce_only:
            params["reduceOnly"] = True
        raw = self._call(
            self.client.create_order,
            self.unified(symbol),
            "market",
            side,
            float(quantity),
            None,
            params,
            mutating=True,
        )
        return self._order(raw, symbol)

    def create_stop(
        self,
        symbol: str,
        side: str,
        quantity: Decimal,
        trigger_price: Decimal,
        client_id: str,
        *,
        close_position: bool = False,
    ) -> OrderSnapshot:
        """A reduce-only STOP_MARKET triggered by the mark price."""
        params: dict[str, Any] = {
            "stopPrice": float(trigger_price),
            "workingType": "MARK_PRICE",
            "newClientOrderId": client_id,
        }
        if close_position:
            params["closePosition"] = True
        else:
            params["reduceOnly"] = True
        raw = self._call(
            self.client.create_order,
            self.unified(symbol),
            "STOP_MARKET",
            side,
            None if close_position else float(quantity),
            None,
            params,
            mutating=True,
        )
        return self._order(raw, symbol, conditional=True)

    def fetch_order(
        self, symbol: str, client_id: str, *, conditional: bool = False
    ) -> OrderSnapshot | None:
        """Look an order up by our client id; None if the exchange has never heard of it."""
        params: dict[str, Any] = {"clientOrderId": client_id}
        if conditional:
            params["trigger"] = True
        try:
            raw = self._call(self.client.fetch_order, None, self.unified(symbol), params)
        except OrderNotFound:
            return None
        return self._order(raw, symbol, conditional=conditional)

    def fetch_order_by_id(
        self, symbol: str, order_id: str, *, conditional: bool = False
    ) -> OrderSnapshot | None:
        params: dict[str, Any] = {"trigger": True} if conditional else {}
        try:
            raw = self._call(self.client.fetch_order, order_id, self.unified(symbol), params)
        except OrderNotFound:
            return None
        return self._order(raw, symbol, conditional=conditional)

    def cancel_order(self, symbol: str, order_id: str, *, conditional: bool = False) -> bool:
        """Cancel; True if cancelled now, False if it was already gone (not an error here)."""
        params: dict[str, Any] = {"trigger": True} if conditional else {}
        try:
            self._call(
                self.client.cancel_order, order_id, self.unified(symbol), params, mutating=True
            )
        except OrderNotFound:
            return False
        return True

    def open_orders(self) -> list[OrderSnapshot]:
        """Every open order on the account, regular and conditional: two calls, any count."""
        regular = self._call(self.client.fetch_open_orders)
        conditional = self._call(self.client.fetch_open_orders, None, None, None, {"trigger": True})
        orders = [self._order(o, None) for o in regular]
        orders += [self._order(o, None, conditional=True) for o in conditional]
        return orders

    def positions(self) -> list[PositionSnapshot]:
        """Every open position on the account, in one call."""
        raw = self._call(self.client.fetch_positions)
        out = []
        for p in raw:
            quantity = abs(_dec0(p.get("contracts")))
            if quantity == 0:
                continue
            info = p.get("info", {})
            side = p.get("side") or ("long" if _dec0(info.get("positionAmt")) > 0 else "short")
            out.append(
                PositionSnapshot(
                    symbol=self.native(p["symbol"]),
                    side=side,
                    quantity=quantity,
                    entry_price=_dec0(p.get("entryPrice")),
                    mark_price=dec(p.get("markPrice")),
                    unrealized_pnl=dec(p.get("unrealizedPnl")),
                    leverage=int(p["leverage"]) if p.get("leverage") else None,
                    position_idx=int(info.get("positionIdx", 0) or 0),
                )
            )
        return out

    def trades(self, symbol: str, since: datetime | None = None) -> list[TradeSnapshot]:
        since_ms = int(since.timestamp() * 1000) if since else None
        raw = self._call(self.client.fetch_my_trades, self.unified(symbol), since_ms)
        out = []
        for t in raw:
            info = t.get("info", {})
            out.append(
                TradeSnapshot(
                    id=str(t.get("id")),
                    order_id=str(t["order"]) if t.get("order") else None,
                    symbol=symbol,
                    side=str(t.get("side")),
                    price=_dec0(t.get("price")),
                    quantity=_dec0(t.get("amount")),
                    fee=_dec0((t.get("fee") or {}).get("cost")),
                    realized_pnl=dec(info.get("realizedPnl")),
                    timestamp=_ts(t.get("timestamp")) or datetime.now(UTC),
                )
            )
        return out

    # --- parsing -----------------------------------------------------------------------------

    def _order(
        self, raw: dict[str, Any], symbol: str | None, *, conditional: bool | None = None
    ) -> OrderSnapshot:
        info = raw.get("info", {}) or {}
        venue_type = str(info.get("orderType") or info.get("type") or "").lower()
        order_type = str(raw.get("type") or venue_type).lower()
        if venue_type in _STOP_TYPES:
            order_type = venue_type  # ccxt reports an algo STOP_MARKET as plain "market"
        trigger = None
        for value in (
            raw.get("triggerPrice"),
            raw.get("stopPrice"),
            info.get("triggerPrice"),
            info.get("stopPrice"),
        ):
            trigger = dec(value)
            if trigger:  # venues send 0 for "no trigger"
                break
        is_conditional = (
            conditional
            if conditional is not None
            else (order_type in _STOP_TYPES or "algoId" in info)
        )
        close_position = _truthy(info.get("closePosition")) or _truthy(info.get("closeOnTrigger"))
        native = symbol or (self.native(raw["symbol"]) if raw.get("symbol") else "")
        return OrderSnapshot(
            id=str(raw.get("id") or info.get("algoId") or info.get("orderId")),
            client_id=raw.get("clientOrderId")
            or info.get("clientAlgoId")
            or info.get("clientOrderId"),
            symbol=native,
            side=str(raw.get("side") or str(info.get("side", "")).lower()),
            type=order_type,
            status=str(raw.get("status") or "open"),
            amount=_dec0(raw.get("amount")),
            filled=_dec0(raw.get("filled")),
            average=dec(raw.get("average")),
            price=dec(raw.get("price")),
            trigger_price=trigger or None,
            reduce_only=_truthy(raw.get("reduceOnly")) or _truthy(info.get("reduceOnly")),
            close_position=close_position,
            conditional=bool(is_conditional),
            position_idx=int(info.get("positionIdx", 0) or 0),
            created_at=_ts(raw.get("timestamp")),
        )
