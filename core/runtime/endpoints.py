"""Where PostgreSQL and Redis are: the configured URLs, or the embedded servers' addresses."""

from __future__ import annotations

from core.config import Settings, get_settings

EMBEDDED_DB_NAME = "vigil"


def embedded_database_url(port: int, database: str = EMBEDDED_DB_NAME) -> str:
    return f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{database}"


def embedded_redis_url(port: int, db: int = 0) -> str:
    return f"redis://127.0.0.1:{port}/{db}"


def resolve_database_url(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if settings.database_url:
        return normalise_database_url(settings.database_url)
    return embedded_database_url(settings.embedded_pg_port)


def resolve_redis_url(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    return settings.redis_url or embedded_redis_url(settings.embedded_redis_port)


def normalise_database_url(url: str) -> str:
    """Accept the plain ``postgresql://`` form operators paste, use the psycopg2 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url
