"""The teardown guard: every channel of a lost connection closed, no socket left behind."""

from types import SimpleNamespace

import pytest
from kombu.transport import redis as kombu_redis

from tasks.broker_teardown import (
    OneShotPool,
    _close_dropping_pools,
    _close_every_channel,
    _one_shot_conn_or_acquire,
    channel_is_done,
    install_teardown_guard,
)


class _Channel:
    def __init__(self, fails: bool = False) -> None:
        self.fails = fails
        self.closed = False
        self.dropped = False

    def close(self) -> None:
        if self.fails:
            raise ConnectionError("the server is gone")
        self.closed = True


def test_a_transport_closes_every_channel_when_one_fails_and_raises_the_first_error():
    failing, first, last = _Channel(fails=True), _Channel(), _Channel()
    transport = SimpleNamespace(
        cycle=SimpleNamespace(close=lambda: None),
        _avail_channels=[first],
        channels=[last, failing],  # popped from the end: the failing one first
    )
    with pytest.raises(ConnectionError):
        _close_every_channel(transport, connection=None)
    assert first.closed and last.closed
    assert transport.channels == [] and transport._avail_channels == []


def test_a_close_that_stops_half_way_still_drops_the_channels_pools():
    calls = []

    def original(self):  # noqa: ANN001, ANN202
        raise ConnectionError("BRPOP read on a dead server")

    channel = SimpleNamespace(
        _disconnect_pools=lambda: calls.append("pools"),
        _close_clients=lambda: calls.append("clients"),
    )
    with pytest.raises(ConnectionError):
        _close_dropping_pools(original)(channel)
    assert calls == ["pools", "clients"]


def _channel(closed=False, closing=False, attached=True):  # noqa: ANN001, ANN202
    transport = SimpleNamespace(client=object() if attached else None)
    return SimpleNamespace(
        closed=closed,
        _closing=closing,
        connection=transport,
        _connparams=lambda: {"host": "127.0.0.1", "port": 1},
        Client=lambda connection_pool: SimpleNamespace(pool=connection_pool),
    )


@pytest.mark.parametrize(
    ("state", "done"),
    [
        ({}, False),
        ({"closed": True}, True),
        ({"closing": True}, True),
        ({"attached": False}, True),
    ],
)
def test_a_channel_is_done_once_closing_closed_or_detached(state, done):
    assert channel_is_done(_channel(**state)) is done


def test_a_done_channel_talks_through_a_one_shot_pool_closed_after():
    from contextlib import contextmanager

    @contextmanager
    def original(self, client=None):  # noqa: ANN001, ANN202
        yield client or "the channel's own pool"

    conn_or_acquire = _one_shot_conn_or_acquire(original)
    with conn_or_acquire(_channel()) as client:
        assert client == "the channel's own pool"
    with conn_or_acquire(_channel(closed=True)) as client:
        assert isinstance(client.pool, OneShotPool)
    with conn_or_acquire(_channel(closed=True), client="given") as client:
        assert client == "given"


def test_a_one_shot_pool_closes_each_connection_it_gets_back():
    pool = OneShotPool(host="127.0.0.1", port=1)
    connection = pool.make_connection()
    pool._in_use_connections.add(connection)  # noqa: SLF001 - as get_connection leaves it
    closed = []
    connection.disconnect = lambda *a, **k: closed.append(True)  # type: ignore[method-assign]
    pool.release(connection)
    assert closed == [True]


def test_installed_once_on_kombus_redis_channel_and_transport():
    install_teardown_guard()
    close, acquire = kombu_redis.Channel.close, kombu_redis.Channel.conn_or_acquire
    install_teardown_guard()
    assert kombu_redis.Channel.close is close
    assert kombu_redis.Channel.conn_or_acquire is acquire
    assert kombu_redis.Transport.close_connection is _close_every_channel
