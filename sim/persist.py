"""A durable paper account: the simulator's account survives its restart, like a real venue's.

What is kept (both dialects): the account engine's whole state (wallet, positions, open and
algo/conditional orders, trades and executions, order/trade/position id counters, leverage
and position mode) and the current mark prices (a stop must not fire because prices fell
back to their seed). What is not: configuration (markets, keys, settings, faults), the
request log, listen keys.

Written on every change: after each request that is not a read, and after each tick (fills
of triggered stops, delayed fills), if the account differs from the last write. The file is
replaced atomically (write, fsync, rename), so a kill -9 leaves the old or the new account,
never half of one. ``POST /_sim/reset`` empties the account and so empties the file too.

Format: a pickle of plain data (dataclasses, Decimal, dict). The file lives in the user's
own VIGIL_HOME and is read only from there; a file that cannot be read is moved aside
(``.unreadable``) and the account starts fresh, with an error in the log.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# the engine's wiring, rebuilt on start; everything else on the engine is the account
NOT_ACCOUNT = frozenset({"markets", "prices", "config", "publish", "settings"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def snapshot(state: Any) -> dict[str, Any]:
    account = {k: v for k, v in vars(state.engine).items() if k not in NOT_ACCOUNT}
    return {
        "version": FORMAT_VERSION,
        "dialect": state.options.dialect,
        "account": account,
        "prices": dict(state.prices.prices),
        "pinned": set(state.prices.pinned),
    }


class AccountFile:
    """The account of one simulator instance, in ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last: bytes | None = None

    def save(self, state: Any) -> bool:
        """Write the account if it changed since the last write; True if written."""
        data = pickle.dumps(snapshot(state), protocol=pickle.HIGHEST_PROTOCOL)
        if data == self._last:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.path)
        self._last = data
        return True

    def restore(self, state: Any) -> bool:
        """Load the account kept in the file into ``state``; False if there is none."""
        if not self.path.exists():
            return False
        try:
            raw = self.path.read_bytes()
            kept = pickle.loads(raw)  # noqa: S301 - the user's own file in VIGIL_HOME
            if kept.get("version") != FORMAT_VERSION:
                raise ValueError(f"format {kept.get('version')!r}, expected {FORMAT_VERSION}")
            if kept.get("dialect") != state.options.dialect:
                raise ValueError(
                    f"a {kept.get('dialect')} account, this is {state.options.dialect}"
                )
        except Exception as exc:  # noqa: BLE001 - any unreadable file: start fresh, loudly
            aside = self.path.with_suffix(self.path.suffix + ".unreadable")
            self.path.replace(aside)
            log.error("paper account in %s not restored (%s); moved to %s", self.path, exc, aside)
            return False
        for name, value in kept["account"].items():
            setattr(state.engine, name, value)
        for symbol, price in kept["prices"].items():
            if symbol in state.prices.prices:
                state.prices.prices[symbol] = price
        state.prices.pinned |= {s for s in kept["pinned"] if s in state.prices.prices}
        self._last = raw
        log.info("paper account restored from %s", self.path)
        return True


ACCOUNT_FILE_KEY = web.AppKey("account_file", AccountFile)


def add_persistence(app: web.Application, state: Any) -> None:
    """Restore the account now, and keep the file current (after writes and ticks)."""
    path = state.options.state_path
    if path is None:
        return
    account = AccountFile(Path(path))
    account.restore(state)
    account.save(state)
    app[ACCOUNT_FILE_KEY] = account

    @web.middleware
    async def save_after_writes(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            if request.method not in ("GET", "HEAD", "OPTIONS"):
                save_quietly(app, state)

    app.middlewares.append(save_after_writes)


def save_quietly(app: web.Application, state: Any) -> None:
    """Save if persistence is on; a full disk is logged, never a crash of the exchange."""
    account = app.get(ACCOUNT_FILE_KEY)
    if account is None:
        return
    try:
        account.save(state)
    except OSError as exc:
        log.error("paper account not written to %s: %s", account.path, exc)
