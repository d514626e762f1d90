"""Per-symbol settings: parsing, bounds and precedence (pure)."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain.symbol_settings import (
    KEYS,
    SymbolSettingError,
    enabled,
    merged,
    normalise_symbol,
    parse_assignments,
    parse_keys,
    parse_value,
)


def test_assignments_are_typed():
    values = parse_assignments(
        ["trailing_callback_percent=1.0", "leverage=5", "enabled=false", "stop_loss_percent=3"]
    )
    assert values == {
        "trailing_callback_percent": Decimal("1.0"),
        "leverage": 5,
        "enabled": False,
        "stop_loss_percent": Decimal(3),
    }
    assert isinstance(values["leverage"], int)


@pytest.mark.parametrize(
    "pair, message",
    [
        ("nope=1", "unknown key 'nope'"),
        ("trailing_callback_percent=0", "out of range (0, 100)"),
        ("trailing_callback_percent=100", "out of range (0, 100)"),
        ("stop_loss_percent=-1", "out of range"),
        ("stop_loss_percent=abc", "is not a number"),
        ("stop_loss_percent=NaN", "out of range"),
        ("leverage=0", "out of range [1, 125]"),
        ("leverage=126", "out of range"),
        ("leverage=2.5", "not a whole number"),
        ("enabled=maybe", "not true or false"),
        ("trailing_callback_percent", "expected KEY=VALUE"),
        ("trailing_callback_percent=", "expected KEY=VALUE"),
    ],
)
def test_bad_input_is_refused_with_one_line(pair, message):
    with pytest.raises(SymbolSettingError) as refused:
        parse_assignments(["leverage=3", pair])
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_min_step_may_be_zero_but_a_percent_may_not():
    assert parse_value("trailing_min_step_percent", "0") == Decimal(0)
    with pytest.raises(SymbolSettingError):
        parse_value("trailing_activation_percent", "0")


def test_nothing_to_set_and_unknown_keys_to_unset_are_refused():
    with pytest.raises(SymbolSettingError):
        parse_assignments([])
    with pytest.raises(SymbolSettingError, match="unknown key"):
        parse_keys(["leverage", "bogus"])
    assert parse_keys(["leverage"]) == ["leverage"]


def test_symbols_are_normalised_and_junk_refused():
    assert normalise_symbol(" btcusdt ") == "BTCUSDT"
    assert normalise_symbol("*") == "*"
    for bad in ("", "BTC/USDT", "X", "BTC USDT", "A" * 41):
        with pytest.raises(SymbolSettingError):
            normalise_symbol(bad)


def test_symbol_row_wins_over_the_venue_default():
    venue = {"trailing_callback_percent": Decimal(1), "leverage": 5}
    symbol = {"leverage": 3}
    assert merged(venue, symbol) == {"trailing_callback_percent": Decimal(1), "leverage": 3}


def test_enabled_falls_back_to_the_environment_stoplist():
    stoplist = frozenset({"DOGEUSDT"})
    assert not enabled({}, "dogeusdt", stoplist)
    assert enabled({"enabled": True}, "DOGEUSDT", stoplist)  # the override wins
    assert not enabled({"enabled": False}, "BTCUSDT", stoplist)
    assert enabled({}, "BTCUSDT", stoplist)


@given(st.sampled_from(sorted(k for k, s in KEYS.items() if s.kind is not bool)), st.text())
def test_parse_value_either_refuses_or_returns_a_value_within_bounds(key, raw):
    spec = KEYS[key]
    try:
        value = parse_value(key, raw)
    except SymbolSettingError:
        return
    assert spec.low is not None and spec.high is not None
    assert spec.low <= Decimal(value) <= spec.high
