"""A worker rides through a lost Redis broker instead of exiting (kombu 5.7.0's redis transport).

When the consumer loses the broker, Celery (5.7.0) first ``collect()``s the connection, which
detaches its transport (``transport.client = None``), and then closes it. Closing a channel
restores its unacknowledged messages, which asks for a Redis client; the channel's pools were
dropped a moment before, so a new pool is built from ``_connparams()``, which reads the
connection's parameters from ``transport.client`` and fails with ``AttributeError: 'NoneType'
object has no attribute 'hostname'``. That error is not one of the connection errors the close
ignores, so Celery reports it as unrecoverable and the worker process exits. It happens when a
channel still had a BRPOP in flight (a free pool slot) and unacknowledged messages (a running
``acks_late`` task) at the moment of the loss: the first close stops at the failed BRPOP read,
the restore runs in the second one, after the detachment. Traced in kombu 5.7.0 (the newest
release when written); no released kombu changes it.

The guard: each channel remembers the parameters it last built while attached, and builds a
detached pool from them. The restore then behaves as kombu means it to: with Redis back, the
messages go back on their queues; with Redis still down it raises a Redis ``ConnectionError``,
which the close ignores, and the messages stay in Redis's unacked set, from which the
visibility timeout restores them. A running task's late ack on its old channel reaches Redis the
same way. A channel that never built parameters raises the same ``ConnectionError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

_REMEMBERED = "_vigil_last_connparams"
_GUARD_MARK = "_vigil_detached_guard"

ConnParams = Callable[..., dict[str, Any]]


def _remembering(original: ConnParams) -> ConnParams:
    def _connparams(self: Any, asynchronous: bool = False) -> dict[str, Any]:
        transport = self.connection
        if transport is not None and transport.client is not None:
            params = original(self, asynchronous=asynchronous)
            self.__dict__.setdefault(_REMEMBERED, {})[asynchronous] = dict(params)
            return params
        remembered = self.__dict__.get(_REMEMBERED, {}).get(asynchronous)
        if remembered is None:
            raise RedisConnectionError("the broker connection was closed")
        return dict(remembered)

    setattr(_connparams, _GUARD_MARK, True)
    _connparams.__doc__ = original.__doc__
    return _connparams


def install_detached_channel_guard() -> None:
    """Make the redis channel build its pools from remembered parameters once detached.

    Idempotent: every app built in a process shares kombu's one Channel class.
    """
    channel = kombu_redis.Channel
    current = channel._connparams
    if getattr(current, _GUARD_MARK, False):
        return
    channel._connparams = _remembering(current)  # type: ignore[method-assign]
