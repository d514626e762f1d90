"""A batch of symbols' price runs (core/services/price_batch.py), with a fake one-symbol run:
each symbol runs once, in its own thread, and one symbol's failure is its own."""

import threading

import pytest

from core.exchange.errors import Retryable
from core.locks import LockNotAcquired
from core.services import price_batch
from core.services.price_path import PriceTaskResult


@pytest.fixture(autouse=True)
def fake_thread_deps(monkeypatch):
    monkeypatch.setattr(price_batch, "deps_in_thread", lambda venue: f"deps:{venue}")


def test_every_symbol_runs_once_at_the_same_time_as_the_others():
    symbols = ["A", "B", "C", "D"]
    everyone_in = threading.Barrier(len(symbols), timeout=10)  # passes only if all overlap
    ran = []

    def run_one(deps, symbol):
        assert deps == "deps:binance"
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
