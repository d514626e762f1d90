import ccxt
import pytest

from core.exchange import errors as e
from core.exchange.client_ids import client_order_id, parse_client_id


@pytest.mark.parametrize(
    "exc,expected",
    [
        (
            ccxt.InvalidOrder(
                'binanceusdm {"code":-2021,"msg":"Order would immediately trigger."}'
            ),
            e.WouldTriggerImmediately,
        ),
        (
            ccxt.InvalidOrder('binanceusdm {"code":-2022,"msg":"ReduceOnly Order is rejected."}'),
            e.ReduceOnlyRejected,
        ),
        (
            ccxt.InsufficientFunds('binanceusdm {"code":-2019,"msg":"Margin is insufficient."}'),
            e.InsufficientFunds,
        ),
        (ccxt.BadRequest('binanceusdm {"code":-4164,"msg":"notional too small"}'), e.BelowMinimum),
        (ccxt.BadRequest('binanceusdm {"code":-1111,"msg":"Precision is over"}'), e.BelowMinimum),
        (ccxt.BadSymbol('binanceusdm {"code":-1121,"msg":"Invalid symbol."}'), e.SymbolUnavailable),
        (
            ccxt.BadRequest('binanceusdm {"code":-4140,"msg":"Invalid symbol status"}'),
            e.SymbolUnavailable,
        ),
        (
            ccxt.OrderNotFound('binanceusdm {"code":-2013,"msg":"Order does not exist."}'),
            e.OrderNotFound,
        ),
        (ccxt.ExchangeError('binanceusdm {"code":-1003,"msg":"Too many requests"}'), e.RateLimited),
        (ccxt.RateLimitExceeded("429"), e.RateLimited),
        (ccxt.ExchangeNotAvailable("502 bad gateway"), e.VenueUnavailable),
        (ccxt.OnMaintenance("system maintenance"), e.VenueMaintenance),
        (ccxt.AuthenticationError('{"code":-1022,"msg":"Signature"}'), e.AuthenticationFailed),
        (ccxt.InvalidOrder("something else"), e.OrderRejected),
        (
            ccxt.InvalidOrder('bybit {"retCode":110007,"retMsg":"ab not enough"}'),
            e.InsufficientFunds,
        ),
        (ccxt.ExchangeError('bybit {"retCode":"10006","retMsg":"Too many visits"}'), e.RateLimited),
    ],
)
def test_errors_are_classified_by_what_the_engine_does_about_them(exc, expected):
    assert type(e.classify(exc)) is expected


def test_a_lost_answer_to_a_create_is_an_unknown_outcome_not_a_plain_retry():
    assert type(e.classify(ccxt.RequestTimeout("timed out"), mutating=True)) is e.OutcomeUnknown
    assert type(e.classify(ccxt.RequestTimeout("timed out"))) is e.Retryable
    assert type(e.classify(ccxt.NetworkError("reset"), mutating=True)) is e.OutcomeUnknown
    backend = ccxt.ExchangeError('{"code":-1007,"msg":"Timeout waiting for response"}')
    assert type(e.classify(backend)) is e.OutcomeUnknown


def test_retryable_and_permanent_are_disjoint():
    assert e.OutcomeUnknown("x").retryable and e.RateLimited("x").retryable
    assert not e.BelowMinimum("x").retryable and not e.OrderNotFound("x").retryable


def test_client_ids_are_deterministic_short_and_parse_back():
    cid = client_order_id(123456789, "9f1c2ab3-77aa-4c1e", "stop", 17)
    assert cid == client_order_id(123456789, "9f1c2ab3-77aa-4c1e", "stop", 17)
    assert len(cid) <= 36
    parsed = parse_client_id(cid)
    assert parsed is not None
    assert (parsed.position_id, parsed.purpose, parsed.seq) == (123456789, "stop", 17)


def test_foreign_client_ids_are_not_ours():
    for foreign in (None, "", "web_abc123", "x-123-e0", "v12-abc-z0"):
        assert parse_client_id(foreign) is None


def test_ids_differ_by_purpose_sequence_and_position_life():
    ids = {
        client_order_id(1, "aaaa", "entry"),
        client_order_id(1, "aaaa", "stop"),
        client_order_id(1, "aaaa", "stop", 1),
        client_order_id(1, "bbbb", "entry"),  # same id after a database reset, new life
    }
    assert len(ids) == 4
