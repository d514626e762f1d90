"""How serious an event or a finding is: one vocabulary for the domain's verdicts (a
reconciliation finding) and the events the services write from them."""

from __future__ import annotations

from enum import StrEnum


class Severity(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"
