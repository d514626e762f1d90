"""A Binance REST call's context in the paper exchange: the state, the call's parameters, the
fault plan, and the parameter readers that refuse bad input with Binance's own codes.

Apart from the endpoints (``sim.rest``, ``sim.market_data``) so that both read it without
importing each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from sim import errors
from sim.errors import SimError
from sim.faults import FaultPlan
from sim.state import SimState

_DECIMAL = re.compile(r"^-?([0-9]{1,20})(\.[0-9]{1,20})?$")
_INT = re.compile(r"^[0-9]{1,19}$")


@dataclass
class Ctx:
    state: SimState
    params: dict[str, str]
    plan: FaultPlan

    # -- parameter helpers --------------------------------------------------------------

    def text(self, name: str) -> str:
        value = self.params.get(name, "")
        if not value:
            raise errors.missing(name)
        return value

    def decimal(self, name: str) -> Decimal | None:
        raw = self._optional(name, _DECIMAL)
        return None if raw is None else Decimal(raw)

    def integer(self, name: str) -> int | None:
        raw = self._optional(name, _INT)
        return None if raw is None else int(raw)

    def _optional(self, name: str, pattern: re.Pattern[str]) -> str | None:
        """An optional parameter's text (None when absent or empty); refused as Binance
        does when it is not in ``pattern``'s form."""
        raw = self.params.get(name)
        if raw is None or raw == "":
            return None
        if not pattern.match(raw):
            raise errors.illegal(name)
        return raw

    def flag(self, name: str) -> bool:
        raw = self.params.get(name, "false").lower()
        if raw not in ("true", "false"):
            raise SimError(-1116 if name != "reduceOnly" else -1106, f"Invalid {name}.")
        return raw == "true"

    def symbol(self) -> str:
        symbol = self.text("symbol").upper()
        self.state.engine.market(symbol)
        return symbol

    def optional_symbol(self) -> str | None:
        return self.symbol() if self.params.get("symbol") else None
