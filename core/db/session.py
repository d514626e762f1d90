"""Engine and unit of work.

Why an engine per process, created lazily: a Celery pre-fork pool would otherwise share one
connection pool across children, and two processes on one socket corrupt each other's
conversations. ``reset_engine`` is called after fork (``worker_process_init``).

Why ``pool_pre_ping`` (a ``SELECT 1`` at every checkout): every process here outlives
PostgreSQL restarts, and not only tasks (which retry) but the ingest, the API, the CLI and
the chaos harness take connections from the pool. Pinging only connections that sat idle for
a while was tried and measured (it saved a round trip per transaction) but a connection
returned a moment before the server was killed, and the restart faster than the idle
threshold, failed the next caller's statement.

Why a process that runs price batches keeps as many connections as a batch has threads, plus
a few: a batch's runs (``core.services.price_batch``, up to ``VIGIL_PRICE_TASK_BATCH``
threads in one process) each hold a connection through their transactions, all at once in a
burst. With a smaller pool every burst opened the missing connections as overflow and closed
them on return, so PostgreSQL started (and the run waited for) new backends on the hot path.
Every other process (API, beat, ingest, a worker without the ``stops`` queue) keeps
``BASE_POOL_SIZE``: the connections count against the server's ``max_connections``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

_engine: Engine | None = None
_factory: sessionmaker[Session] | None = None
_url: str | None = None
# Several threads of one process may ask for the first session at once (a price batch's runs
# right after the fork): one builds the engine, the others wait for it, so no pool is built
# twice and no thread sees the engine without its session factory.
_building = threading.RLock()


def configure(url: str) -> None:
    """Point this process at a database; the engine is created on first use."""
    global _url
    if url != _url:
        reset_engine()
        _url = url


def database_url() -> str:
    if _url is None:
        from core.endpoints import resolve_database_url

        configure(resolve_database_url())
    assert _url is not None
    return _url


def get_engine() -> Engine:
    return _engine_and_factory()[0]


def _engine_and_factory() -> tuple[Engine, sessionmaker[Session]]:
    global _engine, _factory
    engine, factory = _engine, _factory
    if engine is not None and factory is not None:
        return engine, factory
    with _building:
        if _engine is None or _factory is None:
            engine = create_engine(
                database_url(),
                pool_pre_ping=True,
                pool_size=pool_size(),
                max_overflow=5,
                pool_recycle=1800,
            )
            _engine, _factory = engine, sessionmaker(bind=engine, expire_on_commit=False)
        return _engine, _factory


BASE_POOL_SIZE = 5
"""Connections kept by a process for everything but a price batch's runs (the task's own
thread, the API's requests, the CLI)."""

_extra_connections = 0


def keep_connections_for(threads: int) -> None:
    """This process runs price batches of up to ``threads`` runs: keep a connection for each
    (called after the fork, before the engine is built; a built engine is rebuilt)."""
    global _extra_connections
    if threads != _extra_connections:
        reset_engine()
        _extra_connections = threads


def pool_size() -> int:
    return BASE_POOL_SIZE + _extra_connections


def reset_engine() -> None:
    """Drop this process's pool (after fork, or when the database URL changes)."""
    global _engine, _factory
    with _building:
        if _engine is not None:
            _engine.dispose(close=False)
        _engine = None
        _factory = None


def new_session() -> Session:
    return _engine_and_factory()[1]()


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
