"""Importing a suppression list: imported addresses are refused at upload and never sent."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from support.api import HEADERS, PLAN, Identity, LiveApi, api_without_sqs, put, upload


@pytest.fixture
async def api(migrated: str, ident: Identity) -> AsyncIterator[LiveApi]:
    async with api_without_sqs(migrated, ident) as live:
        yield live


async def test_imported_addresses_are_suppressed_case_insensitively(api: LiveApi) -> None:
    r = await api.client.post(
        "/v1/suppressions", json={"emails": ["Old@Example.com", "gone@example.com"]}, headers=HEADERS
    )
    assert r.status == 200
    assert await r.json() == {"received": 2, "added": 2}
    again = await api.client.post("/v1/suppressions", json={"emails": ["old@example.com"]}, headers=HEADERS)
    assert (await again.json())["added"] == 0, "importing twice adds nothing"

    plan_id = uuid.uuid4()
    assert (await put(api, plan_id, PLAN)).status == 201
    body = b'{"email":"old@example.com"}\n{"email":"new@example.com"}\n'
    resp = await upload(api, plan_id, body, "application/x-ndjson")
    assert resp.status == 200
    result = await resp.json()
    assert result["accepted"] == 1 and result["suppressed"] == 1
    counts = await (await api.client.get(f"/v1/results/count/{plan_id}", headers=HEADERS)).json()
    assert counts["suppressed"] == 1 and counts["created"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "emails"),
        ({"emails": []}, "emails"),
        ({"emails": "a@example.com"}, "emails"),
        ({"emails": ["a@example.com", "nope"]}, "emails[1]"),
        ({"emails": [7]}, "emails[0]"),
        ({"emails": ["a@example.com"], "reason": "because"}, "reason"),
        ([1, 2], "body"),
    ],
)
async def test_bad_bodies_name_the_field_and_change_nothing(api: LiveApi, body: object, field: str) -> None:
    r = await api.client.post("/v1/suppressions", json=body, headers=HEADERS)
    assert r.status == 400
    assert (await r.json())["error"]["field"] == field
    ok = await api.client.post("/v1/suppressions", json={"emails": ["a@example.com"]}, headers=HEADERS)
    assert (await ok.json())["added"] == 1, "the refused request must not have added anything"


async def test_needs_the_api_key(api: LiveApi) -> None:
    r = await api.client.post("/v1/suppressions", json={"emails": ["a@example.com"]})
    assert r.status == 401
