"""When a process that died is started again, and when its supervisor gives up on it.

Why a bound: restarting forever hides a persistent failure (a bad setting, a corrupt file,
a port taken by someone else) behind a stream of restarts. So the delay doubles with each
recent restart, up to a ceiling, and ``crash_loop_restarts`` restarts within
``crash_loop_window`` seconds mean a crash loop: the supervisor stops restarting that process
and says so loudly (a critical event, /health names it). Times are monotonic seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.domain.timeutil import doubling_delay


@dataclass(frozen=True)
class RestartPolicy:
    first_delay: float = 1.0
    max_delay: float = 30.0
    crash_loop_restarts: int = 5
    crash_loop_window: float = 300.0

    def __post_init__(self) -> None:
        if not 0 < self.first_delay <= self.max_delay:
            raise ValueError("need 0 < first_delay <= max_delay")
        if self.crash_loop_restarts < 1 or self.crash_loop_window <= 0:
            raise ValueError("crash_loop_restarts >= 1 and crash_loop_window > 0")


@dataclass(frozen=True)
class RestartDecision:
    restart: bool  # False: a crash loop, give up on this process
    delay: float  # seconds to wait before starting it again
    recent: int  # restarts within the window, before this one


def decide(policy: RestartPolicy, restarts: Sequence[float], now: float) -> RestartDecision:
    """What to do about a process that just died, given the times of its earlier restarts."""
    recent = sum(1 for at in restarts if now - at <= policy.crash_loop_window)
    if recent >= policy.crash_loop_restarts:
        return RestartDecision(False, 0.0, recent)
    delay = doubling_delay(policy.first_delay, recent, policy.max_delay)
    return RestartDecision(True, delay, recent)
