"""Where the engine's stores and its venue are: the configured URLs or the embedded servers'
addresses, and the client arguments the settings give for the exchange.

Why beside ``core.config`` and not in the shell: the database session, the metrics, the
services' Deps and the ingest all resolve these, and none of them may import the process
layer that starts the embedded servers.
"""

from __future__ import annotations

from typing import TypedDict

from core.config import Settings, get_settings

# --- where PostgreSQL and Redis are: the configured URLs, or the embedded servers' ------------

EMBEDDED_DB_NAME = "vigil"


def embedded_database_url(port: int, database: str = EMBEDDED_DB_NAME) -> str:
    return f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{database}"


def embedded_redis_url(port: int, db: int = 0) -> str:
    return f"redis://127.0.0.1:{port}/{db}"


def resolve_database_url(settings: Settings | None = None) -> str:
    """``VIGIL_DATABASE_URL`` if set, else the embedded PostgreSQL's address."""
    settings = settings or get_settings()
    if settings.database_url:
        return normalise_database_url(settings.database_url)
    return embedded_database_url(settings.embedded_pg_port)


def resolve_redis_url(settings: Settings | None = None) -> str:
    """``VIGIL_REDIS_URL`` if set, else the embedded Redis's address."""
    settings = settings or get_settings()
    return settings.redis_url or embedded_redis_url(settings.embedded_redis_port)


def normalise_database_url(url: str) -> str:
    """Accept the plain ``postgresql://`` form operators paste, use the psycopg2 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


# --- how to reach the exchange: the client arguments the settings give ----------------------


class ExchangeClientOptions(TypedDict):
    """The keyword arguments of ``core.exchange.factory.build_exchange`` (and of
    ``build_pro_exchange``) that come from the settings; the venue kind is the first argument.
    """

    url: str
    api_key: str
    api_secret: str
    testnet: bool
    timeout_ms: int
    paper_dialect: str


def exchange_client_options(settings: Settings) -> ExchangeClientOptions:
    """How the default venue's REST and WebSocket clients are made, read in one place so the
    engine's clients and the ingest's streams always reach the same venue with the same key."""
    return ExchangeClientOptions(
        url=settings.exchange_url,
        api_key=settings.api_key.get_secret_value(),
        api_secret=settings.api_secret.get_secret_value(),
        testnet=settings.testnet,
        timeout_ms=settings.exchange_timeout_ms,
        paper_dialect=settings.paper_dialect,
    )
