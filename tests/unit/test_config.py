from decimal import Decimal

import pytest

from core.config import SettingsError, load_settings


def test_defaults_follow_the_spec(monkeypatch):
    for name in ("VIGIL_EXCHANGE", "VIGIL_WAVE_INTERVAL", "VIGIL_TRAILING_ACTIVATION_PERCENT"):
        monkeypatch.delenv(name, raising=False)
    s = load_settings()
    assert s.exchange == "paper"
    assert s.wave_interval == 900
    assert s.trailing_activation_percent == Decimal("1.5")
    assert s.trailing_callback_percent == Decimal("0.5")
    assert s.aged_max_age_hours == Decimal("3")
    assert s.aged_grace_hours == Decimal("8")
    assert s.protection_interval == 30
    assert isinstance(s.position_size_usdt, Decimal)


def test_bad_value_names_the_setting_in_one_line(monkeypatch):
    monkeypatch.setenv("VIGIL_EXCHANGE", "kraken")
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "VIGIL_EXCHANGE" in message
    assert "\n" not in message


def test_non_numeric_money_setting_is_refused(monkeypatch):
    monkeypatch.setenv("VIGIL_POSITION_SIZE_USDT", "lots")
    with pytest.raises(SettingsError, match="VIGIL_POSITION_SIZE_USDT"):
        load_settings()


def test_visibility_timeout_must_exceed_the_hard_task_limit(monkeypatch):
    monkeypatch.setenv("VIGIL_TASK_TIME_LIMIT", "400")
    monkeypatch.setenv("VIGIL_BROKER_VISIBILITY_TIMEOUT", "300")
    with pytest.raises(SettingsError, match="VIGIL_BROKER_VISIBILITY_TIMEOUT"):
        load_settings()


def test_stoplist_accepts_comma_separated_symbols(monkeypatch):
    monkeypatch.setenv("VIGIL_STOPLIST", "btcusdt, ETHUSDT")
    assert load_settings().stoplist == ["BTCUSDT", "ETHUSDT"]


def test_secrets_do_not_show_in_the_settings_repr(monkeypatch):
    monkeypatch.setenv("VIGIL_API_SECRET", "s3cr3t-value")
    assert "s3cr3t-value" not in repr(load_settings())
