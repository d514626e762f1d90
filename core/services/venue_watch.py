"""What an exchange failure means for new openings: a refused key halts, an outage pauses.

Why here and not in each service: the guardians' snapshot (core/services/snapshot.py) and
the opening's signed calls are where a revoked key or a venue in maintenance shows first;
they report every failure and every good answer to this module, which decides once:

- **Authentication or permission refused** (Binance -2014/-2015/-1022, Bybit
  10003/10004/10005/33004, ccxt ``AuthenticationError``/``PermissionDenied``): a halt of
  that venue, source ``auth``, with a critical ``halted`` event (paged through the outbox).
  Nothing can be opened, and nothing should be, until the operator has replaced the key and
  run ``vigil resume``. Stops already on the venue keep protecting the open positions.
- **Maintenance** (ccxt ``OnMaintenance``): openings pause at once (a halt with source
  ``maintenance``, event ``openings_paused``).
- **Unavailable** (HTTP 503, Bybit 10016): the first such answer is remembered in Redis;
  once the outage has lasted ``VIGIL_VENUE_OUTAGE_PAUSE_SECONDS`` openings pause too.
- **A good answer** forgets the outage and lifts the maintenance pause (``openings_resumed``);
  an ``auth`` halt is never lifted by itself.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.domain.halts import HaltSource, outage_warrants_pause
from core.exchange import errors
from core.services import halts
from core.services.deps import Deps

ENGINE = "engine"


def outage_key(exchange: str) -> str:
    return f"vigil:venue_unavailable_since:{exchange}"


def note_failure(deps: Deps, failure: BaseException) -> halts.HaltResult | None:
    """Act on one failed call to the venue; returns the halt it made or found, if any."""
    now = deps.clock.now()
    venue = deps.exchange_name
    if isinstance(failure, errors.AuthenticationFailed):
        return _halt_venue(deps, f"{venue} refused the API key: {failure}", now, HaltSource.AUTH)
    if isinstance(failure, errors.VenueMaintenance):
        return _pause(deps, f"{venue} is in maintenance: {failure}", now)
    if isinstance(failure, errors.VenueUnavailable):
        since = _outage_since(deps, now)
        threshold = timedelta(seconds=deps.settings.venue_outage_pause_seconds)
        if outage_warrants_pause(since, now, threshold):
            return _pause(deps, f"{venue} unavailable since {since:%H:%M:%S}: {failure}", now)
    return None


def note_answer(deps: Deps) -> list[halts.HaltState]:
    """The venue answered a signed read: forget the outage, lift its maintenance pause."""
    deps.redis.delete(outage_key(deps.exchange_name))
    return halts.resume(
        ENGINE,
        now=deps.clock.now(),
        sources=(HaltSource.MAINTENANCE,),
        scope=deps.exchange_name,
        uow=deps.uow,
    )


def _pause(deps: Deps, reason: str, now: datetime) -> halts.HaltResult:
    return _halt_venue(deps, reason, now, HaltSource.MAINTENANCE)


def _halt_venue(deps: Deps, reason: str, now: datetime, source: HaltSource) -> halts.HaltResult:
    """The engine's halt of this venue's openings (made once; found if already in force)."""
    return halts.halt(
        reason, ENGINE, now=now, source=source, scope=deps.exchange_name, uow=deps.uow
    )


def _outage_since(deps: Deps, now: datetime) -> datetime:
    """When the current outage began (the first unavailable answer), kept in Redis."""
    key = outage_key(deps.exchange_name)
    deps.redis.set(key, now.isoformat(), nx=True, ex=7 * 24 * 3600)
    raw = deps.redis.get(key)
    if raw is None:
        return now
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    try:
        since = datetime.fromisoformat(text)
    except ValueError:
        return now
    return since if since.tzinfo else since.replace(tzinfo=UTC)
