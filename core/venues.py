"""The venues of one deployment, and each venue's connection settings.

Why a module of its own: ``VIGIL_EXCHANGES=binance,bybit`` names several venues, each with
its own key, URL, testnet flag and paper dialect, while every existing deployment keeps its
single-venue variables (``VIGIL_EXCHANGE``, ``VIGIL_EXCHANGE_URL``, ``VIGIL_API_KEY``, ...),
which keep describing the **default venue** (the one ``VIGIL_EXCHANGE`` names; for the paper
exchange, its dialect). Another venue reads ``VIGIL_<VENUE>_EXCHANGE`` (``paper``,
``binanceusdm``, ``bybit``; default: ``paper`` when the default venue is paper, else the
venue's real exchange), ``VIGIL_<VENUE>_EXCHANGE_URL``, ``VIGIL_<VENUE>_API_KEY``,
``VIGIL_<VENUE>_API_SECRET``, ``VIGIL_<VENUE>_TESTNET``; its paper dialect is its own name.
A default-venue variable in the ``VIGIL_<VENUE>_`` form wins over the single-venue one.

Two paper venues on one URL (a real venue's URL is ccxt's own), or two real venues with one
key, are refused at start: that is a copy-paste error that would send one venue's orders to
the other.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from pydantic import SecretStr

from core.config import ExchangeKind, Settings, SettingsError

EXCHANGE_NAMES = {"paper": "binance", "binanceusdm": "binance", "bybit": "bybit"}
REAL_KIND: dict[str, ExchangeKind] = {"binance": "binanceusdm", "bybit": "bybit"}
_TRUE = {"1", "true", "yes", "on"}


def default_venue(settings: Settings) -> str:
    """The venue of the single-venue settings: the paper exchange is its dialect's venue."""
    if settings.exchange == "paper":
        return settings.paper_dialect
    return EXCHANGE_NAMES[settings.exchange]


def configured_venues(settings: Settings) -> tuple[str, ...]:
    """The venues this deployment trades, default venue first when it is one of them."""
    if not settings.exchanges:
        return (default_venue(settings),)
    return tuple(settings.exchanges)


@dataclass(frozen=True)
class VenueConfig:
    """How to reach one venue."""

    name: str  # binance | bybit: how the engine names it in rows, events, locks
    kind: ExchangeKind  # paper | binanceusdm | bybit
    url: str
    api_key: SecretStr
    api_secret: SecretStr
    testnet: bool
    paper_dialect: str


def venue_config(
    settings: Settings, name: str, environ: Mapping[str, str] | None = None
) -> VenueConfig:
    """One venue's connection settings (see the module doc for the variables)."""
    env = os.environ if environ is None else environ
    prefix = f"VIGIL_{name.upper()}_"

    def own(key: str) -> str | None:
        value = env.get(prefix + key)
        return value if value not in (None, "") else None

    if name == default_venue(settings):
        kind: str = own("EXCHANGE") or settings.exchange
        url = own("EXCHANGE_URL") or settings.exchange_url
        key = own("API_KEY") or settings.api_key.get_secret_value()
        secret = own("API_SECRET") or settings.api_secret.get_secret_value()
        testnet_text = own("TESTNET")
        testnet = settings.testnet if testnet_text is None else testnet_text.lower() in _TRUE
    else:
        kind = own("EXCHANGE") or ("paper" if settings.exchange == "paper" else REAL_KIND[name])
        url = own("EXCHANGE_URL") or ""
        blank = "paper" if kind == "paper" else ""  # the paper exchange's own default pair
        key, secret = own("API_KEY") or blank, own("API_SECRET") or blank
        testnet = (own("TESTNET") or "false").lower() in _TRUE
    if kind not in ("paper", "binanceusdm", "bybit"):
        raise SettingsError(f"invalid setting {prefix}EXCHANGE: paper, binanceusdm or bybit")
    if kind != "paper" and EXCHANGE_NAMES[kind] != name:
        raise SettingsError(f"invalid setting {prefix}EXCHANGE: {kind} is not {name}")
    dialect = name if kind == "paper" else settings.paper_dialect
    return VenueConfig(
        name, cast(ExchangeKind, kind), url, SecretStr(key), SecretStr(secret), testnet, dialect
    )


def check_venues(settings: Settings, environ: Mapping[str, str] | None = None) -> list[VenueConfig]:
    """Every venue's settings, or SettingsError (one line) for a missing URL or key, or two
    venues sharing a URL or (on a real exchange) a key."""
    found = [venue_config(settings, name, environ) for name in configured_venues(settings)]
    for name in settings.venue_queues:
        if name not in configured_venues(settings):
            raise SettingsError(
                f"invalid setting VIGIL_VENUE_QUEUES: {name} is not a venue of this deployment"
            )
    for venue in found:
        prefix = f"VIGIL_{venue.name.upper()}_"
        if venue.kind == "paper" and not venue.url:
            raise SettingsError(f"missing setting {prefix}EXCHANGE_URL (its paper exchange)")
        if venue.kind != "paper" and not venue.api_key.get_secret_value():
            raise SettingsError(f"missing setting {prefix}API_KEY")
    for i, first in enumerate(found):
        for second in found[i + 1 :]:
            paper = first.kind == "paper" and second.kind == "paper"
            if paper and first.url == second.url:
                raise SettingsError(
                    f"venues {first.name} and {second.name} share the URL {first.url}"
                )
            real = first.kind != "paper" and second.kind != "paper"
            if real and first.api_key.get_secret_value() == second.api_key.get_secret_value():
                raise SettingsError(f"venues {first.name} and {second.name} share one API key")
    return found
