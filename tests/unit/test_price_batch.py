"""A batch of symbols' price runs (core/services/price_batch.py), with a fake one-symbol run:
each symbol runs once, in its own thread, and one symbol's failure is its own."""

import threading

import pytest

from core.exchange.errors import Retryable
from core.locks import LockNotAcquired
from core.services import price_batch
from core.services.deps import Deps
from core.services.price_path import PriceTaskResult


def fake_deps(venue):
    """A thread's Deps with nothing behind it but its venue's name (the runs here are fakes)."""
    return Deps(settings=f"deps:{venue}", exchange=None, redis=None, clock=None)


@pytest.fixture(autouse=True)
def fake_thread_deps(monkeypatch):
    monkeypatch.setattr(price_batch, "deps_in_thread", fake_deps)


def test_every_symbol_runs_once_at_the_same_time_as_the_others():
    symbols = ["A", "B", "C", "D"]
    everyone_in = threading.Barrier(len(symbols), timeout=10)  # passes only if all overlap
    ran = []

    def run_one(deps, symbol):
        assert deps.settings == "deps:binance"
        everyone_in.wait()
        ran.append(symbol)
        return PriceTaskResult(None, None)

    report = price_batch.on_prices("binance", [*symbols, "A"], run_one, lambda s: None, 8)
    assert sorted(ran) == symbols and sorted(report.ran) == symbols
    assert not report.retried and not report.failed


def test_a_run_that_may_succeed_later_is_handed_on_and_a_failed_one_does_not_stop_the_rest():
    retried = []

    def run_one(deps, symbol):
        if symbol == "BUSY":
            raise LockNotAcquired("held")
        if symbol == "DOWN":
            raise Retryable("exchange 503")
        if symbol == "BAD":
            raise ValueError("a bug")
        return PriceTaskResult(None, None)

    report = price_batch.on_prices(
        "binance", ["OK", "BUSY", "DOWN", "BAD"], run_one, retried.append, 8
    )
    assert report.ran == ["OK"] and sorted(report.retried) == ["BUSY", "DOWN"]
    assert sorted(retried) == ["BUSY", "DOWN"] and list(report.failed) == ["BAD"]


def test_a_retry_that_cannot_be_queued_is_reported_failed():
    def run_one(deps, symbol):
        raise LockNotAcquired("held")

    def broker_down(symbol):
        raise ConnectionError("broker down")

    report = price_batch.on_prices("binance", ["A"], run_one, broker_down, 8)
    assert report.retried == [] and list(report.failed) == ["A"]


def test_a_retry_is_queued_by_the_runs_own_thread_so_an_interrupted_wait_cannot_drop_it():
    """A soft time limit interrupts the task's waiting thread only; the runs go on and each
    must still hand its retry on. The retry is queued from the run's thread, before the wait
    collects it."""
    queued_from = []

    def run_one(deps, symbol):
        raise LockNotAcquired("held")

    def retry_later(symbol):
        queued_from.append(threading.current_thread() is threading.main_thread())

    report = price_batch.on_prices("binance", ["A", "B"], run_one, retry_later, 8)
    assert sorted(report.retried) == ["A", "B"] and queued_from == [False, False]


def test_a_run_that_cannot_start_frees_its_symbol_for_the_next_tick(monkeypatch):
    def no_client(venue):
        raise ValueError("markets missing")

    freed = []
    monkeypatch.setattr(price_batch, "deps_in_thread", no_client)
    monkeypatch.setattr(price_batch, "_release_flag", lambda ex, symbol: freed.append(symbol))
    ran = []
    report = price_batch.on_prices("binance", ["A"], lambda d, s: ran.append(s), print, 8)
    assert freed == ["A"] and ran == [] and list(report.failed) == ["A"]


def test_a_runs_log_lines_name_the_batch_task():
    import logging

    from core.logging import CorrelationFilter, bind_task, unbind_task

    seen = []

    def run_one(deps, symbol):
        record = logging.LogRecord("t", logging.INFO, __file__, 1, "moved", None, None)
        CorrelationFilter().filter(record)
        seen.append((record.task_id, record.task_name))
        return PriceTaskResult(None, None)

    token = bind_task("task-1", "vigil.stops.on_prices")
    try:
        price_batch.on_prices("binance", ["A", "B"], run_one, lambda s: None, 8)
    finally:
        unbind_task(token)
    assert seen == [("task-1", "vigil.stops.on_prices")] * 2


@pytest.fixture
def fresh_pool(monkeypatch):
    """A process pool of the batch's threads made for the test (the module keeps one)."""
    monkeypatch.setattr(price_batch, "_pool", None)
    yield
    if price_batch._pool is not None:
        price_batch._pool.shutdown(wait=True)


class FakeVenueDeps:
    """``deps_for``'s answer: markets load (or fail, for a venue that does not answer)."""

    def __init__(self, venue):
        self.exchange = self
        self.venue = venue

    def load_markets(self):
        if self.venue == "down":
            raise ConnectionError("venue down")


def test_a_warm_up_makes_every_thread_with_its_clients_before_any_batch(monkeypatch, fresh_pool):
    warmed = []  # (thread, venue) of each client built
    monkeypatch.setattr(price_batch, "deps_for", FakeVenueDeps)

    def building(venue):
        if venue == "down":
            raise ConnectionError("venue down")
        warmed.append((threading.current_thread().name, venue))
        return fake_deps(venue)

    monkeypatch.setattr(price_batch, "deps_in_thread", building)
    assert price_batch.warm_up(["binance"], threads=4) == 4
    threads = {name for name, _ in warmed}
    assert len(threads) == 4 and all(venue == "binance" for _, venue in warmed)

    ran_on = set()

    def run_one(deps, symbol):
        ran_on.add(threading.current_thread().name)
        return PriceTaskResult(None, None)

    price_batch.on_prices("binance", ["A", "B", "C", "D"], run_one, lambda s: None, 4)
    assert ran_on <= threads  # the batch's runs found the threads made: none was made for it
    # a venue that does not answer is left for the first run; the warm-up does not fail
    assert price_batch.warm_up(["down"], threads=4) == 0
