"""The served API: /openapi.json, /docs and /livez over a real socket."""

import pytest
from openapi_spec_validator import validate

from tests.integration.test_api import api  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration


def test_served_description_lists_every_route(api):  # noqa: F811
    served, _ = api()
    status, spec = served.request("GET", "/openapi.json")
    assert status == 200
    validate(spec)
    routes = {
        (r.resource.get_info().get("formatter") or r.resource.get_info().get("path"), r.method)
        for r in served.runner.app.router.routes()
        if r.method != "HEAD"
    }
    assert {(p, m.lower()) for p, m in routes} == {
        (p, m) for p, item in spec["paths"].items() for m in item
    }
    status, page = served.request("GET", "/docs")
    assert status == 200 and "<html" in page and "openapi.json" in page


def test_livez_answers_while_the_system_is_unhealthy(api):  # noqa: F811
    served, _ = api(workers=())  # no worker answers: /health fails
    assert served.request("GET", "/health")[0] == 503
    assert served.request("GET", "/livez") == (200, {"status": "ok"})
