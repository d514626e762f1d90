"""The account arithmetic both dialects of the paper exchange share (sim/account.py)."""

from decimal import Decimal

from sim.account import (
    EngineConfig,
    MarginAccount,
    capped_by_limit,
    crosses,
    executable_quantity,
    partial_quantity,
)
from sim.markets import build_markets
from sim.orders import Position
from sim.prices import PriceBook

D = Decimal


def book(price: str) -> PriceBook:
    prices = PriceBook(build_markets(["BTCUSDT"]), seed=1, tick_interval=1.0)
    prices.prices["BTCUSDT"] = D(price)
    return prices


def test_a_fill_pays_the_maker_or_taker_rate_to_eight_decimals():
    config = EngineConfig(taker_fee=D("0.0005"), maker_fee=D("0.0002"))
    assert config.fee(D("0.003"), D("60000.1"), maker=False) == (D("0.0005"), D("0.09000015"))
    assert config.fee(D("0.001"), D("12345.678"), maker=True) == (D("0.0002"), D("0.00246914"))


def test_an_opening_needs_its_initial_margin_and_its_taker_fee():
    config = EngineConfig(taker_fee=D("0.0005"))
    assert config.opening_cost(D("2"), D("100"), 10) == D("20") + D("0.1")


def test_a_taker_fills_away_from_the_mark_by_the_slippage_on_the_tick_grid():
    prices = book("60000")
    config = EngineConfig(slippage_bps=D("10"))
    assert config.taker_price(prices, "BTCUSDT", buying=True) == D("60060.0")
    assert config.taker_price(prices, "BTCUSDT", buying=False) == D("59940.0")
    assert EngineConfig().taker_price(prices, "BTCUSDT", buying=True) == D("60000")


def test_a_limit_order_never_fills_beyond_its_limit_and_is_marketable_once_reached():
    assert capped_by_limit(D("101"), D("100"), buying=True) == D("100")
    assert capped_by_limit(D("99"), D("100"), buying=False) == D("100")
    assert capped_by_limit(D("99"), D("100"), buying=True) == D("99")
    assert crosses(D("100"), D("100"), buying=True)
    assert not crosses(D("99"), D("100"), buying=True)
    assert crosses(D("101"), D("100"), buying=False) is False
    assert crosses(D("100"), D("99"), buying=False) is False
    assert crosses(D("99"), D("100"), buying=False)


def test_a_partial_fill_rounds_down_to_the_lot_step():
    assert partial_quantity(D("1.0"), D("0.55"), D("0.1")) == D("0.5")
    assert partial_quantity(D("0.003"), D("0.5"), D("0.001")) == D("0.001")


class _Account(MarginAccount):
    def __init__(self, prices: PriceBook, wallet: Decimal, held_by_orders: Decimal) -> None:
        self.config = EngineConfig(taker_fee=D("0.0005"))
        self.prices = prices
        self.wallet = wallet
        self.positions = {
            "long": Position("BTCUSDT", amount=D("0.5"), entry_price=D("100"), leverage=10),
            "short": Position("BTCUSDT", amount=D("-1"), entry_price=D("130"), leverage=20),
        }
        self._held = held_by_orders

    def order_margin(self) -> Decimal:
        return self._held


def test_an_execution_fills_a_reduce_only_order_up_to_the_position_then_its_fraction():
    step = D("0.001")
    assert executable_quantity(D("2"), None, None, step) == D("2")  # may open: all of it
    assert executable_quantity(D("2"), D("0.5"), None, step) == D("0.5")  # trimmed
    assert executable_quantity(D("2"), D("5"), None, step) == D("2")
    assert executable_quantity(D("2"), D("0.5"), D("0.5"), step) == D("0.25")
    assert executable_quantity(D("0.003"), None, D("0.5"), step) == D("0.001")


def test_the_available_balance_is_wallet_plus_open_profit_less_every_margin():
    account = _Account(book("120"), wallet=D("1000"), held_by_orders=D("7"))
    long, short = account.positions["long"], account.positions["short"]
    assert account.unrealized(long) == D("10")  # 0.5 * (120 - 100)
    assert account.unrealized(short) == D("10")  # -1 * (120 - 130)
    assert account.position_margin(long) == D("6")  # 0.5 * 120 / 10
    assert account.position_margin(short) == D("6")  # 1 * 120 / 20
    assert account.available() == D("1000") + D("20") - D("12") - D("7")
    flat = Position("BTCUSDT")
    assert account.unrealized(flat) == 0 and account.position_margin(flat) == 0
    # 1001 available: an opening costs margin plus taker fee, and must fit in it
    assert account.affords(D("1"), D("9950"), 10)  # 995 + 4.975
    assert not account.affords(D("1"), D("10000"), 10)  # 1000 + 5
