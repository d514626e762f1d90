"""Flower's doors: no default password beyond this host, and ``/metrics`` behind its login.

Flower can revoke tasks and send any task with any arguments, so its login is as strong as
the API token. Two gaps of Flower itself are closed here, before it starts:

- it would serve the shipped ``vigil``/``vigil`` login to the network: ``vigil flower``
  (and through it the compose service) refuses to start with the default password when it
  listens on anything but a loopback address;
- its ``/metrics`` handler is not behind ``--basic-auth`` (Flower 2.x): it is wrapped in
  the same login check every other page has.
"""

from __future__ import annotations

import ipaddress

from core.config import Settings

DEFAULT_FLOWER_PASSWORD = "vigil"  # noqa: S105 - the shipped default this module refuses


def is_loopback(address: str) -> bool:
    host = address.strip().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or 0.0.0.0-like wildcard: beyond this host


def exposure_refusal(settings: Settings) -> str | None:
    """Why Flower must not start with these settings, or None."""
    password = settings.flower_password.get_secret_value()
    if is_loopback(settings.flower_address):
        return None
    if not password or password == DEFAULT_FLOWER_PASSWORD:
        return (
            f"Flower would listen on {settings.flower_address} with the default password: "
            "set VIGIL_FLOWER_PASSWORD (or keep VIGIL_FLOWER_ADDRESS=127.0.0.1)"
        )
    return None


def protect_metrics() -> None:
    """Put Flower's ``/metrics`` behind its login (idempotent)."""
    import tornado.web
    from flower.views import monitor

    handler = monitor.Metrics
    if getattr(handler.get, "_vigil_protected", False):
        return
    protected = tornado.web.authenticated(handler.get)
    protected._vigil_protected = True  # type: ignore[attr-defined]
    handler.get = protected
