"""Issue 20 #1, the data plane's side: the API says which dependency is down, typed, for the operator.

Real PostgreSQL and moto; a dependency "down" is an endpoint where nothing listens.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from support.api import HEADERS, PLAN, Identity, put, start_api, stop_api

from devenv.ports import free_port


async def _view_when(live: Any, plan_id: uuid.UUID, check: Any) -> dict[str, Any]:
    view: dict[str, Any] = {}
    for _ in range(300):
        view = await (await live.client.get(f"/v1/plans/{plan_id}", headers=HEADERS)).json()
        if check(view):
            return view
        await asyncio.sleep(0.1)
    raise AssertionError(f"plan view never matched: {view}")


def _health(view: dict[str, Any]) -> dict[str, bool]:
    return {h["dependency"]: h["available"] for h in view.get("dependencies", [])}


async def test_plan_view_and_readyz_report_an_ses_outage(migrated: str, ident: Identity, aws: Any) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    live = await start_api(
        migrated, ident, with_aws=True, aws_endpoint_url=aws.endpoint_url, ses_endpoint_url=dead
    )
    try:
        plan_id = uuid.uuid4()
        assert (await put(live, plan_id, PLAN)).status == 201
        view = await _view_when(live, plan_id, lambda v: _health(v).get("ses") is False)
        assert _health(view) == {"database": True, "queue": True, "ses": False}
        ses = next(h for h in view["dependencies"] if h["dependency"] == "ses")
        assert ses["since"] and "SES" in ses["message"] and dead not in ses["message"]
        ready = await live.client.get("/readyz")
        assert ready.status == 200
        assert {h["dependency"]: h["available"] for h in (await ready.json())["dependencies"]}["ses"] is False
    finally:
        await stop_api(live)


async def test_database_down_is_a_typed_503_naming_the_database(ident: Identity) -> None:
    dead = f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/nothing"
    live = await start_api(dead, ident)
    try:
        for path in (f"/v1/plans/{uuid.uuid4()}", "/readyz"):
            resp = await live.client.get(path, headers=HEADERS)
            body = await resp.json()
            assert resp.status == 503, (path, body)
            assert body["error"]["dependency"] == "database" and body["error"]["message"], body
            assert "127.0.0.1" not in str(body) and "nobody" not in str(body)  # where it is stays in the log
    finally:
        await stop_api(live)
