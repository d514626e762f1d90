"""/health tells the truth after outages, through the real processes: with Redis and
PostgreSQL killed and restarted, the API answers 200 again (worker check included) within
the 15 s the operations guide promises, and fails while the outage lasts."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from core.config import get_settings, load_settings
from shell.runtime.embedded import free_port
from shell.runtime.stack import Stack, StackOptions

pytestmark = pytest.mark.integration
RECOVERY_BOUND_SECONDS = 15.0


def health(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except OSError as exc:
        return 0, {"error": str(exc)}


def wait_healthy(url: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        code, body = health(url)
        if code == 200:
            return body
        assert time.monotonic() < deadline, f"/health still {code}: {body}"
        time.sleep(0.5)


@pytest.fixture
def stack(tmp_path, monkeypatch):
    for name in ("VIGIL_DATABASE_URL", "VIGIL_REDIS_URL", "VIGIL_SIGNAL_URL"):
        monkeypatch.delenv(name, raising=False)
    env = {
        "VIGIL_HOME": str(tmp_path / "home"),
        "VIGIL_EXCHANGE": "paper",
        "VIGIL_EMBEDDED_PG_PORT": str(free_port()),
        "VIGIL_EMBEDDED_REDIS_PORT": str(free_port()),
        "VIGIL_API_PORT": str(free_port()),
        "VIGIL_EXCHANGE_URL": f"http://127.0.0.1:{free_port()}",
        "VIGIL_HEARTBEAT_INTERVAL": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    running = Stack(load_settings(), StackOptions(flower=False, api=True, concurrency=1))
    try:
        running.start_storage()
        running.migrate()
        running.start_processes()
        running.wait_for_worker()
        yield running
    finally:
        running.stop()
        get_settings.cache_clear()


def test_health_is_200_again_within_15s_of_redis_and_postgres_restarting(stack):
    url = stack.endpoints.api_url
    wait_healthy(url, 90)  # the first heartbeats of beat and ingest

    stack.redis.kill()
    stack.postgres.kill()
    time.sleep(2)
    code, body = health(url)
    assert code == 503, body  # the outage is seen, not hidden
    stack.redis.start()
    stack.postgres.start()
    started = time.monotonic()
    body = wait_healthy(url, RECOVERY_BOUND_SECONDS)
    print(f"/health 200 again {time.monotonic() - started:.1f}s after the outage ended")
    print("workers:", body["components"]["workers"])
    assert body["components"]["workers"]["status"] == "ok"
    assert body["components"]["price_feed"]["status"] == "ok"
