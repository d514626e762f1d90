"""Wave processing against the paper exchange: top N open with one stop each, filters with
reasons, processed once under duplicate and concurrent deliveries, resumable mid-wave."""

from __future__ import annotations

import dataclasses
import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from core.db.models import Event, Position, Signal, Wave
from core.db.session import unit_of_work
from core.domain.signals import parse_frame
from core.services import waves
from core.services.opening import open_position
from core.services.opening_blocks import paused_key
from core.services.positions import NewPosition, create_position
from core.services.signals import store_frame
from core.services.waves import WaveOutcome, wave_params

pytestmark = pytest.mark.integration

WAVE = {"wave_interval": 60, "wave_grace": 0, "max_trades_per_wave": 3, "wave_buffer": 1}


class FixedClock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment


AT: list[datetime] = []


@pytest.fixture(autouse=True)
def _previous_window() -> None:
    """Every signal of a test lands mid-way into the previous 60 s window: one wave, due."""
    now = datetime.now(UTC) - timedelta(seconds=60)
    AT[:] = [now.replace(second=30, microsecond=0)]


def last_window() -> datetime:
    return AT[0]


def signal(sid: str, symbol: str, week: float, action: str = "BUY", **extra) -> dict:
    return {
        "type": "signal",
        "id": sid,
        "symbol": symbol,
        "exchange": "binance",
        "action": action,
        "score_week": week,
        "score_month": 50,
        "timestamp": extra.pop("at", last_window()).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        **extra,
    }


def store(deps, *signals: dict) -> int:
    """Store signals as the ingest does; return the wave id they joined."""
    frame = json.dumps({"type": "signals", "signals": list(signals)})
    report = store_frame(
        parse_frame(frame, now=datetime.now(UTC)),
        now=datetime.now(UTC),
        params=wave_params(deps.settings),
    )
    assert not report.duplicates and report.rejected == 0
    wave_ids = {s.wave_id for s in report.stored}
    assert len(wave_ids) == 1
    return wave_ids.pop()


class Openings:
    """Stands in for the orders queue: what ``launch`` hands over is opened later by
    ``drain``, each opening followed by an advance of the wave, as the Celery chain does;
    openings of one batch run in parallel threads, each with its own exchange client."""

    def __init__(self, make_deps, overrides: dict) -> None:
        self.make_deps = make_deps
        self.overrides = overrides
        self.queue: list[int] = []
        self.launched: list[int] = []
        self._lock = threading.Lock()

    def launch(self, position_id: int) -> None:
        with self._lock:
            self.queue.append(position_id)
            self.launched.append(position_id)

    def drain(self, wave_id: int) -> None:
        while self.queue:
            with self._lock:
                batch, self.queue = self.queue, []
            errors: list[BaseException] = []

            def run(pid: int, errors: list[BaseException] = errors) -> None:
                try:
                    deps = self.make_deps(**self.overrides)
                    open_position(deps, pid)
                    waves.advance_wave(deps, wave_id, self.launch)
                except BaseException as exc:  # surfaced below
                    errors.append(exc)

            threads = [threading.Thread(target=run, args=(pid,)) for pid in batch]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors, errors


def signal_rows() -> dict[str, Signal]:
    with unit_of_work() as s:
        return {row.signal_id: row for row in s.scalars(select(Signal))}


def positions() -> list[Position]:
    with unit_of_work() as s:
        return list(s.scalars(select(Position).order_by(Position.id)))


def wave_row(wave_id: int) -> Wave:
    with unit_of_work() as s:
        return s.get(Wave, wave_id)


def events(event_type: str) -> list[Event]:
    with unit_of_work() as s:
        return list(s.scalars(select(Event).where(Event.type == event_type).order_by(Event.id)))


def live_positions(sim) -> dict[str, Decimal]:
    return {
        p["symbol"]: abs(Decimal(p["positionAmt"]))
        for p in sim.state()["positions"]
        if Decimal(p["positionAmt"]) != 0
    }


def live_stops(sim) -> dict[str, list[Decimal]]:
    stops: dict[str, list[Decimal]] = {}
    for order in sim.state()["open_algo_orders"]:
        stops.setdefault(order["symbol"], []).append(Decimal(order["quantity"]))
    return stops


def entry_posts(sim) -> int:
    return sum(
        1
        for r in sim.requests()["requests"]
        if r["method"] == "POST" and r["path"].endswith("/order")
    )


def assert_each_open_position_has_one_stop_for_its_quantity(sim, symbols: set[str]) -> None:
    held, stops = live_positions(sim), live_stops(sim)
    assert set(held) == symbols
    for symbol, quantity in held.items():
        assert stops.get(symbol) == [quantity], (symbol, stops.get(symbol), quantity)


def test_a_wave_opens_its_top_n_each_with_one_stop_and_filters_the_rest_with_reasons(
    sim, make_deps
):
    overrides = {**WAVE, "stoplist": "DOGEUSDT", "min_score_week": "50"}
    deps = make_deps(**overrides)
    wave_id = store(
        deps,
        signal("w-btc", "BTCUSDT", 90),
        signal("w-eth", "ETHUSDT", 85),
        signal("w-sol", "SOLUSDT", 80, "SELL"),
        signal("w-bnb", "BNBUSDT", 75),
        signal("w-xrp", "XRPUSDT", 70),
        signal("w-doge", "DOGEUSDT", 95),
        signal("w-ada", "ADAUSDT", 40),
        signal("w-btc2", "BTCUSDT", 60, "SELL"),
    )
    openings = Openings(make_deps, overrides)

    report = waves.process_wave(deps, wave_id, openings.launch)
    assert report.outcome is WaveOutcome.STARTED and len(report.launched) == 3
    openings.drain(wave_id)

    assert_each_open_position_has_one_stop_for_its_quantity(sim, {"BTCUSDT", "ETHUSDT", "SOLUSDT"})
    assert {p.symbol: p.status for p in positions()} == {
        "BTCUSDT": "active",
        "ETHUSDT": "active",
        "SOLUSDT": "active",
    }
    rows = signal_rows()
    outcome = {
        sid: (row.status, (row.outcome_reason or "").split(":")[0]) for sid, row in rows.items()
    }
    assert outcome == {
        "w-btc": ("opened", ""),
        "w-eth": ("opened", ""),
        "w-sol": ("opened", ""),
        "w-bnb": ("filtered", "wave_target_reached"),  # the buffer, not needed
        "w-xrp": ("filtered", "beyond_wave_limit"),
        "w-doge": ("filtered", "stoplisted"),
        "w-ada": ("filtered", "below_min_score_week"),
        "w-btc2": ("filtered", "duplicate_in_wave"),
    }
    wave = wave_row(wave_id)
    assert wave.status == "completed" and wave.stats["opened"] == 3
    [completed] = events("wave_completed")
    assert completed.data["opened"] == 3 and completed.data["target"] == 3
    assert {e.data["reason"] for e in events("signal_filtered")} == {
        "wave_target_reached",
        "beyond_wave_limit",
        "stoplisted",
        "below_min_score_week",
        "duplicate_in_wave",
    }
    # one correlation id per signal, from receipt to its stop
    for sid in ("w-btc", "w-eth", "w-sol"):
        with unit_of_work() as s:
            types = set(
                s.scalars(
                    select(Event.type).where(Event.correlation_id == rows[sid].correlation_id)
                )
            )
        assert {
            "signal_received",
            "signal_selected",
            "position_created",
            "entry_order_placed",
            "stop_loss_placed",
            "signal_executed",
        } <= types

    posts = entry_posts(sim)
    again = waves.process_wave(deps, wave_id, openings.launch)
    assert again.outcome is WaveOutcome.DUPLICATE and again.launched == []
    assert openings.queue == [] and len(positions()) == 3 and entry_posts(sim) == posts
    assert len(events("wave_duplicate_detected")) == 1
    assert events("risk_limits_exceeded") == []  # no risk limit held anything back


def test_a_wave_held_back_by_the_position_limit_says_so_once(sim, make_deps):
    overrides = {**WAVE, "max_open_positions": "1"}
    deps = make_deps(**overrides)
    wave_id = store(
        deps,
        signal("r-btc", "BTCUSDT", 90),
        signal("r-eth", "ETHUSDT", 85),
        signal("r-sol", "SOLUSDT", 80),
    )
    openings = Openings(make_deps, overrides)
    waves.process_wave(deps, wave_id, openings.launch)
    openings.drain(wave_id)
    assert [p.symbol for p in positions()] == ["BTCUSDT"]
    [limit] = events("risk_limits_exceeded")
    held = [r for r in signal_rows().values() if (r.outcome_reason or "").startswith("max_open")]
    assert held and limit.data["signals_held_back"] == {"max_open_positions": len(held)}
    assert limit.data["max_open_positions"] == 1 and limit.severity == "warning"


def test_twenty_concurrent_deliveries_open_each_signal_at_most_once(sim, make_deps):
    overrides = {**WAVE, "max_trades_per_wave": 4, "wave_buffer": 2}
    deps = make_deps(**overrides)
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT", "LINKUSDT"]
    wave_id = store(deps, *(signal(f"c-{i}", sym, 90 - i) for i, sym in enumerate(symbols)))
    openings = Openings(make_deps, overrides)
    clients = [make_deps(**overrides) for _ in range(20)]
    barrier = threading.Barrier(20)
    outcomes: list[WaveOutcome] = []
    errors: list[BaseException] = []

    def deliver(worker_deps) -> None:
        try:
            barrier.wait()
            outcomes.append(waves.process_wave(worker_deps, wave_id, openings.launch).outcome)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=deliver, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(outcomes).count(WaveOutcome.STARTED) == 1
    assert outcomes.count(WaveOutcome.DUPLICATE) == 19
    assert len(openings.launched) == 4  # N openings started, once each
    openings.drain(wave_id)

    opened = positions()
    assert len(opened) == 4 and len({p.signal_id for p in opened}) == 4
    assert len({p.symbol for p in opened}) == 4
    assert_each_open_position_has_one_stop_for_its_quantity(sim, set(symbols[:4]))
    assert wave_row(wave_id).status == "completed"
    assert events("position_duplicate_prevented") == []


def test_a_failed_candidate_is_replaced_from_the_buffer_until_n_succeed(sim, make_deps):
    overrides = {**WAVE, "max_trades_per_wave": 2, "wave_buffer": 2}
    deps = make_deps(**overrides)
    wave_id = store(
        deps,
        signal("b-luna", "LUNAUSDT", 99),  # listed, not trading: its opening fails
        signal("b-btc", "BTCUSDT", 90),
        signal("b-eth", "ETHUSDT", 80),
        signal("b-sol", "SOLUSDT", 70),
    )
    openings = Openings(make_deps, overrides)
    waves.process_wave(deps, wave_id, openings.launch)
    openings.drain(wave_id)

    rows = signal_rows()
    assert (
        rows["b-luna"].status == "failed" and "symbol unavailable" in rows["b-luna"].outcome_reason
    )
    assert rows["b-btc"].status == rows["b-eth"].status == "opened"
    assert rows["b-sol"].status == "filtered"
    assert rows["b-sol"].outcome_reason.startswith("wave_target_reached")
    assert_each_open_position_has_one_stop_for_its_quantity(sim, {"BTCUSDT", "ETHUSDT"})
    assert wave_row(wave_id).stats["failed"] == 1


def test_a_signal_for_a_symbol_already_open_is_filtered(sim, make_deps):
    deps = make_deps(**WAVE)
    with unit_of_work() as s:
        existing = create_position(s, NewPosition("binance", "BTCUSDT", "long")).id
    open_position(deps, existing)
    wave_id = store(deps, signal("o-btc", "BTCUSDT", 95), signal("o-eth", "ETHUSDT", 80))
    openings = Openings(make_deps, WAVE)
    waves.process_wave(deps, wave_id, openings.launch)
    openings.drain(wave_id)

    rows = signal_rows()
    assert rows["o-btc"].status == "filtered"
    assert rows["o-btc"].outcome_reason.startswith("already_open")
    assert rows["o-eth"].status == "opened"
    assert [p.symbol for p in positions()] == ["BTCUSDT", "ETHUSDT"]
    assert_each_open_position_has_one_stop_for_its_quantity(sim, {"BTCUSDT", "ETHUSDT"})


def test_a_symbol_taken_between_selection_and_start_goes_to_the_next_candidate(sim, make_deps):
    overrides = {**WAVE, "max_trades_per_wave": 1, "wave_buffer": 1}
    deps = make_deps(**overrides)
    wave_id = store(deps, signal("r-btc", "BTCUSDT", 95), signal("r-eth", "ETHUSDT", 80))
    assert waves.claim_and_select(deps, wave_id)  # the worker stops here
    with unit_of_work() as s:  # meanwhile reconciliation adopts a BTC position
        create_position(s, NewPosition("binance", "BTCUSDT", "long"))
    openings = Openings(make_deps, overrides)
    report = waves.advance_wave(deps, wave_id, openings.launch)
    assert len(report.launched) == 1
    rows = signal_rows()
    assert rows["r-btc"].status == "filtered" and rows["r-btc"].outcome_reason.startswith(
        "already_open"
    )
    openings.drain(wave_id)
    assert signal_rows()["r-eth"].status == "opened"


def test_a_wave_interrupted_between_its_steps_resumes_without_duplicates(sim, make_deps):
    overrides = {**WAVE, "max_trades_per_wave": 2, "wave_buffer": 1}
    deps = make_deps(**overrides)
    wave_id = store(
        deps,
        signal("i-btc", "BTCUSDT", 90),
        signal("i-eth", "ETHUSDT", 80),
        signal("i-sol", "SOLUSDT", 70),
    )
    # 1. the worker dies right after claiming: the redelivered task starts the openings
    assert waves.claim_and_select(deps, wave_id)
    lost: list[int] = []

    def crash_after_commit(position_id: int) -> None:
        lost.append(position_id)
        raise ConnectionError("worker killed before the opening was enqueued")

    with pytest.raises(ConnectionError):
        waves.process_wave(deps, wave_id, crash_after_commit)
    assert len(lost) == 1  # the first hand-over died; both positions were committed
    assert [p.status for p in positions()] == ["pending_entry", "pending_entry"]

    # 2. another delivery soon after: the wave is not stalled, nothing is started twice
    openings = Openings(make_deps, overrides)
    report = waves.process_wave(deps, wave_id, openings.launch)
    assert report.outcome is WaveOutcome.DUPLICATE and openings.launched == []

    # 3. once it made no progress for the stall period, beat's dispatch resumes it
    later = dataclasses.replace(
        deps,
        clock=FixedClock(
            datetime.now(UTC) + timedelta(seconds=deps.settings.wave_stall_seconds + 1)
        ),
    )
    dispatched: list[int] = []
    assert waves.dispatch_due_waves(later, dispatched.append).stalled == [wave_id]
    report = waves.process_wave(later, wave_id, openings.launch)
    assert report.outcome is WaveOutcome.RESUMED
    assert sorted(openings.launched) == sorted(p.id for p in positions())
    openings.drain(wave_id)

    assert_each_open_position_has_one_stop_for_its_quantity(sim, {"BTCUSDT", "ETHUSDT"})
    assert len(positions()) == 2
    rows = signal_rows()
    assert [rows[s].status for s in ("i-btc", "i-eth", "i-sol")] == ["opened", "opened", "filtered"]
    assert wave_row(wave_id).status == "completed"
    assert len(events("wave_resumed")) == 1


def test_paused_openings_complete_the_wave_without_starting_any(sim, make_deps, redis_client):
    deps = make_deps(**WAVE)
    redis_client.set(paused_key("binance"), "insufficient funds", ex=60)
    wave_id = store(deps, signal("p-btc", "BTCUSDT", 90), signal("p-eth", "ETHUSDT", 80))
    report = waves.process_wave(deps, wave_id, Openings(make_deps, WAVE).launch)
    assert report.launched == [] and report.completed
    rows = signal_rows()
    assert {r.outcome_reason.split(":")[0] for r in rows.values()} == {"openings_paused"}
    assert positions() == []


def test_overdue_waves_expire_with_their_signals_and_late_signals_expire_on_arrival(sim, make_deps):
    deps = make_deps(**WAVE, wave_max_delay=90)
    stale = store(deps, signal("e-old", "BTCUSDT", 90, at=datetime.now(UTC) - timedelta(hours=1)))
    bybit = store(
        deps,
        signal(
            "e-bybit", "ETHUSDT", 90, exchange="bybit", at=datetime.now(UTC) - timedelta(hours=1)
        ),
    )
    report = waves.process_wave(deps, stale, Openings(make_deps, WAVE).launch)
    assert report.outcome is WaveOutcome.EXPIRED
    dispatched: list[int] = []
    assert waves.dispatch_due_waves(deps, dispatched.append).expired == [bybit]  # any exchange
    assert dispatched == []
    assert {r.status for r in signal_rows().values()} == {"expired"}
    assert {wave_row(stale).status, wave_row(bybit).status} == {"expired"}

    # a signal arriving for a wave that is no longer open is stored, as expired
    fresh = store(deps, signal("e-1", "SOLUSDT", 90))
    openings = Openings(make_deps, WAVE)
    waves.process_wave(deps, fresh, openings.launch)
    late = store(deps, signal("e-late", "BNBUSDT", 90))
    assert late == fresh
    assert signal_rows()["e-late"].status == "expired"
    openings.drain(fresh)
    assert signal_rows()["e-1"].status == "opened"


def test_a_wave_not_due_yet_is_left_open_and_dispatch_skips_it(sim, make_deps):
    deps = make_deps(**{**WAVE, "wave_grace": 600})
    wave_id = store(deps, signal("n-btc", "BTCUSDT", 90))
    assert waves.process_wave(deps, wave_id, Openings(make_deps, WAVE).launch).outcome is (
        WaveOutcome.NOT_DUE
    )
    dispatched: list[int] = []
    waves.dispatch_due_waves(deps, dispatched.append)
    assert dispatched == [] and wave_row(wave_id).status == "open"
    assert waves.process_wave(deps, 987654, lambda _: None).outcome is WaveOutcome.NOT_FOUND
    with unit_of_work() as s:
        assert s.scalar(select(func.count()).where(Event.type == "wave_not_found")) == 1
