"""The operator commands as an operator runs them: diagnose, cleanup, events, and the
duplicate-position race, against the paper exchange and the real database."""

import json

import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from core.config import get_settings
from core.db.models import Event, Position, TrailingStop
from core.db.session import unit_of_work
from core.domain.positions import PositionTrigger
from core.services.deps import reset_deps
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position, transition
from shell.cli import app

pytestmark = pytest.mark.integration


@pytest.fixture
def vigil(sim, clean_db, redis_client, monkeypatch):
    """Run `vigil ...` in-process with the settings a running system would give it."""
    monkeypatch.setenv("VIGIL_EXCHANGE_URL", sim.url)
    monkeypatch.setenv("VIGIL_ENTRY_FILL_TIMEOUT", "2")
    get_settings.cache_clear()
    reset_deps()
    runner = CliRunner()

    def run(*args):
        return runner.invoke(app, list(args), catch_exceptions=False)

    yield run
    get_settings.cache_clear()
    reset_deps()


def opened(deps, symbol="BTCUSDT", side="long") -> int:
    with unit_of_work() as s:
        pid = create_position(s, NewPosition("binance", symbol, side)).id
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    return pid


def make_a_mess(sim, deps):
    """One of each thing cleanup fixes: an orphan stop, a foreign stop, an orphan trailing
    row, and a stale opening."""
    leaked = opened(deps, "BTCUSDT")
    sim.admin("POST", "/_sim/close_position", {"symbol": "BTCUSDT"})
    with unit_of_work() as s:  # closed, but the stop and the trailing row were left behind
        position = s.get(Position, leaked)
        token = deps.fence_token()
        transition(s, position, PositionTrigger.CLOSED_ON_EXCHANGE, token, reason="test")
    sim.admin(
        "POST",
        "/_sim/order",
        {
            "symbol": "ETHUSDT",
            "side": "BUY",
            "type": "STOP_MARKET",
            "triggerPrice": "3300",
            "closePosition": True,
        },
    )
    with unit_of_work() as s:
        stale = create_position(s, NewPosition("binance", "SOLUSDT", "long"))
        s.flush()
        s.execute(
            text("UPDATE positions SET updated_at = now() - interval '1 hour' WHERE id = :id"),
            {"id": stale.id},
        )
        stale_id = stale.id
    return leaked, stale_id


def test_diagnose_exits_0_on_a_clean_system(vigil, deps):
    opened(deps)
    result = vigil("diagnose")
    assert result.exit_code == 0, result.output
    assert "clean" in result.output


def test_diagnose_exits_1_and_names_every_violation(vigil, sim, deps):
    leaked, stale = make_a_mess(sim, deps)
    result = vigil("diagnose", "--json")
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["clean"] is False
    assert report["counts"]["orphan_order"] == 2
    assert report["counts"]["orphan_trailing"] == 1
    assert report["counts"]["stale_opening"] == 1
    table = vigil("diagnose")
    assert table.exit_code == 1 and "orphan_trailing" in table.output


def test_diagnose_exits_2_when_the_exchange_cannot_be_read(vigil, sim):
    sim.fault("positionRisk", "http_error", count=5)
    result = vigil("diagnose")
    assert result.exit_code == 2


def test_cleanup_is_a_dry_run_by_default(vigil, sim, deps):
    make_a_mess(sim, deps)
    before = sim.state()["open_algo_orders"]
    result = vigil("cleanup")
    assert result.exit_code == 0, result.output
    assert "dry run" in result.output
    assert sim.state()["open_algo_orders"] == before
    with unit_of_work() as s:
        assert s.scalars(select(Event).where(Event.type == "cleanup_action")).first() is None
    assert vigil("diagnose").exit_code == 1


def test_cleanup_apply_fixes_what_it_owns_and_logs_each_action(vigil, sim, deps):
    leaked, stale = make_a_mess(sim, deps)
    result = vigil("cleanup", "--apply", "--json")
    assert result.exit_code == 0, result.output
    outcomes = {a["violation"]["kind"]: a["outcome"] for a in json.loads(result.output)["actions"]}
    assert outcomes["orphan_trailing"] == "removed"
    assert outcomes["stale_opening"] == "recovered"
    assert sim.state()["open_algo_orders"] == []
    with unit_of_work() as s:
        assert s.get(TrailingStop, leaked) is None
        assert s.get(Position, stale).status == "failed"
        logged = s.scalars(select(Event).where(Event.type == "cleanup_action")).all()
    assert len(logged) == 4
    assert vigil("diagnose").exit_code == 0


def test_events_lists_the_log_and_a_position_timeline(vigil, deps):
    pid = opened(deps, "BTCUSDT")
    opened(deps, "ETHUSDT")
    table = vigil("events", "--symbol", "ETHUSDT")
    assert table.exit_code == 0 and "ETHUSDT" in table.output and "BTCUSDT" not in table.output
    timeline = vigil("events", "--position", str(pid), "--json")
    assert timeline.exit_code == 0, timeline.output
    rows = [json.loads(line) for line in timeline.output.splitlines()]
    types = [r["type"] for r in rows]
    assert types[0] == "position_created"
    assert types.index("entry_order_placed") < types.index("stop_loss_placed")
    assert {r["symbol"] for r in rows} == {"BTCUSDT"}
    typed = vigil("events", "--type", "stop_loss_placed", "--json")
    assert len(typed.output.splitlines()) == 2
    assert vigil("events", "--position", "999999").exit_code == 1
    assert vigil("events", "--since", "last tuesday").exit_code == 2


def test_reproduce_duplicates_races_both_paths_and_finds_none(vigil, sim):
    result = vigil(
        "reproduce-duplicates",
        "--threads",
        "4",
        "--duration",
        "3",
        "--symbols",
        "BTCUSDT,ETHUSDT",
        "--no-kick-reconciliation",
    )
    assert result.exit_code == 0, result.output
    assert "ACTUAL DUPLICATES" in result.output
    refused = int(result.output.split("duplicates refused by the database")[1].split()[1])
    assert refused > 0  # the race happened and the database refused it
    with unit_of_work() as s:
        left = s.scalars(
            select(Position).where(Position.status.in_(["active", "pending_sl", "pending_entry"]))
        ).all()
    assert left == []  # its own positions are closed again
    assert sim.state()["positions"] == []


def test_reproduce_duplicates_refuses_a_real_exchange(vigil, monkeypatch):
    monkeypatch.setenv("VIGIL_EXCHANGE", "binanceusdm")
    get_settings.cache_clear()
    reset_deps()
    result = vigil("reproduce-duplicates", "--duration", "1", "--no-kick-reconciliation")
    assert result.exit_code == 2


def test_cleanup_leaves_an_unprotected_position_to_protection(vigil, sim, deps):
    opened(deps)
    [stop] = sim.state()["open_algo_orders"]
    deps.exchange.cancel_order("BTCUSDT", str(stop["algoId"]), conditional=True)
    result = vigil("cleanup", "--apply")
    assert result.exit_code == 0
    assert "left alone: unprotected_position" in result.output
    assert sim.state()["open_algo_orders"] == []  # nothing placed or cancelled by cleanup
