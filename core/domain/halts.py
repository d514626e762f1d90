"""Whether new positions may open, given the halts in force; when an outage becomes a pause.

Pure decisions (no I/O, no clock reads): the services load the halts and the times, these
functions say what they mean. Why a halt blocks openings and nothing else: in an incident the
first thing an operator needs is "no new risk", while the positions already open still need
their stops, trailing moves, aged closes and reconciliation, more than ever.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

ALL_VENUES = "*"


class HaltSource(StrEnum):
    OPERATOR = "operator"  # `vigil halt`, POST /halt, the halt task, `vigil close --all`
    AUTH = "auth"  # the venue refused the API key or its permissions
    MAINTENANCE = "maintenance"  # the venue is down; lifted once it answers again


class OpeningBlock(StrEnum):
    """Why an opening may not start: the signal's outcome reason."""

    HALTED = "halted"
    PAUSED = "openings_paused"


@dataclass(frozen=True, slots=True)
class HaltView:
    """A halt in force, as the decisions need it."""

    source: HaltSource
    scope: str  # a venue name, or ALL_VENUES


def applies_to(halt: HaltView, exchange: str) -> bool:
    return halt.scope in (ALL_VENUES, exchange)


def opening_block(halts: Iterable[HaltView], exchange: str) -> OpeningBlock | None:
    """None when ``exchange`` may open positions; else why not.

    An operator or authentication halt wins over a maintenance pause: the operator must act
    on it (`vigil resume`), while a pause lifts itself.
    """
    relevant = [h for h in halts if applies_to(h, exchange)]
    if any(h.source is not HaltSource.MAINTENANCE for h in relevant):
        return OpeningBlock.HALTED
    if relevant:
        return OpeningBlock.PAUSED
    return None


def outage_warrants_pause(
    unavailable_since: datetime | None, now: datetime, threshold: timedelta
) -> bool:
    """A venue answering "unavailable" (HTTP 503, Bybit 10016) pauses openings only once the
    outage has lasted ``threshold``: a single 503 is a blip the retry absorbs, a quarter of an
    hour of them is a maintenance window nobody announced."""
    if unavailable_since is None:
        return False
    return now - unavailable_since >= threshold
