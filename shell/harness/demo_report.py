"""What ``vigil demo`` prints at the end: the scenario's log, the deployment's figures, and one
audit per venue (how long positions went without a live stop, and every invariant).

Why a module of its own: with two venues the audit is per venue while the figures are the
deployment's, and the demo's driver (shell/harness/demo.py) stays about driving.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from shell.harness.demo import DemoResult, VenueAudit


def print_demo_result(console: Console, result: DemoResult) -> None:
    console.print("what the scenario did:")
    for line in result.log:
        console.print(f"  {line}", highlight=False)
    f = result.figures
    table = Table(title="demo report", show_header=False)
    several = len(result.audits) > 1
    for audit in result.audits:
        label = f"exchange ({audit.exchange})" if several else "exchange"
        table.add_row(label, f"paper, {audit.exchange} dialect")
    table.add_row("positions opened", str(f.opened))
    table.add_row(
        "closed by reason",
        ", ".join(f"{k} {v}" for k, v in sorted(f.closed_by_reason.items())) or "-",
    )
    table.add_row(
        "positions by status",
        ", ".join(f"{k} {v}" for k, v in sorted(f.positions_by_status.items())),
    )
    table.add_row(
        "signals by outcome", ", ".join(f"{k} {v}" for k, v in sorted(f.signals_by_status.items()))
    )
    table.add_row("realized PnL (USDT)", f"{f.realized_pnl:.2f}")
    table.add_row("trailing activations / stop moves", f"{f.trailing_activations} / {f.stop_moves}")
    for audit in result.audits:
        label = f" ({audit.exchange})" if several else ""
        table.add_row(f"longest without a live stop{label}", _gaps_line(audit))
    table.add_row("events", str(f.events_total))
    console.print(table)
    events = Table(title="events by type")
    events.add_column("type")
    events.add_column("count", justify="right")
    for name, count in f.events_by_type.items():
        events.add_row(name, str(count))
    console.print(events)
    for audit in result.audits:
        _print_invariants(console, audit, f"{audit.exchange}: " if several else "")


def _gaps_line(audit: VenueAudit) -> str:
    m = audit.monitor
    now = time.monotonic()
    own = [
        g.seconds(now)
        for g in m.gaps
        if g.kind == "established" and g.symbol not in audit.interfered
    ]
    outside = [g.seconds(now) for g in m.gaps if g.symbol in audit.interfered]
    return (
        f"engine-managed {max(own, default=0.0):.2f}s; after a stop was removed or a "
        f"position opened by hand {max(outside, default=0.0):.2f}s (protection interval "
        f"bounds it); between entry fill and stop {m.longest('opening'):.2f}s "
        f"(sampled every {m.interval}s, {m.samples} samples)"
    )


def _print_invariants(console: Console, audit: VenueAudit, venue: str) -> None:
    inv = audit.invariants
    if inv.clean:
        console.print(f"[green]{venue}diagnose: every invariant holds[/]")
        return
    console.print(f"[red]{venue}diagnose: {len(inv.violations)} violation(s)[/]")
    for v in inv.violations:
        console.print(f"  {v.kind}: {v.symbol or ''} {v.detail}")
