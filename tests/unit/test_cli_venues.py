"""`vigil up --exchange binance|bybit|both` writes the venue settings it stands for."""

import pytest

from core.config import get_settings
from shell.cli_venues import VenueChoiceError, choose_venues, next_port_url


@pytest.fixture
def paper_env(monkeypatch):
    for key in ("VIGIL_EXCHANGES", "VIGIL_BYBIT_EXCHANGE_URL", "VIGIL_BINANCE_EXCHANGE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("VIGIL_EXCHANGE", "paper")
    monkeypatch.setenv("VIGIL_PAPER_DIALECT", "binance")
    monkeypatch.setenv("VIGIL_EXCHANGE_URL", "http://127.0.0.1:9100")
    env: dict[str, str] = {}
    yield env
    get_settings.cache_clear()


def test_both_on_paper_names_both_venues_and_puts_the_second_exchange_on_the_next_port(
    paper_env,
):
    assert choose_venues("both", paper_env) == ["binance", "bybit"]
    assert paper_env["VIGIL_EXCHANGES"] == "binance,bybit"
    assert paper_env["VIGIL_BYBIT_EXCHANGE_URL"] == "http://127.0.0.1:9101"


def test_both_keeps_a_url_the_operator_gave(paper_env):
    paper_env["VIGIL_BYBIT_EXCHANGE_URL"] = "http://127.0.0.1:9555"
    choose_venues("both", paper_env)
    assert paper_env["VIGIL_BYBIT_EXCHANGE_URL"] == "http://127.0.0.1:9555"


def test_one_venue_on_paper_is_the_paper_exchange_speaking_its_dialect(paper_env):
    paper_env["VIGIL_EXCHANGES"] = "binance,bybit"
    assert choose_venues("bybit", paper_env) == ["bybit"]
    assert paper_env["VIGIL_PAPER_DIALECT"] == "bybit"
    assert "VIGIL_EXCHANGES" not in paper_env


def test_an_unknown_venue_is_refused_in_one_line(paper_env):
    with pytest.raises(VenueChoiceError, match="binance, bybit, both"):
        choose_venues("kraken", paper_env)
    assert paper_env == {}


def test_next_port_url_keeps_scheme_and_host():
    assert next_port_url("http://10.0.0.5:8710/") == "http://10.0.0.5:8711/"
