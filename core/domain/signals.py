"""Parse and validate signal frames from the wire.

Why a pure parser that never raises: the ingest process holds one WebSocket for the whole
engine; an exception on a malformed frame would drop the connection (and every signal
queued behind it). So every input, however broken, becomes data: a tuple of valid
``Signal`` objects and a tuple of ``Rejection`` records the service stores as events.

Contract (SPEC "Signal wire format")::

    {"type": "signal", "id": "9f1c2", "symbol": "BTCUSDT", "exchange": "binance",
     "action": "BUY", "score_week": 71.5, "score_month": 64.0,
     "timestamp": "2026-11-23T12:00:03Z"}

or a batch ``{"type": "signals", "signals": [ ...signal objects... ]}``.

Choices where the contract is silent (documented for the README):

- Unknown extra fields are *accepted and ignored* by default (a producer adding a field
  must not stop trading); their names are kept on ``Signal.ignored_fields`` so the service
  can log them. ``SignalParams.reject_unknown_fields`` makes them an error instead.
- Duplicate keys in a JSON object reject the object (which value is meant is ambiguous,
  and a classic way to smuggle a second value past a validator).
- ``NaN``/``Infinity`` literals, booleans, strings and numbers that do not fit
  ``Numeric(20, 8)`` (abs >= 1e12) are rejected as scores. Scores are parsed straight to
  ``Decimal`` from the JSON text, never through float.
- ``id``: 1..64 chars of ``[A-Za-z0-9._:-]``, starting alphanumeric; this keeps it safe to
  embed in client order ids and log lines.
- ``symbol``: case is normalised (``btcusdt`` -> ``BTCUSDT``) and the ccxt form
  ``BTC/USDT:USDT`` is accepted; ``exchange`` and ``action`` must match exactly
  (lower-case exchange, upper-case action) so producer bugs surface early.
- ``timestamp``: ISO-8601 with an explicit offset (``Z`` or ``+hh:mm``), stored in UTC; a
  naive timestamp is rejected (its meaning depends on the producer's host). When ``now`` is
  given, a timestamp more than ``max_future_skew`` ahead is rejected.
- Inside a batch, an object may omit ``type`` or set it to ``"signal"``; a repeated ``id``
  within one frame keeps the first and rejects the rest. Deduplication across frames is the
  store's job (unique key on the id).
- An empty batch is reported as a rejection (``empty_batch``) so a silent producer bug is
  visible; a batch longer than ``max_batch`` is rejected whole (it is not a signal burst,
  it is a fault or an attack).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from core.domain.sides import Side
from core.domain.symbols import normalize_symbol
from core.domain.timeutil import require_aware

EXCERPT_CHARS = 200
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
_MAX_SCORE_ABS = Decimal(10) ** 12
_REQUIRED = ("id", "symbol", "exchange", "action", "score_week", "score_month", "timestamp")
_KNOWN_FIELDS = frozenset((*_REQUIRED, "type"))


class Exchange(StrEnum):
    BINANCE = "binance"
    BYBIT = "bybit"


class Action(StrEnum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def side(self) -> Side:
        return Side.LONG if self is Action.BUY else Side.SHORT


class RejectReason(StrEnum):
    FRAME_TOO_LARGE = "frame_too_large"
    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"
    DUPLICATE_KEY = "duplicate_key"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_TYPE = "unknown_type"
    BATCH_NOT_A_LIST = "batch_not_a_list"
    BATCH_TOO_LARGE = "batch_too_large"
    EMPTY_BATCH = "empty_batch"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    INVALID_ID = "invalid_id"
    DUPLICATE_ID = "duplicate_id"
    INVALID_SYMBOL = "invalid_symbol"
    INVALID_EXCHANGE = "invalid_exchange"
    INVALID_ACTION = "invalid_action"
    INVALID_SCORE = "invalid_score"
    SCORE_OUT_OF_RANGE = "score_out_of_range"
    INVALID_TIMESTAMP = "invalid_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    VENUE_NOT_CONFIGURED = "venue_not_configured"


@dataclass(frozen=True, slots=True)
class SignalParams:
    """Limits of the parser; the settings layer maps into this."""

    max_frame_bytes: int = 64 * 1024
    max_batch: int = 500
    max_id_length: int = 64
    max_symbol_length: int = 32
    quote_assets: tuple[str, ...] = ("USDT",)
    reject_unknown_fields: bool = False
    max_future_skew: timedelta = timedelta(seconds=60)
    # a score outside the range the signal service is known to produce is a broken or
    # hostile sender: 99,999,999,999 would otherwise rank first in every wave
    score_min: Decimal = Decimal(0)
    score_max: Decimal = Decimal(100)
    # the venues this deployment trades (None: any); a signal for another is rejected at
    # once rather than stored into a wave no worker of this deployment would ever process
    venues: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Signal:
    """A validated signal. ``symbol`` is normalised (``BTCUSDT``); timestamp is UTC."""

    id: str
    symbol: str
    exchange: Exchange
    action: Action
    score_week: Decimal
    score_month: Decimal
    timestamp: datetime
    ignored_fields: tuple[str, ...] = ()

    @property
    def side(self) -> Side:
        return self.action.side


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why (part of) a frame was refused; ``raw_excerpt`` is at most 200 characters."""

    reason: RejectReason
    detail: str
    raw_excerpt: str
    signal_id: str | None = None


@dataclass(frozen=True, slots=True)
class ParseResult:
    signals: tuple[Signal, ...]
    rejections: tuple[Rejection, ...]


# ---------------------------------------------------------------- frames


class _DuplicateKeyError(ValueError):
    pass


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite literal {name}")


def _text_excerpt(text: str) -> str:
    return text[:EXCERPT_CHARS].encode("utf-8", "backslashreplace").decode("utf-8")


def _excerpt(obj: object) -> str:
    try:
        text = json.dumps(obj, default=str, ensure_ascii=True)
    except (ValueError, TypeError, RecursionError):
        return "<unrepresentable>"
    return text[:EXCERPT_CHARS]


def _decode(raw: str | bytes, params: SignalParams) -> tuple[str | None, Rejection | None]:
    """Text of the frame within the size limit, or why not."""
    if isinstance(raw, bytes | bytearray | memoryview):
        data = bytes(raw)
        if len(data) > params.max_frame_bytes:
            excerpt = data[:EXCERPT_CHARS].decode("utf-8", "replace")
            return None, _frame_rej(RejectReason.FRAME_TOO_LARGE, f"{len(data)} bytes", excerpt)
        try:
            return data.decode("utf-8"), None
        except UnicodeDecodeError as exc:
            excerpt = data[:EXCERPT_CHARS].decode("utf-8", "replace")
            return None, _frame_rej(RejectReason.NOT_UTF8, str(exc), excerpt)
    if not isinstance(raw, str):
        return None, _frame_rej(
            RejectReason.INVALID_JSON, f"frame is {type(raw).__name__}", _excerpt(repr(raw))
        )
    # Characters >= bytes/4, so the char count bounds the encoded size from below cheaply.
    too_long = len(raw) > params.max_frame_bytes
    if not too_long:
        too_long = len(raw.encode("utf-8", "surrogatepass")) > params.max_frame_bytes
    if too_long:
        return None, _frame_rej(
            RejectReason.FRAME_TOO_LARGE, f"over {params.max_frame_bytes} bytes", _text_excerpt(raw)
        )
    return raw, None


def _frame_rej(reason: RejectReason, detail: str, excerpt: str) -> Rejection:
    return Rejection(reason=reason, detail=detail, raw_excerpt=excerpt, signal_id=None)


def parse_frame(
    raw: str | bytes, params: SignalParams | None = None, now: datetime | None = None
) -> ParseResult:
    """Parse one WebSocket frame into valid signals and rejections. Never raises.

    ``now`` (tz-aware) enables the future-timestamp check; without it that check is skipped.
    """
    params = params or SignalParams()
    if now is not None:
        now = require_aware(now)
    text, rejection = _decode(raw, params)
    if text is None:
        assert rejection is not None
        return ParseResult((), (rejection,))
    try:
        frame = json.loads(
            text,
            parse_float=Decimal,
            parse_int=Decimal,
            parse_constant=_reject_constant,
            object_pairs_hook=_pairs_hook,
        )
    except _DuplicateKeyError as exc:
        rej = _frame_rej(RejectReason.DUPLICATE_KEY, f"key {exc} repeated", _text_excerpt(text))
        return ParseResult((), (rej,))
    except (ValueError, RecursionError) as exc:
        rej = _frame_rej(RejectReason.INVALID_JSON, str(exc)[:200], _text_excerpt(text))
        return ParseResult((), (rej,))
    return _parse_document(frame, text, params, now)


def _parse_document(
    frame: object, text: str, params: SignalParams, now: datetime | None
) -> ParseResult:
    if not isinstance(frame, dict):
        rej = _frame_rej(
            RejectReason.NOT_AN_OBJECT, "frame is not a JSON object", _text_excerpt(text)
        )
        return ParseResult((), (rej,))
    kind = frame.get("type")
    if kind == "signal":
        items: list[object] = [frame]
    elif kind == "signals":
        batch = frame.get("signals")
        if not isinstance(batch, list):
            rej = _frame_rej(
                RejectReason.BATCH_NOT_A_LIST, "'signals' must be a list", _text_excerpt(text)
            )
            return ParseResult((), (rej,))
        if len(batch) > params.max_batch:
            rej = _frame_rej(
                RejectReason.BATCH_TOO_LARGE,
                f"{len(batch)} signals > {params.max_batch}",
                _text_excerpt(text),
            )
            return ParseResult((), (rej,))
        if not batch:
            rej = _frame_rej(RejectReason.EMPTY_BATCH, "batch has no signals", _text_excerpt(text))
            return ParseResult((), (rej,))
        items = batch
    else:
        rej = _frame_rej(
            RejectReason.UNKNOWN_TYPE, f"type {_excerpt(kind)[:40]}", _text_excerpt(text)
        )
        return ParseResult((), (rej,))

    signals: list[Signal] = []
    rejections: list[Rejection] = []
    seen: set[str] = set()
    in_batch = kind == "signals"
    for item in items:
        result = parse_signal_object(item, params, now, in_batch=in_batch)
        if isinstance(result, Rejection):
            rejections.append(result)
        elif result.id in seen:
            rejections.append(
                Rejection(
                    RejectReason.DUPLICATE_ID,
                    "id repeated within the frame",
                    _excerpt(item),
                    result.id,
                )
            )
        else:
            seen.add(result.id)
            signals.append(result)
    return ParseResult(tuple(signals), tuple(rejections))


def parse_signal_object(
    obj: object,
    params: SignalParams | None = None,
    now: datetime | None = None,
    *,
    in_batch: bool = False,
) -> Signal | Rejection:
    """Validate one decoded signal object; returns the Signal or the first Rejection."""
    params = params or SignalParams()
    if not isinstance(obj, dict):
        return Rejection(RejectReason.NOT_AN_OBJECT, "signal is not an object", _excerpt(obj))
    excerpt = _excerpt(obj)
    raw_id = obj.get("id")
    signal_id = _valid_id(raw_id, params)
    # The id is echoed on rejections only when it is itself valid (safe to log and key on).
    sid = signal_id

    if in_batch and "type" in obj and obj["type"] != "signal":
        return Rejection(
            RejectReason.UNKNOWN_TYPE, "batch item type must be 'signal'", excerpt, sid
        )
    for name in _REQUIRED:
        if name not in obj:
            return Rejection(RejectReason.MISSING_FIELD, f"missing {name!r}", excerpt, sid)
    unknown = tuple(sorted(k for k in obj if k not in _KNOWN_FIELDS))
    if unknown and params.reject_unknown_fields:
        return Rejection(
            RejectReason.UNKNOWN_FIELD, f"unknown fields {list(unknown)[:5]}", excerpt, sid
        )
    if signal_id is None:
        return Rejection(RejectReason.INVALID_ID, "id must be 1..64 of [A-Za-z0-9._:-]", excerpt)
    return _validate_fields(obj, signal_id, unknown, excerpt, params, now)


class _Refused(Exception):
    """One field's verdict, raised by a field check and turned into a ``Rejection``."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _validate_fields(
    obj: Mapping[str, Any],
    signal_id: str,
    unknown: tuple[str, ...],
    excerpt: str,
    params: SignalParams,
    now: datetime | None,
) -> Signal | Rejection:
    try:
        symbol = _checked_symbol(obj["symbol"], params)
        exchange = _checked_exchange(obj["exchange"], params)
        action = obj["action"]
        if not isinstance(action, str) or action not in Action._value2member_map_:
            raise _Refused(RejectReason.INVALID_ACTION, "action must be BUY|SELL")
        week, month = (_checked_score(name, obj[name], params) for name in _SCORES)
        timestamp = _checked_timestamp(obj["timestamp"], params, now)
    except _Refused as refused:
        return Rejection(refused.reason, refused.detail, excerpt, signal_id)
    return Signal(
        id=signal_id,
        symbol=symbol,
        exchange=exchange,
        action=Action(action),
        score_week=week,
        score_month=month,
        timestamp=timestamp,
        ignored_fields=unknown,
    )


_SCORES = ("score_week", "score_month")


def _checked_symbol(symbol: object, params: SignalParams) -> str:
    normal = None
    if isinstance(symbol, str) and len(symbol) <= params.max_symbol_length:
        normal = normalize_symbol(symbol, params.quote_assets)
    if normal is None:
        raise _Refused(RejectReason.INVALID_SYMBOL, "symbol not recognised")
    return normal


def _checked_exchange(exchange: object, params: SignalParams) -> Exchange:
    if not isinstance(exchange, str) or exchange not in Exchange._value2member_map_:
        raise _Refused(RejectReason.INVALID_EXCHANGE, "exchange must be binance|bybit")
    if params.venues is not None and exchange not in params.venues:
        venues = ", ".join(sorted(params.venues))
        raise _Refused(
            RejectReason.VENUE_NOT_CONFIGURED,
            f"{exchange} is not a venue of this deployment ({venues})",
        )
    return Exchange(exchange)


def _checked_score(name: str, raw: object, params: SignalParams) -> Decimal:
    score = _valid_score(raw)
    if score is None:
        raise _Refused(RejectReason.INVALID_SCORE, f"{name} must be a finite number")
    if not params.score_min <= score <= params.score_max:
        raise _Refused(
            RejectReason.SCORE_OUT_OF_RANGE,
            f"{name} must be within {params.score_min}..{params.score_max}",
        )
    return score


def _checked_timestamp(raw: object, params: SignalParams, now: datetime | None) -> datetime:
    timestamp = _valid_timestamp(raw)
    if timestamp is None:
        raise _Refused(RejectReason.INVALID_TIMESTAMP, "timestamp must be ISO-8601 with a timezone")
    if now is not None and timestamp > now + params.max_future_skew:
        raise _Refused(RejectReason.FUTURE_TIMESTAMP, "timestamp too far in the future")
    return timestamp


def _valid_id(raw: object, params: SignalParams) -> str | None:
    if not isinstance(raw, str) or not 0 < len(raw) <= params.max_id_length:
        return None
    if _ID_RE.fullmatch(raw) is None or not raw.isascii():
        return None
    return raw


def _valid_score(raw: object) -> Decimal | None:
    # bool is not a Decimal, and json.loads gives Decimal for every number here.
    if not isinstance(raw, Decimal) or not raw.is_finite():
        return None
    if abs(raw) >= _MAX_SCORE_ABS:
        return None
    return raw


def _valid_timestamp(raw: object) -> datetime | None:
    if not isinstance(raw, str) or not 0 < len(raw) <= 64 or not raw.isascii():
        return None
    try:
        value = datetime.fromisoformat(raw)
        if value.tzinfo is None or value.utcoffset() is None:
            return None
        return value.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
