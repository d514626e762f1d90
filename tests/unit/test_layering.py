"""The layout's rules of the road, checked on the source.

The engine (``core/``) imports neither Celery, the simulator nor the process shell
(``shell/``: the command line, supervision of the native stack, the harnesses); the domain
(``core/domain``) is pure, so each decision can be tested without a running system; services
are called by the entry points (tasks, ingest, API, shell) and never reach up into them. No
file is exempt: a rule that needs an exemption names a module in the wrong place.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def offenders(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    """Every import under ``folder`` of a module that is, or is inside, one of ``forbidden``."""
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for module in imported_modules(path):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                bad.append(f"{rel} imports {module}")
    return bad


def test_the_engine_never_imports_celery_the_simulator_or_the_shell():
    assert offenders("core", ("celery", "kombu", "tasks", "sim", "shell")) == []


def test_the_domain_does_no_io():
    io = ("sqlalchemy", "redis", "ccxt", "celery", "aiohttp", "requests", "psycopg2", "orjson")
    assert offenders("core/domain", io) == []


def test_the_domain_never_imports_anything_outside_the_domain():
    """``core/domain`` is pure: standard library and its own modules only."""
    allowed = {"__future__", "collections", "dataclasses", "datetime", "decimal", "enum"}
    allowed |= {"typing", "re", "math", "functools", "itertools", "hashlib", "json", "uuid"}
    allowed |= {"abc", "bisect", "statistics", "operator", "random", "string", "zoneinfo"}
    bad = []
    for path in sorted((ROOT / "core/domain").rglob("*.py")):
        for module in imported_modules(path):
            top = module.split(".")[0]
            if module.startswith("core.domain") or top in allowed:
                continue
            bad.append(f"{path.relative_to(ROOT).as_posix()} imports {module}")
    assert bad == []


def test_services_never_import_their_callers():
    """Services are called by tasks, the ingest, the API and the shell, never the other way
    round: a service that reached up would run Celery, a web handler or a process supervisor
    inside a use case."""
    callers = ("tasks", "celery", "kombu", "typer", "core.ingest", "core.api", "shell", "sim")
    assert offenders("core/services", callers) == []


def test_the_simulator_never_imports_the_engine():
    """The paper exchange stands in for a venue: it knows nothing of the engine it serves."""
    assert offenders("sim", ("core", "tasks", "shell")) == []


def test_tasks_never_import_the_shell_or_the_simulator():
    assert offenders("tasks", ("shell", "sim")) == []


def test_the_rules_see_the_code():
    """A rule over an empty folder passes vacuously: each folder it names must hold code."""
    for folder in ("core", "core/domain", "core/services", "sim", "tasks", "shell"):
        assert list((ROOT / folder).rglob("*.py")), folder
