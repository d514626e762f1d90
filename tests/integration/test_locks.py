"""The per-symbol lock on real Redis, and its fencing token checked by real PostgreSQL."""

import threading
import time
from decimal import Decimal

import pytest
from sqlalchemy import select

from core.db.models import Position
from core.db.session import new_session
from core.dead_runs import dead_key, run_key, start_run
from core.locks import (
    LockLost,
    LockNotAcquired,
    StaleFence,
    acquire,
    fenced_update,
    next_fence_token,
    symbol_lock,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def tokens(clean_db):
    def draw() -> int:
        with new_session() as s:
            return next_fence_token(s)

    return draw


def test_only_one_holder_at_a_time_under_contention(redis_client, tokens):
    inside, overlaps, done = [], [], []

    def work():
        with symbol_lock(
            redis_client, "binance", "BTCUSDT", token_source=tokens, blocking_timeout=20
        ):
            inside.append(1)
            if len(inside) > 1:
                overlaps.append(1)
            time.sleep(0.005)
            inside.pop()
            done.append(1)

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(done) == 12
    assert overlaps == []


def test_tokens_increase_with_each_acquisition(redis_client, tokens):
    seen = []
    for _ in range(5):
        with symbol_lock(redis_client, "binance", "ETHUSDT", token_source=tokens) as held:
            seen.append(held.token)
    assert seen == sorted(seen) and len(set(seen)) == 5


def test_a_busy_lock_times_out_with_a_clear_error(redis_client, tokens):
    with symbol_lock(redis_client, "binance", "BTCUSDT", token_source=tokens):
        with pytest.raises(LockNotAcquired):
            acquire(redis_client, "binance", "BTCUSDT", token_source=tokens, blocking_timeout=0.2)


def test_different_symbols_do_not_block_each_other(redis_client, tokens):
    with symbol_lock(redis_client, "binance", "BTCUSDT", token_source=tokens):
        with symbol_lock(
            redis_client, "binance", "ETHUSDT", token_source=tokens, blocking_timeout=0.2
        ):
            pass


def test_expired_holder_cannot_release_or_extend_the_next_holders_lock(redis_client, tokens):
    first = acquire(redis_client, "binance", "BTCUSDT", token_source=tokens, timeout=0.1)
    time.sleep(0.2)
    assert not first.still_held()
    second = acquire(redis_client, "binance", "BTCUSDT", token_source=tokens, blocking_timeout=1)
    assert first.release() is False
    with pytest.raises(LockLost):
        first.extend()
    assert second.still_held()
    assert second.token > first.token
    second.release()


def test_extension_keeps_a_long_operation_locked(redis_client, tokens):
    held = acquire(redis_client, "binance", "BTCUSDT", token_source=tokens, timeout=0.3)
    for _ in range(4):
        time.sleep(0.15)
        held.extend()
    assert held.still_held()
    held.release()


def test_stale_writer_is_rejected_by_the_database(redis_client, tokens, session):
    position = Position(
        exchange="binance",
        symbol="BTCUSDT",
        side="long",
        status="active",
        quantity=Decimal("1"),
        correlation_id="c",
    )
    session.add(position)
    session.commit()

    # worker A takes the lock, then pauses past its TTL
    stale = acquire(redis_client, "binance", "BTCUSDT", token_source=tokens, timeout=0.1)
    time.sleep(0.2)
    # worker B takes over and writes
    fresh = acquire(redis_client, "binance", "BTCUSDT", token_source=tokens)
    with new_session() as s:
        fenced_update(s, position.id, fresh.token, stop_price=Decimal("90"))
        s.commit()
    # A wakes up and tries to write: refused, B's write stands
    with new_session() as s:
        with pytest.raises(StaleFence):
            fenced_update(s, position.id, stale.token, stop_price=Decimal("50"))
        s.rollback()
    fresh.release()
    with new_session() as s:
        row = s.scalars(select(Position)).one()
        assert row.stop_price == Decimal("90")
        assert row.fence == fresh.token


def test_one_holder_may_write_several_times(redis_client, tokens, session):
    position = Position(
        exchange="binance",
        symbol="SOLUSDT",
        side="short",
        status="active",
        quantity=Decimal("3"),
        correlation_id="c",
    )
    session.add(position)
    session.commit()
    with symbol_lock(redis_client, "binance", "SOLUSDT", token_source=tokens) as held:
        with new_session() as s:
            fenced_update(s, position.id, held.token, stop_price=Decimal("10"))
            fenced_update(s, position.id, held.token, stop_price=Decimal("9"))
            s.commit()


def test_a_release_that_meets_a_redis_outage_happens_once_redis_is_back(tmp_path, tokens):
    """The lock of a task interrupted by an outage does not block its symbol for the TTL."""
    import redis

    from shell.runtime.embedded import EmbeddedRedis, free_port

    server = EmbeddedRedis(tmp_path / "redis", free_port(), persist=True)
    server.start()
    try:
        client = redis.Redis.from_url(f"redis://127.0.0.1:{server.port}/0")
        client.config_set("appendfsync", "always")  # the lock is in the append-only file
        with symbol_lock(client, "binance", "BTCUSDT", token_source=tokens, timeout=60):
            server.kill()  # the outage starts while the lock is held
        server.start()
        held = acquire(client, "binance", "BTCUSDT", token_source=tokens, blocking_timeout=5)
        assert held.still_held()
        with pytest.raises(LockNotAcquired):  # a live lock still excludes
            acquire(client, "binance", "BTCUSDT", token_source=tokens, blocking_timeout=0.3)
    finally:
        server.stop()


def test_a_lazy_token_is_drawn_in_the_holders_first_transaction(redis_client, tokens):
    drawn: list[int] = []

    def counted() -> int:
        drawn.append(tokens())
        return drawn[-1]

    before = tokens()
    with symbol_lock(
        redis_client, "binance", "BTCUSDT", token_source=counted, lazy_token=True
    ) as held:
        assert held.drawn_token is None  # nothing drawn by taking the lock
        with new_session() as s:
            (token,) = held.draw_token(s)
            s.commit()
        assert token > before
        assert held.draw_token(new_session()) == (token,)  # drawn once
        assert held.token == token
    assert drawn == []  # never through a transaction of its own


def test_a_lazy_token_nobody_drew_is_drawn_on_first_use(redis_client, tokens):
    with symbol_lock(
        redis_client, "binance", "ETHUSDT", token_source=tokens, lazy_token=True
    ) as held:
        first = held.token
        assert held.token == first


def test_a_lazy_holder_that_lost_its_lock_gets_no_token(redis_client, tokens):
    """A newer token after the lock passed on would fence out the new holder."""
    with symbol_lock(
        redis_client, "binance", "SOLUSDT", token_source=tokens, lazy_token=True, ttl=0.6
    ) as held:
        assert held.lease is not None
        held.lease.mark_lost("taken over while paused")
        with new_session() as s, pytest.raises(LockLost):
            held.draw_token(s)
        assert held.drawn_token is None


def test_a_holder_learns_with_the_lock_whether_its_predecessor_died(redis_client, tokens):
    """The lock, the run marker and the dead-run question are one script: a run that ended
    leaves no marker behind (nothing flagged), one that never ended is flagged to the next."""
    key = "vigil:lock:binance:SOLUSDT"
    with symbol_lock(redis_client, "binance", "SOLUSDT", token_source=tokens) as held:
        assert held.dead_run is False
        assert redis_client.get(run_key(key)).decode() == held.owner
    assert redis_client.get(run_key(key)) is None  # ended with the release
    assert redis_client.get(key) is None
    start_run(redis_client, key, "a-run-that-was-killed")  # its marker, never ended
    with symbol_lock(redis_client, "binance", "SOLUSDT", token_source=tokens) as held:
        assert held.dead_run is True
        assert redis_client.get(dead_key(key)).decode() == "a-run-that-was-killed"
    with symbol_lock(redis_client, "binance", "SOLUSDT", token_source=tokens) as held:
        assert held.dead_run is True  # still pending: only the price path resolves it


def test_a_busy_lock_leaves_the_holders_run_marker_alone(redis_client, tokens):
    key = "vigil:lock:binance:XRPUSDT"
    with symbol_lock(redis_client, "binance", "XRPUSDT", token_source=tokens) as held:
        with pytest.raises(LockNotAcquired):
            acquire(
                redis_client,
                "binance",
                "XRPUSDT",
                token_source=tokens,
                blocking_timeout=0.05,
                mark_run=True,
            )
        assert redis_client.get(run_key(key)).decode() == held.owner


def test_a_restarted_redis_answers_commands_as_soon_as_its_start_returns(tmp_path):
    """Redis listens at once after a restart but answers LOADING until its append-only file is
    read: the embedded server's start waits for that, so the first command right after it
    (a lock's acquire above) is not refused."""
    import redis

    from shell.runtime.embedded import EmbeddedRedis, free_port

    server = EmbeddedRedis(tmp_path / "redis", free_port(), persist=True)
    server.start()
    try:
        client = redis.Redis.from_url(f"redis://127.0.0.1:{server.port}/0")
        pipe = client.pipeline(transaction=False)
        for i in range(300_000):  # an append-only file that takes a moment to load
            pipe.set(f"k{i}", "v" * 20)
        pipe.execute()
        server.kill()
        server.start()
        assert client.get("k299999") == b"v" * 20  # LOADING would raise BusyLoadingError
    finally:
        server.stop()
