"""docker-compose.yml, the Dockerfile and .env.example, checked without a Docker engine."""

from pathlib import Path

import yaml

from core.config import env_example

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_every_service_of_the_system():
    services = compose()["services"]
    assert {"postgres", "redis", "migrate", "sim", "worker", "beat", "flower", "api"} <= set(
        services
    )
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")


def test_redis_never_evicts_broker_messages():
    command = compose()["services"]["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"


def test_storage_and_long_running_services_have_healthchecks():
    services = compose()["services"]
    for name in ("postgres", "redis", "sim", "worker", "flower", "api"):
        assert "test" in services[name]["healthcheck"], name


def test_engine_services_wait_for_migrations_and_healthy_storage():
    services = compose()["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("worker", "beat", "api"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == "service_healthy"


def test_python_services_run_the_vigil_cli_from_one_image():
    services = compose()["services"]
    commands = {
        "migrate": ["db", "upgrade"],
        "worker": "worker",
        "beat": ["beat"],
        "flower": ["flower"],
        "sim": "sim",
        "api": "api",
    }
    for name, expected in commands.items():
        service = services[name]
        assert service["image"] == "vigil:latest" and service["build"] == "."
        command = service["command"]
        if isinstance(expected, list):
            assert command == expected
        else:
            assert command[0] == expected
    assert 'ENTRYPOINT ["vigil"]' in (ROOT / "Dockerfile").read_text()


def test_flower_requires_a_password_and_workers_scale():
    services = compose()["services"]
    env = services["flower"]["environment"]
    assert "?" in env["VIGIL_FLOWER_PASSWORD"]  # compose refuses to start without one
    assert "container_name" not in services["worker"]  # a fixed name would block --scale


def test_env_example_lists_every_setting_with_its_default():
    assert (ROOT / ".env.example").read_text() == env_example()


def test_api_healthcheck_asks_the_health_endpoint_on_the_published_port():
    api = compose()["services"]["api"]
    assert "http://127.0.0.1:8720/health" in " ".join(api["healthcheck"]["test"])
    assert any(port.endswith(":8720:8720") for port in api["ports"])
    command = api["command"]
    assert command[command.index("--host") + 1] == "0.0.0.0"  # reachable from the host


def test_compose_publishes_every_port_on_loopback_unless_told_otherwise():
    published = [
        (name, port)
        for name, service in compose()["services"].items()
        for port in service.get("ports", [])
    ]
    assert {name for name, _ in published} >= {"flower", "api", "sim", "signal-sim"}
    for name, port in published:
        assert str(port).startswith("${VIGIL_BIND:-127.0.0.1}:"), (name, port)
