"""Local-time delivery as pure rules: a recipient's zone read from the list, and which zones are open when.

Table tests without servers: the reader refuses a zone that does not exist (naming the
row), and ``campaign.local_windows`` says, for the zones a plan's recipients live in, which
have their window open at an instant and when the next one opens or closes: across DST
changes (the same UTC instant is inside the window one day and outside the next) and
across the date line (Kiritimati and Pago Pago read the same clock a day apart).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from support.api import HEADERS, PLAN, Identity, LiveApi, NullQueue, api_without_sqs, put

from emailplan.contract.recipients import Recipient, RowError, read_text, validate_row
from emailplan.operator.campaign import FALLBACK_ZONE, local_windows
from emailplan.operator.planspec import SendWindow, parse_clock
from emailplan.sender.api.state import STATE
from emailplan.sender.store import claims

EVERY_DAY = frozenset(range(7))


def window(start: str, end: str, fallback: str = "UTC", days: frozenset[int] = EVERY_DAY) -> SendWindow:
    opens, closes = parse_clock(start), parse_clock(end)
    assert opens is not None and closes is not None
    return SendWindow(days=days, start=opens, end=closes, time_zone=fallback, per_recipient=True)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


# --- the zone of a row -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "zone"),
    [
        ({"email": "a@example.com", "timeZone": "Europe/Berlin"}, "Europe/Berlin"),
        ({"email": "a@example.com", "vars": {"timeZone": "Asia/Tokyo", "code": "7"}}, "Asia/Tokyo"),
        ({"email": "a@example.com", "timeZone": " Pacific/Kiritimati "}, "Pacific/Kiritimati"),
        ({"email": "a@example.com"}, None),
        ({"email": "a@example.com", "timeZone": ""}, None),
    ],
)
def test_a_row_carries_its_zone_as_a_field_or_a_var(row: dict[str, object], zone: str | None) -> None:
    got = validate_row(1, row)
    assert isinstance(got, Recipient) and got.time_zone == zone


def test_a_csv_time_zone_column_is_the_row_zone() -> None:
    rows = list(read_text("email,TimeZone,code\na@example.com,America/New_York,1\nb@example.com,,2\n", "csv"))
    assert [r.time_zone for r in rows if isinstance(r, Recipient)] == ["America/New_York", None]


@pytest.mark.parametrize("zone", ["Mars/Olympus", "Europe/Berlin/x", "../etc/passwd", "UTC+2", 5])
def test_an_unknown_zone_refuses_the_row_naming_it(zone: object) -> None:
    got = validate_row(7, {"email": "a@example.com", "timeZone": zone})
    assert isinstance(got, RowError) and got.row == 7 and got.field == "timeZone"
    assert "IANA time zone" in got.message


# --- which zones are open ----------------------------------------------------------------------------------

OFFICE = window("09:00", "17:00")
MONDAY_MORNING = window("09:00", "12:00", days=frozenset({0}))


@pytest.mark.parametrize(
    ("case", "win", "zones", "now", "open_zones", "change"),
    [
        (
            "Berlin on the day DST starts: 07:30 UTC is 09:30 there (UTC+2), London is 08:30",
            OFFICE,
            ["Europe/Berlin", "Europe/London"],
            utc(2026, 3, 29, 7, 30),
            {"Europe/Berlin"},
            utc(2026, 3, 29, 8, 0),  # London opens at 09:00 BST
        ),
        (
            "the day before, the same UTC instant is 08:30 in Berlin (UTC+1): closed",
            OFFICE,
            ["Europe/Berlin", "Europe/London"],
            utc(2026, 3, 28, 7, 30),
            set(),
            utc(2026, 3, 28, 8, 0),  # Berlin opens at 09:00 CET
        ),
        (
            "Berlin on the day DST ends: 08:30 UTC is 09:30 (UTC+1); at 07:30 UTC it is 08:30",
            OFFICE,
            ["Europe/Berlin"],
            utc(2026, 10, 25, 8, 30),
            {"Europe/Berlin"},
            utc(2026, 10, 25, 16, 0),
        ),
        (
            "the date line: Kiritimati's Monday 10:00 is Pago Pago's Sunday 09:00",
            MONDAY_MORNING,
            ["Pacific/Kiritimati", "Pacific/Pago_Pago"],
            utc(2026, 12, 6, 20, 0),
            {"Pacific/Kiritimati"},
            utc(2026, 12, 6, 22, 0),  # Kiritimati closes at noon
        ),
        (
            "25 hours later Pago Pago has its Monday morning, Kiritimati is on Tuesday",
            MONDAY_MORNING,
            ["Pacific/Kiritimati", "Pacific/Pago_Pago"],
            utc(2026, 12, 7, 21, 0),
            {"Pacific/Pago_Pago"},
            utc(2026, 12, 7, 23, 0),
        ),
        (
            "rows without a zone follow the fallback zone (UTC here)",
            OFFICE,
            [FALLBACK_ZONE, "Asia/Tokyo"],
            utc(2026, 12, 7, 10, 0),
            {FALLBACK_ZONE},
            utc(2026, 12, 7, 17, 0),
        ),
        (
            "the fallback zone named by the plan: New York's 05:00 is closed, Tokyo's 19:00 too",
            window("09:00", "17:00", fallback="America/New_York"),
            [FALLBACK_ZONE, "Asia/Tokyo"],
            utc(2026, 12, 7, 10, 0),
            set(),
            utc(2026, 12, 7, 14, 0),
        ),
    ],
)
def test_open_zones(
    case: str, win: SendWindow, zones: list[str], now: datetime, open_zones: set[str], change: datetime
) -> None:
    got = local_windows(win, zones, now)
    assert set(got.open_zones) == open_zones, case
    assert got.next_change == change, case


def test_no_zone_known_yet_opens_nothing_and_changes_never() -> None:
    got = local_windows(OFFICE, [], utc(2026, 12, 7, 10, 0))
    assert got.open_zones == () and got.next_change is None


# --- the data plane: only open zones are queued and claimed ------------------------------------------------


async def test_only_rows_of_open_zones_are_queued_and_claimed(migrated: str, ident: Identity) -> None:
    async with api_without_sqs(migrated, ident) as live:
        queue = live.client.server.app[STATE].queue
        plan_id = uuid.uuid4()
        body = {**PLAN, "openZones": ["Asia/Tokyo"]}
        assert (await put(live, plan_id, body)).status == 201
        rows = (
            "email,timeZone\ntokyo@example.com,Asia/Tokyo\nberlin@example.com,Europe/Berlin\n"
            "nozone@example.com,\nbad@example.com,Mars/Olympus\n"
        )
        resp = await live.client.post(
            f"/v1/plans/{plan_id}/recipients?complete=true",
            data=rows.encode(),
            headers={**HEADERS, "Content-Type": "text/csv"},
        )
        job = await resp.json()
        assert job["accepted"] == 3 and job["rejectedRows"][0] == {
            "row": 4,
            "field": "timeZone",
            "message": "timeZone 'Mars/Olympus' is not an IANA time zone (e.g. Europe/Berlin, Asia/Tokyo)",
        }
        ids = {
            email: mid
            for mid, email in (
                await rows_of(live, "SELECT id, email FROM messages WHERE plan_id = :p", p=plan_id)
            )
        }
        assert queued(queue) == {ids["tokyo@example.com"]}
        view = await (await live.client.get(f"/v1/plans/{plan_id}", headers=HEADERS)).json()
        assert view["zoneBacklog"] == {"Asia/Tokyo": 1, "Europe/Berlin": 1, "": 1}
        assert view["releasedBacklog"] == 1 and view["openZones"] == ["Asia/Tokyo"]

        # Berlin and the fallback zone open, Tokyo closes: a claim takes only theirs.
        assert (await put(live, plan_id, {**PLAN, "openZones": ["", "Europe/Berlin"]})).status == 200
        assert queued(queue) == set(ids.values())
        claimed = await claims.claim(live.engine, plan_id, list(ids.values()), "w", 60)
        assert {c.email for c in claimed} == {"berlin@example.com", "nozone@example.com"}
        assert await claims.still_created(live.engine, plan_id, [ids["tokyo@example.com"]]) == []


def queued(queue: NullQueue) -> set[int]:
    return {i for batch in queue.enqueued for i in batch}


async def rows_of(live: LiveApi, sql: str, **params: object) -> list[tuple[int, str]]:
    from sqlalchemy import text

    async with live.engine.connect() as conn:
        return [(int(a), str(b)) for a, b in (await conn.execute(text(sql), params)).all()]
