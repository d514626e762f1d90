"""What a chaos run found: its figures as data (``ChaosResult``) and as the printed table.

Why apart from the run: the pytest entry reads the figures as JSON (``--json``) and the CLI
prints them; neither needs the machinery that produced them.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from shell.harness.protection_monitor import MonitorReport


@dataclass
class ChaosResult:
    faults: Counter[str]
    recovery: dict[str, list[float]]
    monitor: MonitorReport
    interfered: set[str]
    invariants: Any
    signals_without_outcome: int
    redeliveries: dict[str, int]
    secrets_in_events: int
    log: list[str]
    duration: float
    seed: int
    exchange: str = "binance"  # the paper exchange's dialect
    # per stack_kill: positions, stops and trailing state came back as they were
    stack_kill_intact: list[bool] = field(default_factory=list)
    counts: dict[str, list[int]] = field(default_factory=dict)  # e.g. live stops after a kill
    # per position whose stop was driven through during a store outage: how it ended
    stop_fills_during_outages: list[dict[str, Any]] = field(default_factory=list)
    # children that exited on their own (not killed by a fault), started again as `vigil up`
    # would: each one is a process that did not survive what it should have
    exited_on_their_own: list[str] = field(default_factory=list)

    @property
    def violations(self) -> int:
        return (
            len(self.invariants.violations)
            + self.signals_without_outcome
            + self.secrets_in_events
            + self.stack_kill_intact.count(False)
        )

    def as_dict(self) -> dict[str, Any]:
        """The figures as plain data (the pytest entry and ``--json`` read this)."""
        return {
            "duration": self.duration,
            "seed": self.seed,
            "exchange": self.exchange,
            "faults": dict(self.faults),
            "recovery_seconds": self.recovery,
            "counts": self.counts,
            "longest_gap_seconds": self.longest_gaps(),
            "worst_gaps": [
                {**gap, "interfered": gap["symbol"] in self.interfered}
                for gap in self.monitor.worst(5)
            ],
            "sampling_interval": self.monitor.interval,
            "samples": self.monitor.samples,
            "failed_samples": self.monitor.failed_samples,
            "redeliveries": self.redeliveries,
            "signals_without_outcome": self.signals_without_outcome,
            "secrets_in_events": self.secrets_in_events,
            "invariant_violations": [v.as_dict() for v in self.invariants.violations],
            "stack_kill_intact": self.stack_kill_intact,
            "stop_fills_during_outages": self.stop_fills_during_outages,
            "exited_on_their_own": self.exited_on_their_own,
            "violations": self.violations,
        }

    def longest_gaps(self) -> dict[str, float]:
        now = time.monotonic()
        gaps = self.monitor.gaps
        return {
            "engine_managed": max(
                (
                    g.seconds(now)
                    for g in gaps
                    if g.kind == "established" and g.symbol not in self.interfered
                ),
                default=0.0,
            ),
            "after_interference": max(
                (g.seconds(now) for g in gaps if g.symbol in self.interfered), default=0.0
            ),
            "entry_to_stop": self.monitor.longest("opening"),
        }


def print_result(console: Console, result: ChaosResult) -> None:
    table = Table(
        title=f"chaos report ({result.duration:.0f}s, seed {result.seed}, {result.exchange})",
        show_header=False,
    )
    for add_rows in (_fault_rows, _recovery_rows, _outcome_rows):
        add_rows(table, result)
    console.print(table)
    for v in result.invariants.violations:
        console.print(f"  {v.kind}: {v.symbol or ''} {v.detail}", highlight=False)


def _fault_rows(table: Table, result: ChaosResult) -> None:
    """The venue, the faults injected and the longest time any position went without a stop."""
    dialects = (
        "binance and bybit dialects, one deployment"
        if result.exchange == "both"
        else (f"{result.exchange} dialect")
    )
    table.add_row("exchange", f"paper, {dialects}")
    table.add_row(
        "faults injected", ", ".join(f"{k} {v}" for k, v in sorted(result.faults.items()))
    )
    gaps = result.longest_gaps()
    table.add_row(
        "longest without a live stop",
        f"engine-managed {gaps['engine_managed']:.2f}s; after outside interference "
        f"{gaps['after_interference']:.2f}s; between entry fill and stop "
        f"{gaps['entry_to_stop']:.2f}s (sampled every {result.monitor.interval}s, "
        f"{result.monitor.samples} samples, {result.monitor.failed_samples} failed)",
    )
    worst = result.monitor.worst(3)
    if worst:
        table.add_row(
            "longest gaps (symbol, kind, at)",
            "; ".join(f"{g['symbol']} {g['kind']} at {g['at']}s: {g['seconds']}s" for g in worst),
        )


def _recovery_rows(table: Table, result: ChaosResult) -> None:
    """Each fault's recovery times, what a stack kill kept, the counts taken after faults."""
    for kind, times in sorted(result.recovery.items()):
        # the first-tick measure is the venue's own figure (docs/reliability.md, per venue)
        label = (
            f"first trailing reaction on {result.exchange} (bound 1s)"
            if kind == "trailing_after_activation"
            else f"recovery after {kind}"
        )
        table.add_row(label, ", ".join(f"{t:.2f}s" for t in times))
    if result.stack_kill_intact:
        table.add_row(
            "intact after stack_kill",
            ", ".join("yes" if ok else "NO" for ok in result.stack_kill_intact),
        )
    for name, values in sorted(result.counts.items()):
        table.add_row(name.replace("_", " "), ", ".join(str(v) for v in values))


def _outcome_rows(table: Table, result: ChaosResult) -> None:
    """Redeliveries, stops filled in outages, revived processes and the audit's counts."""
    table.add_row(
        "retries/redeliveries (events)",
        ", ".join(f"{k} {v}" for k, v in sorted(result.redeliveries.items())) or "0",
    )
    if result.stop_fills_during_outages:
        table.add_row(
            f"stops filled during outages on {result.exchange}",
            "; ".join(
                f"{f['symbol']} in {f['kind']}: {f['close_reason'] or f['status']}"
                for f in result.stop_fills_during_outages
            ),
        )
    table.add_row(
        "exited on their own (started again)", ", ".join(result.exited_on_their_own) or "none"
    )
    table.add_row("signals without an outcome", str(result.signals_without_outcome))
    table.add_row("events carrying a secret", str(result.secrets_in_events))
    table.add_row("invariant violations", str(len(result.invariants.violations)))
