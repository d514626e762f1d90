"""Every API route under random methods, paths, query strings, headers and bodies: never a
500, and nothing changes (database, exchange, tasks sent) without the token."""

import hashlib
import http.client
import json
import urllib.parse

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from core.db.session import new_session
from tests.integration.test_api import TOKEN, api, opened  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

ROUTES = ["/", "/health", "/metrics", "/positions", "/events", "/tasks", "/tasks/{name}"]
ROUTES += ["/livez", "/openapi.json", "/docs"]
ROUTES += ["/halt", "/resume", "/close-all", "/positions/1/close", "/positions/{name}/close"]
PARAMS = ["symbol", "status", "type", "severity", "since", "correlation_id", "position_id", "limit"]
RIGHT = f"Bearer {TOKEN}"
OPEN = {"/health", "/metrics", "/livez", "/openapi.json", "/docs"}
STATE_TABLES = ["positions", "orders", "signals", "waves", "trailing_stops", "aged_positions"]
STATE_TABLES += ["halts"]

segment = st.one_of(
    st.sampled_from(["ping", "reconciliation", "open_position", "vigil.orders.open_position"]),
    st.text(min_size=1, max_size=30),
)
route = st.sampled_from(ROUTES).map(lambda r: r.replace("{name}", "ping"))
path = st.one_of(
    route,
    route,
    route,  # mostly real routes, where the handlers are
    st.tuples(st.sampled_from(ROUTES), segment).map(lambda t: t[0] + "/" + t[1]),
    st.text(max_size=40).map(lambda s: "/" + s),
).map(lambda p: urllib.parse.quote(p.replace("{name}", "ping"), safe="/"))
nasty = st.sampled_from(
    ["999999d", "1e309d", "99999999999999999999999d", "-1", "0", "1e3", "", "\x00", "a\x00b"]
    + ["99999999999999999999999", "2026-13-45", "9999-12-31T23:59:59-23:59", "active,closed"]
)
value = st.one_of(nasty, nasty, st.integers(-(2**80), 2**80).map(str), st.text(max_size=40))
query = st.dictionaries(
    st.one_of(st.sampled_from(PARAMS), st.sampled_from(PARAMS), st.text(max_size=10)),
    value,
    max_size=4,
)
auth = st.one_of(
    st.none(),
    st.just(f"Bearer {TOKEN}"),
    st.sampled_from(["Bearer", "Bearer ", "bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
)
body = st.one_of(
    st.none(),
    st.binary(max_size=200),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
        ),
        max_leaves=8,
    ).map(lambda v: json.dumps(v).encode()),
)
method = st.sampled_from(["GET", "GET", "GET", "HEAD", "POST", "POST", "PUT", "DELETE", "OPTIONS"])
extra_headers = st.dictionaries(
    st.one_of(
        st.sampled_from(["X-Forwarded-For", "Cookie", "Accept", "Origin", "Content-Length"]),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12),
    ).filter(lambda name: name.lower() not in ("authorization", "content-type", "content-length")),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    max_size=3,
)
content_type = st.sampled_from([None, "application/json", "text/plain", "multipart/form-data"])


def state_digest(served, sim) -> str:
    """What a request could change: the engine's rows and the exchange's book."""
    digest = hashlib.sha256()
    with new_session() as s:
        for table in STATE_TABLES:
            rows = s.execute(text(f"SELECT * FROM {table} ORDER BY 1")).all()  # noqa: S608
            digest.update(repr(rows).encode())
    exchange = sim.state()
    digest.update(json.dumps(exchange, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def send(port, method, target, headers, payload):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, target, body=payload, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=method,
    path=path,
    query=query,
    auth=auth,
    body=body,
    content_type=content_type,
    extra=extra_headers,
)
@example(  # the findings of the report, always among the examples
    method="GET",
    path="/events",
    query={"since": "999999d"},
    auth=RIGHT,
    body=None,
    content_type=None,
    extra={},
)
@example(
    method="GET", path="/positions", query={}, auth=None, body=None, content_type=None, extra={}
)
def test_random_requests_never_500_and_never_change_state_without_the_token(
    sim,
    fuzz_state,
    method,
    path,
    query,
    auth,
    body,
    content_type,
    extra,
):
    served, sent, before = fuzz_state["served"], fuzz_state["sent"], fuzz_state["before"]
    headers = dict(extra)
    if auth is not None:
        headers["Authorization"] = auth
    if content_type is not None:
        headers["Content-Type"] = content_type
    target = path + ("?" + urllib.parse.urlencode(query) if query else "")
    status = send(served.port, method, target, headers, body)
    # 503 is /health's answer while a part is down (here: no beat), never an error page
    assert status < 500 or (status == 503 and path == "/health"), (method, target, status)
    if auth != RIGHT:
        if urllib.parse.unquote(path) not in OPEN or method not in ("GET", "HEAD", "OPTIONS"):
            assert status == 401, (method, target, status)  # every door but two is locked
        assert sent == [], (method, target)
        assert state_digest(served, sim) == before, (method, target, headers)
    else:
        fuzz_state["before"] = state_digest(served, sim)  # the token may change things
    sent.clear()


@pytest.fixture
def fuzz_state(api, sim):  # noqa: F811
    sent = []
    served, deps = api(sent=sent, api_token=TOKEN)
    opened(deps, "BTCUSDT")
    return {"served": served, "sent": sent, "before": state_digest(served, sim)}
