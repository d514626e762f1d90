"""Alert delivery (queue ``maintenance``): pending alert rows to the webhook and Telegram."""

from __future__ import annotations

from dataclasses import asdict

from core import task_names as names
from core.clock import SYSTEM_CLOCK
from core.config import get_settings
from core.services.alerts import deliver_pending
from tasks.base import vigil_task


@vigil_task(names.DELIVER_ALERTS, max_retries=0)
def deliver_alerts() -> dict[str, int]:
    """Send due alerts (dedup, rate limit); failed deliveries back off and are retried."""
    return asdict(deliver_pending(get_settings(), SYSTEM_CLOCK))
