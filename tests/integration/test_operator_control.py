"""Operator control on both dialects of the paper exchange: halt and resume, close by hand
(CLI and API), and the automatic halt when the venue refuses the key.

Real PostgreSQL, Redis, ccxt and paper exchange; the CLI runs in-process through typer's
CliRunner with the environment a running system would give it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from core.clock import ManualClock
from core.config import get_settings
from core.db.models import Alert, Event, Position, Signal, Wave
from core.db.session import unit_of_work
from core.domain.halts import HaltSource
from core.domain.signals import parse_frame
from core.exchange import errors
from core.services import halts, waves
from core.services.deps import Deps, reset_deps
from core.services.invariants import check_invariants
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position
from core.services.protection import check_protection
from core.services.signals import store_frame
from core.services.waves import wave_params
from shell.cli import app
from tests.fixtures.processes import Processes
from tests.fixtures.venue import PaperVenue
from tests.integration.test_engine_venues import move_to

pytestmark = pytest.mark.integration

WAVE = {"wave_interval": 60, "wave_grace": 0, "max_trades_per_wave": 2, "wave_buffer": 1}
NOW = datetime.now(UTC)


# -- helpers -------------------------------------------------------------------------------


def opened(venue: PaperVenue, deps: Deps, symbol: str, side: str = "long") -> int:
    with unit_of_work() as s:
        position = create_position(s, NewPosition(venue.name, symbol, side))
        assert position is not None
        pid = position.id
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    return pid


def store_wave(venue: PaperVenue, deps: Deps, symbols: list[str]) -> int:
    """Signals for ``symbols`` in the previous 60 s window, stored as the ingest does."""
    at = (datetime.now(UTC) - timedelta(seconds=60)).replace(second=30, microsecond=0)
    frame = {
        "type": "signals",
        "signals": [
            {
                "type": "signal",
                "id": f"{venue.name}-{symbol}",
                "symbol": symbol,
                "exchange": venue.name,
                "action": "BUY",
                "score_week": 90 - i,
                "score_month": 50,
                "timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            }
            for i, symbol in enumerate(symbols)
        ],
    }
    now = datetime.now(UTC)
    report = store_frame(
        parse_frame(json.dumps(frame), now=now), now=now, params=wave_params(deps.settings)
    )
    (wave_id,) = {s.wave_id for s in report.stored}
    return wave_id


def run_wave(deps: Deps, wave_id: int) -> list[int]:
    """Process the wave as the signals and orders queues would, one opening at a time."""
    queue: list[int] = []
    launched: list[int] = []

    def launch(pid: int) -> None:
        queue.append(pid)
        launched.append(pid)

    waves.process_wave(deps, wave_id, launch)
    while queue:
        pid = queue.pop(0)
        open_position(deps, pid)
        waves.advance_wave(deps, wave_id, launch)
    return launched


def signal_outcomes() -> dict[str, tuple[str, str]]:
    with unit_of_work() as s:
        return {
            row.symbol: (row.status, (row.outcome_reason or "").split(":")[0])
            for row in s.scalars(select(Signal))
        }


def events_of(type_: str) -> list[Event]:
    with unit_of_work() as s:
        return list(s.scalars(select(Event).where(Event.type == type_).order_by(Event.id)))


def open_positions(venue: PaperVenue) -> list[Position]:
    with unit_of_work() as s:
        return list(
            s.scalars(
                select(Position).where(
                    Position.exchange == venue.name,
                    Position.status.in_(["pending_entry", "entry_placed", "pending_sl", "active"]),
                )
            )
        )


def position(pid: int) -> Position:
    with unit_of_work() as s:
        found = s.get(Position, pid)
        assert found is not None
        return found


@pytest.fixture
def vigil(paper_venue: PaperVenue, monkeypatch: pytest.MonkeyPatch):
    """`vigil ...` in-process, configured for the venue's paper exchange."""
    monkeypatch.setenv("VIGIL_EXCHANGE", "paper")
    monkeypatch.setenv("VIGIL_PAPER_DIALECT", paper_venue.name)
    monkeypatch.setenv("VIGIL_EXCHANGE_URL", paper_venue.sim.url)
    monkeypatch.setenv("VIGIL_ENTRY_FILL_TIMEOUT", "2")
    get_settings.cache_clear()
    reset_deps()
    runner = CliRunner()

    def run(*args: str, answer: str | None = None) -> Any:
        return runner.invoke(app, list(args), input=answer, catch_exceptions=False)

    yield run
    get_settings.cache_clear()
    reset_deps()


# -- halt ----------------------------------------------------------------------------------


def test_a_halt_stops_the_next_wave_while_trailing_and_protection_go_on(paper_venue, vigil):
    venue = paper_venue
    deps = venue.make_deps(trailing_min_update_interval=0, **WAVE)
    venue.set_price("BTCUSDT", "60000")
    held = opened(venue, deps, "BTCUSDT")

    halted = vigil("halt", "--reason", "incident drill")
    assert halted.exit_code == 0, halted.output
    assert "halted" in halted.output and "incident drill" in halted.output

    wave_id = store_wave(venue, deps, ["ETHUSDT", "SOLUSDT", "BNBUSDT"])
    assert run_wave(deps, wave_id) == []
    assert [p.symbol for p in open_positions(venue)] == ["BTCUSDT"]
    assert signal_outcomes() == {
        "ETHUSDT": ("filtered", "halted"),
        "SOLUSDT": ("filtered", "halted"),
        "BNBUSDT": ("filtered", "halted"),
    }
    with unit_of_work() as s:
        assert s.get(Wave, wave_id).status == "completed"

    # trailing still moves the stop of the open position
    move_to(venue, deps, "BTCUSDT", "61000")
    assert venue.triggers("BTCUSDT") == [Decimal("60695")]
    # protection still restores a stop removed by hand
    assert venue.cancel_stops_by_hand("BTCUSDT") == 1
    check_protection(deps)
    assert len(venue.stops("BTCUSDT")) == 1
    assert position(held).status == "active"

    # the halt is a critical event with an alert in the outbox, and so is the resume
    [event] = events_of("halted")
    assert event.severity == "critical" and event.data["reason"] == "incident drill"
    resumed = vigil("resume")
    assert resumed.exit_code == 0 and "resumed" in resumed.output
    assert events_of("resumed")[0].severity == "critical"
    with unit_of_work() as s:
        kinds = {a.kind for a in s.scalars(select(Alert))}
    assert {"halted", "resumed"} <= kinds
    assert halts.current() == []


def test_a_halt_during_a_wave_stops_its_openings_not_yet_sent_and_the_wave_completes(
    paper_venue,
):
    venue = paper_venue
    deps = venue.make_deps(**WAVE)
    wave_id = store_wave(venue, deps, ["ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"])
    launched: list[int] = []
    waves.process_wave(deps, wave_id, launched.append)
    assert len(launched) == 2  # the target: two openings in flight

    halts.halt("mid-wave", "test", now=datetime.now(UTC))
    for pid in launched:
        assert open_position(deps, pid) is OpenOutcome.FAILED
        waves.advance_wave(deps, wave_id, launched.append)

    assert len(launched) == 2  # the failures freed no slot: nothing more started
    assert venue.positions() == [] and open_positions(venue) == []
    assert signal_outcomes() == {
        "ETHUSDT": ("filtered", "halted"),  # launched, entry never sent
        "SOLUSDT": ("filtered", "halted"),
        "BNBUSDT": ("filtered", "halted"),  # the buffer, never started
        "XRPUSDT": ("filtered", "beyond_wave_limit"),  # decided when the wave was selected
    }
    with unit_of_work() as s:
        assert s.get(Wave, wave_id).status == "completed"


def test_an_opening_started_before_the_halt_sends_no_entry_after_it(paper_venue):
    venue = paper_venue
    deps = venue.make_deps(**WAVE)
    with unit_of_work() as s:
        pid = create_position(s, NewPosition(venue.name, "ETHUSDT", "long")).id
    halts.halt("mid-wave", "test", now=datetime.now(UTC))

    assert open_position(deps, pid) is OpenOutcome.FAILED
    assert venue.positions("ETHUSDT") == []
    assert position(pid).status == "failed"


def test_halting_twice_keeps_one_halt_and_one_alert(clean_db):
    first = halts.halt("one", "a", now=NOW)
    second = halts.halt("two", "b", now=NOW)
    assert first.created and not second.created
    assert second.halt.id == first.halt.id and second.halt.reason == "one"
    assert len(events_of("halted")) == 1
    assert [h.id for h in halts.resume("c", now=NOW)] == [first.halt.id]
    assert halts.resume("c", now=NOW) == []
    assert len(events_of("resumed")) == 1


# -- close by hand -------------------------------------------------------------------------


def test_close_all_yes_leaves_no_position_no_engine_order_and_diagnose_clean(paper_venue, vigil):
    venue = paper_venue
    deps = venue.make_deps()
    for symbol, price in (("BTCUSDT", "60000"), ("ETHUSDT", "3000"), ("SOLUSDT", "150")):
        venue.set_price(symbol, price)
        opened(venue, deps, symbol, "short" if symbol == "SOLUSDT" else "long")
    assert len(venue.positions()) == 3 and len(venue.stops()) == 3

    dry = vigil("close", "--all", "--dry-run")
    assert dry.exit_code == 0 and "3 position(s)" in dry.output
    assert len(venue.positions()) == 3 and halts.current() == []

    done = vigil("close", "--all", "--yes")
    assert done.exit_code == 0, done.output

    assert venue.positions() == []
    assert venue.orders() == []
    assert open_positions(venue) == []
    with unit_of_work() as s:
        closed = list(s.scalars(select(Position)))
    assert {p.close_reason for p in closed} == {"manual"}
    assert all(p.exit_price is not None and p.realized_pnl is not None for p in closed)
    [halt] = halts.current()
    assert halt.source == "operator" and halt.reason == "close-all"
    diagnose = vigil("diagnose")
    assert diagnose.exit_code == 0, diagnose.output
    assert check_invariants(deps).clean


def test_close_all_asks_first_and_does_nothing_when_refused(paper_venue, vigil):
    venue = paper_venue
    venue.set_price("BTCUSDT", "60000")
    opened(venue, venue.deps, "BTCUSDT")
    refused = vigil("close", "--all", answer="n\n")
    assert refused.exit_code == 1
    assert len(venue.positions("BTCUSDT")) == 1 and halts.current() == []


def test_close_one_symbol_by_cli_and_unknown_symbol_is_an_error(paper_venue, vigil):
    venue = paper_venue
    venue.set_price("BTCUSDT", "60000")
    venue.set_price("ETHUSDT", "3000")
    btc = opened(venue, venue.deps, "BTCUSDT")
    opened(venue, venue.deps, "ETHUSDT")

    done = vigil("close", "btcusdt", "--exchange", venue.name, "--yes")
    assert done.exit_code == 0, done.output
    assert position(btc).status == "closed" and position(btc).close_reason == "manual"
    assert venue.positions("BTCUSDT") == [] and venue.orders("BTCUSDT") == []
    assert len(venue.positions("ETHUSDT")) == 1  # the other one untouched
    assert halts.current() == []  # closing one does not halt

    missing = vigil("close", "BTCUSDT", "--yes")
    assert missing.exit_code == 1 and "no open position" in missing.output
    other = "bybit" if venue.name == "binance" else "binance"
    wrong = vigil("close", "ETHUSDT", "--exchange", other, "--yes")
    assert wrong.exit_code == 2
    assert vigil("close").exit_code == 2  # neither SYMBOL nor --all


# -- automatic halt ------------------------------------------------------------------------


def test_a_revoked_key_halts_openings_and_pages_within_one_guardian_cycle(paper_venue):
    venue = paper_venue
    deps = venue.make_deps(**WAVE)
    venue.set_price("BTCUSDT", "60000")
    opened(venue, deps, "BTCUSDT")
    venue.sim.admin("POST", "/_sim/keys", {"api_key": "rotated", "api_secret": "rotated"})

    with pytest.raises(errors.AuthenticationFailed) as refused:
        check_protection(deps)  # one guardian cycle
    assert refused.value.code == (10003 if venue.bybit else -2015)

    [halt] = halts.current()
    assert halt.source == HaltSource.AUTH and halt.scope == venue.name
    [event] = events_of("halted")
    assert event.severity == "critical" and event.exchange == venue.name
    with unit_of_work() as s:
        [alert] = s.scalars(select(Alert).where(Alert.kind == "halted")).all()
    assert alert.status == "pending"

    # a second cycle with the same refusal adds no second halt or page
    with pytest.raises(errors.AuthenticationFailed):
        check_protection(deps)
    assert len(events_of("halted")) == 1

    wave_id = store_wave(venue, deps, ["ETHUSDT"])
    assert run_wave(deps, wave_id) == []
    assert signal_outcomes() == {"ETHUSDT": ("filtered", "halted")}

    # the key is restored and the operator resumes: openings work again
    venue.sim.admin("POST", "/_sim/keys", {"api_key": "paper", "api_secret": "paper"})
    check_protection(deps)
    assert halts.current() != []  # an auth halt is never lifted by itself
    assert [h.source for h in halts.resume("test", now=datetime.now(UTC))] == ["auth"]


def test_a_wave_that_meets_a_revoked_key_halts_and_completes_with_every_signal_filtered(
    paper_venue,
):
    venue = paper_venue
    deps = venue.make_deps(**WAVE)
    venue.sim.admin("POST", "/_sim/keys", {"api_key": "rotated", "api_secret": "rotated"})
    wave_id = store_wave(venue, deps, ["ETHUSDT", "SOLUSDT"])

    assert run_wave(deps, wave_id) == []
    assert signal_outcomes() == {
        "ETHUSDT": ("filtered", "halted"),
        "SOLUSDT": ("filtered", "halted"),
    }
    [halt] = halts.current()
    assert halt.source == "auth" and halt.scope == venue.name
    with unit_of_work() as s:
        assert s.get(Wave, wave_id).status == "completed"


def test_a_venue_unavailable_for_too_long_pauses_openings_until_it_answers(paper_venue):
    venue = paper_venue
    clock = ManualClock(datetime.now(UTC))
    deps = dataclasses.replace(venue.make_deps(venue_outage_pause_seconds=120), clock=clock)
    endpoint = "position/list" if venue.bybit else "positionRisk"
    venue.sim.admin(
        "POST", "/_sim/fault", {"endpoint": endpoint, "kind": "http_error", "status": 503}
    )

    with pytest.raises(errors.VenueUnavailable):
        check_protection(deps)
    assert halts.current() == []  # one 503 is a blip
    clock.advance(seconds=121)
    with pytest.raises(errors.VenueUnavailable):
        check_protection(deps)
    [pause] = halts.current()
    assert pause.source == "maintenance" and pause.scope == venue.name
    assert events_of("openings_paused")[0].severity == "warning"
    with unit_of_work() as s:
        assert halts.block_for(s, venue.name).value == "openings_paused"

    venue.sim.admin("DELETE", "/_sim/fault")
    check_protection(deps)
    assert halts.current() == []
    assert len(events_of("openings_resumed")) == 1


# -- the tasks, on a real worker -----------------------------------------------------------


@pytest.fixture
def worker(vigil, tmp_path):
    """A worker process on the test broker, configured like the CLI (``vigil`` sets the env)."""
    with Processes(dict(os.environ, VIGIL_HOME=str(tmp_path))) as processes:
        yield processes.worker("--pool", "solo", "--name", "ctl")


def test_halt_resume_and_close_tasks_run_on_a_worker(paper_venue, worker):
    from tasks.app import create_app

    venue = paper_venue
    venue.set_price("BTCUSDT", "60000")
    venue.set_price("ETHUSDT", "3000")
    btc = opened(venue, venue.deps, "BTCUSDT")
    opened(venue, venue.deps, "ETHUSDT")
    celery = create_app(get_settings())

    def run(name: str, **kwargs: Any) -> Any:
        return celery.send_task(name, kwargs=kwargs, ignore_result=False).get(timeout=120)

    assert run("vigil.maintenance.halt", reason="by task")["created"] is True
    assert [h.halted_by for h in halts.current()] == ["task"]
    assert len(run("vigil.maintenance.resume")["resumed"]) == 1
    closed = run("vigil.orders.close_position_manual", position_id=btc)
    assert closed["closed"] and closed["close_reason"] == "manual"
    report = run("vigil.orders.close_all")
    assert report["closed"] == 1 and report["not_closed"] == 0
    assert venue.positions() == [] and venue.orders() == []
    assert [h.reason for h in halts.current()] == ["close-all"]
