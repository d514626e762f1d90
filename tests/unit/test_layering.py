"""The layout's rules of the road, checked on the source: the engine (``core/``) imports
neither Celery nor the simulator (only its process shell does), and ``core/domain`` is pure
(no I/O libraries), so each decision can be tested without a running system."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHELL = ("core/cli.py", "core/cli_ops.py", "core/runtime/", "core/harness/")


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def offenders(folder: str, forbidden: tuple[str, ...], skip: tuple[str, ...] = ()) -> list[str]:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(skip):
            continue
        for module in imported_modules(path):
            if module.split(".")[0] in forbidden:
                bad.append(f"{rel} imports {module}")
    return bad


def test_the_engine_imports_neither_celery_nor_the_simulator():
    assert offenders("core", ("celery", "kombu", "tasks", "sim"), skip=SHELL) == []


def test_the_domain_does_no_io():
    io = ("sqlalchemy", "redis", "ccxt", "celery", "aiohttp", "requests", "psycopg2", "core")
    bad = [b for b in offenders("core/domain", io) if " imports core.domain" not in b]
    assert bad == []


def test_the_services_never_import_the_task_layer_the_ingest_or_the_shell():
    """Services are called by tasks, the ingest and the shell, never the other way round:
    a service that reached up would run Celery or a process supervisor inside a use case.
    (``core.api.health``'s checker is still used by the paging and dead-man services.)"""
    above = ("tasks", "celery", "kombu", "fastapi", "uvicorn", "typer")
    above_in_core = ("core.ingest", "core.cli", "core.runtime", "core.harness")
    bad = []
    for path in sorted((ROOT / "core/services").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "core/services/duplicates_repro.py":  # the shell's reproducer, moving out
            continue
        for module in imported_modules(path):
            if module.split(".")[0] in above or module.startswith(above_in_core):
                bad.append(f"{rel} imports {module}")
    assert bad == []


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
