"""The loop guard: a loop that raises, returns or is faulted is restarted with backoff and
its activity book says so; only the stop event ends it."""

from __future__ import annotations

import asyncio

from core.ingest.backoff import Backoff
from core.ingest.guard import LoopBook, supervise


async def until(probe) -> None:
    """Poll ``probe`` on the event loop until it is true."""
    for _ in range(500):
        if probe():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def quick() -> Backoff:
    return Backoff(first=0.01, ceiling=0.02)


def test_a_raising_loop_is_restarted_until_the_stop_and_each_restart_is_reported():
    reports: list[tuple[str, int, str]] = []
    lives: list[int] = []
    book = LoopBook()

    async def flaky(stop: asyncio.Event) -> None:
        lives.append(1)
        if len(lives) < 4:
            raise ValueError(f"fault {len(lives)}")
        book.touch("flaky")
        await stop.wait()

    async def report(name: str, restarts: int, error: str) -> None:
        reports.append((name, restarts, error))

    async def main() -> None:
        stop = asyncio.Event()
        guard = asyncio.create_task(
            supervise("flaky", flaky, stop, book=book, backoff=quick(), report=report)
        )
        await until(lambda: len(lives) >= 4)
        stop.set()
        await asyncio.wait_for(guard, 2)

    asyncio.run(main())
    assert [r[1] for r in reports] == [1, 2, 3]
    assert reports[-1] == ("flaky", 3, "ValueError: fault 3")
    snap = book.snapshot()["flaky"]
    assert snap["restarts"] == 3 and snap["last_error"] == "ValueError: fault 3"
    assert snap["last_activity_at"] is not None


def test_a_returning_loop_is_restarted_and_a_stopped_one_is_not():
    lives: list[int] = []

    async def returns(stop: asyncio.Event) -> None:
        lives.append(1)

    async def main() -> None:
        stop = asyncio.Event()
        guard = asyncio.create_task(
            supervise("short", returns, stop, book=LoopBook(), backoff=quick())
        )
        await until(lambda: len(lives) >= 3)
        stop.set()
        await asyncio.wait_for(guard, 2)
        count = len(lives)
        await asyncio.sleep(0.05)
        assert len(lives) == count  # nothing runs after the stop

    asyncio.run(main())


def test_an_injected_fault_ends_the_running_loop_and_the_guard_starts_it_again():
    starts: list[int] = []
    cancelled: list[int] = []
    book = LoopBook()

    async def waits(stop: asyncio.Event) -> None:
        starts.append(1)
        try:
            await stop.wait()
        except asyncio.CancelledError:
            cancelled.append(1)
            raise

    async def main() -> None:
        stop = asyncio.Event()
        guard = asyncio.create_task(supervise("w", waits, stop, book=book, backoff=quick()))
        await until(lambda: starts)
        assert book.inject_fault("w") and not book.inject_fault("absent")
        await until(lambda: len(starts) >= 2)
        stop.set()
        await asyncio.wait_for(guard, 2)

    asyncio.run(main())
    assert cancelled == [1]
    assert book.snapshot()["w"]["last_error"] == "InjectedFault: injected into w"
