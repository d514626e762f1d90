"""ccxt's own DEBUG log prints every signed request with its headers: the key must not leak."""

import io
import logging

import pytest

from core.config import load_settings
from core.exchange.adapter import ExchangeAdapter
from core.exchange.errors import AuthenticationFailed
from core.logging import setup_logging

pytestmark = pytest.mark.integration

KEY = "leaky-key-0123456789abcdef"
SECRET = "leaky-secret-9876543210fedcba"


def test_ccxt_debug_log_of_a_signed_request_keeps_key_and_secret_out(paper_exchange_factory):
    stream = io.StringIO()
    root = logging.getLogger()
    old_level = root.level
    handler = setup_logging(
        load_settings(api_key=KEY, api_secret=SECRET), stream=stream, level="DEBUG"
    )
    try:
        adapter = ExchangeAdapter(paper_exchange_factory(api_key=KEY, api_secret=SECRET))
        with pytest.raises(AuthenticationFailed):  # the paper exchange knows another key
            adapter.free_balance()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    text = stream.getvalue()
    assert "/fapi/" in text and "X-MBX-APIKEY" in text  # ccxt did log the request headers
    assert KEY not in text and SECRET not in text
