"""A real Chromium, driven by Playwright, against ``vigil api`` on the paper exchange.

The browser is Debian's ``chromium`` (``apt-get install -y chromium``): Playwright's own
browser download is not needed. Without a browser these tests skip with one line saying how
to enable them; where a browser is expected (the ``CI`` variable is set, or
``/usr/bin/chromium`` exists) a missing piece fails instead, so CI cannot pass by skipping.

The stack: the session's paper exchange, embedded PostgreSQL and Redis (tests/fixtures), and
the API app served on a real port from a background loop, the way ``vigil api`` serves it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bench.chromium import CHROMIUM, CHROMIUM_ARGS  # Debian's Chromium, its launch flags
from core import metrics
from core.api.app import create_app
from shell.runtime.embedded import free_port

HOW_TO_ENABLE = (
    "browser tests need Chromium and Playwright: apt-get install -y chromium && "
    "pip install -e '.[test]' (or set VIGIL_CHROMIUM to a Chromium binary)"
)


def chromium_path() -> str | None:
    for candidate in (os.environ.get("VIGIL_CHROMIUM"), CHROMIUM, shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def browser_expected() -> bool:
    return bool(os.environ.get("CI")) or Path(CHROMIUM).exists()


def _unavailable(reason: str) -> None:
    if browser_expected():
        pytest.fail(f"{reason}; {HOW_TO_ENABLE}")
    pytest.skip(HOW_TO_ENABLE)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium per test module. Not per session: Playwright's sync API keeps an event
    loop running in the main thread while it is open, and a later test of another module
    that calls ``asyncio.run`` would find it."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed")
    path = chromium_path()
    if path is None:
        _unavailable("no Chromium found")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Served:
    """An aiohttp app on a real port, served from a background event loop."""

    def __init__(self, app: web.Application, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
            self.loop.run_until_complete(site.start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Stack:
    """The API over the test's paper exchange, database and Redis; restartable on its port."""

    def __init__(self, make_app: Callable[[], web.Application]) -> None:
        self.make_app = make_app
        self.served: Served | None = Served(make_app())
        self.port = self.served.port
        self.url = self.served.url

    def stop(self) -> None:
        if self.served is not None:
            self.served.stop()
            self.served = None

    def start(self) -> None:
        if self.served is None:
            self.served = Served(self.make_app(), self.port)


@pytest.fixture
def console_stack(sim: Any, make_deps: Any, redis_client: Any) -> Iterator[Callable[..., Any]]:
    """start(**settings) -> (Stack, Deps): the API with the console, on the paper exchange."""
    stacks: list[Stack] = []
    metrics.configure_metrics(redis_client)

    def start(**overrides: Any) -> tuple[Stack, Any]:
        deps = make_deps(health_cache_seconds=0, trailing_min_update_interval=0, **overrides)

        def make_app() -> web.Application:
            return create_app(
                deps.settings,
                deps_factory=lambda: deps,
                redis_client=redis_client,
                worker_ping=lambda timeout: ["worker1@browser-test"],
            )

        stack = Stack(make_app)
        stacks.append(stack)
        return stack, deps

    yield start
    for stack in stacks:
        stack.stop()
    metrics.configure_metrics(None)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh tab; script errors on the page fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.set_default_timeout(20_000)
    yield tab
    context.close()
    assert not errors, f"script errors on the page: {errors}"
