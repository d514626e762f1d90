"""Liveness marks per component (beat, workers, ingest), read by /health and diagnose."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.db.models import Heartbeat


def beat(session: Session, component: str, now: datetime, **info: Any) -> None:
    """Upsert the component's last-seen time; safe to run any number of times."""
    stmt = insert(Heartbeat).values(component=component, seen_at=now, info=info or None)
    stmt = stmt.on_conflict_do_update(
        index_elements=[Heartbeat.component],
        set_={"seen_at": stmt.excluded.seen_at, "info": stmt.excluded.info},
    )
    session.execute(stmt)


def last_seen(session: Session) -> dict[str, datetime]:
    rows = session.execute(select(Heartbeat.component, Heartbeat.seen_at)).all()
    return {component: seen_at for component, seen_at in rows}
