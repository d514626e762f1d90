"""Client order ids, re-exported from ``core.domain.client_ids`` (pure string rules, shared
by the domain's orphan and zombie rules and by everything that sends or reads orders)."""

from core.domain.client_ids import (
    PURPOSE_CODES,
    ClientId,
    client_order_id,
    make_tag,
    of_position,
    parse_client_id,
)

__all__ = [
    "PURPOSE_CODES",
    "ClientId",
    "client_order_id",
    "make_tag",
    "of_position",
    "parse_client_id",
]
