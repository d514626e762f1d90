"""Per-symbol settings: which values may differ per symbol, their bounds, and precedence.

Why here and pure: an operator changes a live engine with these values, so a bad one must be
refused before anything is stored, with one line that names the key and its range; and the
precedence (symbol row > venue default row ``*`` > environment) is one rule every decision
shares. No I/O: the service (core/services/symbol_settings.py) stores and announces.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

VENUE_DEFAULT = "*"
Value = Decimal | int | bool


class SymbolSettingError(ValueError):
    """A refused key, value or symbol; the message is one line for the operator."""


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One settable key: its type and the open/closed bounds of a number."""

    kind: type
    low: Decimal | None = None
    high: Decimal | None = None
    low_open: bool = True  # the low bound itself is refused
    high_open: bool = False

    def bounds(self) -> str:
        if self.kind is bool:
            return "true or false"
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        return f"{left}{self.low}, {self.high}{right}"


_PERCENT = KeySpec(Decimal, Decimal(0), Decimal(100), high_open=True)
KEYS: dict[str, KeySpec] = {
    "stop_loss_percent": _PERCENT,
    "trailing_activation_percent": _PERCENT,
    "trailing_callback_percent": _PERCENT,
    "trailing_breakeven_percent": _PERCENT,
    "trailing_min_step_percent": KeySpec(Decimal, Decimal(0), Decimal(100), False, True),
    "leverage": KeySpec(int, Decimal(1), Decimal(125), low_open=False),
    "position_size_usdt": KeySpec(Decimal, Decimal(0), Decimal(10_000_000)),
    "enabled": KeySpec(bool),
}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def normalise_symbol(symbol: str) -> str:
    """``btcusdt`` -> ``BTCUSDT``; ``*`` stays the venue default; anything else refused."""
    text = symbol.strip().upper()
    if text == VENUE_DEFAULT or (text.isalnum() and 2 <= len(text) <= 40):
        return text
    raise SymbolSettingError(f"bad symbol {symbol!r}: a venue symbol such as BTCUSDT, or *")


def parse_value(key: str, raw: str | Value) -> Value:
    """The typed value of ``key`` from text (or JSON); refused outside its bounds."""
    spec = KEYS.get(key)
    if spec is None:
        raise SymbolSettingError(f"unknown key {key!r}; known: {', '.join(sorted(KEYS))}")
    if spec.kind is bool:
        return _parse_bool(key, raw)
    if isinstance(raw, bool):
        raise SymbolSettingError(f"{key}: expected a number in {spec.bounds()}")
    try:
        number = Decimal(str(raw).strip())
    except InvalidOperation:
        raise SymbolSettingError(f"{key}: {raw!r} is not a number") from None
    if not number.is_finite() or not _within(number, spec):
        raise SymbolSettingError(f"{key}: {raw} is out of range {spec.bounds()}")
    if spec.kind is int:
        if number != number.to_integral_value():
            raise SymbolSettingError(f"{key}: {raw} is not a whole number")
        return int(number)
    return number


def _parse_bool(key: str, raw: str | Value) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SymbolSettingError(f"{key}: {raw!r} is not true or false")


def _within(number: Decimal, spec: KeySpec) -> bool:
    assert spec.low is not None and spec.high is not None
    above = number > spec.low if spec.low_open else number >= spec.low
    below = number < spec.high if spec.high_open else number <= spec.high
    return above and below


def parse_assignments(pairs: list[str]) -> dict[str, Value]:
    """``["trailing_callback_percent=1.0", ...]`` -> typed values; all or nothing."""
    if not pairs:
        raise SymbolSettingError("nothing to set: give KEY=VALUE")
    values: dict[str, Value] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not raw.strip():
            raise SymbolSettingError(f"{pair!r}: expected KEY=VALUE")
        values[key.strip()] = parse_value(key.strip(), raw)
    return values


def parse_keys(keys: list[str]) -> list[str]:
    """Keys to unset; unknown ones refused."""
    for key in keys:
        if key not in KEYS:
            raise SymbolSettingError(f"unknown key {key!r}; known: {', '.join(sorted(KEYS))}")
    return keys


def merged(venue_default: Mapping[str, Value], symbol_row: Mapping[str, Value]) -> dict[str, Value]:
    """The overrides in force for a symbol: its own row over the venue default row."""
    return {**venue_default, **symbol_row}


def enabled(overrides: Mapping[str, Value], symbol: str, env_stoplist: frozenset[str]) -> bool:
    """Whether a symbol may open: an override says so, else the environment's stoplist."""
    value = overrides.get("enabled")
    if value is None:
        return symbol.upper() not in env_stoplist
    return bool(value)
