"""Several symbols' price runs in one task, overlapped: what a burst frame becomes.

Why: on a 1 Hz all-market feed every symbol ticks in the same frame, so a dozen or more
symbols leave their bands at once. One task per symbol on a pool of two processes runs them
two at a time, and a move is mostly waiting (the exchange's POST and DELETE, two commits):
~100 ms of wall time for ~17 ms of CPU. The last move of the burst waited behind all the
others. The ingest now queues a frame's symbols a few per task (``VIGIL_PRICE_TASK_BATCH``),
and the task runs each symbol's window through the one-symbol service
(``core.services.price_path.on_price``) in a thread of its own, so their round trips overlap.

Every guarantee stays the one-symbol run's: each symbol's run takes its own window, holds its
own lock (fenced) and its own pending flag, and writes its own transactions; nothing is shared
between two symbols' runs but the process. A run that may succeed later (lock busy, exchange
retryable, a store down for a moment) has put its window back and kept its flag, exactly as
for a retry of the one-symbol task: it is handed to ``retry_later``, which queues the
one-symbol task for that symbol (its own retry budget). The batch itself is safe to run
twice: a second run of a symbol finds an empty window and re-decides from the exchange's mark.

Each thread has its own exchange client (ccxt's synchronous client keeps per-request state),
seeded with the markets the process already loaded; PostgreSQL and Redis pools are shared.
A run's metric updates (lock wait, tick to order) are held in its thread and handed to the
task's, which writes them with the task's own count and duration: one Redis round trip per
batch, not two more per move (``core.metrics.held_for_hand_over``). A batch whose wait is
interrupted drops the updates of the runs it did not collect (metrics only).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from core.metrics import Write, hand_over, held_for_hand_over
from core.services.deps import Deps, build_adapter, deps_for, venue_settings
from core.services.price_path import PriceTaskResult
from core.services.send_gate import Seat, SendGate
from core.services.tick_window import release_pending
from core.transient import SYMBOL_STEP_RETRYABLE

log = logging.getLogger(__name__)

RETRYABLE = SYMBOL_STEP_RETRYABLE
"""What a one-symbol run raises after putting its window back for a retry."""

SEND_GATE_BOUND_S = 0.5
"""Longest a batch's run waits at the send gate for the others' POSTs (a stuck run's cost)."""

RunOne = Callable[[Deps, str], PriceTaskResult]
"""One symbol's run on the given Deps (the task layer's ``on_price`` with its requeue)."""


@dataclass
class BatchReport:
    """What a batch did, per symbol: ran, handed to a retry, or failed for good."""

    ran: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    failed: dict[str, BaseException] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"ran": self.ran, "retried": self.retried, "failed": sorted(self.failed)}


@dataclass(frozen=True)
class _Outcome:
    """How one symbol's handling ended, as its thread saw it."""

    retried: bool = False
    failed: BaseException | None = None
    # the run's metric updates, handed to the task's thread to go out with the task's own
    metrics: tuple[Write, ...] = ()


def _release_flag(exchange: str, symbol: str) -> None:
    """Free the symbol for the next tick when its run could not even start."""
    try:
        release_pending(deps_for(exchange).redis, exchange, symbol)
    except Exception as exc:  # the flag then expires after VIGIL_PRICE_PENDING_TTL
        log.warning("pending flag of %s not released: %s", symbol, exc)


class _ThreadDeps(threading.local):
    """Each pool thread's Deps per venue: its own exchange client, the process's stores."""

    def __init__(self) -> None:
        self.by_venue: dict[str, Deps] = {}


_thread_deps = _ThreadDeps()
_pool: ThreadPoolExecutor | None = None
_pool_guard = threading.Lock()
_markets_guards: dict[str, threading.Lock] = {}


def _markets_guard(venue: str) -> threading.Lock:
    """One load of a venue's markets per process at a time (another venue's is not held)."""
    with _pool_guard:
        return _markets_guards.setdefault(venue, threading.Lock())


def deps_in_thread(venue: str) -> Deps:
    """This thread's Deps for ``venue``: the process's, with an exchange client of its own."""
    found = _thread_deps.by_venue.get(venue)
    if found is not None:
        return found
    base = deps_for(venue)
    with _markets_guard(venue):  # one load of every market per process, not one per thread
        base.exchange.load_markets()
    adapter = build_adapter(venue_settings(base.settings, venue))
    loaded = base.exchange.client
    adapter.client.set_markets(loaded.markets, loaded.currencies)
    found = Deps(base.settings, adapter, base.redis, base.clock, base.uow)
    _thread_deps.by_venue[venue] = found
    return found


def _executor(size: int) -> ThreadPoolExecutor:
    """The process's run threads, made on first use (in the pool process, after the fork);
    kept, so each thread's exchange client and connections serve the next batches."""
    global _pool
    with _pool_guard:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(1, size), thread_name_prefix="price-run")
        return _pool


WARM_UP_WAIT_S = 10.0
"""Longest a warm-up job holds its thread for the others to be made (each builds its clients
from markets already loaded: CPU only, tens of milliseconds per client)."""


def warm_up(venues: Sequence[str], threads: int, wait_s: float = WARM_UP_WAIT_S) -> int:
    """Make every run thread of this process now, each with its exchange clients; returns how
    many threads hold a client of every venue.

    Why: the pool makes a thread only when a batch has more runs than the threads made so far,
    and a new thread's first run builds its exchange client (tens of milliseconds of CPU under
    the GIL, markets included) before its POST. So the first burst larger than every earlier
    one paid for several clients at once, on the hot path, at an unpredictable moment. A
    worker that runs price batches calls this once per pool process at start. Each warm job
    waits at a barrier until all have started, so each lands on a thread of its own. A venue
    that does not answer is left to the lazy path (``deps_in_thread`` on the first run).
    """
    answering = []  # the process's own client first: markets loaded once per process
    for venue in venues:
        try:
            with _markets_guard(venue):
                deps_for(venue).exchange.load_markets()
            answering.append(venue)
        except Exception as exc:  # its threads build their clients on their first runs
            log.info("price run threads not warmed for %s: %s", venue, exc)
    if not answering:
        return 0
    pool = _executor(threads)
    size = pool._max_workers  # the pool is made once per process: its size, not the argument
    barrier = threading.Barrier(size)

    def warm() -> bool:
        ready = len(answering) == len(venues)
        for venue in answering:  # markets at hand: no network in here
            try:
                deps_in_thread(venue)
            except Exception as exc:
                log.info("price run thread not warmed for %s: %s", venue, exc)
                ready = False
        try:
            barrier.wait(wait_s)  # hold this thread: the next job gets one of its own
        except threading.BrokenBarrierError:
            pass
        return ready

    jobs = [pool.submit(warm) for _ in range(size)]
    return sum(job.result() for job in jobs)


def _gate_for(runs: int, bound_s: float) -> SendGate | None:
    """The batch's send gate (``core.services.send_gate``): only for several runs that each
    have a thread now (a run queued behind another would hold the others for the bound)."""
    with _pool_guard:
        threads = _pool._max_workers if _pool is not None else 0
    return SendGate(runs, bound_s) if 1 < runs <= threads else None


@contextlib.contextmanager
def _leaving(seat: Seat | None) -> Iterator[None]:
    """A run that ended (or failed) before or without its send holds no one at the gate."""
    try:
        yield
    finally:
        if seat is not None:
            seat.leave()


def _seated(deps: Deps, seat: Seat | None) -> Deps:
    """The run's Deps, with its seat at the batch's gate (``Deps.send_step``)."""
    return deps if seat is None else replace(deps, send_step=seat)


def on_prices(
    exchange: str,
    symbols: Sequence[str],
    run_one: RunOne,
    retry_later: Callable[[str], None],
    threads: int,
    gate_bound_s: float = SEND_GATE_BOUND_S,
) -> BatchReport:
    """Run every symbol's window at once, one thread each (up to ``threads`` per process,
    fixed at the first batch); see the module doc.

    Returns when every run has ended. A run that failed for good (its flag released by the
    run itself) is logged and reported in ``failed``; the others are not affected.
    """
    unique = list(dict.fromkeys(symbols))
    report = BatchReport()
    if not unique:
        return report
    pool = _executor(threads)
    gate = _gate_for(len(unique), gate_bound_s)  # the runs' POSTs before their follow-ups

    def run(symbol: str, seat: Seat | None) -> _Outcome:
        """One symbol's run in its thread, with its metric updates held for the task."""
        with _leaving(seat), held_for_hand_over() as metrics:
            outcome = handle(symbol, seat)
        return replace(outcome, metrics=tuple(metrics))

    def handle(symbol: str, seat: Seat | None) -> _Outcome:
        """One symbol's whole handling in its thread, retry included, so the waiting thread
        only collects: an interruption of the wait (a soft time limit) cannot drop a retry."""
        try:
            try:
                deps = deps_in_thread(exchange)
            except RETRYABLE:
                raise
            except Exception:  # before the run: its flag is still the tick's, held
                _release_flag(exchange, symbol)
                raise
            run_one(_seated(deps, seat), symbol)
        except RETRYABLE as exc:
            log.info("price run for %s retries on its own: %s", symbol, exc)
            try:
                retry_later(symbol)
            except Exception as queue_exc:  # its flag expires: the next tick queues it
                log.warning("retry of %s not queued: %s", symbol, queue_exc)
                return _Outcome(failed=queue_exc)
            return _Outcome(retried=True)
        except Exception as exc:
            log.exception("price run for %s failed", symbol)
            return _Outcome(failed=exc)
        return _Outcome()

    # each run in a copy of this context, so its log lines name the task (one copy per run:
    # a context cannot be entered by two threads at once)
    futures = [
        (
            symbol,
            pool.submit(contextvars.copy_context().run, run, symbol, gate.seat() if gate else None),
        )
        for symbol in unique
    ]
    for symbol, future in futures:
        outcome = future.result()  # an interruption here is the task's, not a symbol's
        hand_over(outcome.metrics)
        if outcome.failed is not None:
            report.failed[symbol] = outcome.failed
        elif outcome.retried:
            report.retried.append(symbol)
        else:
            report.ran.append(symbol)
    return report


__all__ = ["BatchReport", "RETRYABLE", "RunOne", "deps_in_thread", "on_prices", "warm_up"]
