"""One definition of the API's paths: the router, the OpenAPI document and the clients agree.

The route table (``emailplan.contract.httpapi``) is the only place a path is written.
These tests compare what the running application registers with what its document
says, and scan the code for a path written by hand, which is how a client ends up
calling an endpoint the server does not have.
"""

from __future__ import annotations

import ast
import re
import uuid
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from support.api import API_KEY, TOKEN_KEY

from emailplan.contract.httpapi import LIST_FAILURES, PLAN_COUNTS, ROUTES, SENT_COUNT
from emailplan.contract.route import Method, Route, Tag
from emailplan.sender.api.app import create_app
from emailplan.sender.api.openapi import DOCUMENT
from emailplan.sender.settings import SenderSettings

# Where the route table lives; everywhere else a path is built with Route.url.
TABLE = {Path("emailplan/contract/httpapi.py"), Path("emailplan/contract/route.py")}
SCANNED = ("emailplan", "operator", "sender", "hack")
# An API path: "/v1/" not preceded by "/api" (Kubernetes paths are /api/v1/...).
API_PATH = re.compile(r"(?<!/api)/v1/\w")


@pytest.fixture
def app() -> web.Application:
    """The API application as ``emailplan api`` builds it (not started: routing needs no database)."""
    settings = SenderSettings(
        database_url="postgresql://nobody@127.0.0.1:1/x", token_key=TOKEN_KEY, api_key=API_KEY
    )
    application = create_app(settings, with_aws=False)
    application.freeze()
    return application


def test_the_router_and_the_openapi_document_hold_the_same_operations(app: web.Application) -> None:
    registered = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "*"
    }
    documented = {(method.upper(), path) for path, ops in DOCUMENT["paths"].items() for method in ops}
    assert registered - documented == set(), "registered but not in /v1/openapi.json"
    assert documented - registered == set(), "documented but not registered"
    assert len(registered) == len(ROUTES)


def test_keyed_routes_are_documented_as_keyed_and_public_ones_are_not() -> None:
    for route in ROUTES:
        op = DOCUMENT["paths"][route.path][route.method.lower()]
        assert ("security" in op) == route.keyed, route.path
        assert ("401" in op["responses"]) == route.keyed, route.path


def test_parameters_come_from_the_route_models() -> None:
    op = DOCUMENT["paths"][SENT_COUNT.path]["get"]
    assert op["parameters"] == [
        {
            "name": "hours",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 168, "default": 24},
        }
    ]
    failures = {p["name"]: p for p in DOCUMENT["paths"][LIST_FAILURES.path]["get"]["parameters"]}
    assert failures["planId"]["in"] == "path" and failures["planId"]["required"] is True
    assert failures["planId"]["schema"] == {"type": "string", "format": "uuid"}
    assert failures["after"]["schema"] == {"type": "string", "pattern": "^[0-9]{1,18}$"}  # never null


async def test_every_route_url_resolves_in_the_running_router(app: web.Application) -> None:
    for route in ROUTES:
        path = route.url(**dict.fromkeys(route.placeholders, str(uuid.uuid4())))
        match = await app.router.resolve(make_mocked_request(route.method, path, app=app))
        assert match.http_exception is None, f"{route.method} {path}: {match.http_exception}"


def test_url_fills_and_quotes_every_placeholder_and_nothing_else() -> None:
    assert PLAN_COUNTS.url(planId="a/b c") == "/v1/results/count/a%2Fb%20c"
    assert LIST_FAILURES.url({"limit": 5, "after": "9"}, planId="p") == "/v1/plans/p/failures?limit=5&after=9"
    with pytest.raises(TypeError, match="planId"):
        PLAN_COUNTS.url()
    with pytest.raises(TypeError, match="planID"):
        PLAN_COUNTS.url(planID="x")


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string literal (f-string parts too) except docstrings."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_no_api_path_is_written_outside_the_route_table(repo_root: str) -> None:
    root = Path(repo_root)
    found = []
    for top in SCANNED:
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root)
            if rel in TABLE or "migrations" in rel.parts:
                continue
            for line, value in _strings(ast.parse(path.read_text())):
                if API_PATH.search(value):
                    found.append(f"{rel}:{line}: {value[:80]!r}")
    assert not found, (
        "API paths written by hand (use the route in emailplan.contract.httpapi):\n" + "\n".join(found)
    )


def test_a_route_is_refused_when_its_placeholders_and_parameters_disagree() -> None:
    with pytest.raises(ValueError, match="placeholders"):
        Route(Method.GET, "/v1/plans/{planId}", "getIt", "no path parameters declared", Tag.PLANS, {})
    with pytest.raises(ValueError, match="keyed"):
        Route(Method.GET, "/admin/x", "adminX", "a keyed route outside /v1", Tag.OPS, {}, keyed=True)
