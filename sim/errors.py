"""Binance error answers: `{"code": -NNNN, "msg": ...}` with the HTTP status Binance uses.

The codes and messages are Binance's own, because ccxt maps them to exception classes and
the engine classifies retryable vs permanent failures by those classes.
"""

from __future__ import annotations


class SimError(Exception):
    """An error answer the simulator sends back exactly as Binance would."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status

    def body(self) -> dict[str, object]:
        return {"code": self.code, "msg": self.msg}


def missing(param: str) -> SimError:
    return SimError(
        -1102, f"Mandatory parameter '{param}' was not sent, was empty/null, or malformed."
    )


def illegal(param: str) -> SimError:
    return SimError(
        -1100,
        f"Illegal characters found in parameter '{param}'; "
        "legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'.",
    )


BAD_SYMBOL = SimError(-1121, "Invalid symbol.")
BAD_SIGNATURE = SimError(-1022, "Signature for this request is not valid.")
BAD_API_KEY = SimError(-2015, "Invalid API-key, IP, or permissions for action.", status=401)
BAD_TIMESTAMP = SimError(-1021, "Timestamp for this request is outside of the recvWindow.")
PRECISION = SimError(-1111, "Precision is over the maximum defined for this asset.")
PRICE_TICK = SimError(-4014, "Price not increased by tick size.")
QTY_ZERO = SimError(-4003, "Quantity less than or equal to zero.")
QTY_MIN = SimError(-4004, "Quantity less than min quantity.")
QTY_MAX = SimError(-4005, "Quantity greater than max quantity.")
MARGIN = SimError(-2019, "Margin is insufficient.")
REDUCE_ONLY = SimError(-2022, "ReduceOnly Order is rejected.")
WOULD_TRIGGER = SimError(-2021, "Order would immediately trigger.")
NOT_TRADING = SimError(-4140, "Invalid symbol status for opening position.")
DUPLICATE_CLIENT_ID = SimError(-4116, "ClientOrderId is duplicated.")
BAD_CLIENT_ID = SimError(-4015, "Client order id is not valid.")
CANCEL_UNKNOWN = SimError(-2011, "Unknown order sent.")
QUERY_UNKNOWN = SimError(-2013, "Order does not exist.")
USE_ALGO = SimError(
    -4120,
    "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.",
)
BAD_ORDER_TYPE = SimError(-1116, "Invalid orderType.")
BAD_SIDE = SimError(-1117, "Invalid side.")
CLOSE_POSITION_EXISTS = SimError(
    -4130,
    "An open stop or take profit order with GTE and closePosition in the direction is existing.",
)
POST_ONLY = SimError(
    -5022, "Due to the order could not be executed as maker, the Post Only order will be rejected."
)
RATE_LIMIT = SimError(
    -1003, "Too many requests; current limit is 2400 requests per minute.", status=429
)
UNKNOWN = SimError(-1000, "An unknown error occured while processing the request.", status=503)
BAD_LISTEN_KEY = SimError(-1125, "This listenKey does not exist.")


def min_notional(value: object) -> SimError:
    return SimError(
        -4164, f"Order's notional must be no smaller than {value} (unless you choose reduce only)."
    )


def not_required(param: str) -> SimError:
    return SimError(-1106, f"Parameter '{param}' sent when not required.")


def no_need(what: str) -> SimError:
    messages = {
        "margin": (-4046, "No need to change margin type."),
        "position_side": (-4059, "No need to change position side."),
    }
    code, msg = messages[what]
    return SimError(code, msg)
