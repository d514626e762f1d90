"""One logging setup: secrets never reach the output, correlation ids reach every line."""

import io
import json
import logging
import threading

import pytest

from core.config import load_settings
from core.logging import Redactor, bind_correlation, current_correlation, setup_logging

KEY = "K3Y-live-abcdef123456"
SECRET = "S3CR3T-live-zyxw987654"
API_TOKEN = "api-token-0123456789"


@pytest.fixture
def settings():
    return load_settings(api_key=KEY, api_secret=SECRET, api_token=API_TOKEN)


@pytest.fixture
def output(settings):
    stream = io.StringIO()
    root = logging.getLogger()
    old_level = root.level
    handler = setup_logging(settings, stream=stream, level="DEBUG", json_lines=False)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


@pytest.fixture
def json_output(settings):
    stream = io.StringIO()
    root = logging.getLogger()
    old_level = root.level
    handler = setup_logging(settings, stream=stream, level="INFO", json_lines=True, component="t")
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def lines(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_configured_key_secret_and_token_are_redacted(output):
    log = logging.getLogger("vigil.test")
    log.info("using key %s and secret %s", KEY, SECRET)
    log.warning("api token is %s", API_TOKEN)
    text = output.getvalue()
    assert KEY not in text and SECRET not in text and API_TOKEN not in text
    assert text.count("***") >= 3


def test_bearer_header_is_redacted_even_when_not_a_configured_secret(output):
    logging.getLogger("vigil.test").info(
        "request headers {'Authorization': 'Bearer x9.unknown-token'} then Authorization: Bearer y"
    )
    text = output.getvalue()
    assert "x9.unknown-token" not in text
    assert "Bearer y" not in text
    assert "Bearer ***" in text


def test_exchange_key_headers_and_url_passwords_are_redacted(output):
    log = logging.getLogger("ccxt.base.exchange")
    log.debug("GET /fapi/v2/balance, Request: {'X-MBX-APIKEY': 'other-key-777'} None")
    log.info("connecting to postgresql://vigil:pa55word@db:5432/vigil")
    text = output.getvalue()
    assert "other-key-777" not in text and "pa55word" not in text
    assert "postgresql://vigil:***@db" in text


def test_tracebacks_are_redacted_too(output):
    try:
        raise RuntimeError(f"exchange refused key {KEY}")
    except RuntimeError:
        logging.getLogger("vigil.test").exception("call failed")
    text = output.getvalue()
    assert "RuntimeError" in text and KEY not in text


def test_json_lines_carry_the_bound_correlation_and_position(json_output):
    log = logging.getLogger("vigil.test")
    log.info("before")
    with bind_correlation("corr-1", position_id=7):
        log.info("inside %s", SECRET)
        with bind_correlation("corr-2", position_id=8):
            log.info("nested")
        log.info("back")
    log.info("after")
    before, inside, nested, back, after = lines(json_output)
    assert before["correlation_id"] is None and before["position_id"] is None
    assert (inside["correlation_id"], inside["position_id"]) == ("corr-1", 7)
    assert SECRET not in inside["msg"] and inside["component"] == "t"
    assert (nested["correlation_id"], nested["position_id"]) == ("corr-2", 8)
    assert (back["correlation_id"], back["position_id"]) == ("corr-1", 7)
    assert after["correlation_id"] is None


def test_binding_in_one_thread_does_not_leak_into_another():
    seen = {}

    def other():
        seen["other"] = current_correlation()

    with bind_correlation("mine", position_id=1):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert current_correlation() == ("mine", 1)
    assert seen["other"] == (None, None)


def test_setting_up_twice_keeps_one_handler(settings):
    root = logging.getLogger()
    first = setup_logging(settings, stream=io.StringIO())
    second = setup_logging(settings, stream=io.StringIO())
    try:
        assert first not in root.handlers and second in root.handlers
    finally:
        root.removeHandler(second)


def test_short_public_values_are_not_redacted_literally():
    redact = Redactor(("paper", "s3cr3t-long-value"))
    assert redact("the paper exchange") == "the paper exchange"
    assert redact("token s3cr3t-long-value") == "token ***"


def test_telegram_bot_token_in_a_url_is_redacted():
    redact = Redactor()
    assert "AAH-secret" not in redact("POST https://api.telegram.org/bot123:AAH-secret/sendMessage")


def test_json_lines_keep_extra_fields_redacted(json_output):
    logging.getLogger("vigil.test").info(
        "order placed", extra={"symbol": "BTCUSDT", "qty": 3, "note": f"secret={SECRET}"}
    )
    (line,) = lines(json_output)
    assert (line["symbol"], line["qty"]) == ("BTCUSDT", 3)
    assert SECRET not in line["note"] and "***" in line["note"]
    assert {"ts", "level", "logger", "msg", "process", "component"} <= set(line)


def test_json_lines_name_the_running_task(json_output):
    from core.logging import bind_task, unbind_task

    log = logging.getLogger("vigil.test")
    token = bind_task("task-id-1", "vigil.maintenance.ping")
    log.info("inside")
    unbind_task(token)
    log.info("outside")
    inside, outside = lines(json_output)
    assert (inside["task_id"], inside["task_name"]) == ("task-id-1", "vigil.maintenance.ping")
    assert outside["task_id"] is None and outside["task_name"] is None


def test_json_traceback_is_one_line_and_redacted(json_output):
    try:
        raise RuntimeError(f"exchange refused key {KEY}")
    except RuntimeError:
        logging.getLogger("vigil.test").exception("call failed")
    raw = json_output.getvalue()
    assert len(raw.splitlines()) == 1
    (line,) = lines(json_output)
    assert "RuntimeError" in line["exc"] and KEY not in raw
