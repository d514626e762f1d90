"""Small pure rules of the doors and the dead-man's switch."""

import pytest

from core.config import load_settings
from core.services.deadman import ping_url
from shell.runtime.flower_doors import exposure_refusal, is_loopback


@pytest.mark.parametrize(
    ("address", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True)]
    + [("localhost", True), ("0.0.0.0", False), ("::", False), ("10.0.0.5", False)]
    + [("flower.internal", False), ("", False)],
)
def test_only_loopback_addresses_count_as_this_host(address, loopback):
    assert is_loopback(address) is loopback


def test_flower_beyond_this_host_needs_a_password_of_its_own():
    default = load_settings(flower_address="0.0.0.0")
    assert "VIGIL_FLOWER_PASSWORD" in (exposure_refusal(default) or "")
    assert exposure_refusal(load_settings(flower_address="0.0.0.0", flower_password="")) is not None
    assert (
        exposure_refusal(load_settings(flower_address="0.0.0.0", flower_password="s3cret-x"))
        is None
    )
    assert exposure_refusal(load_settings()) is None  # 127.0.0.1 by default: the default is fine


@pytest.mark.parametrize(
    ("url", "ok", "called"),
    [
        ("https://hc-ping.com/uuid", True, "https://hc-ping.com/uuid"),
        ("https://hc-ping.com/uuid", False, "https://hc-ping.com/uuid/fail"),
        ("https://hc-ping.com/uuid/", False, "https://hc-ping.com/uuid/fail"),
    ],
)
def test_the_dead_mans_url_gets_fail_appended_on_failure(url, ok, called):
    assert ping_url(url, ok) == called
