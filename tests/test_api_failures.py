"""Why messages were not sent, as the data plane keeps and shows it (real API and PostgreSQL).

A plan that ends "2 failed" must say which addresses and why: the ledger keeps a
reason per failed or suppressed message and counts them per reason, the plan view
shows the top reasons, and ``GET /v1/plans/{planId}/failures`` lists the addresses,
paged, with a 400 naming any query parameter it cannot use.
"""

from __future__ import annotations

import uuid
from typing import Any

from support.api import HEADERS, LiveApi, NullQueue, make_plan

from emailplan.sender.store import claims, loading, sendresults
from emailplan.sender.store.sendresults import SendResult

UNVERIFIED = (
    "MessageRejected: Email address is not verified. The following identities failed the check in "
    "region US-EAST-1: news@unverified.test"
)


async def _failed_plan(api: LiveApi, n_failed: int = 5, n_render: int = 2, n_sent: int = 3) -> uuid.UUID:
    """A plan whose messages failed at SES, at rendering, gave up, or were sent; one suppressed."""
    emails = [f"f{i}@example.com" for i in range(n_failed + n_render + n_sent + 1)]
    await loading.add_suppressions(api.engine, [emails[-1]], "bounce")  # suppressed on upload
    plan, ids, _ = await make_plan(api, emails[:-1], send=False)
    await loading.insert_recipients(api.engine, plan, [(len(emails), {"email": emails[-1]})])
    await loading.complete_recipients(api.engine, plan, NullQueue())
    await claims.claim(api.engine, plan, list(ids.values()), "w", 60)
    results = []
    for i, email in enumerate(emails[:-1]):
        if i < n_failed - 1:
            results.append(SendResult(ids[email], "failed", error=UNVERIFIED.replace("news@", f"n{i}@")))
        elif i == n_failed - 1:
            results.append(SendResult(ids[email], "failed", error="gave up after 5 attempts: HTTP503: down"))
        elif i < n_failed + n_render:
            results.append(
                SendResult(ids[email], "failed", error="RenderError: subject: 'nmae' is undefined")
            )
        else:
            results.append(SendResult(ids[email], "sent", ses_message_id=f"ses-{i}"))
    assert await sendresults.record_results(api.engine, plan, results) == len(results)
    return plan


async def _get(api: LiveApi, path: str, **params: Any) -> tuple[int, Any]:
    resp = await api.client.get(path, params=params, headers=HEADERS)
    return resp.status, await resp.json()


async def test_plan_view_shows_the_top_reasons_with_counts(api: LiveApi) -> None:
    plan = await _failed_plan(api)
    status, view = await _get(api, f"/v1/plans/{plan}")
    assert status == 200
    assert view["counts"]["failed"] == 7 and view["counts"]["suppressed"] == 1
    assert view["failures"] == [
        {"reason": "MessageRejected: Email address is not verified", "count": 4},
        {"reason": "RenderError: subject: 'nmae' is undefined", "count": 2},
        {"reason": "Suppressed: bounce", "count": 1},
        {"reason": "gave up after 5 attempts: HTTP503: down", "count": 1},
    ]


async def test_suppressed_at_claim_is_counted_with_its_reason(api: LiveApi) -> None:
    plan, ids, _ = await make_plan(api, ["a@example.com", "b@example.com"], send=False)
    await loading.complete_recipients(api.engine, plan, NullQueue())
    await loading.add_suppressions(api.engine, ["b@example.com"], "complaint")  # after upload
    claimed = await claims.claim(api.engine, plan, list(ids.values()), "w", 60)
    assert [c.email for c in claimed] == ["a@example.com"]
    _, view = await _get(api, f"/v1/plans/{plan}")
    assert view["failures"] == [{"reason": "Suppressed: complaint", "count": 1}]
    _, page = await _get(api, f"/v1/plans/{plan}/failures")
    assert [(m["email"], m["status"], m["reason"]) for m in page["items"]] == [
        ("b@example.com", "suppressed", "Suppressed: complaint")
    ]


async def test_failures_are_listed_with_reason_detail_and_time_page_by_page(api: LiveApi) -> None:
    plan = await _failed_plan(api)
    seen: list[dict[str, Any]] = []
    after: str | None = None
    pages = 0
    while True:
        status, page = await _get(
            api, f"/v1/plans/{plan}/failures", limit="3", **({"after": after} if after else {})
        )
        assert status == 200, page
        assert len(page["items"]) <= 3
        seen += page["items"]
        pages += 1
        after = page["next"]
        if after is None:
            break
    assert pages == 3 and len(seen) == 8  # 7 failed + 1 suppressed, each once
    assert len({m["email"] for m in seen}) == 8
    first = next(m for m in seen if m["email"] == "f0@example.com")
    assert first["status"] == "failed" and first["at"]
    assert first["reason"] == "MessageRejected: Email address is not verified"
    assert first["detail"] == UNVERIFIED.replace("news@", "n0@")  # the whole text, addresses and all
    suppressed = next(m for m in seen if m["status"] == "suppressed")
    assert suppressed["reason"] == "Suppressed: bounce" and suppressed["detail"] is None
    assert not any(m["email"].startswith(("f7", "f8", "f9")) for m in seen)  # sent ones are not listed


async def test_bad_or_unknown_query_values_are_a_400_naming_the_parameter(api: LiveApi) -> None:
    plan = await _failed_plan(api, n_failed=1, n_render=0, n_sent=0)
    path = f"/v1/plans/{plan}/failures"
    for params, field in [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": ""}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"after": "x1"}, "after"),
        ({"after": "99999999999999999999999"}, "after"),
        ({"after": "-5"}, "after"),
        ({"limt": "5"}, "limt"),
        ({"reason": "x"}, "reason"),
    ]:
        status, body = await _get(api, path, **params)
        assert status == 400 and body["error"]["field"] == field, (params, body)
    resp = await api.client.get(path, params=[("limit", "1"), ("limit", "2")], headers=HEADERS)
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "limit"
    status, body = await _get(api, f"/v1/plans/{uuid.uuid4()}/failures")
    assert status == 404 and body["error"]["field"] == "planId"
    status, body = await _get(api, "/v1/plans/not-a-uuid/failures")
    assert status == 400 and body["error"]["field"] == "planId"
    resp = await api.client.get(path)
    assert resp.status == 401
    status, body = await _get(api, path, after="9223372036854775807")
    assert status == 200 and body == {"items": [], "next": None}


async def test_reset_of_an_unfinished_list_forgets_its_reasons(api: LiveApi) -> None:
    await loading.add_suppressions(api.engine, ["gone@example.com"], "unsubscribe")
    plan, _, _ = await make_plan(api, ["ok@example.com"], send=False)
    await loading.insert_recipients(api.engine, plan, [(2, {"email": "gone@example.com"})])
    _, view = await _get(api, f"/v1/plans/{plan}")
    assert view["failures"] == [{"reason": "Suppressed: unsubscribe", "count": 1}]
    assert await loading.reset_recipients(api.engine, plan)
    await loading.insert_recipients(api.engine, plan, [(2, {"email": "gone@example.com"})])
    _, view = await _get(api, f"/v1/plans/{plan}")
    assert view["failures"] == [{"reason": "Suppressed: unsubscribe", "count": 1}]  # counted once


async def test_the_openapi_document_has_the_failures_endpoint_and_count_names(api: LiveApi) -> None:
    resp = await api.client.get("/v1/openapi.json")
    doc = await resp.json()
    op = doc["paths"]["/v1/plans/{planId}/failures"]["get"]
    assert {p["name"] for p in op["parameters"]} == {"planId", "limit", "after"}
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/FailurePage"
    }
    schemas = doc["components"]["schemas"]
    assert {"email", "status", "reason", "detail", "at"} <= set(schemas["FailedMessage"]["properties"])
    assert set(schemas["FailureReason"]["properties"]) == {"reason", "count"}
    assert "failures" in schemas["PlanView"]["properties"]
    counts = set(schemas["PlanCounts"]["properties"])
    assert {"openedMachine", "sesRejected", "softBounced"} <= counts
    assert not {"opened_machine", "rejected"} & counts
