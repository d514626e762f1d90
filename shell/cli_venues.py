"""Picking the venues of one run from the command line (``vigil up --exchange both``).

Why a module of its own: the venues are settings (``VIGIL_EXCHANGES``, one block of
``VIGIL_<VENUE>_...`` variables per venue, see core/venues.py); ``--exchange`` is a shorthand
that writes those settings into this process's environment before anything reads them, so the
children ``vigil up`` starts inherit exactly what the parent checked.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from urllib.parse import urlparse

from core.config import Settings, get_settings
from core.queues import venue_queues
from core.venues import default_venue

VENUE_CHOICES = ("binance", "bybit", "both")


class VenueChoiceError(ValueError):
    """``--exchange`` names no venue this deployment can trade; the message says why."""


def choose_venues(choice: str, environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Set the environment for ``choice`` (binance, bybit or both); return the venues.

    With the paper exchange, one venue is the paper exchange speaking that venue's dialect;
    both venues are two paper exchanges, the second on the port after the first unless
    ``VIGIL_<VENUE>_EXCHANGE_URL`` says otherwise. With a real exchange, the venues'
    own settings (keys) are read as ``VIGIL_EXCHANGES`` says.
    """
    env = os.environ if environ is None else environ
    if choice not in VENUE_CHOICES:
        raise VenueChoiceError(f"--exchange must be one of {', '.join(VENUE_CHOICES)}")
    get_settings.cache_clear()
    settings = get_settings()
    paper = settings.exchange == "paper"
    if choice != "both":
        if paper:
            env["VIGIL_PAPER_DIALECT"] = choice
            env.pop("VIGIL_EXCHANGES", None)
        else:
            env["VIGIL_EXCHANGES"] = choice
        get_settings.cache_clear()
        return [choice]
    first = default_venue(settings)
    second = "bybit" if first == "binance" else "binance"
    env["VIGIL_EXCHANGES"] = f"{first},{second}"
    url_key = f"VIGIL_{second.upper()}_EXCHANGE_URL"
    if paper and not env.get(url_key):
        env[url_key] = next_port_url(settings.exchange_url)
    get_settings.cache_clear()
    return [first, second]


def next_port_url(url: str) -> str:
    """``url`` with the port after its own: where the second paper exchange listens."""
    parsed = urlparse(url)
    port = (parsed.port or 8710) + 1
    return parsed._replace(netloc=f"{parsed.hostname or '127.0.0.1'}:{port}").geturl()


def worker_queues(settings: Settings, venue: str) -> str:
    """The queues ``vigil worker --venue VENUE`` consumes, or why there are none."""
    if venue not in settings.venue_queues:
        raise VenueChoiceError(
            f"VIGIL_VENUE_QUEUES does not list {venue}: its work is on the shared queues, "
            "which any worker takes"
        )
    return ",".join(venue_queues(venue))


def paper_venue(settings: Settings, venue: str, port: int | None) -> tuple[Settings, int]:
    """``settings`` as ``venue``'s paper exchange sees them (dialect, key pair), and its
    port (``port``, else its URL's): what ``vigil sim --venue`` serves."""
    from core.services.deps import venue_settings
    from core.venues import configured_venues
    from shell.runtime.stack import host_port

    if venue not in configured_venues(settings):
        raise VenueChoiceError(f"venue {venue} is not configured (VIGIL_EXCHANGES)")
    own = venue_settings(settings, venue)
    if own.exchange != "paper":
        raise VenueChoiceError(
            f"venue {venue} is not a paper exchange (VIGIL_{venue.upper()}_EXCHANGE)"
        )
    return own, port or host_port(own.exchange_url, 8710)[1]
