"""Every task's name, in one place: ``vigil.<queue>.<name>``, the first part the queue.

Why constants: a task is registered under its name (``tasks/``), queued by name from
processes that do not load Celery (the ingest, ``core/ingest``), scheduled by name
(``beat_schedule.py``) and typed by operators (``vigil task``, ``POST /tasks/<name>``,
resolved by ``core/api/task_names.py``). A misspelt string is a task that silently never
runs; a misspelt constant fails at import.
"""

from __future__ import annotations

# queue "orders": exchange mutations that may take seconds
OPEN_POSITION = "vigil.orders.open_position"
SETTLE_CLOSE = "vigil.orders.settle_close"
CLOSE_POSITION_MANUAL = "vigil.orders.close_position_manual"

# queue "stops": latency-critical price reactions
ON_PRICE = "vigil.stops.on_price"
ON_PRICES = "vigil.stops.on_prices"  # several symbols of one frame, their runs overlapped
TRAILING_SWEEP = "vigil.stops.trailing_sweep"

# queue "signals": wave processing
PROCESS_WAVE = "vigil.signals.process_wave"
ADVANCE_WAVE = "vigil.signals.advance_wave"

# queue "maintenance": beat jobs, guardians
HEARTBEAT = "vigil.maintenance.heartbeat"
PING = "vigil.maintenance.ping"
RECOVER_INTERRUPTED_OPENINGS = "vigil.maintenance.recover_interrupted_openings"
EVENTS_RETENTION = "vigil.maintenance.events_retention"
DELIVER_ALERTS = "vigil.maintenance.deliver_alerts"
AGED_POSITIONS = "vigil.maintenance.aged_positions"
ORPHAN_CLEANUP = "vigil.maintenance.orphan_cleanup"
DISPATCH_DUE_WAVES = "vigil.maintenance.dispatch_due_waves"
PROTECTION_CHECK = "vigil.maintenance.protection_check"
RECONCILIATION = "vigil.maintenance.reconciliation"
ZOMBIE_CLEANUP = "vigil.maintenance.zombie_cleanup"
