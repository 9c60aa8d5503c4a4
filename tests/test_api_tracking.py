"""Pixel, click, unsubscribe, stats and probes against a live server and real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

from support.api import HEADERS, Identity, LiveApi, make_plan, start_api, stop_api

from emailplan.sender.api.tracking import GIF

HUMAN_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120 Safari/537.36"


async def settle(api: LiveApi) -> None:
    """Wait until the open buffer has written everything (the writer runs every 0.1 s)."""
    from emailplan.sender.api.state import STATE

    state = api.client.server.app[STATE]
    for _ in range(100):
        if len(state.opens) == 0:
            await asyncio.sleep(0.15)  # let an in-flight write finish
            if len(state.opens) == 0:
                return
        await asyncio.sleep(0.05)
    raise AssertionError("open buffer did not drain")


async def pixel(api: LiveApi, token: str, ua: str = HUMAN_UA) -> None:
    resp = await api.client.get("/v1/events/open", params={"requestId": token}, headers={"User-Agent": ua})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "image/gif"
    assert "no-store" in resp.headers["Cache-Control"]
    assert await resp.read() == GIF


async def test_pixel_counts_unique_human_and_machine_opens(api: LiveApi) -> None:
    emails = ["h1@example.com", "h2@example.com", "apple@example.com", "google@example.com"]
    plan, ids, _ = await make_plan(api, emails)
    for _ in range(5):
        await pixel(api, api.token("open", ids["h1@example.com"]))
    await pixel(api, api.token("open", ids["h2@example.com"]))
    await pixel(api, api.token("open", ids["apple@example.com"]), ua="Mozilla/5.0")
    await pixel(
        api,
        api.token("open", ids["google@example.com"]),
        ua="Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    )
    await settle(api)
    counts = await api.counts(plan)
    assert counts["opened"] == 2 and counts["openedMachine"] == 2
    # Later human opens of machine-opened messages count as opens; repeats never do.
    await pixel(api, api.token("open", ids["apple@example.com"]))
    await pixel(api, api.token("open", ids["h1@example.com"]))
    await pixel(api, api.token("open", ids["google@example.com"]), ua="Mozilla/5.0")
    await settle(api)
    counts = await api.counts(plan)
    assert counts["opened"] == 3 and counts["openedMachine"] == 2


async def test_open_seconds_after_send_is_a_machine_open(api: LiveApi) -> None:
    plan, ids, _ = await make_plan(api, ["fast@example.com"], sent_ago_seconds=0.5)
    await pixel(api, api.token("open", ids["fast@example.com"]))
    await settle(api)
    counts = await api.counts(plan)
    assert counts["opened"] == 0 and counts["openedMachine"] == 1


async def test_pixel_with_bad_tokens_still_answers_the_image(api: LiveApi) -> None:
    plan, ids, _ = await make_plan(api, ["x@example.com"])
    mid = ids["x@example.com"]
    for token in [
        "",
        "garbage",
        "A" * 500,
        api.token("click", mid),
        api.token("unsub", mid),
        api.token("open", mid)[:-2] + "AA",
        "%00",
        "😀",
    ]:
        await pixel(api, token)
    resp = await api.client.get("/v1/events/open")
    assert resp.status == 200 and await resp.read() == GIF
    await settle(api)
    assert (await api.counts(plan))["opened"] == 0


async def test_click_redirects_only_to_the_signed_url(api: LiveApi) -> None:
    plan, ids, _ = await make_plan(api, ["c@example.com"])
    mid = ids["c@example.com"]
    url = "https://example.com/offer?a=1&b=2"
    token = api.token("click", mid, url)
    for _ in range(3):
        resp = await api.client.get("/v1/events/click", params={"t": token, "u": url}, allow_redirects=False)
        assert resp.status == 302
        assert resp.headers["Location"] == url
    for params in (
        {"t": token, "u": "https://evil.example/"},
        {"t": "forged", "u": url},
        {"t": token},
        {"t": api.token("click", mid, "javascript:alert(1)"), "u": "javascript:alert(1)"},
    ):
        resp = await api.client.get("/v1/events/click", params=params, allow_redirects=False)
        assert resp.status == 400
        assert "Location" not in resp.headers
        assert "message" in (await resp.json())["error"]
    counts = await api.counts(plan)
    assert counts["clicked"] == 1 and counts["opened"] == 1  # a click proves an open


async def test_one_click_unsubscribe(api: LiveApi) -> None:
    plan, ids, _ = await make_plan(api, ["u@example.com"])
    token = api.token("unsub", ids["u@example.com"])
    page = await api.client.get("/v1/unsubscribe", params={"t": token})
    assert page.status == 200 and page.content_type == "text/html"
    html = await page.text()
    assert 'method="post"' in html and "List-Unsubscribe" in html and token in html
    assert int(await api.scalar("SELECT count(*) FROM suppressions")) == 0  # GET changes nothing

    for _ in range(2):
        resp = await api.client.post(
            "/v1/unsubscribe",
            params={"t": token},
            data="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert resp.status == 200, await resp.text()
        assert (await resp.json()) == {"unsubscribed": True}
    assert await api.scalar("SELECT reason FROM suppressions WHERE email = 'u@example.com'") == "unsubscribe"
    assert (await api.counts(plan))["unsubscribed"] == 1

    browser = await api.client.post(
        "/v1/unsubscribe",
        params={"t": token},
        data={"List-Unsubscribe": "One-Click"},
        headers={"Accept": "text/html"},
    )
    assert browser.status == 200 and "Unsubscribed" in await browser.text()

    for params, body in (
        ({"t": token}, "nope"),
        ({"t": token}, ""),
        ({"t": "forged"}, "List-Unsubscribe=One-Click"),
        ({}, "List-Unsubscribe=One-Click"),
    ):
        resp = await api.client.post(
            "/v1/unsubscribe",
            params=params,
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert resp.status == 400
    bad_page = await api.client.get("/v1/unsubscribe", params={"t": "forged"})
    assert bad_page.status == 400


async def test_stats_need_the_api_key_and_valid_hours(api: LiveApi) -> None:
    plan, _, _ = await make_plan(api, ["s1@example.com", "s2@example.com"])
    for headers in ({}, {"x-api-key": "wrong"}, {"x-api-key": ""}):
        resp = await api.client.get(f"/v1/results/count/{plan}", headers=headers)
        assert resp.status == 401
        body = await resp.text()
        assert HEADERS["x-api-key"] not in body
    resp = await api.client.get(f"/v1/results/count/{uuid.uuid4()}", headers=HEADERS)
    assert resp.status == 404
    resp = await api.client.get("/v1/results/count/not-a-uuid", headers=HEADERS)
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "planId"
    counts = await api.counts(plan)
    assert counts["total"] == 2 and counts["sent"] == 2 and counts["created"] == 0
    for hours in ("0", "169", "abc", "-1", "1.5"):
        resp = await api.client.get("/v1/results/sent", params={"hours": hours}, headers=HEADERS)
        assert resp.status == 400, hours
        assert (await resp.json())["error"]["field"] == "hours"
    resp = await api.client.get("/v1/results/sent", params={"hours": "2"}, headers=HEADERS)
    assert (await resp.json())["count"] == 2
    resp = await api.client.get("/v1/results/sent", params={"hours": "1"}, headers=HEADERS)
    assert (await resp.json())["count"] == 0  # sent an hour ago by make_plan


async def test_probes_metrics_and_openapi(api: LiveApi) -> None:
    assert (await api.client.get("/healthz")).status == 200
    assert (await api.client.get("/readyz")).status == 200
    await pixel(api, "forged")
    metrics = await (await api.client.get("/metrics")).text()
    assert 'emailplan_api_pixel_requests_total{result="invalid"}' in metrics
    doc = await (await api.client.get("/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert "/v1/plans/{planId}/recipients" in doc["paths"]
    resp = await api.client.get("/nope")
    assert resp.status == 404 and "message" in (await resp.json())["error"]
    resp = await api.client.delete("/healthz")
    assert resp.status == 405 and "message" in (await resp.json())["error"]


async def test_readyz_fails_when_the_database_is_gone(migrated: str, ident: Identity) -> None:
    live = await start_api(migrated.rsplit("/", 1)[0] + "/no_such_db", ident)
    try:
        resp = await live.client.get("/readyz")
        assert resp.status == 503
        assert "no_such_db" not in await resp.text()
        assert (await live.client.get("/healthz")).status == 200
    finally:
        await stop_api(live)
