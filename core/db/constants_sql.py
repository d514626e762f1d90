"""``column IN (...)`` over the engine's own constants, written into the SQL text.

Why: ``column.in_([...])`` binds its list as an *expanding* parameter, which SQLAlchemy
renders into the statement again at every execution, even for a statement built once and
cached. The price run's statements carry such lists (the non-terminal statuses, the stop
purposes); written as SQL literals they are rendered once with the rest of the statement.
Only for fixed identifiers of the engine (statuses, purposes): never for input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, literal_column

_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]*")


def constant(value: str) -> ColumnElement[Any]:
    """``'value'`` in the SQL text, for one of the engine's identifiers (see the module)."""
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(f"not an engine constant: {value!r}")
    return literal_column(f"'{value}'")


def in_constants(column: Any, values: Iterable[str]) -> ColumnElement[bool]:
    """``column IN ('a', 'b')`` with the values in the SQL text (see the module)."""
    # one text whatever the order given (a set's varies)
    literals = [constant(value) for value in sorted(values)]
    if not literals:
        raise ValueError("an IN over no constants")
    found: ColumnElement[bool] = column.in_(literals)
    return found
