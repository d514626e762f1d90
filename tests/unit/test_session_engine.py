"""The process's engine is built once even when several threads ask for the first session at
once (a price batch's runs right after a pool process starts)."""

import threading
import time

from core.db import session as db_session


class _Engine:
    def dispose(self, close=True):
        pass


def test_threads_asking_at_once_build_one_engine_and_each_gets_a_session(monkeypatch):
    built = []

    def slow_create_engine(url, **kwargs):
        time.sleep(0.05)  # long enough for every thread to arrive before it is stored
        built.append(url)
        return _Engine()

    monkeypatch.setattr(db_session, "create_engine", slow_create_engine)
    monkeypatch.setattr(db_session, "_url", None)
    db_session.configure("postgresql+psycopg2://postgres@127.0.0.1:1/none")
    start = threading.Barrier(8, timeout=10)
    sessions, errors = [], []

    def first_session():
        start.wait()
        try:
            sessions.append(db_session.new_session())
        except Exception as exc:  # an engine without its factory, seen half-built
            errors.append(exc)

    threads = [threading.Thread(target=first_session) for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert errors == [] and len(sessions) == 8
        assert len(built) == 1
    finally:
        for made in sessions:
            made.close()
        db_session.reset_engine()
        monkeypatch.setattr(db_session, "_url", None)
