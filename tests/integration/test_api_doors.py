"""The API's doors: the token covers every route but /health and /metrics, task arguments
are checked against the task's signature, and malformed queries are 400, never 500."""

import pytest

from tests.integration.test_api import TOKEN, api, opened  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

RIGHT = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


@pytest.mark.parametrize("path", ["/positions", "/events", "/tasks", "/", "/positions?limit=1"])
def test_with_a_token_set_every_read_but_health_and_metrics_needs_it(api, path):  # noqa: F811
    served, _ = api(api_token=TOKEN)
    status, body = served.request("GET", path)
    assert status == 401, body
    wrong = {"Authorization": "Bearer nope"}
    assert served.request("GET", path, headers=wrong)[0] == 401
    assert served.request("GET", path, headers=RIGHT)[0] == 200


def test_health_and_metrics_stay_open_with_a_token_set(api):  # noqa: F811
    served, _ = api(api_token=TOKEN)
    assert served.request("GET", "/health")[0] in (200, 503)
    assert served.request("GET", "/metrics")[0] == 200
    assert served.request("GET", "/livez")[0] == 200  # the container's liveness probe
    assert served.request("GET", "/openapi.json")[0] == 200  # routes, no data
    assert served.request("POST", "/livez", body={})[0] == 401


def test_public_reads_open_the_reads_but_never_a_write(api):  # noqa: F811
    sent = []
    served, _ = api(sent=sent, api_token=TOKEN, api_public_reads=True)
    assert served.request("GET", "/positions")[0] == 200
    assert served.request("GET", "/events")[0] == 200
    assert served.request("POST", "/tasks/ping", body={})[0] == 401
    assert sent == []


def test_reads_without_a_configured_token_stay_open_and_writes_closed(api):  # noqa: F811
    served, _ = api()
    assert served.request("GET", "/positions")[0] == 200
    assert served.request("POST", "/anything", body={})[0] == 403
    assert served.request("DELETE", "/positions")[0] == 403


def test_a_write_to_any_route_needs_the_token_even_one_that_does_not_exist(api):  # noqa: F811
    served, _ = api(api_token=TOKEN)
    for method, path in [("POST", "/halt"), ("POST", "/close-all"), ("POST", "/resume")]:
        assert served.request(method, path, body={})[0] == 401, (method, path)
    for method, path in [("POST", "/nothing-here"), ("PUT", "/positions"), ("DELETE", "/")]:
        assert served.request(method, path, body={})[0] == 401, (method, path)
        assert served.request(method, path, headers=RIGHT, body={})[0] in (404, 405)


def test_task_arguments_are_checked_against_the_signature_with_the_reason(api):  # noqa: F811
    sent = []
    served, _ = api(sent=sent, api_token=TOKEN)
    status, body = served.request("POST", "/tasks/reconciliation", headers=RIGHT, body={"a": 1})
    assert status == 400
    assert "vigil.maintenance.reconciliation()" in body["error"] and "'a'" in body["error"]
    status, body = served.request("POST", "/tasks/ping", headers=RIGHT, body={"x": "y"})
    assert status == 400 and "unexpected keyword argument 'x'" in body["error"]
    assert sent == []
    status, _ = served.request("POST", "/tasks/ping", headers=RIGHT, body={})
    assert status == 202 and sent == [("vigil.maintenance.ping", {})]


@pytest.mark.parametrize(
    "query",
    [
        "/events?since=999999d",
        "/events?since=99999999999999999999999d",
        "/positions?since=999999999h",
        "/events?position_id=99999999999999999999999",
        "/events?position_id=-1",
        "/events?position_id=abc",
        "/events?limit=1e3",
        "/positions?limit=0",
        "/events?symbol=BTC%00USDT",
        "/positions?status=active%00",
        "/events?since=2026-13-45",
    ],
)
def test_malformed_query_values_are_400_never_500(api, query):  # noqa: F811
    served, _ = api()
    status, body = served.request("GET", query)
    assert status == 400, (query, status, body)
    assert body["error"]


def test_a_page_shell_can_be_let_through_for_reads_only(api):  # noqa: F811
    from core.api import doors

    served, _ = api(api_token=TOKEN)
    app = served.runner.app
    # registered before the app starts serving is the normal way; the list is read per request
    doors.allow_without_token(app, "/tasks")
    doors.allow_without_token(app, "/nowhere/")
    assert served.request("GET", "/tasks")[0] == 200
    assert served.request("GET", "/nowhere/page")[0] == 404  # through the door, no such page
    assert served.request("POST", "/tasks", body={})[0] == 401  # reads only
    assert served.request("GET", "/positions")[0] == 401
