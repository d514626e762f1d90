"""What the engine does about an exchange error, decided once, at the adapter.

Nothing above ``core/exchange`` imports ccxt: services catch these classes, each of which
says what to do. Classification uses the venue's own error code where there is one (it is more
precise than ccxt's class, which differs between ccxt versions and endpoint tables) and falls
back to ccxt's class hierarchy.
"""

from __future__ import annotations

import re

import ccxt


class ExchangeFailure(Exception):
    """Base: an exchange call did not do what was asked."""

    retryable: bool = False

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


# --- retry with backoff ----------------------------------------------------------------------


class Retryable(ExchangeFailure):
    """Network, timeout, overload, maintenance: the same call may succeed later."""

    retryable = True


class RateLimited(Retryable):
    """The venue asked us to slow down (429 / -1003 / Bybit 10006, 10018, HTTP 403)."""


class VenueUnavailable(Retryable):
    """The venue is not serving (HTTP 503, Bybit 10016): reads fail until it is back.

    Retried like any Retryable; if it lasts ``VIGIL_VENUE_OUTAGE_PAUSE_SECONDS`` openings pause
    until the venue answers again (core/services/venue_watch.py).
    """


class VenueMaintenance(VenueUnavailable):
    """The venue says it is in maintenance (ccxt ``OnMaintenance``): openings pause at once
    and resume when it answers again; open positions keep their stops on the venue."""


class OutcomeUnknown(Retryable):
    """A mutating call whose answer was lost: the order may or may not exist.

    Never resend blindly: look the order up by its client id first.
    """


# --- permanent: fail the intent, record why ------------------------------------------------


class Permanent(ExchangeFailure):
    """The request itself is wrong for the venue; repeating it cannot help."""


class SymbolUnavailable(Permanent):
    """Unknown symbol, or not trading."""


class BelowMinimum(Permanent):
    """Quantity or notional below the market's minimum, or precision over the maximum."""


class InsufficientFunds(Permanent):
    """Not enough margin: new openings should pause."""


class OrderNotFound(Permanent):
    """No such order (already gone, or never created)."""


class WouldTriggerImmediately(Permanent):
    """A stop whose trigger price is already crossed."""


class ReduceOnlyRejected(Permanent):
    """A reduce-only order that would open or grow a position (usually: no position)."""


class AuthenticationFailed(Permanent):
    """Bad key, signature or permissions: no call will work until fixed.

    The engine halts new openings with a critical alert (core/services/venue_watch.py); the
    operator replaces the key and runs ``vigil resume``.
    """


class OrderRejected(Permanent):
    """Any other refusal of an order."""


_CODE = re.compile(r'"(?:code|retCode)"\s*:\s*"?(-?\d+)')

# Binance USD-M codes (negative) and Bybit v5 retCodes (positive), by what to do about them.
_BY_CODE: dict[int, type[ExchangeFailure]] = {
    -1003: RateLimited,
    -1001: Retryable,  # internal error, try again
    -1007: OutcomeUnknown,  # timeout waiting for the backend: execution status unknown
    -1008: Retryable,  # server overloaded
    -1021: Retryable,  # timestamp outside recvWindow: clock drift, resync and retry
    -1022: AuthenticationFailed,
    -2014: AuthenticationFailed,
    -2015: AuthenticationFailed,
    -1121: SymbolUnavailable,
    -4140: SymbolUnavailable,
    -1111: BelowMinimum,
    -4003: BelowMinimum,
    -4004: BelowMinimum,
    -4164: BelowMinimum,
    -4005: BelowMinimum,
    -2019: InsufficientFunds,
    -2018: InsufficientFunds,
    -2011: OrderNotFound,
    -2013: OrderNotFound,
    -2021: WouldTriggerImmediately,
    -2022: ReduceOnlyRejected,
    # Bybit v5 (retCode; sent as a number or, by some gateways, as a string)
    10002: Retryable,  # timestamp outside recv_window: clock drift, resync and retry
    10003: AuthenticationFailed,
    10004: AuthenticationFailed,
    10005: AuthenticationFailed,  # key lacks the permission
    10006: RateLimited,  # 10/s per UID on order endpoints
    10007: AuthenticationFailed,
    10009: AuthenticationFailed,  # IP banned
    10010: AuthenticationFailed,  # request IP not whitelisted for the key
    10016: VenueUnavailable,  # internal error / service restarting (maintenance windows)
    10018: RateLimited,  # IP rate limit
    33004: AuthenticationFailed,  # API key expired
    10001: OrderRejected,  # generic parameter error; refined by message below
    110001: OrderNotFound,  # order not exists or too late to cancel
    110004: InsufficientFunds,
    110006: InsufficientFunds,
    110007: InsufficientFunds,  # "ab not enough for new order"
    110008: OrderNotFound,  # order already finished or cancelled
    110010: OrderNotFound,  # order already cancelled
    110012: InsufficientFunds,
    110017: ReduceOnlyRejected,  # incl. "current position is zero" (or not visible yet)
    110023: SymbolUnavailable,  # contract only allows reducing (delisting)
    110044: InsufficientFunds,
    110045: InsufficientFunds,
    110092: WouldTriggerImmediately,  # expect Rising, but trigger_price <= current
    110093: WouldTriggerImmediately,  # expect Falling, but trigger_price >= current
    110094: BelowMinimum,  # order value below the minimum
    170213: OrderNotFound,
}

# Bybit's 10001 covers every parameter error: the message says which.
_BY_MESSAGE: dict[int, tuple[tuple[re.Pattern[str], type[ExchangeFailure]], ...]] = {
    10001: (
        (
            re.compile(r"minimum limit|maximum limit|qty invalid|too many decimals", re.I),
            BelowMinimum,
        ),
        (re.compile(r"symbol invalid|not supported symbols", re.I), SymbolUnavailable),
    ),
}

# Codes whose meaning for a create/cancel is "the backend did not answer in time": the
# order may exist.
_UNKNOWN_IF_MUTATING = frozenset({-1001, 10016})


# Fallback when the venue sent no code we know; first match wins (subclasses first).
_BY_CLASS: tuple[tuple[type[BaseException], type[ExchangeFailure]], ...] = (
    (ccxt.AuthenticationError, AuthenticationFailed),
    (ccxt.PermissionDenied, AuthenticationFailed),
    (ccxt.BadSymbol, SymbolUnavailable),
    (ccxt.InsufficientFunds, InsufficientFunds),
    (ccxt.OrderNotFound, OrderNotFound),
    (ccxt.OrderImmediatelyFillable, WouldTriggerImmediately),
    (ccxt.ExchangeError, OrderRejected),
)


def error_code(exc: BaseException) -> int | None:
    match = _CODE.search(str(exc))
    return int(match.group(1)) if match else None


def classify(exc: BaseException, *, mutating: bool = False) -> ExchangeFailure:
    """Map a ccxt exception to the engine's taxonomy.

    ``mutating``: the call created or cancelled something, so a lost answer is an unknown
    outcome rather than a plain retry.
    """
    if isinstance(exc, ExchangeFailure):
        return exc
    message = f"{type(exc).__name__}: {exc}"[:500]
    code = error_code(exc)
    if code in _BY_CODE:
        cls = _BY_CODE[code]
        for pattern, refined in _BY_MESSAGE.get(code, ()):
            if pattern.search(message):
                cls = refined
                break
        if issubclass(cls, Retryable) and mutating and code in _UNKNOWN_IF_MUTATING:
            cls = OutcomeUnknown
        return cls(message, code=code)
    if isinstance(exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection):
        return RateLimited(message, code=code)
    if isinstance(exc, ccxt.ExchangeNotAvailable) and not mutating:
        # HTTP 503 / maintenance on a read; on a create or cancel it stays an unknown outcome
        unavailable = VenueMaintenance if isinstance(exc, ccxt.OnMaintenance) else VenueUnavailable
        return unavailable(message, code=code)
    if isinstance(exc, ccxt.NetworkError):
        # timeouts, resets, ExchangeNotAvailable, OnMaintenance: a create may have landed
        return (OutcomeUnknown if mutating else Retryable)(message, code=code)
    for ccxt_class, ours in _BY_CLASS:
        if isinstance(exc, ccxt_class):
            return ours(message, code=code)
    return Retryable(message, code=code)
