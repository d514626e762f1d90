"""Every broker loss closes all the Redis connections of the lost broker connection.

Measured through a real worker and a Redis killed and started again (kombu 5.7.0, redis-py
8.2.0; bench/bench_busy_broker_loss.py): each loss left two sockets open in the worker's main
process for good (CLOSE_WAIT once the old server was gone), 121 after 60 restarts, in two ways:

* kombu's ``Transport.close_connection`` closes its channels one after the other and stops at
  the first whose close raises. After a loss one always does (its BRPOP read, or the restore of
  its unacknowledged messages, meets the dead server), so the channels after it were never
  closed, and kept their pools and sockets.
* Closing a channel restores its unacknowledged messages after it dropped its pools, and a late
  acknowledgement of a task that was running during the loss goes through the closed channel:
  each built a new pool on the closed channel (``Channel.pool``) that nothing closed again.

The guard: a channel's close that raises still drops its pools, a transport closes every
channel even when one fails (the first error is raised after), and a closed or detached
channel talks to Redis through a one-shot client whose connection is closed once the command
is done (``conn_or_acquire``: the restore, the late acks, the visibility sweep).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

_GUARD_MARK = "_vigil_teardown_guard"


class OneShotPool(redis.ConnectionPool):
    """A pool whose connections close when released: nothing stays open after a command."""

    def release(self, connection: Any) -> None:
        super().release(connection)
        connection.disconnect()


def channel_is_done(channel: Any) -> bool:
    """Closing, closed, or cut from its broker connection: its pools were dropped or must be."""
    transport = channel.connection
    return bool(
        getattr(channel, "_closing", False)
        or channel.closed
        or transport is None
        or transport.client is None
    )


def _one_shot_conn_or_acquire(original: Callable[..., Any]) -> Callable[..., Any]:
    @contextmanager
    def conn_or_acquire(self: Any, client: Any = None) -> Iterator[Any]:
        if client is not None or not channel_is_done(self):
            with original(self, client) as acquired:
                yield acquired
            return
        pool = OneShotPool(**self._connparams())
        try:
            yield self.Client(connection_pool=pool)
        finally:
            pool.disconnect()

    return conn_or_acquire


def _close_dropping_pools(original: Callable[..., Any]) -> Callable[..., Any]:
    def close(self: Any) -> None:
        try:
            original(self)
        except BaseException:
            # the close stopped half-way (a read or a restore met the dead server): the
            # channel is abandoned all the same, its sockets must not outlive it
            self._disconnect_pools()
            self._close_clients()
            raise

    return close


def _close_every_channel(self: Any, connection: Any) -> None:
    """kombu's ``close_connection``, going on past a channel whose close raises."""
    self.cycle.close()
    first_error: BaseException | None = None
    for channels in self._avail_channels, self.channels:
        while channels:
            try:
                channel = channels.pop()
            except LookupError:  # pragma: no cover - emptied by another close meanwhile
                break
            try:
                channel.close()
            except Exception as exc:  # noqa: BLE001 - every channel first, then the error
                first_error = first_error or exc
    if first_error is not None:
        raise first_error


def install_teardown_guard() -> None:
    """Patch kombu's redis channel and transport once per process (idempotent)."""
    channel = kombu_redis.Channel
    if getattr(channel, _GUARD_MARK, False):
        return
    channel.conn_or_acquire = _one_shot_conn_or_acquire(channel.conn_or_acquire)  # type: ignore[method-assign]
    channel.close = _close_dropping_pools(channel.close)  # type: ignore[method-assign]
    kombu_redis.Transport.close_connection = _close_every_channel  # type: ignore[method-assign]
    setattr(channel, _GUARD_MARK, True)
