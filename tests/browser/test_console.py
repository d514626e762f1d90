"""The operator console in a real browser: the book and its stops, live, escaped, recovering."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or, where a browser is expected, fails)
    expect = None

from core.db.models import Event, Position, Signal
from core.db.session import unit_of_work
from core.domain.trailing import PriceWindow
from core.services import halts, trailing
from core.services.closing import lock_for
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position
from core.services.protection import check_protection

pytestmark = pytest.mark.integration


def opened(deps: Any, symbol: str = "BTCUSDT", side: str = "long") -> int:
    with unit_of_work() as s:
        pid = create_position(s, NewPosition("binance", symbol, side)).id
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    return pid


def live_stop(sim: Any, symbol: str) -> dict[str, Any]:
    [stop] = [o for o in sim.state()["open_algo_orders"] if o["symbol"] == symbol]
    return stop


def stop_cell(page: Any, pid: int) -> Any:
    return page.locator(f"#position-{pid} td.stop")


def shown_stop(page: Any, pid: int) -> Decimal:
    return Decimal(stop_cell(page, pid).inner_text())


def test_the_book_shows_opened_positions_with_their_live_stops(console_stack, sim, page):
    stack, deps = console_stack()
    btc, eth = opened(deps, "BTCUSDT"), opened(deps, "ETHUSDT", "short")

    page.goto(f"{stack.url}/console")

    for pid, symbol in ((btc, "BTCUSDT"), (eth, "ETHUSDT")):
        row = page.locator(f"#position-{pid}")
        expect(row).to_contain_text(symbol)
        expect(row).to_contain_text("protected")
        expect(row.locator("td.stop")).not_to_have_text("—")
        assert shown_stop(page, pid) == Decimal(live_stop(sim, symbol)["triggerPrice"])
        expect(row).to_contain_text("entry")  # the opening's own stop
    expect(page.locator("#without-stop .big")).to_have_text("0")
    expect(page.locator("#open-count")).to_have_text("2")
    expect(page.locator("#system")).to_contain_text("database")

    page.select_option("#filters select[name=status]", "pending_entry")
    expect(page.locator("table.book tbody")).to_contain_text("No open positions.")
    page.select_option("#filters select[name=status]", "active")
    expect(page.locator(f"#position-{btc}")).to_be_visible()


def same_number(value: Decimal) -> re.Pattern[str]:
    """The value as the page prints it, whatever trailing zeros the symbol's precision adds."""
    text = f"{value.normalize():f}"
    zeros = "0*" if "." in text else r"(\.0*)?"
    return re.compile("^" + re.escape(text) + zeros + "$")


def trail(deps: Any, sim: Any, pid: int, price: str) -> None:
    """One price reaction, the way the price task runs it: under the symbol lock."""
    sim.set_price("BTCUSDT", price)
    with unit_of_work() as s:
        position = s.get(Position, pid)
    with lock_for(deps, "binance", "BTCUSDT") as held:
        trailing.react(deps, held, position, PriceWindow.at(Decimal(price)), deps.clock.now())


def test_a_trailing_move_updates_the_stop_on_the_page_without_a_reload(console_stack, sim, page):
    stack, deps = console_stack()
    pid = opened(deps)
    page.goto(f"{stack.url}/console")
    expect(stop_cell(page, pid)).not_to_have_text("—")
    before = shown_stop(page, pid)
    page.evaluate("window.__notReloaded = true")

    trail(deps, sim, pid, "63000")
    moved = Decimal(live_stop(sim, "BTCUSDT")["triggerPrice"])
    assert moved > before

    expect(stop_cell(page, pid)).to_have_text(same_number(moved))
    expect(page.locator(f"#position-{pid}")).to_contain_text("trailing")
    assert page.evaluate("window.__notReloaded") is True


def test_a_stop_cancelled_by_hand_shows_unprotected_until_protection_restores_it(
    console_stack, sim, page
):
    stack, deps = console_stack()
    pid = opened(deps)
    page.goto(f"{stack.url}/console")
    row = page.locator(f"#position-{pid}")
    expect(row).to_contain_text("protected")

    stop = live_stop(sim, "BTCUSDT")
    deps.exchange.cancel_order("BTCUSDT", str(stop["algoId"]), conditional=True)

    expect(row.locator("td.unprotected")).to_contain_text(re.compile(r"unprotected for \d+ s"))
    expect(page.locator("#without-stop .big")).to_have_text("1")
    assert row.locator("td.unprotected").evaluate("e => getComputedStyle(e).backgroundColor") in (
        "rgb(176, 0, 32)",
    )

    assert check_protection(deps).stops_placed == 1

    expect(row.locator("td.unprotected")).to_have_count(0)
    expect(row).to_contain_text("protected")
    expect(row).to_contain_text("protection")  # who owns the stop now
    expect(page.locator("#without-stop .big")).to_have_text("0")


SCRIPT = "<script>window.__xss = 'signal id'</script>"
IMG = "<img src=x onerror=\"window.__xss = 'rejection reason'\">"


def test_outside_text_is_shown_as_text_and_never_runs(console_stack, sim, page):
    stack, deps = console_stack()
    pid = opened(deps)
    with unit_of_work() as s:
        signal = Signal(
            signal_id=SCRIPT,
            exchange="binance",
            symbol="BTCUSDT",
            action="BUY",
            score_week=Decimal(70),
            score_month=Decimal(60),
            signal_ts=deps.clock.now(),
            status="opened",
            outcome_reason=IMG,
            correlation_id="c-xss",
            raw={"id": SCRIPT, "note": IMG},
        )
        s.add(signal)
        s.flush()
        s.get(Position, pid).signal_id = signal.id
        s.add(
            Event(
                type="signal_rejected",
                severity="warning",
                symbol="BTCUSDT",
                data={"reason": IMG, "signal_id": SCRIPT, "raw_excerpt": SCRIPT + IMG},
            )
        )

    page.goto(f"{stack.url}/console")
    events = page.locator("#recent-events")
    expect(events).to_contain_text(SCRIPT)
    expect(events).to_contain_text(IMG)

    page.goto(f"{stack.url}/console/positions/{pid}")
    expect(page.locator("#position")).to_contain_text(SCRIPT)
    expect(page.locator("#position")).to_contain_text(IMG)

    assert page.evaluate("window.__xss") is None
    assert page.locator("script").count() == 1  # the console's own
    assert page.locator("#position img, #system img").count() == 0


def test_unknown_position_ids_are_404_pages(console_stack, page):
    stack, _ = console_stack()
    for bad in ("999999", "abc", "1%3Cscript%3E", "99999999999999999999999"):
        response = page.goto(f"{stack.url}/console/positions/{bad}")
        assert response.status == 404, bad
        expect(page.locator("h1")).to_have_text("Not found")


def test_a_lost_connection_shows_a_banner_and_recovers(console_stack, page):
    stack, deps = console_stack()
    pid = opened(deps)
    page.goto(f"{stack.url}/console")
    expect(page.locator(f"#position-{pid}")).to_be_visible()
    expect(page.locator("#banner")).to_be_hidden()

    stack.stop()
    expect(page.locator("#banner")).to_be_visible()
    expect(page.locator("#banner")).to_contain_text("lost")

    stack.start()
    expect(page.locator("#banner")).to_be_hidden(timeout=30_000)
    expect(page.locator(f"#position-{pid}")).to_be_visible()


TOKEN = "console-token-for-tests-123"


def test_with_a_token_configured_the_page_asks_for_it_and_shows_controls_only_with_it(
    console_stack, page
):
    stack, deps = console_stack(api_token=TOKEN)
    pid = opened(deps)

    page.goto(f"{stack.url}/console")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator(f"#position-{pid}")).to_have_count(0)

    page.fill("#token-input", TOKEN)
    page.click("#login button[type=submit]")
    expect(page.locator(f"#position-{pid}")).to_be_visible()
    expect(page.locator(f"#position-{pid} button[data-action=close]")).to_be_visible()
    expect(page.locator("#system button[data-action=halt]")).to_be_visible()

    # the token is kept for the tab, never in the address bar
    page.goto(f"{stack.url}/console?token={TOKEN}")
    assert "token" not in page.url
    expect(page.locator(f"#position-{pid}")).to_be_visible()


def test_without_a_token_configured_the_page_is_read_only(console_stack, page):
    stack, deps = console_stack()
    pid = opened(deps)
    page.goto(f"{stack.url}/console")
    expect(page.locator(f"#position-{pid}")).to_be_visible()
    expect(page.locator("#login")).to_be_hidden()
    expect(page.locator("button[data-action]")).to_have_count(0)


def test_a_browser_asking_for_the_root_lands_on_the_console(console_stack, page):
    stack, _ = console_stack()
    page.goto(f"{stack.url}/")
    assert page.url.endswith("/console")
    expect(page.locator("#without-stop")).to_be_visible()


def test_a_positions_page_tells_its_life_and_lists_its_orders_with_client_ids(
    console_stack, sim, page
):
    stack, deps = console_stack()
    pid = opened(deps)
    page.goto(f"{stack.url}/console")
    page.click(f"#position-{pid} a >> nth=0")
    expect(page).to_have_url(f"{stack.url}/console/positions/{pid}")
    timeline = page.locator("table.timeline")
    for event in ("position_created", "entry_order_filled", "stop_loss_placed"):
        expect(timeline).to_contain_text(event)
    orders = page.locator("table.orders")
    expect(orders).to_contain_text(re.compile(rf"v{pid}-\w+-e0"))
    expect(orders).to_contain_text(re.compile(rf"v{pid}-\w+-s0"))

    trail(deps, sim, pid, "63000")  # the page follows without a reload
    expect(timeline).to_contain_text("trailing_stop_updated")
    expect(timeline.locator(".move").last).to_contain_text(re.compile(r"stop \S+ → \S+"))
    expect(orders).to_contain_text(re.compile(rf"v{pid}-\w+-s[1-9]"))


def test_the_book_is_readable_on_a_phone(console_stack, browser):
    stack, deps = console_stack()
    pid = opened(deps)
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        phone = context.new_page()
        phone.goto(f"{stack.url}/console")
        expect(phone.locator(f"#position-{pid}")).to_be_attached()
        expect(phone.locator("#without-stop")).to_be_in_viewport()
        expect(phone.locator("#components")).to_contain_text("database")  # all of it loaded
        # the page itself never scrolls sideways; a wide table scrolls in its own box
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        context.close()


def test_every_control_asks_for_confirmation_and_sends_the_token(console_stack, page):
    """The page's side of the controls: nothing is sent on Cancel; on Confirm one POST to
    the operator endpoint with the bearer token. (What the endpoints do is tested through
    the page, unintercepted, in the tests of halt and close below.)"""
    stack, deps = console_stack(api_token=TOKEN)
    pid = opened(deps)
    sent: list[tuple[str, str | None, str | None]] = []

    def record(route: Any) -> None:
        request = route.request
        sent.append((request.url, request.headers.get("authorization"), request.post_data))
        route.fulfill(status=200, content_type="application/json", body='{"ok": true}')

    for path in ("/halt", "/resume", "/close-all", f"/positions/{pid}/close"):
        page.route(f"{stack.url}{path}", record)
    page.goto(f"{stack.url}/console?token={TOKEN}")
    close = page.locator(f"#position-{pid} button[data-action=close]")

    close.click()
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-text")).to_contain_text(f"Close position {pid}")
    page.click("#confirm-cancel")
    expect(page.locator("#confirm")).to_be_hidden()
    assert sent == []

    close.click()
    page.click("#confirm-ok")
    expect(page.locator("#notice")).to_contain_text("Done: close")
    page.locator("#system button[data-action=halt]").click()
    expect(page.locator("#reason-label")).to_be_visible()
    page.fill("#confirm-reason", "<b>maintenance</b>")
    page.click("#confirm-ok")
    expect(page.locator("#notice")).to_contain_text("Done: halt")
    page.locator("#system button[data-action=close-all]").click()
    page.click("#confirm-ok")
    expect(page.locator("#notice")).to_contain_text("Done: close-all")

    urls = [url.removeprefix(stack.url) for url, _, _ in sent]
    assert urls == [f"/positions/{pid}/close", "/halt", "/close-all"]
    assert {auth for _, auth, _ in sent} == {f"Bearer {TOKEN}"}
    assert '"reason":"<b>maintenance</b>"' in sent[1][2]


def confirm(page: Any, button: Any, reason: str | None = None) -> None:
    button.click()
    expect(page.locator("#confirm")).to_be_visible()
    if reason is not None:
        page.fill("#confirm-reason", reason)
    page.click("#confirm-ok")


def test_halt_and_resume_through_the_page(console_stack, page):
    stack, deps = console_stack(api_token=TOKEN)
    opened(deps)
    page.goto(f"{stack.url}/console?token={TOKEN}")
    system = page.locator("#system")
    expect(system.locator("#halt-state")).to_contain_text("Running")

    confirm(page, system.locator("button[data-action=halt]"), reason="<i>venue maintenance</i>")
    expect(page.locator("#notice")).to_contain_text("Done: halt")
    expect(system.locator("#halt-state")).to_contain_text("HALTED")
    expect(system.locator("#halt-state")).to_contain_text("<i>venue maintenance</i>")
    [halt] = halts.current()
    assert halt.reason == "<i>venue maintenance</i>" and halt.halted_by.startswith("api:")

    confirm(page, system.locator("button[data-action=resume]"))
    expect(system.locator("#halt-state")).to_contain_text("Running")
    assert halts.current() == []


def exchange_positions(sim: Any) -> set[str]:
    return {p["symbol"] for p in sim.state()["positions"] if Decimal(str(p["positionAmt"])) != 0}


def test_closing_one_position_and_then_all_through_the_page_closes_them_on_the_exchange(
    console_stack, sim, page
):
    stack, deps = console_stack(api_token=TOKEN)
    btc, eth, sol = opened(deps), opened(deps, "ETHUSDT"), opened(deps, "SOLUSDT", "short")
    assert exchange_positions(sim) == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    page.goto(f"{stack.url}/console?token={TOKEN}")

    confirm(page, page.locator(f"#position-{btc} button[data-action=close]"))
    expect(page.locator("#notice")).to_contain_text("Done: close")
    expect(page.locator(f"#position-{btc}")).to_have_count(0)
    assert exchange_positions(sim) == {"ETHUSDT", "SOLUSDT"}
    assert not [o for o in sim.state()["open_algo_orders"] if o["symbol"] == "BTCUSDT"]

    confirm(page, page.locator("#system button[data-action=close-all]"))
    expect(page.locator("#notice")).to_contain_text("Done: close-all")
    expect(page.locator("#open-count")).to_have_text("0")
    assert exchange_positions(sim) == set()
    expect(page.locator("#halt-state")).to_contain_text("HALTED")  # close-all halts first
    with unit_of_work() as s:
        statuses = {s.get(Position, pid).status for pid in (btc, eth, sol)}
    assert statuses == {"closed"}
