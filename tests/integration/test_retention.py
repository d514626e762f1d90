from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from core.db.models import Event
from core.db.session import unit_of_work
from core.services.retention import purge_events

pytestmark = pytest.mark.integration


def add_event(age_days: float, severity: str) -> None:
    with unit_of_work() as s:
        s.execute(
            text(
                "INSERT INTO events (type, severity, data, created_at) "
                "VALUES ('x', :sev, '{}', now() - make_interval(secs => :secs))"
            ),
            {"sev": severity, "secs": age_days * 86400},
        )


def test_old_events_are_purged_in_batches_and_critical_ones_kept_longer(clean_db):
    for _ in range(7):
        add_event(100, "info")
    add_event(100, "critical")
    add_event(400, "critical")
    add_event(1, "info")
    result = purge_events(datetime.now(UTC), keep_days=90, keep_critical_days=365, batch=3)
    assert result.deleted == 8 and result.batches == 3
    with unit_of_work() as s:
        left = sorted(e.severity for e in s.scalars(select(Event)))
    assert left == ["critical", "info"]
    assert (
        purge_events(
            datetime.now(UTC) - timedelta(days=0), keep_days=90, keep_critical_days=365
        ).deleted
        == 0
    )
