"""The ingest's fill outbox: kept in order while the broker refuses, durable across a
restart, bounded, and drained oldest first once the broker takes tasks again."""

import asyncio

from core.ingest.context import EnqueueFailed
from core.ingest.fill_outbox import FillOutbox


class Broker:
    def __init__(self):
        self.up = True
        self.sent = []

    async def send(self, name, args):
        if not self.up:
            raise EnqueueFailed("broker down")
        self.sent.append((name, list(args)))


def run(coro):
    return asyncio.run(coro)


def test_a_settle_the_broker_refuses_waits_and_goes_first_when_it_is_back(tmp_path):
    broker = Broker()
    box = FillOutbox(tmp_path / "outbox.jsonl", broker.send)
    assert run(box.deliver("settle", (1, "stop_triggered"))) is True
    broker.up = False
    assert run(box.deliver("settle", (2, "stop_triggered"))) is False
    broker.up = True
    # the broker is back, but 2 still waits: 3 queues behind it, never before it
    assert run(box.deliver("settle", (3, "stop_triggered"))) is False
    assert [a[0] for _, a in broker.sent] == [1]
    assert run(box.drain()) == 2
    assert [a[0] for _, a in broker.sent] == [1, 2, 3]
    assert box.entries == [] and (tmp_path / "outbox.jsonl").read_text() == ""


def test_what_waits_survives_a_restart_of_the_ingest(tmp_path):
    broker = Broker()
    broker.up = False
    path = tmp_path / "ingest" / "outbox.jsonl"
    run(FillOutbox(path, broker.send).deliver("settle", (7, "stop_triggered")))
    broker.up = True
    again = FillOutbox(path, broker.send)  # a new process reads the file
    assert again.entries == [("settle", [7, "stop_triggered"])]
    assert run(again.drain()) == 1 and broker.sent == [("settle", [7, "stop_triggered"])]


def test_the_outbox_is_bounded_and_drops_the_oldest(tmp_path):
    broker = Broker()
    broker.up = False
    box = FillOutbox(tmp_path / "o.jsonl", broker.send, max_entries=2)
    for pid in (1, 2, 3):
        run(box.deliver("settle", (pid,)))
    assert [args for _, args in box.entries] == [[2], [3]]


def test_drain_stops_at_the_first_refusal_and_keeps_the_rest_in_order(tmp_path):
    broker = Broker()
    broker.up = False
    box = FillOutbox(tmp_path / "o.jsonl", broker.send)
    for pid in (1, 2):
        run(box.deliver("settle", (pid,)))
    assert run(box.drain()) == 0 and [a for _, a in box.entries] == [[1], [2]]


def test_the_run_loop_drains_once_the_broker_is_back(tmp_path):
    broker = Broker()
    broker.up = False
    box = FillOutbox(tmp_path / "o.jsonl", broker.send, retry_s=0.05)

    async def scenario():
        stop = asyncio.Event()
        await box.deliver("settle", (9,))
        loop = asyncio.create_task(box.run(stop))
        await asyncio.sleep(0.2)
        assert broker.sent == []
        broker.up = True
        for _ in range(100):
            if broker.sent:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await loop

    run(scenario())
    assert broker.sent == [("settle", [9])]
