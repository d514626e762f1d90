"""Engine and unit of work.

Why an engine per process, created lazily: a Celery pre-fork pool would otherwise share one
connection pool across children, and two processes on one socket corrupt each other's
conversations. ``reset_engine`` is called after fork (``worker_process_init``).

Why a connection is pinged only after it sat idle (``PING_AFTER_IDLE_S``), not at every
checkout (``pool_pre_ping``): the hot path opens several short transactions per task, and a
``SELECT 1`` before each was a round trip of its own. A connection broken by a database
restart sat in the pool for at least the restart's duration, so it is pinged and replaced
before use exactly as with ``pool_pre_ping``. One that breaks while in use, or within the
idle threshold, fails its statement with a disconnect error: SQLAlchemy then invalidates it
and every older pooled connection, and the task's retry (``INFRA_TRANSIENT``) gets fresh ones.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

_engine: Engine | None = None
_factory: sessionmaker[Session] | None = None
_url: str | None = None

PING_AFTER_IDLE_S = 1.0
"""A pooled connection unused for longer is pinged at checkout (far below any restart)."""


def configure(url: str) -> None:
    """Point this process at a database; the engine is created on first use."""
    global _url
    if url != _url:
        reset_engine()
        _url = url


def database_url() -> str:
    if _url is None:
        from core.config import resolve_database_url

        configure(resolve_database_url())
    assert _url is not None
    return _url


def get_engine() -> Engine:
    global _engine, _factory
    if _engine is None:
        _engine = create_engine(
            database_url(),
            pool_size=5,
            max_overflow=5,
            pool_recycle=1800,
        )
        ping_when_idle(_engine, PING_AFTER_IDLE_S)
        _factory = sessionmaker(bind=_engine, expire_on_commit=False)
    return _engine


def ping_when_idle(engine: Engine, idle_s: float) -> None:
    """Ping a connection at checkout only if it sat in the pool longer than ``idle_s``; a
    dead one is replaced (``DisconnectionError`` makes the pool connect afresh)."""

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since <= idle_s:
            return  # a new connection, or one used a moment ago
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
            dbapi_connection.rollback()  # the ping's implicit transaction
        except Exception as exc:  # noqa: BLE001 - any failure: the connection is unusable
            raise DisconnectionError(str(exc)) from exc


def reset_engine() -> None:
    """Drop this process's pool (after fork, or when the database URL changes)."""
    global _engine, _factory
    if _engine is not None:
        _engine.dispose(close=False)
    _engine = None
    _factory = None


def new_session() -> Session:
    get_engine()
    assert _factory is not None
    return _factory()


@contextmanager
def unit_of_work() -> Iterator[Session]:
    """A transaction: commit when the block ends normally, roll back on any exception."""
    session = new_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
