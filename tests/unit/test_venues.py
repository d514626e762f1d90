"""Venues as configuration: defaults unchanged for one venue, per-venue variables, refusals."""

import pytest

from core.config import SettingsError, load_settings
from core.venues import check_venues, configured_venues, default_venue, venue_config


def test_one_venue_by_default_from_the_single_venue_settings():
    settings = load_settings(exchange="paper", paper_dialect="bybit")
    assert configured_venues(settings) == ("bybit",) and default_venue(settings) == "bybit"
    [only] = check_venues(settings, environ={})
    assert (only.name, only.kind, only.url) == ("bybit", "paper", settings.exchange_url)


def test_two_paper_venues_each_with_its_url_and_dialect():
    settings = load_settings(exchange="paper", exchanges="binance,bybit")
    env = {"VIGIL_BYBIT_EXCHANGE_URL": "http://127.0.0.1:8711"}
    binance, bybit = check_venues(settings, environ=env)
    assert (binance.name, binance.paper_dialect, binance.url) == (
        "binance",
        "binance",
        settings.exchange_url,
    )
    assert (bybit.name, bybit.kind, bybit.paper_dialect, bybit.url) == (
        "bybit",
        "paper",
        "bybit",
        "http://127.0.0.1:8711",
    )


def test_real_venues_read_their_own_keys_and_the_default_venue_keeps_its_variables():
    settings = load_settings(
        exchange="binanceusdm", api_key="kb", api_secret="sb", exchanges="binance,bybit"
    )
    env = {"VIGIL_BYBIT_API_KEY": "ky", "VIGIL_BYBIT_API_SECRET": "sy", "VIGIL_BYBIT_TESTNET": "1"}
    binance, bybit = check_venues(settings, environ=env)
    assert binance.api_key.get_secret_value() == "kb" and binance.kind == "binanceusdm"
    assert bybit.kind == "bybit" and bybit.api_key.get_secret_value() == "ky" and bybit.testnet
    override = venue_config(settings, "binance", {"VIGIL_BINANCE_API_KEY": "other"})
    assert override.api_key.get_secret_value() == "other"


@pytest.mark.parametrize(
    "overrides, env, message",
    [
        ({"exchange": "paper", "exchanges": "binance,bybit"}, {}, "VIGIL_BYBIT_EXCHANGE_URL"),
        (
            {"exchange": "paper", "exchanges": "binance,bybit"},
            {"VIGIL_BYBIT_EXCHANGE_URL": "http://127.0.0.1:8710"},
            "share the URL",
        ),
        (
            {"exchange": "binanceusdm", "api_key": "k", "exchanges": "binance,bybit"},
            {"VIGIL_BYBIT_API_KEY": "k"},
            "share one API key",
        ),
        (
            {"exchange": "binanceusdm", "api_key": "k", "exchanges": "binance,bybit"},
            {},
            "missing setting VIGIL_BYBIT_API_KEY",
        ),
        (
            {"exchange": "paper", "exchanges": "binance,bybit"},
            {"VIGIL_BYBIT_EXCHANGE": "binanceusdm", "VIGIL_BYBIT_API_KEY": "x"},
            "binanceusdm is not bybit",
        ),
    ],
)
def test_bad_venue_configurations_are_refused_with_one_line(overrides, env, message):
    with pytest.raises(SettingsError) as refused:
        check_venues(load_settings(**overrides), environ=env)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_unknown_or_repeated_venues_are_refused():
    with pytest.raises(SettingsError, match="unknown venue 'kraken'"):
        load_settings(exchanges="binance,kraken")
    with pytest.raises(SettingsError, match="listed twice"):
        load_settings(exchanges="bybit,bybit")
