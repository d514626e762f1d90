"""Run a periodic task once per venue of the deployment (VIGIL_EXCHANGES).

Why every venue runs even when one fails: a venue that is down must not stop the other's
guardians. The first failure is raised after all venues ran, so the task's own retry policy
still applies (every guardian is safe to run twice).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from core.services.deps import Deps, every_venue

log = logging.getLogger(__name__)


def for_each_venue(run: Callable[[Deps], dict[str, Any]]) -> dict[str, Any]:
    """``run`` for each venue; one venue: its result as before, several: ``{"venues": ...}``."""
    results: dict[str, dict[str, Any]] = {}
    failure: BaseException | None = None
    for deps in every_venue():
        try:
            results[deps.exchange_name] = run(deps)
        except Exception as exc:  # raised below, once every venue had its turn
            log.warning("%s failed on %s: %s", run, deps.exchange_name, exc)
            failure = failure or exc
    if failure is not None:
        raise failure
    if len(results) == 1:
        return next(iter(results.values()))
    return {"venues": results}
