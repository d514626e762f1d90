"""The chaos run's fault plan: seeded, every asked kind at least once, inside the active phase,
and a delay shifts the faults still due without changing their order or spacing."""

from hypothesis import given
from hypothesis import strategies as st

from shell.harness.chaos_plan import FAULT_KINDS, plan, shifted


@given(st.floats(30, 900), st.integers(0, 10_000))
def test_the_plan_is_seeded_and_injects_every_kind_inside_the_active_phase(duration, seed):
    faults = plan(duration, seed, list(FAULT_KINDS))

    assert faults == plan(duration, seed, list(FAULT_KINDS))  # the same seed, the same run
    assert set(FAULT_KINDS) <= {kind for _, kind in faults}
    times = [at for at, _ in faults]
    assert times == sorted(times)
    assert all(12.0 <= at <= max(20.0, duration - 10.0) for at in times)


def test_a_delay_shifts_the_remaining_faults_and_keeps_their_spacing():
    schedule = [(20.0, "redis_restart"), (27.5, "worker_kill")]
    assert shifted(schedule, 4.0) == [(24.0, "redis_restart"), (31.5, "worker_kill")]
