"""An event's severity has one home: the type's usual one in ``core.events.USUAL_SEVERITY``,
named at a call site only where that case differs."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from core.events import USUAL_SEVERITY, EventType, Severity, record

ROOT = Path(__file__).resolve().parents[2]
RECORDERS = {
    "record",
    "record_alone",
    "record_alone_through",
    "deps.record_alone",
    "self.deps.record_alone",
}


class _Session:
    """Collects what ``record`` adds; the event row and, for alerting ones, its alert."""

    def __init__(self) -> None:
        self.added: list[Any] = []

    def add(self, row: Any) -> None:
        self.added.append(row)


def test_an_event_without_a_severity_takes_its_types_usual_one() -> None:
    session = _Session()
    event = record(session, EventType.ZOMBIE_ORDERS_DETECTED, symbol="BTCUSDT")  # type: ignore[arg-type]
    assert (
        event.severity == Severity.WARNING.value == USUAL_SEVERITY[EventType.ZOMBIE_ORDERS_DETECTED]
    )


def test_a_type_not_listed_is_info_and_a_named_severity_wins() -> None:
    session = _Session()
    assert EventType.SIGNAL_EXECUTED not in USUAL_SEVERITY
    assert record(session, EventType.SIGNAL_EXECUTED).severity == "info"  # type: ignore[arg-type]
    named = record(session, EventType.WAVE_COMPLETED, severity=Severity.INFO)  # type: ignore[arg-type]
    assert named.severity == "info"


def test_a_critical_usual_severity_still_writes_the_alert_with_the_event() -> None:
    session = _Session()
    record(session, EventType.EXCHANGE_READS_FAILING, component="exchange")  # type: ignore[arg-type]
    kinds = [type(row).__name__ for row in session.added]
    assert kinds == ["Event", "Alert"]


def _restated(path: Path) -> list[str]:
    """Call sites in ``path`` that name the severity their event type has anyway."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and ast.unparse(node.func) in RECORDERS):
            continue
        types = [
            arg.attr
            for arg in node.args
            if isinstance(arg, ast.Attribute)
            and isinstance(arg.value, ast.Name)
            and arg.value.id == "EventType"
        ]
        for keyword in node.keywords:
            value = keyword.value
            if keyword.arg != "severity" or not isinstance(value, ast.Attribute):
                continue
            for name in types:
                usual = USUAL_SEVERITY.get(EventType[name], Severity.INFO)
                if value.attr == usual.name:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    return found


def test_no_call_site_restates_its_event_types_usual_severity() -> None:
    files = [p for part in ("core", "shell", "tasks") for p in (ROOT / part).rglob("*.py")]
    restated = [site for path in files for site in _restated(path)]
    assert restated == []
