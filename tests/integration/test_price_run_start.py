"""A price run's start in one script (``core.services.run_start``): the window, the lock's
first try and the settings version, with everything the three separate calls guaranteed."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from core.dead_runs import run_key
from core.locks import LockNotAcquired, fence_token, lock_key, symbol_lock
from core.services import price_path, symbol_settings
from core.services.run_start import start_run
from core.services.symbol_settings import VERSION_KEY
from core.services.tick_window import pending_key, window_key
from tests.integration import test_stop_move_cost as cost
from tests.integration.test_stop_move_cost import EX, SYMBOL, moves, tick_leaves_band

trailing_position = cost.trailing_position  # the fixture: a live trailing stop, band published

pytestmark = pytest.mark.integration


def test_a_free_lock_is_taken_with_the_window_and_the_settings_version(
    sim, trailing_position, redis_client
):
    deps, _ = trailing_position
    tick_leaves_band(redis_client, Decimal("61800"))
    redis_client.set(VERSION_KEY, "v42")
    start = start_run(redis_client, deps.settings, EX, SYMBOL, 5.0)
    assert start.window is not None and start.window.ticks == 1
    assert start.window.high == Decimal("61800")
    assert start.lock.dead_run is False  # taken, no dead run
    assert redis_client.get(lock_key(EX, SYMBOL)) == start.lock.owner.encode()
    assert redis_client.get(run_key(lock_key(EX, SYMBOL))) == start.lock.owner.encode()
    assert 0 < redis_client.pttl(lock_key(EX, SYMBOL)) <= 5000
    assert redis_client.get(pending_key(EX, SYMBOL)) == b"running"
    assert redis_client.hget(window_key(EX, SYMBOL), "n") == b"0"  # restarted
    assert start.settings_version == b"v42"


def test_a_run_marker_left_by_a_dead_run_is_reported_with_the_lock(
    sim, trailing_position, redis_client
):
    deps, _ = trailing_position
    redis_client.set(run_key(lock_key(EX, SYMBOL)), "a run that died")
    start = start_run(redis_client, deps.settings, EX, SYMBOL, 5.0)
    assert start.lock.dead_run is True


def test_a_busy_lock_is_waited_for_and_the_run_moves_the_stop(sim, trailing_position, redis_client):
    deps, pid = trailing_position
    sim.set_price(SYMBOL, "61800")
    tick_leaves_band(redis_client, Decimal("61800"))
    held = threading.Event()

    def hold_a_while() -> None:
        with symbol_lock(redis_client, EX, SYMBOL, token_source=fence_token):
            held.set()
            time.sleep(0.4)

    holder = threading.Thread(target=hold_a_while)
    holder.start()
    assert held.wait(5)
    busy = start_run(redis_client, deps.settings, EX, SYMBOL, 5.0)
    assert busy.lock.dead_run is None  # the first try found it busy: nothing of ours in it
    assert redis_client.get(lock_key(EX, SYMBOL)) != busy.lock.owner.encode()
    price_path.restore_window(redis_client, EX, SYMBOL, busy.window, 30.0)
    result = price_path.on_price(deps, EX, SYMBOL)  # its own first try is busy too: it waits
    holder.join()
    assert result.window is not None and result.window.high == Decimal("61800")
    assert moves(pid) == 1


def test_a_lock_busy_for_the_whole_wait_keeps_the_window_and_flag_for_the_retry(
    sim, make_deps, trailing_position, redis_client
):
    _, pid = trailing_position
    deps = make_deps(trailing_min_update_interval=0, lock_blocking_timeout=0.3)
    tick_leaves_band(redis_client, Decimal("61800"))
    redis_client.set(lock_key(EX, SYMBOL), "someone else", px=5000)
    with pytest.raises(LockNotAcquired):
        price_path.on_price(deps, EX, SYMBOL)
    assert redis_client.get(lock_key(EX, SYMBOL)) == b"someone else"
    assert redis_client.hget(window_key(EX, SYMBOL), "high") == b"61800"  # put back
    assert redis_client.exists(pending_key(EX, SYMBOL))
    assert moves(pid) == 0


def test_a_known_version_saves_the_caches_read_of_it(clean_db, redis_client, monkeypatch):
    symbol_settings.clear_cache()
    redis_client.set(VERSION_KEY, "v1")
    symbol_settings.overrides(redis_client, EX, SYMBOL)  # cached at v1
    gets: list[object] = []
    original = redis_client.get
    monkeypatch.setattr(redis_client, "get", lambda *a: gets.append(a) or original(*a))
    with symbol_settings.version_known(b"v1"):
        symbol_settings.overrides(redis_client, EX, SYMBOL)
    assert gets == []
    with symbol_settings.version_known(None):  # not known: asked as before
        symbol_settings.overrides(redis_client, EX, SYMBOL)
    assert gets == [(VERSION_KEY,)]


def test_a_run_ends_its_window_and_releases_its_lock_in_one_script(
    sim, trailing_position, redis_client
):
    deps, pid = trailing_position
    sim.set_price(SYMBOL, "61800")
    tick_leaves_band(redis_client, Decimal("61800"))
    price_path.on_price(deps, EX, SYMBOL)
    assert moves(pid) == 1
    assert not redis_client.exists(lock_key(EX, SYMBOL))
    assert not redis_client.exists(run_key(lock_key(EX, SYMBOL)))  # ended, not a dead run
    assert not redis_client.exists(pending_key(EX, SYMBOL))  # released: the ingest queues next


def test_an_end_that_fails_still_releases_the_lock_and_keeps_the_window(
    sim, trailing_position, redis_client, monkeypatch
):
    deps, pid = trailing_position
    sim.set_price(SYMBOL, "61800")
    tick_leaves_band(redis_client, Decimal("61800"))

    def redis_gone(*_a, **_k):
        raise RedisConnectionError("gone")

    monkeypatch.setattr(price_path, "finish_and_release", redis_gone)
    with pytest.raises(RedisConnectionError):
        price_path.on_price(deps, EX, SYMBOL)
    assert moves(pid) == 1  # the move itself was done
    assert not redis_client.exists(lock_key(EX, SYMBOL))  # released the usual way
    assert redis_client.exists(pending_key(EX, SYMBOL))  # held for the retry
    assert redis_client.hget(window_key(EX, SYMBOL), "high") == b"61800"  # put back
    monkeypatch.undo()
    price_path.on_price(deps, EX, SYMBOL)  # the retry: the same window, nothing to move
    assert moves(pid) == 1
    assert not redis_client.exists(pending_key(EX, SYMBOL))
