"""What a use case needs from the outside world, built once per process.

Built lazily (never at import) so a Celery pre-fork pool builds its own in each child: a
ccxt session or Redis connection shared across a fork is shared sockets.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import redis

from core.clock import SYSTEM_CLOCK, Clock
from core.config import Settings, get_settings, resolve_redis_url
from core.exchange.adapter import ExchangeAdapter
from core.exchange.dialect import DialectOptions
from core.exchange.factory import build_exchange
from core.locks import fence_token

EXCHANGE_NAMES = {"paper": "binance", "binanceusdm": "binance", "bybit": "bybit"}


def exchange_name(settings: Settings) -> str:
    """How the engine names the venue in the database: the paper exchange is the venue
    whose dialect it speaks (VIGIL_PAPER_DIALECT)."""
    if settings.exchange == "paper":
        return settings.paper_dialect
    return EXCHANGE_NAMES[settings.exchange]


@dataclass
class Deps:
    settings: Settings
    exchange: ExchangeAdapter
    redis: redis.Redis
    clock: Clock

    @property
    def exchange_name(self) -> str:
        return self.exchange.name

    def fence_token(self) -> int:
        return fence_token()


def build_adapter(settings: Settings) -> ExchangeAdapter:
    client = build_exchange(
        settings.exchange,
        url=settings.exchange_url,
        api_key=settings.api_key.get_secret_value(),
        api_secret=settings.api_secret.get_secret_value(),
        testnet=settings.testnet,
        timeout_ms=settings.exchange_timeout_ms,
        paper_dialect=settings.paper_dialect,
    )
    options = DialectOptions(visibility_timeout=settings.exchange_visibility_timeout)
    return ExchangeAdapter(client, exchange_name(settings), options=options)


@lru_cache(maxsize=1)
def get_deps() -> Deps:
    settings = get_settings()
    return Deps(
        settings=settings,
        exchange=build_adapter(settings),
        redis=redis.Redis.from_url(resolve_redis_url(settings)),
        clock=SYSTEM_CLOCK,
    )


def reset_deps() -> None:
    get_deps.cache_clear()
