"""The ingest's outbox for stop fills it could not queue: bounded, durable, in order.

Why: a stop that fills while the broker (Redis) is down is seen once on the user-data
stream; if its settle task cannot be queued then, nothing else will queue it, and the
position would stay ``active`` until reconciliation finds it gone and calls it a phantom.
So a settle that cannot be queued is appended to a small JSON-lines file under
``VIGIL_HOME`` (it survives an ingest restart too) and queued, oldest first, as soon as the
broker takes tasks again; while the outbox holds anything, newer settles queue behind it so
the order is kept. Settles are idempotent, so one queued twice (a crash between send and
rewrite) costs a no-op run. The file is bounded (``max_entries``): beyond it the oldest
entry is dropped with an error log, and reconciliation stays the fallback for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from core.ingest.context import EnqueueFailed

log = logging.getLogger(__name__)

Send = Callable[[str, Sequence[Any]], Awaitable[None]]


class FillOutbox:
    """Tasks (name, args) waiting for the broker, persisted at ``path``."""

    def __init__(
        self, path: Path, send: Send, *, max_entries: int = 10_000, retry_s: float = 1.0
    ) -> None:
        self.path = path
        self._send = send
        self.max_entries = max_entries
        self.retry_s = retry_s
        self._lock = asyncio.Lock()
        self.entries: list[tuple[str, list[Any]]] = self._load()
        self.delivered_late = 0

    def _load(self) -> list[tuple[str, list[Any]]]:
        if not self.path.exists():
            return []
        entries = []
        for line in self.path.read_text().splitlines():
            try:
                item = json.loads(line)
                entries.append((str(item["task"]), list(item["args"])))
            except (ValueError, KeyError, TypeError):
                log.error("outbox line skipped (unreadable): %r", line[:200])
        if entries:
            log.warning("outbox %s holds %d task(s) from before", self.path, len(entries))
        return entries

    def _persist(self) -> None:
        """Rewrite the file atomically (small: only what the broker has not taken yet)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as out:
            for name, args in self.entries:
                out.write(json.dumps({"task": name, "args": args}) + "\n")
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(self.path)

    async def deliver(self, name: str, args: Sequence[Any]) -> bool:
        """Queue now if nothing waits before it and the broker takes it; else keep it.

        True when queued now; False when kept in the outbox for ``drain``.
        """
        async with self._lock:
            if not self.entries:
                try:
                    await self._send(name, args)
                    return True
                except EnqueueFailed as exc:
                    log.error("%s%s not queued, kept in the outbox: %s", name, tuple(args), exc)
            self.entries.append((name, list(args)))
            if len(self.entries) > self.max_entries:
                dropped = self.entries.pop(0)
                log.error("outbox full: dropped %s (reconciliation settles it)", dropped)
            await asyncio.to_thread(self._persist)
            return False

    async def drain(self) -> int:
        """Queue what waits, oldest first, until the broker refuses one; how many went."""
        sent = 0
        async with self._lock:
            while self.entries:
                name, args = self.entries[0]
                try:
                    await self._send(name, args)
                except EnqueueFailed:
                    break
                self.entries.pop(0)
                sent += 1
            if sent:
                self.delivered_late += sent
                await asyncio.to_thread(self._persist)
                log.warning("outbox: %d task(s) queued late, %d left", sent, len(self.entries))
        return sent

    async def run(self, stop_event: asyncio.Event) -> None:
        """Drain every ``retry_s`` while anything waits, until ``stop_event``."""
        while not stop_event.is_set():
            if self.entries:
                try:
                    await self.drain()
                except OSError as exc:  # the file could not be rewritten: try again later
                    log.error("outbox not rewritten: %s", exc)
            try:
                await asyncio.wait_for(stop_event.wait(), timeout=self.retry_s)
            except TimeoutError:
                continue


def outbox_path(settings: Any, exchange: str) -> Path:
    """Where one exchange's ingest keeps its outbox: ``VIGIL_HOME/ingest/``."""
    return Path(settings.home_dir) / "ingest" / f"fill-outbox-{exchange}.jsonl"
