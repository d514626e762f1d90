"""docker-compose.yml, the Dockerfile, .dockerignore, the lock files and .env.example,
checked without a Docker engine (none runs here: the compose file is validated, not run)."""

import json
import re
import tomllib
from pathlib import Path

import jsonschema
import yaml

from core.config import Settings, env_example

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_every_service_of_the_system():
    services = compose()["services"]
    assert {"postgres", "redis", "migrate", "sim", "worker", "beat", "flower", "api"} <= set(
        services
    )
    assert services["postgres"]["image"].startswith("postgres:16")
    # room for the connections a price batch's threads keep (docs/operations.md, "stops")
    assert "max_connections=400" in services["postgres"]["command"]
    assert services["redis"]["image"].startswith("redis:7")


def test_redis_never_evicts_broker_messages():
    command = compose()["services"]["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"


def test_storage_and_long_running_services_have_healthchecks():
    services = compose()["services"]
    for name in ("postgres", "redis", "sim", "worker", "beat", "ingest", "flower", "api"):
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


def test_api_healthcheck_asks_the_liveness_route_on_the_published_port():
    """The container is healthy when the API answers; /health (the system's) may say 503."""
    api = compose()["services"]["api"]
    assert "http://127.0.0.1:8720/livez" in " ".join(api["healthcheck"]["test"])
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


# --- Compose Specification and operating rules ------------------------------------------------

SCHEMA = Path(__file__).parent / "schemas" / "compose-spec.json"  # compose-spec/compose-spec


def test_compose_file_follows_the_compose_specification():
    schema = json.loads(SCHEMA.read_text())
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(compose()))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]


def test_schema_check_catches_a_wrong_compose_file():
    broken = compose()
    broken["services"]["worker"]["stop_grace_period"] = {"seconds": 200}
    broken["services"]["beat"]["healthcheck"]["every"] = "30s"  # not a healthcheck key
    schema = json.loads(SCHEMA.read_text())
    assert len(list(jsonschema.Draft7Validator(schema).iter_errors(broken))) == 2


def _seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(a + b for a, b in parts) == duration, duration
    return sum(float(amount) * units[unit] for amount, unit in parts)


def test_workers_get_more_than_the_task_time_limit_to_stop():
    limit = Settings.model_fields["task_time_limit"].default
    grace = _seconds(compose()["services"]["worker"]["stop_grace_period"])
    assert grace > limit


def test_redis_has_a_memory_limit_it_refuses_writes_at():
    command = compose()["services"]["redis"]["command"]
    assert command[command.index("--maxmemory") + 1]  # a size, set from REDIS_MAXMEMORY
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"


def test_beat_and_ingest_are_healthy_by_their_heartbeats():
    services = compose()["services"]
    assert services["beat"]["healthcheck"]["test"] == ["CMD", "vigil", "healthcheck", "beat"]
    assert services["ingest"]["healthcheck"]["test"] == ["CMD", "vigil", "healthcheck", "ingest"]


def test_paper_exchange_healthcheck_follows_its_dialect():
    code = compose()["services"]["sim"]["healthcheck"]["test"][-1]
    assert "VIGIL_PAPER_DIALECT" in code
    assert "/v5/market/time" in code and "/fapi/v1/ping" in code


# --- image ----------------------------------------------------------------------------------


def test_image_installs_locked_dependencies_before_the_code_and_runs_unprivileged():
    dockerfile = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in dockerfile.splitlines() if line.strip()]
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM")) :]
    lock = final.index(
        "RUN pip install --require-hashes -r /tmp/requirements.lock && rm /tmp/requirements.lock"
    )
    code = next(i for i, line in enumerate(final) if "/tmp/wheels" in line)
    assert lock < code  # a code change leaves the dependency layer cached
    assert "-e" not in " ".join(final).split()  # a real (non-editable) install
    user = next(line for line in final if line.startswith("USER "))
    assert user.split()[1] not in ("root", "0")
    assert "embedded" not in dockerfile.split("--- the image")[1].replace("No embedded", "")


def test_build_context_leaves_out_data_secrets_and_environments():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".vigil", ".env", "**/__pycache__"} <= ignored


def _pins(lock: str) -> set[str]:
    text = (ROOT / lock).read_text()
    return {m.lower().replace("_", "-") for m in re.findall(r"^([A-Za-z0-9_.\-]+)==", text, re.M)}


def _names(requirements: list[str]) -> set[str]:
    return {
        re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements
    }


def test_lock_files_pin_every_dependency_and_the_image_lock_has_no_embedded_servers():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _names(project["dependencies"])
    extras = project["optional-dependencies"]
    everything = runtime | _names(extras["embedded"] + extras["test"] + extras["dev"])
    stale = "pyproject.toml changed without the lock files: run ./dev lock and commit both"
    assert runtime <= _pins("requirements.lock"), (stale, runtime - _pins("requirements.lock"))
    assert everything <= _pins("requirements-dev.lock"), (
        stale,
        everything - _pins("requirements-dev.lock"),
    )
    assert not _names(extras["embedded"]) & _pins("requirements.lock")


# --- two venues -----------------------------------------------------------------------------

TWO_VENUES_ENV = {  # what the compose file's comment tells an operator to put in .env
    "VIGIL_EXCHANGES": "binance,bybit",
    "VIGIL_BYBIT_EXCHANGE_URL": "http://sim-bybit:8711",
}


def test_the_second_venue_runs_only_under_its_profile_as_vigil_up_runs_it():
    services = compose()["services"]
    second = {n for n, s in services.items() if "two-venues" in s.get("profiles", [])}
    assert second == {"sim-bybit", "ingest-bybit"}
    assert all("profiles" not in s for n, s in services.items() if n not in second)
    assert services["sim-bybit"]["command"][:3] == ["sim", "--venue", "bybit"]
    # one ingest reads the signal stream, the other only its venue's prices and user data
    assert services["ingest-bybit"]["command"] == ["ingest", "--exchange", "bybit", "--no-signals"]
    assert services["ingest-bybit"]["healthcheck"]["test"][-2:] == ["--exchange", "bybit"]
    assert services["ingest-bybit"]["depends_on"]["sim-bybit"]["condition"] == "service_healthy"
    comment = (ROOT / "docker-compose.yml").read_text()
    for key, value in TWO_VENUES_ENV.items():
        assert f"{key}={value}" in comment


def test_the_two_venue_settings_reach_each_paper_exchange_on_its_own_service():
    from core.venues import check_venues

    services = compose()["services"]
    env = {**services["worker"].get("environment", {}), **TWO_VENUES_ENV}
    env = {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()}
    settings = Settings(
        exchange=env["VIGIL_EXCHANGE"],
        exchange_url=env["VIGIL_EXCHANGE_URL"],
        exchanges=env["VIGIL_EXCHANGES"],
    )
    venues = {v.name: v for v in check_venues(settings, env)}
    assert venues["binance"].url == "http://sim:8710" and venues["bybit"].url.startswith(
        "http://sim-bybit:"
    )
    command = services["sim-bybit"]["command"]
    port = command[command.index("--port") + 1]
    assert venues["bybit"].url == f"http://sim-bybit:{port}"
    published = services["sim-bybit"]["ports"][0].rsplit(":", 1)[-1]
    assert published == port and f":{port}/v5/market/time" in str(
        services["sim-bybit"]["healthcheck"]["test"]
    )
