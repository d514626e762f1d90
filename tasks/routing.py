"""Which queue a task goes to: its name's queue, or that queue's copy for a venue that has
workers of its own (``VIGIL_VENUE_QUEUES=bybit``: ``stops.bybit``, ``orders.bybit``, ...).

Why a router and not a queue per call site: every sender (the ingest, workers, beat, the
CLI, the API, Flower) publishes by task name, and the venue is known from the task's own
arguments (``on_price(exchange, symbol)``) or from the row they name (a position's or a
wave's venue). With no venue listed, nothing is looked up and every task keeps its shared
queue, so a single-venue deployment routes exactly as before.

Dedicated queues are about capacity (one venue's burst does not queue behind the other's),
not correctness: every worker can act on every venue. So a task whose venue cannot be read
(the database down at that moment, a position that does not exist) goes to the shared
queue, where any worker takes it, rather than nowhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from core import task_names as names
from core.config import Settings
from core.queues import QUEUES, VENUE_QUEUE_KINDS, venue_queue
from core.venues import configured_venues

log = logging.getLogger(__name__)

Lookup = Callable[[int], str | None]  # a row id -> its venue (None: no such row)

# task name -> (argument name, its position, what the argument identifies)
VENUE_ARGUMENT: dict[str, tuple[str, int, str]] = {
    names.ON_PRICE: ("exchange", 0, "venue"),
    names.ON_PRICES: ("exchange", 0, "venue"),
    names.OPEN_POSITION: ("position_id", 0, "position"),
    names.SETTLE_CLOSE: ("position_id", 0, "position"),
    names.CLOSE_POSITION_MANUAL: ("position_id", 0, "position"),
    names.PROCESS_WAVE: ("wave_id", 0, "wave"),
    names.ADVANCE_WAVE: ("wave_id", 0, "wave"),
}


def shared_queue(name: str) -> str | None:
    """The queue a task's name says (``vigil.<queue>.<task>``)."""
    parts = name.split(".")
    if len(parts) >= 3 and parts[0] == "vigil" and parts[1] in QUEUES:
        return parts[1]
    return None


def venue_of_task(
    name: str, args: Sequence[Any], kwargs: Mapping[str, Any], lookups: Mapping[str, Lookup]
) -> str | None:
    """The venue a task acts on, from its arguments; None when they do not say."""
    found = VENUE_ARGUMENT.get(name)
    if found is None:
        return None
    key, index, kind = found
    value = kwargs.get(key, args[index] if len(args) > index else None)
    if value is None:
        return None
    if kind == "venue":
        return str(value)
    try:
        return lookups[kind](int(value))
    except (TypeError, ValueError):
        return None


def queue_for(
    name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    own_queues: Sequence[str],
    lookups: Mapping[str, Lookup],
) -> str | None:
    """The queue of task ``name``: ``<queue>.<venue>`` when its venue is in ``own_queues``."""
    queue = shared_queue(name)
    if queue is None or queue not in VENUE_QUEUE_KINDS or not own_queues:
        return queue
    venue = venue_of_task(name, args, kwargs, lookups)
    return venue_queue(queue, venue) if venue is not None and venue in own_queues else queue


def _lookups() -> dict[str, Lookup]:
    from core.services.deps import venue_of_position, venue_of_wave

    return {"position": venue_of_position, "wave": venue_of_wave}


def router_for(settings: Settings) -> Callable[..., dict[str, str] | None]:
    """Celery's router (``task_routes``) for ``settings``: see the module doc."""
    own = tuple(settings.venue_queues)
    lookups = _lookups() if own else {}

    def route_task(
        name: str,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        options: Mapping[str, Any],
        task: Any = None,
        **_: Any,
    ) -> dict[str, str] | None:
        try:
            queue = queue_for(name, args or (), kwargs or {}, own, lookups)
        except SQLAlchemyError as exc:  # its venue unknown now: any worker can take it
            log.warning("venue of %s not read (%s): shared queue", name, str(exc).splitlines()[0])
            queue = shared_queue(name)
        return {"queue": queue} if queue else None

    return route_task


def price_venues_of(consumed: Iterable[str], settings: Settings) -> list[str]:
    """The venues whose price tasks a worker on these queues runs: ``stops.X`` is venue X's;
    plain ``stops`` every configured venue without queues of its own (VIGIL_VENUE_QUEUES)."""
    configured = configured_venues(settings)
    venues: list[str] = []
    for queue in consumed:
        if queue == "stops":
            venues += [v for v in configured if v not in settings.venue_queues]
        elif queue.startswith("stops.") and queue.removeprefix("stops.") in configured:
            venues.append(queue.removeprefix("stops."))
    return list(dict.fromkeys(venues))
