"""Symbols as the engine speaks them (``BTCUSDT``) and as ccxt does (``BTC/USDT:USDT``).

The engine trades linear USDT perpetuals and keeps every symbol in the venue's short form
(identical on Binance and Bybit); ccxt's unified form lives only at the exchange boundary.
"""

from __future__ import annotations

import re

_ALNUM_RE = re.compile(r"[A-Za-z0-9]+")
_CCXT_RE = re.compile(r"([A-Za-z0-9]+)/([A-Za-z0-9]+)(?::([A-Za-z0-9]+))?")


def normalize_symbol(raw: object, quote_assets: tuple[str, ...] = ("USDT",)) -> str | None:
    """``BTCUSDT``, ``btcusdt`` or ``BTC/USDT:USDT`` -> ``BTCUSDT``; None when not a symbol.

    The quote must be one of ``quote_assets`` (the engine trades linear USDT perpetuals);
    in the ccxt form the settle currency, when present, must equal the quote.
    """
    if not isinstance(raw, str) or not raw or len(raw) > 64:
        return None
    quotes = tuple(q.upper() for q in quote_assets)
    match = _CCXT_RE.fullmatch(raw)
    if match is not None:
        base, quote, settle = match.group(1).upper(), match.group(2).upper(), match.group(3)
        if quote not in quotes or (settle is not None and settle.upper() != quote):
            return None
        return base + quote
    if _ALNUM_RE.fullmatch(raw) is None:
        return None
    symbol = raw.upper()
    for quote in quotes:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol
    return None


def split_symbol(symbol: str, quote_assets: tuple[str, ...] = ("USDT",)) -> tuple[str, str]:
    """``BTCUSDT`` -> ``("BTC", "USDT")``; raises ValueError when not a valid symbol."""
    normal = normalize_symbol(symbol, quote_assets)
    if normal is None:
        raise ValueError(f"not a symbol: {symbol!r}")
    for quote in sorted((q.upper() for q in quote_assets), key=len, reverse=True):
        if normal.endswith(quote) and len(normal) > len(quote):
            return normal[: -len(quote)], quote
    raise ValueError(f"not a symbol: {symbol!r}")  # pragma: no cover - normalize checked it


def to_ccxt_symbol(symbol: str, quote_assets: tuple[str, ...] = ("USDT",)) -> str:
    """``BTCUSDT`` -> ``BTC/USDT:USDT`` (ccxt's linear-perpetual form); ValueError if invalid."""
    base, quote = split_symbol(symbol, quote_assets)
    return f"{base}/{quote}:{quote}"


def from_ccxt_symbol(symbol: str, quote_assets: tuple[str, ...] = ("USDT",)) -> str:
    """``BTC/USDT:USDT`` -> ``BTCUSDT``; ValueError if invalid."""
    normal = normalize_symbol(symbol, quote_assets)
    if normal is None:
        raise ValueError(f"not a symbol: {symbol!r}")
    return normal
