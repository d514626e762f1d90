"""Flower (which can revoke and inspect tasks) answers nobody without its basic-auth login."""

import base64
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from shell.runtime.embedded import free_port
from tests.fixtures.processes import Processes

pytestmark = pytest.mark.integration


def _status(url: str, auth: tuple[str, str] | None = None) -> int:
    req = urllib.request.Request(url)  # noqa: S310 - loopback
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.fixture
def flower(redis_url, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.update(
        VIGIL_HOME=str(tmp_path),
        VIGIL_REDIS_URL=redis_url,
        VIGIL_FLOWER_PORT=str(port),
        VIGIL_FLOWER_USER="ops",
        VIGIL_FLOWER_PASSWORD="flower-pass-4e2a",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "shell.cli", "flower"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            _status(url)
            break
        except OSError:
            time.sleep(0.2)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


def test_flower_refuses_requests_without_or_with_wrong_credentials_and_serves_the_right_ones(
    flower,
):
    assert _status(flower) == 401
    assert _status(flower + "api/workers") == 401
    assert _status(flower, ("ops", "wrong")) == 401
    assert _status(flower, ("ops", "flower-pass-4e2a")) == 200


def test_flower_metrics_are_behind_the_same_login(flower):
    assert _status(flower + "metrics") == 401
    assert _status(flower + "metrics", ("ops", "wrong")) == 401
    assert _status(flower + "metrics", ("ops", "flower-pass-4e2a")) == 200


@pytest.mark.parametrize("address", ["0.0.0.0", "192.0.2.10", "flower.example"])
@pytest.mark.parametrize("password", [None, "vigil"])
def test_vigil_flower_refuses_the_default_password_beyond_this_host(
    redis_url, tmp_path, address, password
):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.update(VIGIL_HOME=str(tmp_path), VIGIL_REDIS_URL=redis_url, VIGIL_FLOWER_ADDRESS=address)
    env.update(VIGIL_FLOWER_PORT=str(free_port()))
    if password is not None:
        env["VIGIL_FLOWER_PASSWORD"] = password
    done = subprocess.run(
        [sys.executable, "-m", "shell.cli", "flower"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "VIGIL_FLOWER_PASSWORD" in done.stderr


def test_a_task_sent_through_flower_with_bad_arguments_is_refused_by_the_task_layer(
    flower, clean_db, redis_url, tmp_path
):
    import json

    from core.config import get_settings
    from tasks.app import create_app

    with Processes(dict(os.environ, VIGIL_HOME=str(tmp_path))) as processes:
        processes.worker("--pool", "solo", "--name", "flower1")
        req = urllib.request.Request(  # noqa: S310 - loopback
            flower + "api/task/async-apply/vigil.orders.open_position",
            data=json.dumps(
                {"kwargs": {"position_id": "1; DROP TABLE positions"}, "ignore_result": False}
            ).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        token = base64.b64encode(b"ops:flower-pass-4e2a").decode()
        req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
            task_id = json.loads(resp.read())["task-id"]
        result = create_app(get_settings()).AsyncResult(task_id)
        with pytest.raises(Exception) as refused:
            result.get(timeout=90)
        assert type(refused.value).__name__ == "BadTaskArguments"
        assert "position_id=" in str(refused.value) and "vigil.orders.open_position" in str(
            refused.value
        )
        assert result.state == "FAILURE"  # refused once, not retried
