"""``vigil chaos``: the real system under seeded faults, then the invariant audit.

The stack starts as in ``vigil demo`` (embedded PostgreSQL and Redis, the paper exchange, the
signal source, ingest, workers, beat) while waves of signals and price moves flow. At seeded
random times the harness breaks something: SIGKILLs a worker (at random, while a position is
being opened, while a stop move is in flight), kills and restarts Redis and PostgreSQL (same
port and data directory), kills the ingest, injects exchange faults through ``/_sim/fault``,
duplicates and reorders signals, and acts by hand on the exchange. Killed processes are
restarted, as a container runtime would; nothing else about the engine is touched. After the
faults stop and the guardians have had their intervals, ``check_invariants`` (the same check
as ``vigil diagnose``) must find nothing, and every stored signal must have an outcome.

``exchange`` picks the paper exchange's dialect as in ``vigil demo`` (``binance`` or
``bybit``); the faults and invariants are the same on both, and only the exchange faults name
the venue's endpoints (``FAULT_ENDPOINTS`` in chaos_plan.py) and the acts by hand speak its terms.

The run's parts: the fault kinds and the seeded plan (chaos_plan.py), the injectors and
recovery clocks (chaos_faults.py, chaos_process.py), the audit at the end (chaos_audit.py),
the figures and the printed table (chaos_report.py); this module starts the stack and
drives the fault phase.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

import redis

from core.clock import SYSTEM_CLOCK
from core.config import Settings, get_settings, load_settings
from core.services.deps import Deps, build_adapter, venue_settings
from shell.harness.chaos_audit import (
    audit,
    clear_faults,
    redeliveries,
    secrets_in_events,
    settle_seconds,
    signals_without_outcome,
)
from shell.harness.chaos_faults import Chaos
from shell.harness.chaos_plan import CHAOS_SECRETS, FAULT_KINDS, plan, shifted
from shell.harness.chaos_process import outage_fill_outcomes
from shell.harness.chaos_report import ChaosResult, print_result
from shell.harness.chaos_revive import Reviver
from shell.harness.chaos_venues import (
    SECOND_VENUE,
    CombinedReport,
    SecondVenue,
    both_venues_environment,
    merge_gaps,
    positions_by_status,
)
from shell.harness.demo import (
    CHOICES,
    DEMO_SETTINGS,
    DemoSystem,
    ports_of_its_own,
    status_of,
    use_storage,
)
from shell.harness.protection_monitor import MonitorReport, ProtectionMonitor
from shell.runtime.embedded import free_port
from shell.runtime.stack import Stack, StackOptions
from shell.runtime.supervisor import raise_if_stop_requested

# what the CLI and the tests read from here
__all__ = ["CHAOS_SECRETS", "FAULT_KINDS", "Chaos", "ChaosResult", "print_result", "run_chaos"]


def _environment(base: Settings, exchange: str) -> dict[str, str]:
    env = dict(DEMO_SETTINGS)
    env.update(CHAOS_SECRETS)
    if exchange == "both":
        env.update(both_venues_environment(CHAOS_SECRETS, f"http://127.0.0.1:{free_port()}"))
    else:
        os.environ.pop("VIGIL_EXCHANGES", None)
    env.update(
        VIGIL_PAPER_DIALECT="binance" if exchange == "both" else exchange,
        VIGIL_HOME=str(base.home_dir / "chaos"),
        **ports_of_its_own(),
    )
    return env


def run_chaos(
    base: Settings,
    duration: float,
    seed: int,
    kinds: list[str],
    workers: int,
    say: Callable[[str], None],
    exchange: str = "binance",
) -> ChaosResult:
    """The chaos run on the paper exchange speaking ``exchange``'s dialect (binance / bybit),
    or on both venues at once (``both``: shell/harness/chaos_venues.py)."""
    if exchange not in CHOICES:
        raise ValueError(f"exchange must be one of {CHOICES}, not {exchange!r}")
    stack = _stack(_settings_of_its_own(base, exchange), workers, seed)
    try:
        chaos, second = _start(stack, seed, say, exchange)
        reviver = Reviver(chaos).start()  # a child that exits on its own is started again
        try:
            result = _drive(chaos, duration, seed, kinds, say, second)
            reviver.stop()
            result.exited_on_their_own = list(reviver.revived)
            return result
        finally:
            reviver.stop()
            stack = chaos.stack  # a stack_kill fault replaces it
    finally:
        stack.stop()


def _settings_of_its_own(base: Settings, exchange: str) -> Settings:
    """The run's settings: its own home, ports, secrets and (killable) embedded storage."""
    env = _environment(base, exchange)
    shutil.rmtree(base.home_dir / "chaos", ignore_errors=True)
    for name in ("VIGIL_DATABASE_URL", "VIGIL_REDIS_URL"):
        os.environ.pop(name, None)  # always its own embedded storage: it gets killed
    os.environ.update(env)
    get_settings.cache_clear()
    return load_settings()


def _stack(settings: Settings, workers: int, seed: int) -> Stack:
    return Stack(
        settings,
        StackOptions(
            workers=workers,
            concurrency=2,
            flower=False,
            api=False,
            signal_sim=True,
            sim_args=[
                *("--tick-interval", "0.25", "--scenario", "calm", "--seed", str(seed)),
                # the paper exchange must know the run's distinctive key to accept the engine
                *("--api-key", CHAOS_SECRETS["VIGIL_API_KEY"]),
                *("--api-secret", CHAOS_SECRETS["VIGIL_API_SECRET"]),
            ],
            signal_sim_args=["--interval", "100000"],
        ),
    )


def _start(
    stack: Stack, seed: int, say: Callable[[str], None], exchange: str
) -> tuple[Chaos, SecondVenue | None]:
    """Storage, migrations and processes up; the system to break (and the second venue)."""
    say("phase: starting PostgreSQL, Redis and the processes")
    endpoints = stack.start_storage()
    stack.migrate()
    use_storage(endpoints)
    sup = stack.start_processes()
    sup.install_signal_handlers()  # SIGTERM stops every child, not only the harness
    stack.wait_for_worker()
    settings = load_settings()
    deps = Deps(
        settings,
        build_adapter(settings),
        redis.Redis.from_url(endpoints.redis_url),
        SYSTEM_CLOCK,
    )
    signal_admin = sup.env["VIGIL_SIGNAL_URL"].replace("ws://", "http://").rsplit("/ws", 1)[0]
    system = DemoSystem(stack, settings, settings.exchange_url, signal_admin, deps)
    second = None
    if exchange == "both":
        own = venue_settings(settings, SECOND_VENUE)
        other = Deps(own, build_adapter(own), deps.redis, SYSTEM_CLOCK)
        twin = DemoSystem(stack, own, own.exchange_url, signal_admin, other)
        second = SecondVenue(twin, seed, float(settings.wave_interval))
    return Chaos(system, stack, seed, say), second


def _drive(
    chaos: Chaos,
    duration: float,
    seed: int,
    kinds: list[str],
    say: Callable[[str], None],
    second: SecondVenue | None = None,
) -> ChaosResult:
    """The fault phase under the protection monitor, then the audit and the figures."""
    system = chaos.system
    monitor = ProtectionMonitor(
        build_adapter(system.settings), partial(status_of, exchange=system.venue), interval=0.25
    ).start()
    if second is not None:
        second.start()
    schedule = plan(duration, seed, kinds)
    say(f"phase: {len(schedule)} faults over {duration:.0f}s (seed {seed}, {system.venue} dialect)")
    _fault_phase(chaos, duration, schedule, say, second)
    say("phase: faults stop; guardians get their intervals")
    clear_faults(system)
    if second is not None:
        clear_faults(second.system)
    chaos.wait_recovery_clocks()
    report, monitor_report = _final_audit(chaos, monitor, say, second)
    return _result(chaos, duration, seed, report, monitor_report, second)


def _fault_phase(
    chaos: Chaos,
    duration: float,
    schedule: list[tuple[float, str]],
    say: Callable[[str], None],
    second: SecondVenue | None,
) -> None:
    """Waves, price moves and the planned faults, until every planned fault is injected."""
    system = chaos.system
    started = time.monotonic()
    next_wave, next_move = 0.0, 5.0
    refused: Counter[str] = Counter()
    wave_every = float(system.settings.wave_interval)
    # a fault that waits for its moment (an opening, a trailing move) can push the ones after
    # it past ``duration``: the phase lasts until every planned fault has been injected
    while (elapsed := time.monotonic() - started) < duration or schedule:
        if elapsed >= next_wave:
            chaos.wave()
            next_wave += wave_every
        if elapsed >= next_move:
            chaos.move_prices()
            next_move += 3.0
        if second is not None:
            second.system.signal_admin_url = system.signal_admin_url  # after a stack_kill
            second.tick(elapsed)
        schedule = _inject_due(chaos, schedule, started, elapsed, refused)
        raise_if_stop_requested()
        time.sleep(0.2)


def _inject_due(
    chaos: Chaos,
    schedule: list[tuple[float, str]],
    started: float,
    elapsed: float,
    refused: Counter[str],
) -> list[tuple[float, str]]:
    """Inject the faults due at ``elapsed``; the schedule left (retries, shifts included)."""
    while schedule and schedule[0][0] <= elapsed:
        _, kind = schedule.pop(0)
        chaos.say(f"[{elapsed:6.1f}s] fault {kind}")
        began = time.monotonic()
        if not chaos.inject(kind) and refused[kind] < 3:  # a person tries again later
            refused[kind] += 1
            schedule = sorted([*schedule, (elapsed + 5.0, kind)])
        # a fault that takes its time (an outage, a stack kill) shifts the ones after it:
        # they keep their planned spacing instead of all falling due in one burst
        schedule = shifted(schedule, time.monotonic() - began)
        elapsed = time.monotonic() - started
    return schedule


def _final_audit(
    chaos: Chaos,
    monitor: ProtectionMonitor,
    say: Callable[[str], None],
    second: SecondVenue | None,
) -> tuple[Any, MonitorReport]:
    """The invariant audit of each venue after the guardians' time, and the gaps seen."""
    from core.services.invariants import check_invariants

    system = chaos.system
    settle = settle_seconds(system.settings)
    report = audit(check_invariants, system.deps, settle, say)
    monitor_report = monitor.stop()
    if second is None:
        return report, monitor_report
    venue = second.system.venue
    chaos.counts[f"{venue}_positions"] = [sum(positions_by_status(venue).values())]
    say(
        f"{venue}: {second.waves} waves beside the faults, positions by status "
        f"{positions_by_status(venue)}; audited on its own"
    )
    combined = CombinedReport([report, audit(check_invariants, second.system.deps, settle, say)])
    return combined, merge_gaps(monitor_report, second.stop(), venue)


def _result(
    chaos: Chaos,
    duration: float,
    seed: int,
    report: Any,
    monitor_report: MonitorReport,
    second: SecondVenue | None,
) -> ChaosResult:
    system: DemoSystem = chaos.system
    return ChaosResult(
        faults=chaos.faults,
        recovery=chaos.recovery,
        monitor=monitor_report,
        interfered=chaos.interfered,
        invariants=report,
        signals_without_outcome=signals_without_outcome(),
        redeliveries=redeliveries(),
        secrets_in_events=secrets_in_events(),
        log=system.log,
        duration=duration,
        seed=seed,
        exchange=system.venue if second is None else "both",
        stack_kill_intact=chaos.stack_kill_intact,
        counts=chaos.counts,
        stop_fills_during_outages=outage_fill_outcomes(chaos.outage_fills),
    )
