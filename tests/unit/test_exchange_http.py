"""The lean HTTP session against a tiny local HTTP server, side by side with requests.

Each behaviour is checked through ccxt's own ``Exchange.fetch`` with each session, so what is
compared is what the engine sees: the response ccxt returns, or the ccxt exception (class and
message) it raises, and what arrived at the server (a POST must arrive exactly once).
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import ccxt
import pytest
import requests

from core.exchange import errors
from core.exchange.factory import build_exchange
from core.exchange.http import LeanResponse, LeanSession, install


class Venue(BaseHTTPRequestHandler):
    """Answers by path; records every request it reads."""

    protocol_version = "HTTP/1.1"
    server: VenueServer

    def log_message(self, *args: Any) -> None:
        pass

    def _record(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.seen.append((self.command, self.path, headers, body))
        return body

    def _answer(self, status: int, body: bytes, ctype: str = "application/json", **extra: str):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Venue-Note", "kept")
        for name, value in extra.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        body = self._record()
        path = self.path.split("?")[0]
        route = ROUTES.get(path)
        if route is None:
            self._answer(404, b'{"code":-1,"msg":"no route"}')
        else:
            route(self, body)

    do_GET = do_POST = do_DELETE = do_PUT = _handle


def _echo(h: Venue, body: bytes) -> None:
    h._answer(200, json.dumps({"ok": True, "body": body.decode()}).encode())


def _code(status: int, payload: dict[str, Any]) -> Callable[[Venue, bytes], None]:
    return lambda h, _: h._answer(status, json.dumps(payload).encode())


def _slow(h: Venue, _: bytes) -> None:
    time.sleep(1.0)
    h._answer(200, b"{}")


def _hang_up(h: Venue, _: bytes) -> None:
    h.close_connection = True  # read the request, answer nothing


def _close_after(h: Venue, _: bytes) -> None:
    h.server.hung_up_on.append(h.client_address)
    h._answer(200, b'{"first":true}')
    h.close_connection = True  # keep-alive was not refused, yet the socket goes


def _text(h: Venue, _: bytes) -> None:
    h._answer(200, b"plain words", "text/plain; charset=utf-8")


def _gzip(h: Venue, _: bytes) -> None:
    h._answer(200, gzip.compress(b'{"zipped":1}'), Content_Encoding="gzip")


def _broken_body(h: Venue, _: bytes) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", "100")
    h.end_headers()
    h.wfile.write(b'{"short":')
    h.close_connection = True


def _redirect(status: int) -> Callable[[Venue, bytes], None]:
    return lambda h, _: h._answer(status, b"", Location="/echo")


ROUTES: dict[str, Callable[[Venue, bytes], None]] = {
    "/echo": _echo,
    "/binance-2021": _code(400, {"code": -2021, "msg": "Order would immediately trigger."}),
    "/binance-1003": _code(429, {"code": -1003, "msg": "Too many requests."}),
    "/unavailable": lambda h, _: h._answer(503, b"Service Unavailable", "text/plain"),
    "/bybit-110092": _code(200, {"retCode": 110092, "retMsg": "expect Rising", "result": {}}),
    "/slow": _slow,
    "/hang-up": _hang_up,
    "/close-after": _close_after,
    "/text": _text,
    "/gzip": _gzip,
    "/broken-body": _broken_body,
    "/redirect-307": _redirect(307),
    "/redirect-302": _redirect(302),
}


class VenueServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Venue)
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.closed_peers: list[Any] = []
        self.hung_up_on: list[Any] = []  # the peers /close-after closed the connection of

    def shutdown_request(self, request: Any) -> None:
        try:
            peer = request.getpeername()
        except OSError:  # a TLS handshake the client refused
            peer = None
        super().shutdown_request(request)
        self.closed_peers.append(peer)  # its socket is closed now, not just its handler done

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (the read timeout) leaves a broken pipe behind

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture(scope="module")
def venue() -> Iterator[VenueServer]:
    server = VenueServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _fresh(venue: VenueServer) -> None:
    venue.seen.clear()
    venue.closed_peers.clear()
    venue.hung_up_on.clear()


def _requests_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # as ccxt sets it (requests_trust_env defaults to False)
    return session


SESSIONS = {"requests": _requests_session, "lean": LeanSession}


def client(kind: str, exchange_id: str = "binanceusdm", timeout_ms: int = 10_000) -> Any:
    exchange = getattr(ccxt, exchange_id)({"timeout": timeout_ms})
    exchange.session = SESSIONS[kind]()
    return exchange


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """What ccxt gave back: ("ok", result) or ("raised", (class, message))."""
    try:
        return "ok", call()
    except ccxt.BaseError as exc:
        return "raised", (type(exc), str(exc))


def both(venue: VenueServer, fetch: Callable[[Any], Any], **kw: Any) -> dict[str, Any]:
    results = {}
    for kind in SESSIONS:
        exchange = client(kind, **kw)
        results[kind] = outcome(lambda exchange=exchange: fetch(exchange))
    return results


POST_HEADERS = {"Content-Type": "application/x-www-form-urlencoded", "X-MBX-APIKEY": "k"}


# --- the answers ccxt reads -------------------------------------------------------------------


def test_json_text_and_gzip_bodies_read_as_with_requests(venue):
    for path, expected in [
        ("/echo", {"ok": True, "body": "a=1&b=2"}),
        ("/text", "plain words"),
        ("/gzip", {"zipped": 1}),
    ]:
        results = both(
            venue, lambda ex, path=path: ex.fetch(venue.url + path, "POST", {}, "a=1&b=2")
        )
        assert results["lean"] == results["requests"] == ("ok", expected), path


def test_the_request_on_the_wire_is_the_one_requests_sends(venue):
    calls = [
        ("POST", "/echo?symbol=BTCUSDT&stopPrice=9300.5&signature=ab%2Fcd", POST_HEADERS, "x=1"),
        ("DELETE", "/echo?symbol=BTCUSDT&orderId=7", {"X-MBX-APIKEY": "k"}, None),
        ("GET", "/echo?symbol=BTCUSDT", {"X-MBX-APIKEY": "k"}, None),
        ("POST", "/echo", {"Content-Type": "application/json"}, ""),
    ]
    wire: dict[str, list[Any]] = {}
    for kind in SESSIONS:
        venue.seen.clear()
        exchange = client(kind)
        for method, path, headers, body in calls:
            exchange.fetch(venue.url + path, method, dict(headers), body)
        wire[kind] = list(venue.seen)
    assert wire["lean"] == wire["requests"]
    delete_headers = wire["lean"][1][2]
    assert delete_headers["content-length"] == "0"  # as requests sends a body-less DELETE
    assert "content-length" not in wire["lean"][2][2]  # and no length on a GET


def test_response_headers_are_case_insensitive(venue):
    session = LeanSession()
    response = session.request("GET", venue.url + "/echo", timeout=5, verify=True)
    assert isinstance(response, LeanResponse)
    assert response.headers.get("Content-Type") == response.headers["content-type"]
    assert response.headers["X-VENUE-NOTE"] == "kept"
    assert response.status_code == 200 and response.reason == "OK" and response.ok
    assert response.json() == {"ok": True, "body": ""}


# --- venue errors: the same ccxt class, message and engine classification ----------------------


@pytest.mark.parametrize(
    ("path", "exchange_id", "expected_ccxt", "expected_engine"),
    [
        ("/binance-2021", "binanceusdm", ccxt.ExchangeError, errors.WouldTriggerImmediately),
        ("/binance-1003", "binanceusdm", ccxt.DDoSProtection, errors.RateLimited),
        ("/unavailable", "binanceusdm", ccxt.ExchangeNotAvailable, errors.OutcomeUnknown),
        ("/no-such-route", "binanceusdm", ccxt.ExchangeError, errors.OrderRejected),
        ("/bybit-110092", "bybit", ccxt.ExchangeError, errors.WouldTriggerImmediately),
    ],
)
def test_venue_errors_map_as_with_requests(
    venue, path, exchange_id, expected_ccxt, expected_engine
):
    results = both(
        venue, lambda ex: ex.fetch(venue.url + path, "POST", dict(POST_HEADERS), "a=1"),
        exchange_id=exchange_id,
    )  # fmt: skip
    assert results["lean"] == results["requests"]
    status, (cls, message) = results["lean"]
    assert status == "raised" and issubclass(cls, expected_ccxt)
    assert type(errors.classify(cls(message), mutating=True)) is expected_engine


def test_raise_for_status_says_what_requests_says(venue):
    messages = {}
    for kind, make in SESSIONS.items():
        response = make().request("DELETE", venue.url + "/no-such-route?a=1", timeout=5)
        with pytest.raises(requests.HTTPError) as raised:
            response.raise_for_status()
        assert raised.value.response is response
        messages[kind] = str(raised.value)
    assert messages["lean"] == messages["requests"]
    assert messages["lean"].startswith("404 Client Error: Not Found for url: ")


# --- failures of the connection ----------------------------------------------------------------


def test_a_read_timeout_is_a_request_timeout(venue):
    results = both(venue, lambda ex: ex.fetch(venue.url + "/slow", "GET"), timeout_ms=200)
    assert results["lean"] == results["requests"]
    assert results["lean"][0] == "raised" and results["lean"][1][0] is ccxt.RequestTimeout


def test_a_refused_connection_is_a_network_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/fapi/v1/order"
    results = {
        kind: outcome(lambda k=kind: client(k).fetch(url, "POST", {}, "a=1")) for kind in SESSIONS
    }
    assert results["lean"] == results["requests"]
    assert results["lean"][1][0] is ccxt.NetworkError
    failure = errors.classify(ccxt.NetworkError("x"), mutating=True)
    assert isinstance(failure, errors.OutcomeUnknown)


def test_a_malformed_url_fails_as_with_requests():
    url = "http://127.0.0.1:99999/fapi/v1/order"
    results = {kind: outcome(lambda k=kind: client(k).fetch(url, "GET")) for kind in SESSIONS}
    assert results["lean"] == results["requests"]
    assert results["lean"][1][0] is ccxt.ExchangeError


@pytest.mark.parametrize("method", ["POST", "DELETE"])
@pytest.mark.parametrize("kind", list(SESSIONS))
def test_a_call_the_venue_hung_up_on_is_never_sent_twice(venue, kind, method):
    """The create (or cancel) may have been done: it fails as a NetworkError (an unknown
    outcome to the engine) and is not sent again, on a reused connection or a new one."""
    exchange = client(kind)
    for reused in (True, False):
        if reused:
            exchange.fetch(venue.url + "/echo", "GET")  # a pooled keep-alive connection
        venue.seen.clear()
        status, (cls, _) = outcome(
            lambda: exchange.fetch(venue.url + "/hang-up", method, dict(POST_HEADERS), "a=1")
        )
        assert status == "raised" and cls is ccxt.NetworkError
        assert [(m, p) for m, p, _, _ in venue.seen] == [(method, "/hang-up")]
    # and the session is still usable afterwards
    assert exchange.fetch(venue.url + "/echo", "GET") == {"ok": True, "body": ""}


@pytest.mark.parametrize("kind", list(SESSIONS))
def test_a_keep_alive_connection_the_venue_closed_is_replaced_before_sending(venue, kind):
    exchange = client(kind)
    assert exchange.fetch(venue.url + "/close-after", "GET") == {"first": True}
    deadline = time.monotonic() + 5
    while venue.hung_up_on[0] not in venue.closed_peers:  # until the server closed it
        assert time.monotonic() < deadline
        time.sleep(0.01)
    venue.seen.clear()
    assert exchange.fetch(venue.url + "/echo", "POST", dict(POST_HEADERS), "a=1") == {
        "ok": True,
        "body": "a=1",
    }
    assert [(m, p) for m, p, _, _ in venue.seen] == [("POST", "/echo")]


def test_a_body_cut_short_is_a_network_error(venue):
    results = both(venue, lambda ex: ex.fetch(venue.url + "/broken-body", "GET"))
    assert results["lean"] == results["requests"]
    assert results["lean"][1][0] is ccxt.NetworkError


# --- what goes through requests itself --------------------------------------------------------


@pytest.mark.parametrize("status", [307, 302])
def test_redirects_are_followed_as_requests_follows_them(venue, status):
    wire = {}
    for kind in SESSIONS:
        venue.seen.clear()
        result = client(kind).fetch(
            venue.url + f"/redirect-{status}", "POST", dict(POST_HEADERS), "a=1"
        )
        wire[kind] = ([(m, p, b) for m, p, _, b in venue.seen], result)
    assert wire["lean"] == wire["requests"]
    expected_follow = ("POST", "/echo", b"a=1") if status == 307 else ("GET", "/echo", b"")
    assert wire["lean"][0][1] == expected_follow


def test_files_and_proxies_go_through_requests(venue):
    session = LeanSession()
    response = session.request("POST", venue.url + "/echo", files={"f": (None, "v")}, timeout=5)
    assert isinstance(response, requests.Response) and response.status_code == 200
    assert b'name="f"' in venue.seen[-1][3]
    plain = LeanSession()
    plain.request("GET", venue.url + "/echo", timeout=5)
    assert plain._fallback is None


def test_the_sync_client_gets_a_lean_session_and_the_async_one_keeps_its_own():
    sync = build_exchange("paper", url="http://127.0.0.1:1")
    assert isinstance(sync.session, LeanSession)
    assert sync.session.headers["User-Agent"].startswith("python-requests/")
    async_client = build_exchange("paper", url="http://127.0.0.1:1", async_mode=True)
    assert not isinstance(getattr(async_client, "session", None), LeanSession)
    assert install(sync) is sync and isinstance(sync.session, LeanSession)


# --- TLS: verified unless ccxt says verify=False ----------------------------------------------


def _self_signed(directory: Any) -> tuple[str, str]:
    """A certificate for 127.0.0.1 that no CA in the bundle signed."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


@pytest.fixture
def tls_venue(tmp_path: Any) -> Iterator[VenueServer]:
    import ssl

    server = VenueServer()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*_self_signed(tmp_path))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_an_unverifiable_certificate_fails_unless_verification_is_off(tls_venue):
    url = f"https://127.0.0.1:{tls_venue.server_address[1]}/echo"
    verified = both(tls_venue, lambda ex: ex.fetch(url, "GET"))
    assert verified["lean"] == verified["requests"]
    assert verified["lean"][0] == "raised" and verified["lean"][1][0] is ccxt.NetworkError
    assert tls_venue.seen == []  # nothing was sent over the unverified connection

    def unverified(exchange: Any) -> Any:
        exchange.verify = False
        return exchange.fetch(url, "POST", dict(POST_HEADERS), "a=1")

    with pytest.warns(Warning):  # urllib3's InsecureRequestWarning, as with requests
        plain = both(tls_venue, unverified)
    assert plain["lean"] == plain["requests"] == ("ok", {"ok": True, "body": "a=1"})
