"""Which of a wave's candidates to start opening now, when openings run in parallel.

Why: ``next_to_open`` (core.domain.waves) answers the sequential question "given the
outcomes so far, open the next one?". Opening one position at a time makes a wave as slow
as the sum of its openings, so the engine runs up to ``target`` openings at once, on any
number of workers, and still never opens more than ``target``:

- an opening still in flight is counted as if it will succeed (optimistic), so the number
  of openings in flight plus those already open never exceeds ``target``;
- when one fails, a slot frees up and the next candidate in rank order starts (the buffer);
- when the account cannot open anything (openings paused after insufficient funds), no
  further candidate starts;
- the wave is done when nothing is in flight and nothing more may start.

Candidates are always started in rank order, so the started ones are a prefix of the
ranked list; the states passed in must respect that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from core.domain.waves import ContinueDecision, OpenOutcome, WaveSelection, next_to_open


class MemberState(StrEnum):
    """Where one selected candidate of a wave stands."""

    UNSTARTED = "unstarted"  # no position yet
    IN_FLIGHT = "in_flight"  # position created, opening not finished
    OPENED = "opened"  # active (or already closed again): counts toward the target
    FAILED = "failed"  # the opening failed or was rolled back
    SKIPPED = "skipped"  # never opened: refused at start (symbol already has a position)


@dataclass(frozen=True, slots=True)
class LaunchPlan:
    """Indexes (into ``selection.to_open``) to start now, and whether the wave is done."""

    launch: tuple[int, ...]
    done: bool
    opened: int
    in_flight: int
    reason: str


def plan_launches(
    selection: WaveSelection, states: Sequence[MemberState], *, openings_paused: bool = False
) -> LaunchPlan:
    """Decide what to start given each candidate's state (``states[i]`` is ``to_open[i]``).

    Raises ValueError when the lengths differ or the started candidates are not a prefix.
    """
    if len(states) != len(selection.to_open):
        raise ValueError(f"{len(states)} states for {len(selection.to_open)} candidates")
    started = _started_prefix(states)
    opened = sum(1 for s in started if s is MemberState.OPENED)
    in_flight = sum(1 for s in started if s is MemberState.IN_FLIGHT)
    # in-flight openings are assumed to succeed: they hold their slot until they fail
    outcomes = [_optimistic(s) for s in started]
    launch: list[int] = []
    decision: ContinueDecision = next_to_open(selection, outcomes)
    while decision.proceed and not openings_paused:
        assert decision.next_index is not None
        launch.append(decision.next_index)
        outcomes.append(OpenOutcome.OPENED)
        decision = next_to_open(selection, outcomes)
    in_flight += len(launch)
    if openings_paused and not launch:
        reason = "openings paused: no further candidate starts"
    else:
        reason = decision.reason
    return LaunchPlan(tuple(launch), in_flight == 0, opened, in_flight, reason)


def _started_prefix(states: Sequence[MemberState]) -> list[MemberState]:
    count = 0
    while count < len(states) and states[count] is not MemberState.UNSTARTED:
        count += 1
    if any(s is not MemberState.UNSTARTED for s in states[count:]):
        raise ValueError("candidates must be started in rank order")
    return list(states[:count])


def _optimistic(state: MemberState) -> OpenOutcome:
    if state in (MemberState.OPENED, MemberState.IN_FLIGHT):
        return OpenOutcome.OPENED
    return OpenOutcome.FAILED
