"""Task names as operators type them: ``reconciliation`` means ``vigil.maintenance.reconciliation``.

Shared by ``vigil task`` and ``POST /tasks/<name>`` so both accept the same short names.
"""

from __future__ import annotations

from collections.abc import Iterable


class UnknownTask(LookupError):
    """No registered task matches; the message lists what is registered."""


class AmbiguousTask(LookupError):
    """A short name matches several tasks; the message lists them."""


def resolve_task_name(name: str, registered: Iterable[str]) -> str:
    """The full ``vigil.*`` name for ``name``.

    Accepted: the full name; ``queue.name``; the last part alone; hyphens for underscores.
    When a last part exists on several queues, the ``maintenance`` one wins (the beat jobs
    are what operators run by hand); otherwise it is ambiguous.
    """
    names = sorted(n for n in registered if n.startswith("vigil."))
    wanted = name.strip().replace("-", "_")
    if wanted in names:
        return wanted
    candidates = [
        n for n in names if n == f"vigil.{wanted}" or n.endswith(f".{wanted}") or n == wanted
    ]
    if len(candidates) == 1:
        return candidates[0]
    maintenance = [n for n in candidates if n.startswith("vigil.maintenance.")]
    if len(maintenance) == 1:
        return maintenance[0]  # by hand, operators run the beat jobs
    if len(candidates) > 1:
        raise AmbiguousTask(f"{name!r} matches {', '.join(candidates)}")
    raise UnknownTask(f"no task {name!r}; registered: {', '.join(names) or 'none'}")
