"""The console's HTML, built as strings with every outside value escaped on the way in.

Why no template engine: the page is a handful of tables, and one rule is easier to audit
than a template language's auto-escaping corners: every value goes through ``e`` (or a
number formatter that yields digits only). Symbols, reasons and raw signal excerpts come
from outside and are shown as text, never as markup. The pages carry no inline script or
style, so the Content-Security-Policy can forbid both (see ``core/api/console/routes.py``).
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from core.api.console.data import BookRow, BookView, PositionStory, SystemView
from core.domain.book import format_age, format_number
from core.domain.positions import NON_TERMINAL, PositionStatus

STATUSES = [s.value for s in PositionStatus if s in NON_TERMINAL]
SORT_LABELS = {
    "risk": "risk first",
    "symbol": "symbol",
    "age": "oldest first",
    "pnl": "worst PnL first",
    "id": "newest first",
}


def e(value: Any) -> str:
    """Text for HTML content and quoted attributes."""
    return html.escape("" if value is None else str(value), quote=True)


def utc(ts: datetime | None) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S UTC") if ts is not None else "—"


def when(ts: datetime | None, now: datetime) -> str:
    """UTC time with its relative age, the way an operator reads a log."""
    if ts is None:
        return "—"
    age = format_age((now - ts).total_seconds())
    return f'<time datetime="{e(ts.isoformat())}">{e(utc(ts))}</time> <small>({e(age)} ago)</small>'


def num(value: Decimal | None, places: int | None = None, *, sign: bool = False) -> str:
    return f'<td class="n">{e(format_number(value, places, sign=sign))}</td>'


# --- pages -------------------------------------------------------------------------------------


def page(title: str, body_attrs: Mapping[str, str], main: str) -> str:
    attrs = " ".join(f'data-{k}="{e(v)}"' for k, v in body_attrs.items())
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
<link rel="stylesheet" href="/console/static/console.css">
<script src="/console/static/console.js" defer></script>
</head>
<body {attrs}>
<header class="top">
  <a class="brand" href="/console">vigil</a>
  <nav><a href="/console">Book</a> <a href="/console#system">System</a></nav>
  <span id="live" class="live" aria-live="polite">connecting…</span>
</header>
<div id="banner" class="banner" role="alert" hidden>Connection to the API lost — retrying…</div>
<form id="login" class="login" hidden>
  <label for="token-input">This API needs its token (VIGIL_API_TOKEN) to show the book.</label>
  <input id="token-input" name="token" type="password" autocomplete="off" required>
  <button type="submit">Open</button>
</form>
<div id="notice" class="notice" role="status" aria-live="polite"></div>
{main}
<dialog id="confirm">
  <form method="dialog">
    <p id="confirm-text"></p>
    <label id="reason-label" for="confirm-reason" hidden>Reason
      <input id="confirm-reason" name="reason" type="text" maxlength="200">
    </label>
    <menu><button value="cancel" id="confirm-cancel">Cancel</button>
    <button value="ok" id="confirm-ok" class="danger">Confirm</button></menu>
  </form>
</dialog>
</body>
</html>"""


def book_page(exchanges: Iterable[str], token_required: bool, book: str | None = None) -> str:
    """The shell; ``book`` is the first book fragment when it can be served without a token
    (one round trip less on the first load), else the script fetches it."""
    options = "".join(f'<option value="{e(x)}">{e(x)}</option>' for x in exchanges)
    statuses = "".join(f'<option value="{e(s)}">{e(s)}</option>' for s in STATUSES)
    sorts = "".join(f'<option value="{e(k)}">{e(v)}</option>' for k, v in SORT_LABELS.items())
    main = f"""<main>
<form id="filters" class="filters">
  <label>Exchange <select name="exchange"><option value="">all</option>{options}</select></label>
  <label>Status <select name="status"><option value="">all</option>{statuses}</select></label>
  <label>Sort <select name="sort">{sorts}</select></label>
</form>
<section id="book" aria-label="Book" data-src="/console/fragments/book" data-filters="filters"
{'data-loaded="true"' if book is not None else ""}>{book or "<p>Loading the book…</p>"}</section>
<section id="system" aria-label="System" data-src="/console/fragments/system" data-every="5000">
<p>Loading the system…</p></section>
</main>"""
    return page("vigil console", {"token-required": str(token_required).lower()}, main)


def position_page(position_id: int, token_required: bool) -> str:
    main = f"""<main>
<p><a href="/console">&larr; Book</a></p>
<section id="position" aria-label="Position"
  data-src="/console/fragments/positions/{position_id}"><p>Loading…</p></section>
</main>"""
    attrs = {"token-required": str(token_required).lower()}
    return page(f"vigil position {position_id}", attrs, main)


def not_found_page(what: str) -> str:
    main = f'<main><h1>Not found</h1><p>{e(what)}</p><p><a href="/console">Book</a></p></main>'
    return page("vigil: not found", {"static": "true"}, main)


# --- the book ----------------------------------------------------------------------------------


def book_fragment(view: BookView, rows: list[BookRow], controls: bool) -> str:
    t = view.totals
    bare = "bad" if t.without_stop else "good"
    error = (
        f'<p class="warn">Exchange unreadable, stops unknown: {e(view.exchange_error)}</p>'
        if view.exchange_error
        else ""
    )
    head = (
        "<th>#</th><th>Symbol</th><th>Side</th><th>Status</th><th>Protection</th>"
        '<th class="n">Qty</th><th class="n">Entry</th><th class="n">Mark</th>'
        '<th class="n">Unrealised</th><th class="n">Stop</th><th class="n">To stop %</th>'
        "<th>Stop by</th><th>Trailing</th><th>Aged</th><th>Age</th>"
        + ("<th></th>" if controls else "")
    )
    body = "".join(_book_row(r, controls) for r in rows) or (
        f'<tr><td colspan="{16 if controls else 15}">No open positions.</td></tr>'
    )
    return f"""<div class="totals">
  <div class="total {bare}" id="without-stop"><span class="big">{t.without_stop}</span>
    positions without a stop</div>
  <div class="total"><span class="big" id="open-count">{t.positions}</span> open positions</div>
  <div class="total"><span class="big">{e(format_number(t.exposure, 2))}</span> exposure</div>
  <div class="total"><span class="big">{e(format_number(t.unrealised_pnl, 2, sign=True))}</span>
    unrealised PnL</div>
</div>
{error}
<div class="scroll"><table class="book">
<caption>Open positions ({len(rows)} shown)</caption>
<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"""


def _book_row(r: BookRow, controls: bool) -> str:
    pp, qp = r.price_places, r.qty_places
    if r.unprotected_seconds is not None:
        protection = f'<td class="unprotected">unprotected for {int(r.unprotected_seconds)} s</td>'
    elif r.status == "active" and r.live_known and r.stop is not None:
        protection = '<td class="ok">protected</td>'
    elif r.status == "active" and r.live_known:
        protection = "<td>checking…</td>"  # active since the last read of the exchange
    else:
        protection = "<td>—</td>"
    trailing = "—"
    if r.trailing_state is not None:
        mark = "high" if r.side == "long" else "low"
        trailing = f"{e(r.trailing_state)}"
        if r.trailing_extreme is not None:
            trailing += f" · {mark} {e(format_number(r.trailing_extreme, pp))}"
        trailing += f" · cb {e(format_number(r.callback, None))}%"
    aged = "—"
    if r.aged_phase is not None:
        aged = f"{e(r.aged_phase)} → {e(format_number(r.aged_target, pp))}"
    pnl_class = "n" + (" neg" if r.pnl is not None and r.pnl < 0 else "")
    pnl = format_number(r.pnl, 2, sign=True)
    close = ""
    if controls:
        label = f"Close position {r.id}: {r.exchange} {r.symbol} {r.side} {r.quantity}?"
        close = (
            f'<td><button type="button" class="danger" data-action="close" '
            f'data-position="{r.id}" data-confirm="{e(label)}">Close</button></td>'
        )
    return (
        f'<tr id="position-{r.id}" data-symbol="{e(r.symbol)}">'
        f'<td><a href="/console/positions/{r.id}">{r.id}</a></td>'
        f'<td><a href="/console/positions/{r.id}">{e(r.symbol)}</a> '
        f'<small class="venue">{e(r.exchange)}</small></td>'
        f"<td>{e(r.side)}</td><td>{e(r.status)}</td>{protection}"
        f"{num(r.quantity, qp)}{num(r.entry, pp)}{num(r.mark, pp)}"
        f'<td class="{pnl_class}">{e(pnl)}</td>'
        f'<td class="n stop">{e(format_number(r.stop, pp))}</td>'
        f"{num(r.stop_distance, 2)}"
        f'<td>{e(r.stop_owner or "—")}</td><td class="wrap">{trailing}</td>'
        f'<td class="wrap">{aged}</td><td>{e(format_age(r.age_seconds))}</td>{close}</tr>'
    )


# --- one position ------------------------------------------------------------------------------


def _summary(data: Mapping[str, Any]) -> str:
    """An event's data as escaped ``key value`` pairs; a stop move reads ``old → new``."""
    parts = []
    if "old_stop" in data or "new_stop" in data:
        parts.append(
            f'<b class="move">stop {e(data.get("old_stop"))} → {e(data.get("new_stop"))}</b>'
        )
    for key, value in data.items():
        if key in ("old_stop", "new_stop"):
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        if len(text) > 300:
            text = text[:300] + "…"
        parts.append(f"<span><i>{e(key)}</i> {e(text)}</span>")
    return " ".join(parts)


def _facts(story: PositionStory, now: datetime) -> str:
    """The position's facts and the signal that opened it, as a definition list."""
    p, s = story.position, story.signal
    signal = "—"
    if s is not None:
        raw = json.dumps(s.raw, default=str)[:400] if s.raw else ""
        signal = (
            f"<code>{e(s.signal_id)}</code> {e(s.action)} week {e(s.score_week)} "
            f"month {e(s.score_month)} · {e(s.status)} {e(s.outcome_reason or '')}"
            f'<br><code class="raw">{e(raw)}</code>'
        )
    facts = [
        ("Position", f"{p.id} · {e(p.exchange)} {e(p.symbol)} {e(p.side)}"),
        ("Status", f'<span id="position-status">{e(p.status)}</span> {e(p.close_reason or "")}'),
        ("Quantity", e(format_number(p.quantity, None))),
        ("Entry", e(format_number(p.entry_price, None))),
        ("Stop (ledger)", e(format_number(p.stop_price, None))),
        ("Exit", e(format_number(p.exit_price, None))),
        ("Realised PnL", e(format_number(p.realized_pnl, None, sign=True))),
        ("Opened", when(p.opened_at, now)),
        ("Closed", when(p.closed_at, now)),
        ("Correlation id", f"<code>{e(p.correlation_id)}</code>"),
        ("Signal", signal),
    ]
    return "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)


def position_fragment(story: PositionStory, now: datetime, controls: bool) -> str:
    p = story.position
    live = p.status in {x.value for x in NON_TERMINAL}
    close = ""
    if controls and live:
        label = f"Close position {p.id}: {p.exchange} {p.symbol} {p.side} {p.quantity}?"
        close = (
            f'<button type="button" class="danger" data-action="close" data-position="{p.id}" '
            f'data-confirm="{e(label)}">Close this position</button>'
        )
    dl = _facts(story, now)
    events = (
        "".join(
            f'<tr class="sev-{e(ev.severity)}"><td>{when(ev.created_at, now)}</td>'
            f"<td>{e(ev.type)}</td><td>{e(ev.severity)}</td><td>{_summary(ev.data or {})}</td></tr>"
            for ev in story.events
        )
        or '<tr><td colspan="4">No events.</td></tr>'
    )
    orders = (
        "".join(
            f"<tr><td><code>{e(o.client_order_id)}</code></td>"
            f"<td>{e(o.exchange_order_id or '—')}</td>"
            f"<td>{e(o.purpose)}</td><td>{e(o.side)}</td><td>{e(o.order_type)}</td>"
            f"{num(o.quantity)}{num(o.price)}{num(o.trigger_price)}<td>{e(o.status)}</td>"
            f"{num(o.filled_quantity)}{num(o.average_price)}<td>{when(o.created_at, now)}</td></tr>"
            for o in story.orders
        )
        or '<tr><td colspan="12">No orders.</td></tr>'
    )
    return f"""<h1>{e(p.symbol)} {e(p.side)} <small>#{p.id}</small></h1>
{close}
<dl class="facts">{dl}</dl>
<h2>Timeline</h2>
<div class="scroll"><table class="timeline"><thead><tr><th>When</th><th>Event</th>
<th>Severity</th><th>Detail</th></tr></thead><tbody>{events}</tbody></table></div>
<h2>Orders</h2>
<div class="scroll"><table class="orders"><thead><tr><th>Client id</th><th>Exchange id</th>
<th>Purpose</th><th>Side</th><th>Type</th><th class="n">Qty</th><th class="n">Price</th>
<th class="n">Trigger</th><th>Status</th><th class="n">Filled</th><th class="n">Avg</th>
<th>Placed</th></tr></thead><tbody>{orders}</tbody></table></div>"""


# --- the system --------------------------------------------------------------------------------


def _component(name: str, body: Mapping[str, Any]) -> str:
    status = str(body.get("status", "?"))
    age = body.get("age_seconds")
    detail = ", ".join(
        f"{k} {v if isinstance(v, str) else json.dumps(v, default=str)}"
        for k, v in body.items()
        if k not in ("status", "age_seconds")
    )
    age_text = format_age(float(age)) if isinstance(age, int | float) else "—"
    return (
        f'<tr class="st-{e(status)}"><td>{e(name)}</td><td>{e(status)}</td>'
        f'<td class="n">{e(age_text)}</td><td>{e(detail[:300])}</td></tr>'
    )


def halts_in_force(health: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    """The halts /health reports (who, when, why); None when not halted.

    ``halted`` may be true with no detail (an older API): one anonymous halt then."""
    if not health.get("halted"):
        return None
    found: list[Mapping[str, Any]] = [
        h for h in health.get("halts") or [] if isinstance(h, Mapping)
    ]
    return found or [{}]


def _halt_html(halts: list[Mapping[str, Any]] | None, now: datetime) -> str:
    if halts is None:
        return '<p id="halt-state" class="running">Running — openings allowed.</p>'
    lines = []
    for h in halts:
        at = h.get("halted_at")
        try:
            since = when(datetime.fromisoformat(at), now) if isinstance(at, str) else "—"
        except ValueError:
            since = e(at)
        lines.append(
            f"<li>{e(h.get('reason') or 'no reason given')} — by {e(h.get('halted_by') or '?')}"
            f" ({e(h.get('source') or 'operator')}, {e(h.get('scope') or 'all venues')})"
            f" since {since}</li>"
        )
    return (
        '<div id="halt-state" class="halted"><p>HALTED — no new positions open.</p>'
        f"<ul>{''.join(lines)}</ul></div>"
    )


def system_fragment(
    health: Mapping[str, Any], view: SystemView, now: datetime, controls: bool
) -> str:
    halt = halts_in_force(health)
    halt_html = _halt_html(halt, now)
    buttons = ""
    if controls:
        toggle = (
            '<button type="button" data-action="resume" '
            'data-confirm="Resume openings?">Resume</button>'
            if halt is not None
            else '<button type="button" class="danger" data-action="halt" data-reason="1" '
            'data-confirm="Halt: no new openings until resumed?">Halt</button>'
        )
        buttons = (
            f'<div class="controls">{toggle} <button type="button" class="danger" '
            'data-action="close-all" data-confirm="Halt, then close EVERY open position '
            'of this venue at market?">'
            "Close all</button></div>"
        )
    components = health.get("components") or {}
    comp_rows = "".join(_component(str(k), v) for k, v in components.items() if isinstance(v, dict))
    queues = "".join(
        f'<tr><td>{e(k)}</td><td class="n">{e("—" if v is None else v)}</td></tr>'
        for k, v in view.queues.items()
    )
    waves = "".join(_wave_row(w, now) for w in view.waves) or '<tr><td colspan="8">None.</td></tr>'
    alerts = (
        "".join(
            f'<tr class="sev-{e(a.severity)}"><td>{when(a.created_at, now)}</td>'
            f"<td>{e(a.severity)}</td>"
            f"<td>{e(a.kind)}</td><td>{e(a.status)}</td><td>{e(a.message[:300])}</td></tr>"
            for a in view.alerts
        )
        or '<tr><td colspan="5">No open alerts.</td></tr>'
    )
    events = (
        "".join(
            f'<tr class="sev-{e(ev.severity)}"><td>{when(ev.created_at, now)}</td>'
            f"<td>{e(ev.type)}</td>"
            f"<td>{e(ev.symbol or '')}</td><td>{_summary(ev.data or {})}</td></tr>"
            for ev in view.events
        )
        or '<tr><td colspan="4">None.</td></tr>'
    )
    overall = e(health.get("status", "?"))
    return f"""<h2>System <small class="st-{overall}">{overall}</small></h2>
{halt_html}{buttons}
<div class="grid">
<div class="scroll"><table id="components"><caption>Components</caption><thead><tr>
<th>Component</th><th>Status</th><th class="n">Heartbeat age</th><th>Detail</th></tr></thead>
<tbody>{comp_rows}</tbody></table></div>
<div class="scroll"><table><caption>Queue depths</caption><tbody>{queues}</tbody></table></div>
</div>
<div class="scroll"><table><caption>Recent waves</caption><thead><tr><th>#</th><th>Exchange</th>
<th>Window</th><th>Status</th><th class="n">Signals</th><th class="n">Opened</th>
<th class="n">Failed</th><th class="n">Skipped</th></tr></thead><tbody>{waves}</tbody></table></div>
<div class="scroll"><table><caption>Open alerts</caption><tbody>{alerts}</tbody></table></div>
<div class="scroll"><table id="recent-events"><caption>Recent warnings and rejected signals
</caption><tbody>{events}</tbody></table></div>"""


def _wave_row(w: Any, now: datetime) -> str:
    stats = w.stats or {}

    def count(key: str) -> str:
        value = stats.get(key)
        return f'<td class="n">{e(value if isinstance(value, int) else "—")}</td>'

    return (
        f"<tr><td>{w.id}</td><td>{e(w.exchange)}</td><td>{when(w.window_start, now)}</td>"
        f"<td>{e(w.status)}</td>{count('signals')}{count('opened')}{count('failed')}"
        f"{count('skipped')}</tr>"
    )
