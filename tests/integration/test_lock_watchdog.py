"""Locks that die with their holder: short TTL, renewed by a watchdog, on real Redis.

A killed holder (a real process, SIGKILLed) frees its symbol within the TTL; a live holder
keeps its lock across work longer than the TTL; a holder whose renewal failed stops before
its next exchange mutation or write.
"""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from decimal import Decimal

import pytest

from core.db.models import Position
from core.db.session import new_session
from core.lock_watchdog import LeaseWatchdog, renewing
from core.locks import (
    RECENTLY_CONFIRMED_S,
    LockLost,
    LockNotAcquired,
    acquire,
    ensure_locks_held,
    fenced_update,
    lock_key,
    next_fence_token,
    symbol_lock,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def tokens(clean_db):
    def draw() -> int:
        with new_session() as s:
            token = next_fence_token(s)
            s.commit()
            return token

    return draw


def poll_until(probe, deadline_s: float, step: float = 0.05) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if probe():
            return True
        time.sleep(step)
    return probe()


def test_a_holder_keeps_its_lock_through_work_longer_than_the_ttl(redis_client, tokens):
    with symbol_lock(redis_client, "binance", "BTCUSDT", token_source=tokens, ttl=0.6) as held:
        started = time.monotonic()
        while time.monotonic() - started < 2.0:  # more than three TTLs, no explicit extend
            with pytest.raises(LockNotAcquired):
                acquire(redis_client, "binance", "BTCUSDT", token_source=tokens, blocking_timeout=0)
            time.sleep(0.2)
        assert not held.lost and held.still_held()
        assert held.lease is not None and held.lease.renewals >= 3
    assert not redis_client.exists(lock_key("binance", "BTCUSDT"))  # released at the end


def test_a_killed_holder_frees_its_symbol_within_the_ttl(redis_client, redis_url, tokens, tmp_path):
    ready = str(tmp_path / "holder-ready")
    script = textwrap.dedent(
        f"""
        import os, signal, time, itertools, redis
        from core.locks import symbol_lock
        client = redis.Redis.from_url({redis_url!r})
        counter = itertools.count(10**9)
        with symbol_lock(client, "binance", "ETHUSDT", token_source=lambda: next(counter),
                         ttl=1.5, timeout=600):
            open({ready!r}, "w").close()
            time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        assert poll_until(lambda: os.path.exists(ready), 30)
        time.sleep(2.0)  # the holder's watchdog renews past its first TTL
        key = lock_key("binance", "ETHUSDT")
        assert redis_client.exists(key)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed = time.monotonic()
        assert 0 < redis_client.pttl(key) <= 1500  # nothing renews it any more
        held = acquire(redis_client, "binance", "ETHUSDT", token_source=tokens, blocking_timeout=10)
        freed_after = time.monotonic() - killed
        held.release()
        print(f"lock freed {freed_after:.2f} s after the holder's SIGKILL (TTL 1.5 s)")
    finally:
        proc.kill()


def test_a_lost_lock_stops_the_holder_before_its_next_mutation_or_write(
    redis_client, tokens, session
):
    position = Position(
        exchange="binance",
        symbol="SOLUSDT",
        side="long",
        status="active",
        quantity=Decimal("1"),
        correlation_id="lease-lost",
    )
    session.add(position)
    session.commit()
    with symbol_lock(redis_client, "binance", "SOLUSDT", token_source=tokens, ttl=0.6) as held:
        ensure_locks_held()  # ours: no error
        redis_client.delete(held.key)  # taken away (an expiry during a pause, a flush)
        assert poll_until(lambda: held.lost, 5)
        with pytest.raises(LockLost):
            ensure_locks_held()
        with pytest.raises(LockLost):
            held.extend()
        with new_session() as s, pytest.raises(LockLost):
            fenced_update(s, position.id, held.token, stop_price=Decimal("1"))
    ensure_locks_held()  # outside the block nothing is held


def test_a_holder_that_makes_no_progress_stops_renewing(redis_client, tokens):
    with symbol_lock(
        redis_client, "binance", "XRPUSDT", token_source=tokens, ttl=0.6, timeout=1.0
    ) as held:
        assert poll_until(lambda: not redis_client.exists(held.key), 10)
        assert held.lost


def test_a_paused_watchdog_counts_as_lost_after_one_ttl_by_the_monotonic_clock():
    release = threading.Event()

    def renew_stuck() -> bool:
        release.wait(10)  # a renewal that never comes back (Redis unreachable, GC pause)
        return True

    lease = LeaseWatchdog(renew_stuck, 0.3, name="stuck").start()
    try:
        assert poll_until(lambda: lease.lost, 5)
    finally:
        release.set()
        lease.stop()


def test_a_renewed_key_expires_within_its_ttl_once_the_block_ends(redis_client):
    key = "vigil:test:pending"
    redis_client.set(key, "running", px=600)
    with renewing(redis_client, key, "running", 0.6) as lease:
        time.sleep(1.5)
        assert redis_client.exists(key) and lease.renewals >= 2
        redis_client.set(key, "retrying", px=30_000)  # handed on: renewals must stop
        assert poll_until(lambda: lease.lost, 5)
    assert redis_client.pttl(key) > 20_000


def test_an_extend_right_after_a_confirmation_asks_redis_nothing_later_it_does(
    redis_client, tokens, monkeypatch
):
    """A key confirmed ours less than a renewal interval ago is not asked again (the watchdog
    renews it on schedule); after that, ``extend`` asks Redis and finds a lock taken away."""
    with symbol_lock(redis_client, "binance", "ADAUSDT", token_source=tokens, ttl=30) as held:
        calls: list[object] = []
        original = redis_client.evalsha
        monkeypatch.setattr(redis_client, "evalsha", lambda *a: calls.append(a) or original(*a))
        assert held.lease is not None
        touched = held.lease.touched_at
        held.lease.renewed_at = time.monotonic()  # confirmed a moment ago, whatever the load
        held.extend()
        assert calls == [] and held.lease.touched_at > touched  # progress noted
        held.lease.renewed_at -= RECENTLY_CONFIRMED_S  # the last confirmation no longer fresh
        redis_client.set(held.key, "someone else")
        with pytest.raises(LockLost):
            held.extend()
        assert len(calls) == 1 and held.lost
