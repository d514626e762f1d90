"""``vigil events``: the event log, or one position's whole life as a timeline.

Why apart: it only reads (core/api/queries.py, the same queries as the API's /events), and
its filters and its two shapes (newest first, or a timeline oldest first) are its own.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from shell.cli_output import console, fail
from shell.cli_running import current_settings, storage_errors

if TYPE_CHECKING:
    from core.api.queries import EventFilter


def events(
    symbol: Annotated[str | None, typer.Option(help="Only this symbol.")] = None,
    type_: Annotated[
        str | None, typer.Option("--type", help="Event type(s), comma-separated.")
    ] = None,
    severity: Annotated[str | None, typer.Option(help="info, warning, error, critical.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO time, or relative: 15m, 2h, 3d.")] = None,
    correlation_id: Annotated[
        str | None, typer.Option("--correlation-id", help="Timeline of one position's life.")
    ] = None,
    position: Annotated[
        int | None, typer.Option("--position", help="Timeline of one position (by id).")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(min=1, max=1000, help="Rows (default 50; a timeline: 1000)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """The event log (newest first), or one position's timeline with --position.

    With --position or --correlation-id: that position's whole life, oldest first (signal,
    entry, fill, stop, trailing moves, close), including events from before it had an id.
    """
    from core.api.queries import event_dict, list_events, position_correlation
    from core.db.session import new_session

    current_settings()

    with storage_errors(), new_session() as session:
        if position is not None and correlation_id is None:
            correlation_id = position_correlation(session, position)
            if correlation_id is None:
                raise fail(f"no position {position}", 1)
        f = _event_filter(symbol, type_, severity, since, correlation_id, limit)
        rows = [event_dict(e) for e in list_events(session, f)]
    if as_json:
        for row in rows:
            console.print(json.dumps(row, default=str), highlight=False, soft_wrap=True)
        return
    _print_events(rows, f)


def _event_filter(
    symbol: str | None,
    type_: str | None,
    severity: str | None,
    since: str | None,
    correlation_id: str | None,
    limit: int | None,
) -> EventFilter:
    """The query the options ask for; a --since that is no time exits 2."""
    from core.api.queries import BadQuery, EventFilter, parse_since
    from core.clock import SYSTEM_CLOCK

    try:
        return EventFilter(
            symbol=symbol,
            types=tuple(t.strip() for t in (type_ or "").split(",") if t.strip()),
            severity=severity,
            since=parse_since(since, SYSTEM_CLOCK.now()),
            correlation_id=correlation_id,
            limit=limit or (1000 if correlation_id else 50),
        )
    except BadQuery as exc:
        raise fail(str(exc)) from None


def _print_events(rows: list[dict[str, Any]], f: EventFilter) -> None:
    """A table of the rows; a timeline shows times to the millisecond."""
    title = f"timeline of {f.correlation_id}" if f.is_timeline else "events (newest first)"
    table = Table(title=title)
    for column in ("id", "time", "type", "sev", "symbol", "pos", "details"):
        table.add_column(column, overflow="fold")
    for row in rows:
        details = ", ".join(f"{k}={v}" for k, v in sorted((row["data"] or {}).items()))
        table.add_row(
            str(row["id"]),
            row["created_at"][11:23] if f.is_timeline else row["created_at"][:19],
            row["type"],
            row["severity"],
            row["symbol"] or "",
            str(row["position_id"] or ""),
            details[:200],
        )
    console.print(table)
