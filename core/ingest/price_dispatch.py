"""How one frame's claimed symbols become price tasks: a few symbols per task.

Why: on an all-market feed at 1 Hz every symbol ticks in the same frame, so a burst of a
dozen symbols or more leaves their bands together. Queued one task per symbol, they ran two at
a time on the ``stops`` pool, and the burst's last move waited behind all the others while
each run mostly waited on the exchange; sending them one by one also cost the ingest a broker
round trip each. Now the symbols of a frame are split evenly into tasks of at most
``VIGIL_PRICE_TASK_BATCH`` symbols, over at least ``VIGIL_PRICE_TASK_SLOTS`` tasks (the
``stops`` pool processes that can take them at once) once the frame has
``VIGIL_PRICE_TASK_SPREAD_FROM`` (2) symbols or more; a smaller frame rides in one task:
``vigil.stops.on_prices(exchange, symbols)``, whose runs overlap in threads
(``core/services/price_batch.py``); a lone symbol still goes as
``vigil.stops.on_price(exchange, symbol)``, and a batch size of 1 queues exactly as before.

Why a small frame may ride in one task (``VIGIL_PRICE_TASK_SPREAD_FROM`` above 2): on a 10 Hz
feed a frame carries one to three symbols that left their bands, and each task costs Celery's
own handling (the message, the pool hand-over, the acknowledgement: about 1.5 ms of worker
CPU) whatever it carries; spread over two tasks, almost every stop move pays it. Together,
their runs overlap in one process's threads instead of running on two processes: measured, a
third fewer tasks at 10 Hz, less worker CPU per move in two runs of three, more in the third,
and a higher tail on the quieter runs (docs/benchmarks.md, "Celery's own cost per price
task"), so the default spreads every frame of two symbols or more.

The pending flags were claimed per symbol by the tick script before this; a task the broker
cannot take releases the flags of all its symbols, so their next tick queues them again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from core import task_names as names

Send = Callable[[str, Sequence[object]], Awaitable[None]]
"""Queue task ``name`` with ``args`` (raises ``EnqueueFailed`` when the broker cannot)."""


def split_evenly(
    symbols: Sequence[str], per_task: int, slots: int = 1, spread_from: int = 1
) -> list[list[str]]:
    """``symbols`` in groups of at most ``per_task``, at least ``slots`` groups while there
    are symbols enough and at least ``spread_from`` of them, sizes differing by one at most
    (17 at 8 per task: 6, 6, 5; 3 over 2 slots: 2, 1; 3 over 2 slots spread from 4: 3), so
    no task is a burst's long pole and no pool process idles while another runs a burst's
    symbols under one interpreter lock, while a small frame pays one task's cost."""
    if not symbols:
        return []
    fewest = -(-len(symbols) // max(1, per_task))
    spread = max(1, slots) if len(symbols) >= spread_from else 1
    count = max(fewest, min(len(symbols), spread))
    return [list(symbols[i::count]) for i in range(count)]


def price_task(exchange: str, symbols: Sequence[str]) -> tuple[str, tuple[object, ...]]:
    """The task (name, args) for one group of a frame's symbols."""
    if len(symbols) == 1:
        return names.ON_PRICE, (exchange, symbols[0])
    return names.ON_PRICES, (exchange, list(symbols))
