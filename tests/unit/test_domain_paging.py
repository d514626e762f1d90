"""When a failing component pages: after the confirmation time, once, again after the
repeat time, the database alone while it is down, recovery reported once."""

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from core.domain.paging import (
    Condition,
    PagingParams,
    decide,
    read_failures_page,
)

T0 = datetime(2026, 12, 6, tzinfo=UTC)
PARAMS = PagingParams(
    confirm=timedelta(seconds=20),
    repeat=timedelta(minutes=30),
    paged_elsewhere=frozenset({"exchange"}),
)


def run(script, params=PARAMS):
    """Feed (seconds, {component: failing}) evaluations; collect (seconds, pages, recovered)."""
    tracked, out = {}, []
    for seconds, states in script:
        conditions = [Condition(n, failing) for n, failing in states.items()]
        decision = decide(conditions, tracked, T0 + timedelta(seconds=seconds), params)
        tracked = dict(decision.tracked)
        out.append((seconds, [p.name for p in decision.pages], list(decision.recovered)))
    return out


def test_a_component_pages_once_confirmed_then_only_after_the_repeat_time():
    script = [(0, {"beat": True}), (10, {"beat": True}), (20, {"beat": True})]
    script += [(30, {"beat": True}), (20 + 1800, {"beat": True})]
    out = run(script)
    assert [pages for _, pages, _ in out] == [[], [], ["beat"], [], ["beat"]]


def test_a_flap_shorter_than_the_confirmation_time_never_pages():
    out = run([(0, {"workers": True}), (10, {"workers": False}), (20, {"workers": True})])
    assert all(pages == [] for _, pages, _ in out)


def test_recovery_is_reported_only_for_a_component_that_paged():
    out = run([(0, {"beat": True, "workers": True}), (25, {"beat": True, "workers": False})])
    out += run([(0, {"beat": True}), (25, {"beat": True}), (30, {"beat": False})])[2:]
    assert out[1][1] == ["beat"] and out[1][2] == []
    assert out[2][2] == ["beat"]


def test_while_the_database_is_down_only_the_database_pages():
    out = run(
        [
            (0, {"database": True, "beat": True, "ingest": True}),
            (30, {"database": True, "beat": True, "ingest": True}),
        ]
    )
    assert out[1][1] == ["database"]


def test_a_component_paged_elsewhere_does_not_page_but_spoils_all_is_well():
    tracked = {}
    for seconds in (0, 30):
        decision = decide(
            [Condition("exchange", True)], tracked, T0 + timedelta(seconds=seconds), PARAMS
        )
        tracked = dict(decision.tracked)
        assert decision.pages == ()
    assert decision.all_well is False


def test_any_component_name_pages_even_one_added_later():
    out = run([(0, {"price_feed": True}), (20, {"price_feed": True})])
    assert out[1][1] == ["price_feed"]


@given(
    st.lists(
        st.tuples(
            st.integers(0, 5000), st.sampled_from(["beat", "workers", "database"]), st.booleans()
        ),
        max_size=40,
    )
)
def test_one_outage_never_pages_twice_within_the_repeat_time(events):
    tracked, paged_at = {}, {}
    states: dict[str, bool] = {}
    for seconds, name, failing in sorted(events, key=lambda e: e[0]):
        states[name] = failing
        now = T0 + timedelta(seconds=seconds)
        decision = decide([Condition(n, f) for n, f in states.items()], tracked, now, PARAMS)
        tracked = dict(decision.tracked)
        for page in decision.pages:
            assert now - page.since >= PARAMS.confirm
            episode = (page.name, page.since)  # a new outage after a recovery pages anew
            if episode in paged_at:
                assert now - paged_at[episode] >= PARAMS.repeat
            paged_at[episode] = now


def test_read_failures_page_at_the_threshold_then_every_twenty():
    pages = [n for n in range(1, 60) if read_failures_page(n, 3)]
    assert pages == [3, 23, 43]
