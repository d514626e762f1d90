"""The API describes itself: ``/openapi.json``, a ``/docs`` page, and ``/livez``.

Why generated from the router at request time: every route registered on the application
appears, whoever registered it and whenever, with its handler's docstring as the
description, so a new route is documented by writing its docstring, not by editing a second
file that drifts. A handler may add OpenAPI fields (parameters, responses, a request body)
through the ``openapi`` decorator below; everything else is derived.

Authentication, as the API enforces it (core/api/doors.py): state-changing methods (anything
but GET/HEAD/OPTIONS) need ``Authorization: Bearer <VIGIL_API_TOKEN>`` and are refused (403)
while no token is configured; reads need it too once a token is configured (unless
``VIGIL_API_PUBLIC_READS``), except /health, /metrics, /livez and this description, which are
always open. A read is therefore described with the token as optional: ``[{bearer}, {}]``.

Why ``/livez`` beside ``/health``: ``/health`` is the whole system's state (503 while any
component fails) and is for alerting; ``/livez`` answers 200 whenever this process serves
requests, so a container orchestrator restarts the API only when the API itself is stuck.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from core.api.doors import OPEN_PATHS
from core.version import vigil_version

H = TypeVar("H", bound=Callable[..., Any])

OPENAPI_VERSION = "3.0.3"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
BEARER = "bearerAuth"
_PATH_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")

API_DESCRIPTION = (
    "vigil's operator API: system health, Prometheus metrics, read-only positions and events, "
    "task triggers. State-changing routes need the bearer token VIGIL_API_TOKEN; once it is "
    "set, so do the reads (unless VIGIL_API_PUBLIC_READS), except /health, /metrics, /livez, "
    "/openapi.json and /docs. /livez is the process's liveness, /health the whole system's."
)

SECURITY_SCHEMES = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "description": (
            "VIGIL_API_TOKEN. Needed by every state-changing route (POST, PUT, PATCH, DELETE); "
            "those answer 403 while no token is configured and 401 on a missing or wrong one. "
            "Once a token is configured the reads need it too (401), unless "
            "VIGIL_API_PUBLIC_READS=true; /health, /metrics, /livez and the docs never do."
        ),
    }
}


def openapi(**fields: Any) -> Callable[[H], H]:
    """Attach extra OpenAPI operation fields to a handler (merged over the derived ones)."""

    def attach(handler: H) -> H:
        handler.__dict__.setdefault("openapi", {}).update(fields)
        return handler

    return attach


def _route_path(route: web.AbstractRoute) -> str | None:
    info = route.resource.get_info() if route.resource is not None else {}
    path = info.get("formatter") or info.get("path") or info.get("prefix")
    return _PATH_PARAM.sub(lambda m: "{" + m.group(1) + "}", path) if path else None


def _description(handler: Any) -> str:
    doc = inspect.getdoc(handler)
    if doc is None and hasattr(handler, "func"):  # functools.partial
        doc = inspect.getdoc(handler.func)
    return doc or "(undocumented)"


def _operation(method: str, path: str, handler: Any, used_ids: set[str]) -> dict[str, Any]:
    description = _description(handler)
    name = getattr(handler, "__name__", None) or type(handler).__name__
    op_id = f"{method.lower()}_{name}"
    while op_id in used_ids:
        op_id += "_"
    used_ids.add(op_id)
    operation: dict[str, Any] = {
        "operationId": op_id,
        "summary": " ".join(description.split("\n\n")[0].split()),  # the first paragraph
        "description": description,
        "responses": {"200": {"description": "success"}},
    }
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(path)
    ]
    if params:
        operation["parameters"] = params
    if method in READ_METHODS and path not in OPEN_PATHS:
        operation["security"] = [{BEARER: []}, {}]  # needed once a token is configured
        operation["responses"]["401"] = {"description": "a token is configured: missing or wrong"}
    if method not in READ_METHODS:
        operation["security"] = [{BEARER: []}]
        operation["responses"].update(
            {
                "401": {"description": "missing or wrong bearer token"},
                "403": {"description": "state-changing routes disabled: no VIGIL_API_TOKEN"},
            }
        )
    operation.update(getattr(handler, "openapi", {}))
    return operation


def build_spec(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3 document of every route registered on ``app`` right now."""
    paths: dict[str, dict[str, Any]] = {}
    used_ids: set[str] = set()
    for route in app.router.routes():
        method, path = route.method.upper(), _route_path(route)
        if path is None or method in ("HEAD", "*"):  # HEAD comes with every GET
            continue
        paths.setdefault(path, {})[method.lower()] = _operation(
            method, path, route.handler, used_ids
        )
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "vigil API",
            "version": vigil_version(),
            "description": API_DESCRIPTION,
        },
        "paths": dict(sorted(paths.items())),
        "components": {"securitySchemes": SECURITY_SCHEMES},
    }


async def openapi_route(request: web.Request) -> web.Response:
    """This API's OpenAPI 3 description, generated from the routes registered right now."""
    return web.json_response(build_spec(request.app))


async def docs_route(request: web.Request) -> web.Response:
    """A self-contained HTML page listing every route, its method, auth and description."""
    return web.Response(text=DOCS_PAGE, content_type="text/html")


async def livez_route(request: web.Request) -> web.Response:
    """200 while this API process serves requests (liveness; the system's health is /health)."""
    return web.json_response({"status": "ok"})


def register(app: web.Application) -> None:
    """Add ``/openapi.json``, ``/docs`` and ``/livez`` to the API."""
    app.router.add_get("/openapi.json", openapi_route)
    app.router.add_get("/docs", docs_route)
    app.router.add_get("/livez", livez_route)


# The page reads /openapi.json from the same origin and renders it with a few lines of
# script: nothing is loaded from anywhere else (no CDN), so it works on an isolated host.
DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vigil API</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#222}
h1{margin-bottom:.2rem} .op{border:1px solid #ddd;border-radius:6px;margin:.8rem 0;padding:.6rem}
.m{display:inline-block;min-width:4.5rem;font-weight:bold;font-family:monospace}
.get{color:#0a6} .post,.put,.patch,.delete{color:#b50} .path{font-family:monospace}
.auth{font-size:.8rem;background:#fde;border-radius:4px;padding:0 .4rem;margin-left:.5rem}
pre{white-space:pre-wrap;margin:.4rem 0 0;font-size:.85rem;color:#444}
</style></head>
<body><h1>vigil API</h1><p id="info">loading /openapi.json ...</p><p id="about"></p>
<div id="auth"></div>
<div id="ops"></div><p><a href="openapi.json">openapi.json</a></p>
<script>
const ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"};
const esc = s => String(s).replace(/[&<>"]/g, c => ENTITIES[c]);
fetch("openapi.json").then(r => r.json()).then(spec => {
  document.getElementById("info").textContent =
    spec.info.title + " " + spec.info.version + " (OpenAPI " + spec.openapi + ")";
  document.getElementById("about").textContent = spec.info.description || "";
  const schemes = (spec.components || {}).securitySchemes || {};
  document.getElementById("auth").innerHTML = Object.entries(schemes).map(([n, s]) =>
    "<p><b>Auth</b> " + esc(n) + ": " + esc(s.type) + " " + esc(s.scheme || "") + " - " +
    esc(s.description || "") + "</p>").join("");
  const ops = [];
  for (const [path, item] of Object.entries(spec.paths))
    for (const [method, op] of Object.entries(item))
      ops.push("<div class='op'><span class='m " + esc(method) + "'>" + esc(method.toUpperCase()) +
        "</span><span class='path'>" + esc(path) + "</span>" +
        (op.security ? "<span class='auth'>bearer token</span>" : "") +
        "<pre>" + esc(op.description || "") + "</pre></div>");
  document.getElementById("ops").innerHTML = ops.join("");
}).catch(e => { document.getElementById("info").textContent = "could not load: " + e; });
</script></body></html>
"""
