"""Bybit v5 linear perpetuals, as the adapter speaks them through ccxt's ``bybit``.

Every Bybit quirk the engine meets is handled here, and only here:

- **Create answers carry ids only.** ``/v5/order/create`` returns ``orderId`` and
  ``orderLinkId`` (ccxt's order has status None: the old bot read that as "unknown" and
  rolled back filled entries). A market order is looked up by its link id right after;
  a stop is answered from what was sent (it cannot have filled: its trigger is not
  crossed, or the venue would have refused it).
- **A fresh position shows up late.** The position list lags the fill, and a reduce-only
  order (the stop right after an entry, a rollback close) is refused with 110017 until it
  shows. After its own entry the adapter polls the position (bounded, growing intervals)
  before a reduce-only order, and on a 110017 it polls once and retries; ``positions()``
  likewise waits for an entry it just made (read-your-writes), so a rollback never
  mistakes an invisible position for a closed one.
- **positionIdx**: 0 in one-way mode; in hedge mode 1 for the long slot, 2 for the short
  one (an entry buy and a closing sell both go to 1). The mode is read once from the
  position list and re-read if the venue says the index does not match.
- **Stops** are conditional market orders: ``triggerPrice`` + ``triggerDirection``
  (2 falling for a long's stop, 1 rising for a short's) + ``triggerBy=MarkPrice``,
  ``reduceOnly`` and ``closeOnTrigger`` (Bybit cancels other orders to let it execute).
  They share the order book and id space with plain orders: no ``trigger`` flag anywhere.
- **Lists are paginated**: open orders 50 a page, positions 200, executions 100, by
  cursor; one "batch" read is as many pages as needed (each page counts as a call).
- **Lookups**: ``/v5/order/realtime`` finds open orders and the latest 500 closed ones
  by id; older ones are in ``/v5/order/history``.
- **Position-level TP/SL** (``/v5/position/trading-stop``, Full mode, set by hand in the
  UI) show in the open orders as ``StopLoss`` / ``TakeProfit`` / ``TrailingStop`` rows of
  quantity 0 that protect the whole slot. They belong to the position, and the documented
  way to remove one is trading-stop with the price ``"0"``; cancelling one (zombie
  cleanup, a surplus stop, protection) goes through there. The rows seen in reads are
  remembered (id -> kind, slot; a cache safe to lose: an id it does not know is cancelled
  as an order, and looked up if the venue says there is no such order).
- Leverage "not modified" (110043) and an account already in the wanted margin mode are
  success; the margin mode is account-wide on a unified account, so it is read first and
  only written when it differs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from core.exchange.dialect import Dialect, DialectOptions, MarketFilters, Venue
from core.exchange.errors import ExchangeFailure, OrderNotFound, ReduceOnlyRejected
from core.exchange.parsing import dec, dec0, first_nonzero, truthy, ts
from core.exchange.types import OrderSnapshot, PositionSnapshot, StopRequest, TradeSnapshot
from core.polling import Poll

R = TypeVar("R")
LEVERAGE_UNCHANGED = 110043
MARGIN_UNCHANGED = 110026
IDX_MISMATCH_TEXT = "position idx not match position mode"
MARGIN_MODES = {"cross": "REGULAR_MARGIN", "isolated": "ISOLATED_MARGIN"}
TAKE_PROFIT_TYPES = {"TakeProfit", "PartialTakeProfit", "TrailingProfit"}
POSITION_TPSL_TYPES = {"StopLoss", "TakeProfit", "TrailingStop"}
#: trading-stop field that clears each kind of position-level TP/SL
TPSL_CLEAR_FIELD = {
    "StopLoss": "stopLoss",
    "TakeProfit": "takeProfit",
    "TrailingStop": "trailingStop",
}
ZERO_POSITION_TEXT = "zero position"
TPSL_MEMORY = 2000
ORDERS_PAGE, POSITIONS_PAGE, EXECUTIONS_PAGE = 50, 200, 100
EXECUTION_WINDOW = timedelta(days=7)


class BybitDialect(Dialect):
    def __init__(self, venue: Venue, options: DialectOptions | None = None) -> None:
        super().__init__(venue, options)
        self._hedge: bool | None = None
        self._margin_mode: str | None = None
        #: symbols whose entry this process just sent -> monotonic deadline to see them
        self._fresh: dict[str, float] = {}
        #: position-level TP/SL seen in reads: order id -> (kind, positionIdx)
        self._tpsl: dict[str, tuple[str, int]] = {}

    # -- markets and account ----------------------------------------------------------

    def market_filters(self, market: dict[str, Any]) -> MarketFilters:
        lot = market.get("info", {}).get("lotSizeFilter", {}) or {}
        return MarketFilters(market_max_qty=dec(lot.get("maxMktOrderQty")))

    def setup(self, symbol: str, leverage: int, margin_mode: str) -> None:
        unified = self.venue.unified(symbol)
        wanted = MARGIN_MODES.get(margin_mode, margin_mode)
        if self._margin_mode != wanted:
            info = self.venue.call(self.client.privateGetV5AccountInfo, {})
            current = (info.get("result") or {}).get("marginMode")
            if current != wanted:
                self.set_unless_already(
                    MARGIN_UNCHANGED, self.client.set_margin_mode, margin_mode, unified
                )
            self._margin_mode = wanted
        self.set_unless_already(LEVERAGE_UNCHANGED, self.client.set_leverage, leverage, unified)
        self.hedge_mode(symbol)

    def fetch_mark(self, unified: str) -> dict[str, Any]:
        return self.client.fetch_ticker(unified)

    def fetch_marks(self) -> dict[str, dict[str, Any]]:
        return self.client.fetch_tickers()

    # -- position mode and visibility -------------------------------------------------

    def hedge_mode(self, symbol: str) -> bool:
        """One-way or hedge: read once from the symbol's position slots (0, or 1 and 2)."""
        if self._hedge is None:
            rows = self._position_rows(symbol)
            self._hedge = any(int(r.get("positionIdx", 0) or 0) != 0 for r in rows)
        return self._hedge

    def position_idx(self, symbol: str, side: str, reduce_only: bool) -> int:
        if not self.hedge_mode(symbol):
            return 0
        long_slot = (side == "buy") != reduce_only  # a buy opens long, a sell closes it
        return 1 if long_slot else 2

    def _position_rows(self, symbol: str) -> list[dict[str, Any]]:
        request = {"category": "linear", "symbol": self._id(symbol)}
        response = self.venue.call(self.client.privateGetV5PositionList, request)
        return list((response.get("result") or {}).get("list") or [])

    def _visible(self, symbol: str, closing_side: str | None = None) -> bool:
        """The symbol has an open position (that ``closing_side`` would reduce)."""
        for row in self._position_rows(symbol):
            if dec0(row.get("size")) <= 0:
                continue
            if closing_side is None:
                return True
            idx = int(row.get("positionIdx", 0) or 0)
            long = idx == 1 or (idx == 0 and row.get("side") == "Buy")
            if long == (closing_side == "sell"):
                return True
        return False

    def _poll(self, probe: Callable[[], R | None], timeout: float) -> R | None:
        poll = Poll(timeout, self.options.poll_first, self.options.poll_ceiling, self.options.sleep)
        return poll.until(probe)

    def await_visible(self, symbol: str, closing_side: str | None = None) -> bool:
        """Poll until the symbol's position shows (bounded by ``visibility_timeout``)."""
        seen = self._poll(
            lambda: True if self._visible(symbol, closing_side) else None,
            self.options.visibility_timeout,
        )
        if seen:
            self._fresh.pop(symbol, None)
        return bool(seen)

    def _is_fresh(self, symbol: str) -> bool:
        deadline = self._fresh.get(symbol)
        if deadline is not None and time.monotonic() > deadline:
            del self._fresh[symbol]
            return False
        return deadline is not None

    # -- orders -----------------------------------------------------------------------

    def _id(self, symbol: str) -> str:
        return str(self.client.market(self.venue.unified(symbol))["id"])

    def _create(
        self,
        symbol: str,
        side: str,
        quantity: Decimal,
        params: dict[str, Any],
        *,
        reduce_only: bool,
    ) -> dict[str, Any]:
        """Send one create; for reduce-only orders make sure a fresh position is visible."""
        unified = self.venue.unified(symbol)

        def send() -> dict[str, Any]:
            params["positionIdx"] = self.position_idx(symbol, side, reduce_only)
            return dict(
                self.venue.call(
                    self.client.create_order,
                    unified,
                    "market",
                    side,
                    float(quantity),
                    None,
                    dict(params),
                    mutating=True,
                )
            )

        if reduce_only and self._is_fresh(symbol):
            self.await_visible(symbol, side)
        try:
            return send()
        except ReduceOnlyRejected:
            # refused, so nothing was created: safe to resend with the same link id
            if not reduce_only or not self.await_visible(symbol, side):
                raise
            return send()
        except ExchangeFailure as exc:
            if IDX_MISMATCH_TEXT not in str(exc):
                raise
            self._hedge = None  # the account's mode changed under us: read it again
            return send()

    def create_market_order(
        self, symbol: str, side: str, quantity: Decimal, client_id: str, reduce_only: bool
    ) -> OrderSnapshot:
        params: dict[str, Any] = {"clientOrderId": client_id}
        if reduce_only:
            params["reduceOnly"] = True
        raw = self._create(symbol, side, quantity, params, reduce_only=reduce_only)
        if not reduce_only:
            self._fresh[symbol] = time.monotonic() + self.options.visibility_timeout
        found = self._poll(
            lambda: self.fetch_order(symbol, client_id=client_id),
            self.options.visibility_timeout,
        )
        if found is not None:
            return found
        # accepted but not visible yet: the caller polls by client id from here
        return self._sent(raw, symbol, side, quantity, client_id, reduce_only=reduce_only)

    def create_stop(self, stop: StopRequest) -> OrderSnapshot:
        """A reduce-only, close-on-trigger conditional market order on the mark price.

        Bybit has no quantity-less "close position" stop order; ``close_position`` stops
        are sent for the position's current size when no quantity is given.
        """
        symbol, side, quantity, client_id = stop.symbol, stop.side, stop.quantity, stop.client_id
        if quantity <= 0 and stop.close_position:
            quantity = self._position_size(symbol, side)
        unified = self.venue.unified(symbol)
        trigger = Decimal(self.client.price_to_precision(unified, float(stop.trigger_price)))
        params: dict[str, Any] = {
            "clientOrderId": client_id,
            "triggerPrice": float(trigger),
            "triggerDirection": "descending" if side == "sell" else "ascending",
            "triggerBy": "MarkPrice",
            "reduceOnly": True,
            "closeOnTrigger": True,
        }
        raw = self._create(symbol, side, quantity, params, reduce_only=True)
        return self._sent(
            raw,
            symbol,
            side,
            quantity,
            client_id,
            reduce_only=True,
            trigger=trigger,
            idx=params["positionIdx"],
        )

    def _position_size(self, symbol: str, closing_side: str) -> Decimal:
        for position in self.positions():
            if position.symbol == symbol and (position.side == "long") == (closing_side == "sell"):
                return position.quantity
        raise ReduceOnlyRejected(f"no {symbol} position for a close-position stop")

    def _sent(
        self,
        raw: dict[str, Any],
        symbol: str,
        side: str,
        quantity: Decimal,
        client_id: str,
        *,
        reduce_only: bool,
        trigger: Decimal | None = None,
        idx: int | None = None,
    ) -> OrderSnapshot:
        """The order as sent and accepted (the create answer carries ids only)."""
        return OrderSnapshot(
            id=str(raw.get("id") or raw.get("info", {}).get("orderId")),
            client_id=client_id,
            symbol=symbol,
            side=side,
            type="stop_market" if trigger is not None else "market",
            status="open",
            amount=quantity,
            filled=Decimal(0),
            average=None,
            price=None,
            trigger_price=trigger,
            reduce_only=reduce_only,
            close_position=False,
            conditional=trigger is not None,
            position_idx=idx if idx is not None else self.position_idx(symbol, side, reduce_only),
            created_at=datetime.now(UTC),
            close_on_trigger=trigger is not None,
        )

    def fetch_order(
        self,
        symbol: str,
        *,
        client_id: str | None = None,
        order_id: str | None = None,
        conditional: bool = False,
    ) -> OrderSnapshot | None:
        """Realtime first (open + the latest closed), then history (older closed)."""
        request: dict[str, Any] = {"category": "linear", "symbol": self._id(symbol)}
        if client_id:
            request["orderLinkId"] = client_id
        else:
            request["orderId"] = order_id
        client = self.client
        for endpoint in (client.privateGetV5OrderRealtime, client.privateGetV5OrderHistory):
            response = self.venue.call(endpoint, dict(request))
            rows = (response.get("result") or {}).get("list") or []
            if rows:
                market = self.client.market(self.venue.unified(symbol))
                return self.parse_order(self.client.parse_order(rows[0], market), symbol)
        return None

    def cancel_order(self, symbol: str, order_id: str, conditional: bool) -> bool:
        """Plain and conditional orders share one book (no ``trigger`` flag); a
        position-level TP/SL is cleared through trading-stop (see the module doc)."""
        if order_id in self._tpsl:
            return self._clear_tpsl(symbol, order_id)
        try:
            self.venue.call(
                self.client.cancel_order, order_id, self.venue.unified(symbol), {}, mutating=True
            )
        except OrderNotFound:
            # gone, or a TP/SL this process has not read yet: the lookup tells which
            found = self.fetch_order(symbol, order_id=order_id)
            if found is not None and found.is_open and order_id in self._tpsl:
                return self._clear_tpsl(symbol, order_id)
            return False
        return True

    def _clear_tpsl(self, symbol: str, order_id: str) -> bool:
        """Remove one position-level TP/SL; False if it was already gone."""
        found = self.fetch_order(symbol, order_id=order_id)
        kind, idx = self._tpsl.pop(order_id, ("StopLoss", 0))
        if found is None or not found.is_open:
            return False
        request = {
            "category": "linear",
            "symbol": self._id(symbol),
            "positionIdx": found.position_idx or idx,
            "tpslMode": "Full",
            TPSL_CLEAR_FIELD.get(kind, "stopLoss"): "0",
        }
        try:
            self.venue.call(self.client.privatePostV5PositionTradingStop, request, mutating=True)
        except ExchangeFailure as exc:
            if ZERO_POSITION_TEXT in str(exc).lower():
                return False  # the slot is flat: its TP/SL went with it
            raise
        return True

    # -- batch reads ------------------------------------------------------------------

    def _pages(
        self, endpoint: Callable[[dict[str, Any]], Any], request: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        """Every row of a cursor-paginated list; one call per page."""
        cursor: str | None = None
        limit = int(request["limit"])
        while True:
            page = dict(request, cursor=cursor) if cursor else dict(request)
            result = self.venue.call(endpoint, page).get("result") or {}
            rows = result.get("list") or []
            yield from rows
            cursor = result.get("nextPageCursor") or None
            if not cursor or len(rows) < limit:
                return

    def open_orders(self, symbol: str | None = None) -> list[OrderSnapshot]:
        """Every open order (of ``symbol``), plain and conditional (one book), 50 a page."""
        request: dict[str, Any] = {"category": "linear", "limit": ORDERS_PAGE}
        if symbol is None:
            request["settleCoin"] = "USDT"
        else:
            request["symbol"] = self._id(symbol)
        rows = self._pages(self.client.privateGetV5OrderRealtime, request)
        return [self.parse_order(self.client.parse_order(row), symbol) for row in rows]

    def _position_list(self) -> list[PositionSnapshot]:
        request = {"category": "linear", "settleCoin": "USDT", "limit": POSITIONS_PAGE}
        rows = self._pages(self.client.privateGetV5PositionList, request)
        parsed = (self.position_snapshot(self.client.parse_position(r)) for r in rows)
        return [p for p in parsed if p is not None]

    def positions(self) -> list[PositionSnapshot]:
        """Every open position; an entry this process just made is waited for."""
        found = self._position_list()
        waiting = [s for s in list(self._fresh) if self._is_fresh(s)]
        deadline = time.monotonic() + self.options.visibility_timeout
        delay = self.options.poll_first
        while waiting:
            missing = [s for s in waiting if all(p.symbol != s for p in found)]
            for symbol in set(waiting) - set(missing):
                self._fresh.pop(symbol, None)
            if not missing or time.monotonic() >= deadline:
                break
            self.options.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, self.options.poll_ceiling)
            waiting = missing
            found = self._position_list()
        return found

    def trades(self, symbol: str, since: datetime | None) -> list[TradeSnapshot]:
        """Executions since ``since``, in Bybit's 7-day windows, 100 a page."""
        now = datetime.now(UTC)
        start = since or now - EXECUTION_WINDOW
        market = self.client.market(self.venue.unified(symbol))
        out: list[TradeSnapshot] = []
        while start <= now:
            end = min(start + EXECUTION_WINDOW, now)
            request = {
                "category": "linear",
                "symbol": market["id"],
                "execType": "Trade",
                "startTime": int(start.timestamp() * 1000),
                "endTime": int(end.timestamp() * 1000),
                "limit": EXECUTIONS_PAGE,
            }
            for row in self._pages(self.client.privateGetV5ExecutionList, request):
                trade = self.client.parse_trade(row, market)
                out.append(self.trade_snapshot(trade, symbol, "execPnl"))
            start = end + timedelta(milliseconds=1)
        return sorted(out, key=lambda t: t.timestamp)

    # -- parsing ----------------------------------------------------------------------

    def parse_order(self, raw: dict[str, Any], symbol: str | None) -> OrderSnapshot:
        info = raw.get("info", {}) or {}
        stop_type = str(info.get("stopOrderType") or "")
        if stop_type.upper() == "UNKNOWN":
            stop_type = ""
        trigger = first_nonzero(raw.get("triggerPrice"), info.get("triggerPrice"))
        conditional = bool(stop_type) or trigger is not None
        if not conditional:
            order_type = str(raw.get("type") or info.get("orderType") or "").lower()
        elif stop_type in TAKE_PROFIT_TYPES or (
            raw.get("takeProfitPrice") and not raw.get("stopLossPrice")
        ):
            order_type = "take_profit_market"
        else:
            order_type = "stop_market"
        amount = dec0(raw.get("amount") or info.get("qty"))
        native = symbol or (self.venue.native(raw["symbol"]) if raw.get("symbol") else "")
        position_tpsl = amount == 0 and stop_type in POSITION_TPSL_TYPES
        order_id = str(raw.get("id") or info.get("orderId"))
        if position_tpsl:
            self._remember_tpsl(order_id, stop_type, int(info.get("positionIdx", 0) or 0))
        return OrderSnapshot(
            id=order_id,
            client_id=raw.get("clientOrderId") or info.get("orderLinkId") or None,
            symbol=native,
            side=str(raw.get("side") or str(info.get("side", "")).lower()),
            type=order_type,
            status=str(raw.get("status") or "open"),
            amount=amount,
            filled=dec0(raw.get("filled")),
            average=dec(raw.get("average")),
            price=first_nonzero(raw.get("price")),
            trigger_price=trigger,
            reduce_only=truthy(info.get("reduceOnly")),
            # a position-level TP/SL (Full mode) has quantity 0 and closes the whole slot
            close_position=position_tpsl,
            conditional=conditional,
            position_idx=int(info.get("positionIdx", 0) or 0),
            created_at=ts(raw.get("timestamp")),
            close_on_trigger=truthy(info.get("closeOnTrigger")),
        )

    def _remember_tpsl(self, order_id: str, kind: str, idx: int) -> None:
        if order_id not in self._tpsl and len(self._tpsl) >= TPSL_MEMORY:
            self._tpsl.pop(next(iter(self._tpsl)))  # the oldest: a lost entry costs a lookup
        self._tpsl[order_id] = (kind, idx)
