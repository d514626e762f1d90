"""The redis channel guard: parameters remembered while attached, used once detached."""

from types import SimpleNamespace

import pytest
from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

from tasks.broker_channel import _remembering, install_detached_channel_guard


def _params_from(self, asynchronous=False):  # noqa: ANN001, ANN202 - kombu's signature
    conninfo = self.connection.client
    return {"host": conninfo.hostname, "port": conninfo.port, "asynchronous": asynchronous}


def _channel(client):  # noqa: ANN001, ANN202
    return SimpleNamespace(connection=SimpleNamespace(client=client))


connparams = _remembering(_params_from)


def test_attached_channel_builds_parameters_from_its_connection():
    channel = _channel(SimpleNamespace(hostname="127.0.0.1", port=6390))
    assert connparams(channel) == {"host": "127.0.0.1", "port": 6390, "asynchronous": False}


def test_detached_channel_reuses_what_it_built_while_attached_per_kind():
    channel = _channel(SimpleNamespace(hostname="127.0.0.1", port=6390))
    built = connparams(channel)
    built_async = connparams(channel, asynchronous=True)
    built["host"] = "changed by the pool's caller"
    channel.connection.client = None  # what Connection.collect() does to the transport

    assert connparams(channel)["host"] == "127.0.0.1"  # a copy was remembered
    assert connparams(channel, asynchronous=True) == built_async


def test_detached_channel_without_parameters_raises_a_connection_error_the_close_ignores():
    channel = _channel(None)
    with pytest.raises(RedisConnectionError):
        connparams(channel)
    assert RedisConnectionError in kombu_redis.Transport.connection_errors


def test_a_channel_whose_transport_is_gone_raises_the_same():
    channel = SimpleNamespace(connection=None)
    with pytest.raises(RedisConnectionError):
        connparams(channel)


def test_installed_once_on_kombus_redis_channel():
    install_detached_channel_guard()
    installed = kombu_redis.Channel._connparams
    install_detached_channel_guard()
    assert kombu_redis.Channel._connparams is installed
    assert getattr(installed, "_vigil_detached_guard", False)
