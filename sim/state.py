"""Everything one simulator instance holds in memory, and how it is reset.

Kept in one object so that `POST /_sim/reset` can rebuild the account, prices and faults
from the seed while WebSocket connections and listen keys survive (clients reconnecting
after every test would make tests slow and flaky).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from sim.auth import Authenticator, KeyPair
from sim.faults import FaultBook
from sim.markets import Market, build_markets, synthetic_markets
from sim.matching import Engine, EngineConfig
from sim.prices import SCENARIOS, PriceBook, ReplayRow, load_replay
from sim.requestlog import RequestLog


@dataclass
class SimOptions:
    seed: int = 1
    symbols: list[str] | None = None
    synthetic_symbols: int = 0
    scenario: str | None = None
    api_key: str = "paper"
    api_secret: str = "paper"  # noqa: S105 - the documented paper-exchange default
    tick_interval: float = 1.0
    volatility: float | None = None
    engine: EngineConfig = field(default_factory=EngineConfig)
    #: Enforce Binance's 2400/min IP weight with 429 -1003 (off: benchmarks hammer it).
    weight_limit: int | None = None
    #: Which exchange this instance speaks: "binance" (USD-M, /fapi) or "bybit" (v5 linear,
    #: sim/bybit). One instance is one venue account; run two for both dialects.
    dialect: str = "binance"
    #: Start with the clock stopped: the tick loop keeps pushing marks but prices only move
    #: by `POST /_sim/tick` (and by hand). Switched at run time with `POST /_sim/clock`.
    paused: bool = False
    #: Where the account is kept across restarts (sim/persist.py); None: in memory only.
    state_path: Path | None = None


def _scenario(options: SimOptions) -> tuple[float, list[ReplayRow] | None]:
    scenario = options.scenario
    if scenario and scenario.endswith(".csv"):
        return 0.0, load_replay(Path(scenario))
    vol = SCENARIOS.get(scenario or "normal", SCENARIOS["normal"])
    if options.volatility is not None:
        vol = options.volatility
    return vol, None


class SimState:
    def __init__(self, options: SimOptions, publish: Callable[[dict[str, object]], None]) -> None:
        self.options = options
        self._publish = publish
        markets = build_markets(options.symbols)
        for extra in synthetic_markets(options.synthetic_symbols):
            markets[extra.symbol] = extra
        self.markets: dict[str, Market] = markets
        self.auth = Authenticator(options.api_key, options.api_secret)
        self.log = RequestLog()
        self.listen_keys: set[str] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        #: Clock stopped: `tick` (the server's tick loop) holds prices, `step` still moves
        #: them. Configuration, not account state: it survives `reset`.
        self.paused = options.paused
        self.reset()

    def reset(self, seed: int | None = None, balance: Decimal | None = None) -> None:
        if seed is not None:
            self.options.seed = seed
        if balance is not None:
            self.options.engine.balance = balance
        vol, replay = _scenario(self.options)
        self.prices = PriceBook(
            self.markets,
            seed=self.options.seed,
            tick_interval=self.options.tick_interval,
            volatility=vol,
            replay=replay,
        )
        self.engine = self._new_engine()
        self.faults = FaultBook(self.options.seed)
        self.log.clear()

    def _new_engine(self) -> Engine:
        """The account and matching of this dialect, on the prices just built."""
        return Engine(self.markets, self.prices, self.options.engine, self._publish)

    def key_pairs(self) -> list[KeyPair]:
        """Every key pair a request may be checked with (``/_sim/keys`` replaces them all)."""
        return [self.auth]

    def new_listen_key(self) -> str:
        key = secrets.token_urlsafe(48)[:64]
        self.listen_keys.add(key)
        return key

    def tick(self) -> list[str]:
        """One tick of the wall clock (the server's tick loop); nothing moves while paused."""
        if self.paused:
            return []
        return self.step()

    def step(self) -> list[str]:
        """Advance prices one tick now, paused or not (`POST /_sim/tick`)."""
        changed = self.prices.tick()
        self.engine.on_prices(changed)
        return changed

    def set_price(self, symbol: str, price: Decimal) -> Decimal:
        value = self.prices.set_price(symbol, price)
        self.engine.on_prices([symbol])
        return value

    def schedule(self, delay_s: float, callback: Callable[[], None]) -> None:
        if self.loop is not None:
            self.loop.call_later(delay_s, callback)
