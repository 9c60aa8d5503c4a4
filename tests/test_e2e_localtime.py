"""Local-time delivery end to end (issue 24, part 3): each recipient inside the window of their own zone.

The real parts of ``test_e2e_operator`` (kube-apiserver, PostgreSQL, moto, ``emailplan api``,
the pod runner with real ``emailplan worker`` processes, the real operator). A list with
recipients in Tokyo, Berlin and New York (and some without a zone, whose fallback is New
York) gets a 09:00-10:00 window with ``timeZone: recipient``. The operator's test clock
(``EMAILPLAN_CLOCK_OFFSET_FILE``) is moved to 09:30 in each zone in turn: at each stop
exactly that zone's group has been mailed, the others wait (and the status says how many).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from support.clock import ClockStack, clock_stack
from support.e2e import Stack, done, plan_yaml

from devenv.kube import KubeCluster
from devenv.moto import MotoServer
from devenv.postgres import PostgresServer

pytestmark = [pytest.mark.kube, pytest.mark.slow]

ZONES = ("Asia/Tokyo", "Europe/Berlin", "America/New_York")
PER_ZONE = 15


@pytest.fixture(scope="module")
def cst(
    crd_installed: KubeCluster, postgres: PostgresServer, moto_server: MotoServer
) -> Iterator[ClockStack]:
    with clock_stack(crd_installed, postgres, moto_server, "emailplan-e2e-localtime-") as st:
        yield st


def next_local(zone: str, clock: time, after: datetime) -> datetime:
    """The first instant after ``after`` when it is ``clock`` in ``zone``."""
    local = after.astimezone(ZoneInfo(zone))
    day = local.date()
    while True:
        at = datetime.combine(day, clock, tzinfo=ZoneInfo(zone)).astimezone(UTC)
        if at > after:
            return at
        day += timedelta(days=1)


def sent_to(st: Stack, marker: str) -> Counter[str]:
    return Counter({a: n for a, n in st.received(marker).items()})


def window_status(status: dict[str, Any]) -> dict[str, Any]:
    return dict(status.get("window") or {})


def test_each_zone_is_mailed_only_inside_its_own_window(cst: ClockStack, namespace: str) -> None:
    marker = f"{namespace}-lt"
    groups = {
        z: [f"{marker}-{z.split('/')[1].lower()}{i}@example.com" for i in range(PER_ZONE)] for z in ZONES
    }
    unzoned = [f"{marker}-nozone{i}@example.com" for i in range(5)]  # the fallback zone: New York
    rows = [f"{e},R,{z},Rome" for z, es in groups.items() for e in es] + [f"{e},R,,Rome" for e in unzoned]
    rows.append(f"{marker}-bad@example.com,R,Mars/Olympus,Rome")  # refused at load, row named
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "zoned"},
        "data": {"recipients.csv": "email,name,timeZone,city\n" + "\n".join(rows) + "\n"},
    }
    cst.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(cm))
    first = next_local(ZONES[0], time(9, 30), cst.operator_now() + timedelta(hours=1))
    cst.advance_to(first)  # 09:30 in Tokyo: Berlin and New York are at night
    doc = json.loads(plan_yaml("lt", recipients_cm="zoned", rate=50, per_pod_rate=25))
    window = {"from": "09:00", "to": "10:00", "timeZone": "recipient", "fallbackTimeZone": "America/New_York"}
    doc["spec"]["schedule"] = {"window": window}
    cst.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))

    expected: Counter[str] = Counter()
    total = 3 * PER_ZONE + len(unzoned)
    at = first
    for zone in ZONES:
        if zone != ZONES[0]:
            assert sent_to(cst, marker) == expected, f"before 09:30 in {zone}, nobody there was mailed"
            at = next_local(zone, time(9, 30), at)
            cst.advance_to(at)
        expected.update(groups[zone] + (unzoned if zone == "America/New_York" else []))
        n = sum(expected.values())
        status = cst.wait_status(
            namespace,
            "lt",
            lambda s, n=n: s.get("sent") == n and window_status(s).get("waiting") == total - n,
            f"09:30 in {zone}: its group mailed, the rest waiting for their window",
            timeout=300,
        )
        assert sent_to(cst, marker) == expected, f"at 09:30 in {zone}: only its group and those before"
        assert "recipient's zone (fallback America/New_York)" in window_status(status)["schedule"]

    status = cst.wait_status(namespace, "lt", done, "completed after the last zone's window", timeout=120)
    assert status["sent"] == 3 * PER_ZONE + len(unzoned)
    loaded = next(c for c in status["conditions"] if c["type"] == "RecipientsLoaded")
    assert "1 rejected" in loaded["message"]
    uid = cst.plan(namespace, "lt")["metadata"]["uid"]  # type: ignore[index]
    job = cst.api_call("GET", f"/v1/plans/{uid}")["load"]
    assert job["rejectedRows"][0]["field"] == "timeZone" and job["rejectedRows"][0]["row"] == len(rows)
