"""Schema migrations through alembic, callable from the CLI, ``vigil up`` and tests."""

from __future__ import annotations

import logging
from pathlib import Path

# Alembic announces each of its plugins at INFO when it is imported; the migrations' own
# lines stay. Set before the import below, which is what triggers the announcements.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402
from sqlalchemy import create_engine, pool  # noqa: E402

# Shipped inside the package (not beside it), so an installed wheel migrates on its own.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class SchemaNotCurrent(RuntimeError):
    """The database is not at the code's migration head: run ``vigil db upgrade``."""


def alembic_config(url: str) -> Config:
    """Alembic's settings built in code: no alembic.ini needed where vigil is installed."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "heads") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def head_revisions(url: str) -> tuple[str, ...]:
    return tuple(sorted(ScriptDirectory.from_config(alembic_config(url)).get_heads()))


def head_revision(url: str) -> str | None:
    heads = head_revisions(url)
    return ",".join(heads) if heads else None


def current_revisions(url: str) -> tuple[str, ...]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return tuple(sorted(MigrationContext.configure(conn).get_current_heads()))
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    current = current_revisions(url)
    return ",".join(current) if current else None


def ensure_current(url: str) -> None:
    """Refuse to run trading code against a schema older (or newer) than the code."""
    current, head = current_revision(url), head_revision(url)
    if current != head:
        raise SchemaNotCurrent(
            f"database schema is at {current or 'nothing'}, code expects {head}: "
            "run `vigil db upgrade`"
        )
