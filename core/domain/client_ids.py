"""Deterministic client order ids: one per intent, so a retry can find what it already sent.

``v<position>-<tag>-<purpose><seq>``, at most 36 characters (Bybit's orderLinkId limit; Binance
allows the same alphabet). ``tag`` is taken from the position's correlation id, so ids stay
unique when a database is reset against the same exchange account: a lookup by client id must
never find an order of an earlier life. ``seq`` numbers successive intents of one purpose
(each trailing move places a new stop).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.domain.orders import OrderPurpose as P

#: each purpose's one letter in a client id (the purposes are ``core.domain.orders``'s)
PURPOSE_CODES: dict[str, str] = {
    P.ENTRY: "e",
    P.STOP: "s",
    P.CLOSE: "c",
    P.ROLLBACK: "r",
    P.EMERGENCY: "x",
    P.PROTECTION: "p",
    P.AGED: "a",
}
_PURPOSES = {code: str(purpose) for purpose, code in PURPOSE_CODES.items()}
_PATTERN = re.compile(r"^v(\d+)-([0-9a-z]{1,10})-([a-z])(\d+)$")


@dataclass(frozen=True, slots=True)
class ClientId:
    position_id: int
    tag: str
    purpose: str
    seq: int


def make_tag(correlation_id: str) -> str:
    return re.sub(r"[^0-9a-z]", "", correlation_id.lower())[:8] or "0"


def client_order_id(position_id: int, correlation_id: str, purpose: str, seq: int = 0) -> str:
    code = PURPOSE_CODES[purpose]
    cid = f"v{position_id}-{make_tag(correlation_id)}-{code}{seq}"
    if len(cid) > 36:
        raise ValueError(f"client order id too long: {cid}")
    return cid


def seq_pattern(purpose: str) -> str:
    """A POSIX regular expression (PostgreSQL's ``substring``) whose one group is the ``seq``
    of an id of ``purpose`` (what ``parse_client_id`` reads; at most 18 digits, so the number
    always fits a BIGINT)."""
    return f"^v[0-9]+-[0-9a-z]{{1,10}}-{PURPOSE_CODES[purpose]}([0-9]{{1,18}})$"


def parse_client_id(value: str | None) -> ClientId | None:
    """The intent behind one of our ids; None for anything the engine did not send."""
    if not value:
        return None
    match = _PATTERN.match(value)
    if not match or match.group(3) not in _PURPOSES:
        return None
    return ClientId(
        int(match.group(1)), match.group(2), _PURPOSES[match.group(3)], int(match.group(4))
    )


def of_position(parsed: ClientId, correlation_id: str) -> bool:
    """The id was sent for this life of the position: same id and the same correlation tag.

    An id whose tag differs belongs to an earlier database's position of the same number
    (a reset against the same account): for the guardians and the invariants it has no owner.
    """
    return make_tag(correlation_id) == parsed.tag
