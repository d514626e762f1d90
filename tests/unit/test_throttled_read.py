"""The shared exchange read: at most one read per ttl, a failure keeps the last good value."""

from core.exchange.errors import ExchangeFailure
from core.services.throttled_read import ThrottledRead


class Venue:
    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    def read(self) -> list[int]:
        self.calls += 1
        if self.fail:
            raise ExchangeFailure("venue down")
        return [self.calls]


def test_callers_within_the_ttl_share_one_read():
    venue = Venue()
    cached = ThrottledRead(venue.read, 3600, [])
    first, second = cached.latest(), cached.latest()
    assert venue.calls == 1
    assert first == second
    assert first.value == [1] and first.error is None and first.read_at > 0


def test_a_failed_read_keeps_the_last_good_value_beside_its_failure():
    venue = Venue()
    cached = ThrottledRead(venue.read, -1, [])  # every call reads again
    good = cached.latest()
    venue.fail = True
    failed = cached.latest()
    assert isinstance(failed.error, ExchangeFailure)
    assert (failed.value, failed.read_at) == (good.value, good.read_at)
    venue.fail = False
    recovered = cached.latest()
    assert recovered.error is None and recovered.value == [venue.calls]


def test_before_any_good_read_the_initial_value_is_served():
    venue = Venue()
    venue.fail = True
    reading = ThrottledRead(venue.read, 3600, []).latest()
    assert reading.value == [] and reading.read_at == 0.0
    assert isinstance(reading.error, ExchangeFailure)
