"""Per-symbol settings with real parts: the table, the cache and its announcement, the
decisions that read them, the CLI and the API, and a running worker that picks a change up."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from core.db.models import Event, Position, SymbolSetting, TrailingStop
from core.db.session import unit_of_work
from core.domain.symbol_settings import SymbolSettingError
from core.services import bands, symbol_settings
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position
from core.services.waves import wave_params
from tests.integration.test_price_path import (
    EX,
    StreamThread,
    live_triggers,
    opened,
    sweep,
    wait_for,
)
from tests.integration.test_price_path import start_worker as start_worker  # noqa: F401
from tests.integration.test_price_path import stream_settings as stream_settings  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _fresh_cache():
    symbol_settings.clear_cache()
    yield
    symbol_settings.clear_cache()


def events(kind: str) -> list[Event]:
    with unit_of_work() as s:
        return list(s.scalars(select(Event).where(Event.type == kind).order_by(Event.id)))


def rows() -> int:
    with unit_of_work() as s:
        return s.scalar(select(func.count()).select_from(SymbolSetting)) or 0


def test_precedence_symbol_over_venue_default_over_environment(deps, redis_client):
    env = deps.settings
    assert env.trailing_callback_percent == Decimal("0.5") and env.leverage == 10
    symbol_settings.set_values(redis_client, EX, "*", {"leverage": 5}, "test")
    symbol_settings.set_values(
        redis_client, EX, "BTCUSDT", {"trailing_callback_percent": Decimal(1)}, "test"
    )
    btc = symbol_settings.effective(env, redis_client, EX, "BTCUSDT")
    eth = symbol_settings.effective(env, redis_client, EX, "ETHUSDT")
    other_venue = symbol_settings.effective(env, redis_client, "bybit", "BTCUSDT")
    assert (btc.trailing_callback_percent, btc.leverage) == (Decimal(1), 5)
    assert (eth.trailing_callback_percent, eth.leverage) == (Decimal("0.5"), 5)
    assert (other_venue.trailing_callback_percent, other_venue.leverage) == (Decimal("0.5"), 10)
    assert env.leverage == 10  # the process's settings are untouched

    symbol_settings.set_values(redis_client, EX, "BTCUSDT", {"leverage": 3}, "test")
    assert symbol_settings.effective(env, redis_client, EX, "BTCUSDT").leverage == 3
    symbol_settings.unset_values(redis_client, EX, "BTCUSDT", ["leverage"], "test")
    btc = symbol_settings.effective(env, redis_client, EX, "BTCUSDT")
    assert (btc.trailing_callback_percent, btc.leverage) == (Decimal(1), 5)
    symbol_settings.unset_values(redis_client, EX, "BTCUSDT", None, "test")
    assert symbol_settings.effective(env, redis_client, EX, "BTCUSDT").leverage == 5
    assert rows() == 1  # a row with nothing left is removed


def test_a_change_is_one_event_with_old_and_new_and_a_no_op_is_none(deps, redis_client):
    symbol_settings.set_values(redis_client, EX, "BTCUSDT", {"leverage": 5}, "cli:me")
    change = symbol_settings.set_values(
        redis_client, EX, "BTCUSDT", {"trailing_callback_percent": Decimal("1.0")}, "cli:me"
    )
    assert change.changed
    again = symbol_settings.set_values(redis_client, EX, "BTCUSDT", {"leverage": 5}, "cli:me")
    assert not again.changed
    found = events("symbol_settings_changed")
    assert len(found) == 2
    assert (found[1].exchange, found[1].symbol) == (EX, "BTCUSDT")
    assert found[1].data["old"] == {"leverage": 5}
    assert found[1].data["new"] == {"leverage": 5, "trailing_callback_percent": "1"}
    assert found[1].data["by"] == "cli:me"


def test_the_cache_follows_the_announcement_and_survives_a_flushed_redis(deps, redis_client):
    env = deps.settings
    assert symbol_settings.effective(env, redis_client, EX, "BTCUSDT").leverage == 10
    with unit_of_work() as s:  # written behind the cache's back: not seen yet
        s.add(SymbolSetting(exchange=EX, symbol="BTCUSDT", leverage=7))
    assert symbol_settings.effective(env, redis_client, EX, "BTCUSDT").leverage == 10
    messages = redis_client.pubsub()
    messages.subscribe(symbol_settings.CHANNEL)
    messages.get_message(timeout=1)  # the subscription's confirmation
    symbol_settings.announce(redis_client, EX, "BTCUSDT")
    assert symbol_settings.effective(env, redis_client, EX, "BTCUSDT").leverage == 7
    assert messages.get_message(timeout=2)["data"] == b"binance:BTCUSDT"
    messages.close()
    with unit_of_work() as s:
        s.execute(SymbolSetting.__table__.update().values(leverage=8))
    redis_client.flushall()  # the version is lost with it: every cache re-reads
    assert symbol_settings.effective(env, redis_client, EX, "BTCUSDT").leverage == 8


def test_an_opening_uses_the_symbols_stop_loss_leverage_and_activation(sim, deps, redis_client):
    sim.set_price("BTCUSDT", "60000")
    symbol_settings.set_values(
        redis_client,
        EX,
        "BTCUSDT",
        {"stop_loss_percent": Decimal(1), "trailing_activation_percent": Decimal(3), "leverage": 4},
        "test",
    )
    with unit_of_work() as s:
        pid = create_position(s, NewPosition(EX, "BTCUSDT", "long")).id
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    with unit_of_work() as s:
        position = s.get(Position, pid)
        trailing = s.get(TrailingStop, pid)
        assert position.stop_price == Decimal("59400")  # 1 % under 60000, not the env's 2 %
        assert position.leverage == 4
        assert trailing.activation_price == Decimal("61800")  # 3 %
    assert live_triggers(sim) == [Decimal("59400")]


def test_a_disabled_symbol_is_stoplisted_in_the_wave_and_an_override_lifts_the_env_stoplist(
    deps, redis_client
):
    env = deps.settings.model_copy(update={"stoplist": ["DOGEUSDT"]})
    symbol_settings.set_values(redis_client, EX, "BTCUSDT", {"enabled": False}, "test")
    symbol_settings.set_values(redis_client, EX, "DOGEUSDT", {"enabled": True}, "test")
    symbols = ["BTCUSDT", "DOGEUSDT", "ETHUSDT"]
    assert symbol_settings.disabled_among(env, redis_client, EX, symbols) == {"BTCUSDT"}
    symbol_settings.set_values(redis_client, EX, "*", {"enabled": False}, "test")
    assert symbol_settings.disabled_among(env, redis_client, EX, symbols) == {
        "BTCUSDT",
        "ETHUSDT",
    }
    assert wave_params(env).stoplist == {"DOGEUSDT"}  # the environment's own list, unchanged


def test_the_target_must_be_this_venue_and_a_listed_symbol(deps):
    assert symbol_settings.check_target(deps, None, "btcusdt") == (EX, "BTCUSDT")
    assert symbol_settings.check_target(deps, EX, "*") == (EX, "*")
    with pytest.raises(SymbolSettingError, match="NOPEUSDT is not listed on binance"):
        symbol_settings.check_target(deps, None, "NOPEUSDT")
    with pytest.raises(SymbolSettingError, match="not configured"):
        symbol_settings.check_target(deps, "bybit", "BTCUSDT")


# --- the CLI, as an operator runs it --------------------------------------------------------


@pytest.fixture
def vigil(sim, clean_db, redis_url, tmp_path):
    env = dict(
        os.environ, VIGIL_HOME=str(tmp_path), VIGIL_EXCHANGE="paper", VIGIL_EXCHANGE_URL=sim.url
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "shell.cli", "settings", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def test_cli_set_show_unset_and_bad_input_refused_with_nothing_changed(vigil, redis_client):
    done = vigil("set", "BTCUSDT", "trailing_callback_percent=1.0", "leverage=5")
    assert done.returncode == 0, done.stderr
    assert "BTCUSDT on binance" in done.stdout and "'trailing_callback_percent': '1'" in done.stdout
    for bad, message in [
        (["set", "BTCUSDT", "bogus=1"], "unknown key 'bogus'"),
        (["set", "BTCUSDT", "trailing_callback_percent=150"], "out of range"),
        (["set", "NOPEUSDT", "leverage=3"], "NOPEUSDT is not listed on binance"),
        (["set", "BTCUSDT", "leverage=3", "--exchange", "bybit"], "not configured"),
        (["unset", "BTCUSDT", "bogus"], "unknown key"),
    ]:
        refused = vigil(*bad)
        assert refused.returncode == 2, (bad, refused.stdout)
        assert message in refused.stderr and refused.stderr.strip().count("\n") == 0, bad
    assert len(events("symbol_settings_changed")) == 1
    shown = vigil("show", "BTCUSDT")
    assert shown.returncode == 0, shown.stderr
    assert "trailing_callback_percent=1 " in shown.stdout
    assert "leverage=5  (override)" in shown.stdout
    assert "stop_loss_percent=2.0  (environment)" in shown.stdout
    assert vigil("unset", "BTCUSDT", "leverage").returncode == 0
    assert vigil("unset", "BTCUSDT").returncode == 0
    assert rows() == 0 and len(events("symbol_settings_changed")) == 3


def highest(pid: int) -> Decimal | None:
    with unit_of_work() as s:
        return s.get(TrailingStop, pid).highest_price


# --- the done-when: a running worker's next trailing move uses the new callback -------------


def test_settings_set_changes_the_next_trailing_move_of_a_running_position(
    sim, make_deps, stream_settings, start_worker, redis_client, vigil
):
    deps = make_deps(trailing_min_update_interval=0)
    sim.set_price("BTCUSDT", "60000")
    pid = opened(deps)
    start_worker()
    with StreamThread(stream_settings):
        sweep(deps)
        wait_for(lambda: bands.components(redis_client, EX, "BTCUSDT"), what="the band")
        sim.set_price("BTCUSDT", "61000")  # activates at callback 0.5 %: 61000 * 0.995
        wait_for(lambda: live_triggers(sim) == [Decimal("60695")], what="stop at 0.5 %")

        done = vigil("set", "BTCUSDT", "trailing_callback_percent=1.0")
        assert done.returncode == 0, done.stderr
        sim.set_price("BTCUSDT", "61100")  # a new high; at 1 % the stop would go down: kept
        wait_for(lambda: highest(pid) == Decimal("61100"), what="the new high seen")
        assert live_triggers(sim) == [Decimal("60695")]
        sim.set_price("BTCUSDT", "62000")  # the same worker, now 1 %: 62000 * 0.99
        wait_for(lambda: live_triggers(sim) == [Decimal("61380")], what="stop at 1 %")
    with unit_of_work() as s:
        assert s.get(TrailingStop, pid).current_stop == Decimal("61380")
        moves = s.scalars(
            select(Event).where(Event.position_id == pid, Event.type == "trailing_stop_updated")
        ).all()
    assert Decimal(moves[-1].data["new_stop"]) == Decimal("61380")


# --- the API --------------------------------------------------------------------------------


def test_api_sets_shows_unsets_with_the_token_and_refuses_bad_input(deps, redis_client):
    from core.api.app import create_app
    from tests.integration.test_api import TOKEN, Served

    served = Served(
        create_app(
            deps.settings.model_copy(update={"api_token": SecretStr(TOKEN)}),
            deps_factory=lambda: deps,
            redis_client=redis_client,
            worker_ping=lambda timeout: [],
        )
    )
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    try:
        body = {"values": {"trailing_callback_percent": "1.0", "enabled": False}}
        assert served.request("PUT", "/settings/symbols/BTCUSDT", body=body)[0] == 401
        status, change = served.request("PUT", "/settings/symbols/btcusdt", headers=auth, body=body)
        assert status == 200 and change["changed"]
        assert change["new"] == {"enabled": False, "trailing_callback_percent": "1"}
        for path, bad, message in [
            ("BTCUSDT", {"values": {"bogus": 1}}, "unknown key"),
            ("BTCUSDT", {"values": {"leverage": 500}}, "out of range"),
            ("BTCUSDT", {"values": {}}, "nothing to set"),
            ("NOPEUSDT", {"values": {"leverage": 3}}, "not listed"),
            ("BTCUSDT", {"values": {"leverage": 3}, "exchange": "bybit"}, "not configured"),
        ]:
            status, refused = served.request(
                "PUT", f"/settings/symbols/{path}", headers=auth, body=bad
            )
            assert status == 400 and message in refused["error"], (bad, refused)
        status, shown = served.request("GET", "/settings/symbols", headers=auth)
        assert status == 200
        assert shown["settings"] == [{"exchange": EX, "symbol": "BTCUSDT", "values": change["new"]}]
        status, gone = served.request(
            "DELETE", "/settings/symbols/BTCUSDT?keys=enabled", headers=auth
        )
        assert status == 200 and gone["new"] == {"trailing_callback_percent": "1"}
        assert served.request("DELETE", "/settings/symbols/BTCUSDT?keys=x", headers=auth)[0] == 400
    finally:
        served.stop()
    assert len(events("symbol_settings_changed")) == 2
