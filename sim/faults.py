"""Fault injection for the paper exchange's REST endpoints.

A rule names an endpoint (`*`, a full path like `/fapi/v1/order`, the path's last part
like `order` / `algoOrder`, or for Bybit's `/v5/...` the part after the version, like
`order/create`), optionally a method, a kind, and when it fires: with a probability
(drawn from a seeded RNG, so a chaos run replays) or for the next `count` matching calls.
Without either it fires on every matching call. `after` lets the first N matching calls
through untouched (Bybit places entries and stops on one endpoint: fail the stop, not the
entry).

Kinds:
  latency               add `latency_ms` before handling
  http_error            answer `status` (default 503) without executing; the body is a
                        gateway HTML page, or Binance's -1001 JSON with `"body": "json"`
  rate_limit            answer 429 with code -1003 without executing
  ban                   answer 418 (IP banned) without executing
  timeout_after_accept  execute, then never answer: `mode` "hold" keeps the connection open
                        for `hold_ms` (past the client's timeout), "drop" closes it
  delayed_fill          MARKET orders answer NEW and fill `delay_ms` later
  partial_fill          MARKET orders fill only `fraction` of the quantity; the rest expires

A server that knows a call is not a market order (Bybit: a stop on `order/create`) says so
to `FaultBook.plan`, and the fill kinds let it pass without using up their count.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from sim.errors import SimError

KIND_ALIASES = {
    "5xx": "http_error",
    "error": "http_error",
    "429": "rate_limit",
    "418": "ban",
    "timeout": "timeout_after_accept",
    "delayed": "delayed_fill",
    "partial": "partial_fill",
}
KINDS = frozenset(
    {
        "latency",
        "http_error",
        "rate_limit",
        "ban",
        "timeout_after_accept",
        "delayed_fill",
        "partial_fill",
    }
)
TERMINAL = frozenset({"http_error", "rate_limit", "ban"})
FILL_KINDS = frozenset({"delayed_fill", "partial_fill"})


@dataclass
class FaultRule:
    endpoint: str
    kind: str
    probability: float | None = None
    count: int | None = None
    method: str | None = None
    latency_ms: int = 0
    status: int = 503
    fraction: str = "0.5"
    delay_ms: int = 500
    hold_ms: int = 30000
    mode: str = "hold"
    body: str = "html"
    after: int = 0
    fired: int = 0
    matched: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method:
            return False
        if self.endpoint in ("*", path):
            return True
        name = path.split("/", 3)[-1] if path.count("/") >= 3 else path
        return self.endpoint in (name, path.rsplit("/", 1)[-1], path.split("/", 2)[-1])

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.fired >= self.count


@dataclass
class FaultPlan:
    """What the faults that fired on one request ask the server to do."""

    latency_ms: int = 0
    terminal: FaultRule | None = None
    timeout: FaultRule | None = None
    delayed: FaultRule | None = None
    partial: FaultRule | None = None
    kinds: list[str] = field(default_factory=list)

    def place_with_fill_faults(
        self,
        market: bool,
        place: Callable[[bool, Decimal | None], Any],
        schedule: Callable[[float, Callable[[], Any]], Any],
        fill_deferred: Callable[[Any, Decimal | None], Any],
    ) -> Any:
        """Place an order as the fill faults say (both dialects): a market order's fill is
        deferred by ``delayed_fill`` (then done ``delay_ms`` later) and cut to a fraction by
        ``partial_fill``. ``place(defer_fill, fill_fraction)`` places it."""
        delayed = self.delayed if market else None
        partial = self.partial if market else None
        fraction = Decimal(partial.fraction) if partial else None
        order = place(delayed is not None, fraction)
        if delayed is not None:
            order_id = order.order_id
            schedule(delayed.delay_ms / 1000, lambda: fill_deferred(order_id, fraction))
        return order


def _number(body: dict[str, Any], key: str, kind: type) -> Any:
    value = body.get(key)
    if value is None:
        return None
    try:
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise SimError(-1100, f"Fault field '{key}' is malformed.") from exc


def parse_rule(body: dict[str, Any]) -> FaultRule:
    """Build a rule from the admin JSON, refusing anything malformed with a clear message."""
    endpoint = body.get("endpoint", "*")
    kind = KIND_ALIASES.get(str(body.get("kind")), str(body.get("kind")))
    if not isinstance(endpoint, str) or kind not in KINDS:
        raise SimError(-1102, f"Fault needs an endpoint and a kind among {sorted(KINDS)}.")
    rule = FaultRule(endpoint=endpoint, kind=kind)
    rule.probability = _number(body, "probability", float)
    rule.count = _number(body, "count", int)
    if rule.probability is not None and not 0 <= rule.probability <= 1:
        raise SimError(-1100, "Fault probability must be within [0, 1].")
    for key in ("latency_ms", "status", "delay_ms", "hold_ms", "after"):
        value = _number(body, key, int)
        if value is not None:
            setattr(rule, key, value)
    fraction = body.get("fraction")
    if fraction is not None:
        try:
            if not 0 < Decimal(str(fraction)) < 1:
                raise SimError(-1100, "Fault fraction must be within (0, 1).")
        except InvalidOperation as exc:
            raise SimError(-1100, "Fault fraction is malformed.") from exc
        rule.fraction = str(fraction)
    rule.method = body.get("method") if isinstance(body.get("method"), str) else None
    rule.mode = "drop" if body.get("mode") == "drop" else "hold"
    rule.body = "json" if body.get("body") == "json" else "html"
    return rule


class FaultBook:
    """The active rules and the seeded RNG that decides probabilistic ones."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._rng = random.Random(f"faults:{seed}")  # noqa: S311
        self.rules: list[FaultRule] = []

    def add(self, rule: FaultRule) -> None:
        self.rules.append(rule)

    def clear(self) -> None:
        self.rules.clear()
        self._rng = random.Random(f"faults:{self._seed}")  # noqa: S311

    def plan(self, method: str, path: str, market_order: bool | None = None) -> FaultPlan:
        """The faults firing on one call; ``market_order`` False (the server knows the call
        places no market order) keeps the fill kinds for a later one."""
        plan = FaultPlan()
        for rule in self.rules:
            if rule.exhausted or not rule.matches(method, path):
                continue
            if market_order is False and rule.kind in FILL_KINDS:
                continue
            rule.matched += 1
            if rule.matched <= rule.after:
                continue
            if rule.probability is not None and self._rng.random() >= rule.probability:
                continue
            rule.fired += 1
            plan.kinds.append(rule.kind)
            self._apply(plan, rule)
        self.rules = [r for r in self.rules if not r.exhausted]
        return plan

    @staticmethod
    def _apply(plan: FaultPlan, rule: FaultRule) -> None:
        if rule.kind == "latency":
            plan.latency_ms += rule.latency_ms
        elif rule.kind in TERMINAL:
            plan.terminal = plan.terminal or rule
        elif rule.kind == "timeout_after_accept":
            plan.timeout = rule
        elif rule.kind == "delayed_fill":
            plan.delayed = rule
        elif rule.kind == "partial_fill":
            plan.partial = rule

    def describe(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.rules]
