"""Where PostgreSQL and Redis are: resolved in ``core.config`` (re-exported here for the
process shell, which imported them from this module)."""

from core.config import (
    EMBEDDED_DB_NAME,
    embedded_database_url,
    embedded_redis_url,
    normalise_database_url,
    resolve_database_url,
    resolve_redis_url,
)

__all__ = [
    "EMBEDDED_DB_NAME",
    "embedded_database_url",
    "embedded_redis_url",
    "normalise_database_url",
    "resolve_database_url",
    "resolve_redis_url",
]
