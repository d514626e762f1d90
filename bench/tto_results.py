"""What one run of the tick-to-order benchmark measured, and its variants side by side."""

from __future__ import annotations

from dataclasses import dataclass

from common import pct
from worker_cost import SweepCost


@dataclass
class Result:
    variant: str
    positions: int
    rate: float
    seconds: float
    ticks_per_s: float
    outside_per_s: float
    tasks_per_tick: float
    ingest_cpu: float
    moves: int
    closed: int
    samples: list[tuple[float, float]]  # (seconds into the window, latency ms)
    worker_cpu_s: float  # the stops worker's CPU from the window's start to the drain
    worker_moves: int  # stop moves recorded over the same span
    worker_idle_s: float  # what the worker spends idle over that span (measured before)
    sweep: SweepCost | None
    # of worker_cpu_s, the worker's main process (Celery's consumer: it reads each message,
    # hands it to a pool process, acknowledges it); the rest is the pool processes'
    worker_main_cpu_s: float = 0.0

    @property
    def cpu_per_move_ms(self) -> float:
        return self.worker_cpu_s * 1000 / max(1, self.worker_moves)

    @property
    def net_cpu_per_move_ms(self) -> float:
        """Without the worker's idle CPU (its event loop, timers, heartbeats)."""
        return (self.worker_cpu_s - self.worker_idle_s) * 1000 / max(1, self.worker_moves)

    @property
    def latencies_ms(self) -> list[float]:
        return [ms for _, ms in self.samples]

    def line(self) -> str:
        lat = self.latencies_ms
        shown = (
            f"p50 {pct(lat, 0.5):6.1f}  p99 {pct(lat, 0.99):6.1f}  max {max(lat):6.1f} ms"
            if lat
            else "no moves"
        )
        sweep = (
            f" | sweep {self.sweep.ms_per_position:.2f} ms worker CPU/position "
            f"({self.sweep.positions} in {self.sweep.wall_s:.1f} s)"
            if self.sweep
            else ""
        )
        return (
            f"[{self.variant}] "
            f"{self.positions:4d} positions @{self.rate:4.0f} Hz | tick->order {shown} "
            f"({self.moves} moves) | ingest {self.ticks_per_s:7.0f} ticks/s, "
            f"CPU {self.ingest_cpu:4.0%}, tasks/tick {self.tasks_per_tick:.4f} "
            f"({self.outside_per_s:.0f} ticks/s outside bands) | stops fired {self.closed}"
            f"\n    stops worker CPU {self.cpu_per_move_ms:.1f} ms per move "
            f"({self.worker_cpu_s:.2f} s / {self.worker_moves} moves; "
            f"{self.net_cpu_per_move_ms:.1f} ms without the idle worker's "
            f"{self.worker_idle_s:.2f} s; main process "
            f"{self.worker_main_cpu_s * 1000 / max(1, self.worker_moves):.1f} ms per move)"
            f"{sweep}"
            + "\n    slowest moves (s into window: ms): "
            + ", ".join(
                f"{at:.1f}: {ms:.0f}" for at, ms in sorted(self.samples, key=lambda x: -x[1])[:5]
            )
            + "\n    largest frames (moves: their last move, ms): "
            + ", ".join(f"{n}: {ms:.0f}" for n, ms in largest_frames(self.samples)[:6])
        )


def largest_frames(samples: list[tuple[float, float]]) -> list[tuple[int, float]]:
    """Moves grouped by the frame whose tick started them (the same tick time), largest
    first, each with its slowest move: at 1 Hz the p99 is the last move of the largest."""
    frames: dict[float, list[float]] = {}
    for at, ms in samples:
        frames.setdefault(round(at, 3), []).append(ms)
    return sorted(((len(v), max(v)) for v in frames.values()), reverse=True)


def summary(results: dict[str, list[Result]]) -> str:
    """Every variant's runs of one scenario together: latency over all samples, worker CPU
    over all moves, sweep CPU over all positions."""
    lines = []
    for name, runs in results.items():
        lat = [ms for r in runs for ms in r.latencies_ms]
        cpu = sum(r.worker_cpu_s for r in runs)
        idle = sum(r.worker_idle_s for r in runs)
        moves = sum(r.worker_moves for r in runs)
        sweeps = [r.sweep for r in runs if r.sweep is not None]
        shown = f"p50 {pct(lat, 0.5):6.1f}  p99 {pct(lat, 0.99):6.1f} ms" if lat else "no moves"
        sweep = (
            f", sweep {sum(w.cpu_s for w in sweeps) * 1000 / sum(w.positions for w in sweeps):.2f}"
            " ms/position"
            if sweeps
            else ""
        )
        lines.append(
            f"  {name:>14}: tick->order {shown} ({len(lat)} moves), "
            f"worker CPU {cpu * 1000 / max(1, moves):.1f} ms/move "
            f"({(cpu - idle) * 1000 / max(1, moves):.1f} without idle){sweep}"
        )
    return "\n".join(lines)
