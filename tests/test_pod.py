"""A sender pod of several worker processes: how many, one health endpoint, crash and SIGTERM.

The end-to-end tests run ``emailplan worker --processes 2`` against real
PostgreSQL and moto and judge by what SES received, as the worker tests do.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support.worker import (
    EXE,
    Workers,
    addressee,
    emails,
    make_plan,
    received,
    wait_counts,
    wait_exit,
    worker_env,
)

from devenv.moto import MotoServer
from devenv.ports import free_port
from emailplan.cli import build_parser
from emailplan.sender.pod import cgroup_cpu_limit, parse_cfs, parse_cpu_max, process_count, restart_delay
from emailplan.sender.store import plans

# ----------------------------------------------------------------------------- decisions


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("200000 100000\n", 2.0),
        ("150000 100000", 1.5),
        ("50000 100000", 0.5),
        ("max 100000\n", None),
        ("", None),
        ("garbage", None),
        ("0 100000", None),
    ],
)
def test_cgroup_v2_cpu_max_is_read_as_cpus(text: str, cpus: float | None) -> None:
    assert parse_cpu_max(text) == cpus


@pytest.mark.parametrize(
    ("quota", "period", "cpus"),
    [("200000\n", "100000\n", 2.0), ("-1", "100000", None), ("x", "100000", None)],
)
def test_cgroup_v1_quota_is_read_as_cpus(quota: str, period: str, cpus: float | None) -> None:
    assert parse_cfs(quota, period) == cpus


def test_cgroup_files_are_found_for_v2_and_v1(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("300000 100000\n")
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert (cgroup_cpu_limit(v2), cgroup_cpu_limit(v1), cgroup_cpu_limit(tmp_path / "none")) == (
        3.0,
        1.0,
        None,
    )


@pytest.mark.parametrize(
    ("requested", "limit", "cores", "expected"),
    [
        (3, None, 2, 3),  # asked for: given, even above the cores (the operator knows best)
        (0, None, 4, 4),  # no CPU limit: one per core it may run on
        (0, None, 64, 8),  # ... at most 8 by default
        (0, 2.0, 8, 2),  # the pod's CPU limit
        (0, 1.5, 8, 2),  # a fraction rounds up: two processes use 1.5 CPUs better than one
        (0, 0.5, 8, 1),
        (0, 8.0, 2, 2),  # never more than the cores this process may run on
        (0, 32.0, 64, 8),  # nor more than 8 by default (each process has its own connections)
        (0, 4.0, 0, 1),
    ],
)
def test_process_count_follows_request_then_cpu_limit(
    requested: int, limit: float | None, cores: int, expected: int
) -> None:
    assert process_count(requested, limit, cores) == expected


def test_restart_backoff_grows_and_is_capped() -> None:
    delays = [restart_delay(n) for n in range(1, 10)]
    assert delays[0] == 0.5 and delays == sorted(delays) and max(delays) == 30.0


@pytest.mark.parametrize("bad", ["-1", "two", "1000"])
def test_bad_process_count_is_refused_with_the_option_named(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["worker", "--processes", bad])
    assert exc.value.code == 2
    assert "--processes" in capsys.readouterr().err


# ----------------------------------------------------------------------------- end to end


def children_of(pid: int) -> list[int]:
    """The live worker processes of the pod ``pid``: its descendants named ``emailplan-w<slot>``
    (they are forked from the pod's forkserver, so they are its grandchildren)."""
    parent: dict[int, int] = {}
    names: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        head, tail = text.rsplit(")", 1)
        fields = tail.split()
        if fields[0] == "Z":
            continue
        me = int(stat.parent.name)
        parent[me], names[me] = int(fields[1]), head.split("(", 1)[1]

    def descends(p: int) -> bool:
        while p in parent and p != pid:
            p = parent[p]
        return p == pid

    return [p for p, name in names.items() if name.startswith("emailplan-w") and p != pid and descends(p)]


async def wait_children(pid: int, n: int, ws: Workers, timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(kids := children_of(pid)) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"pod {pid} has children {kids}, expected {n}:\n{ws.logs()}")
        await asyncio.sleep(0.1)
    return kids


async def health(port: int) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as response:
        return response.status, await response.json()


def start_pod(ws: Workers, env: dict[str, str], processes: int) -> subprocess.Popen[bytes]:
    log = open(ws.tmp / f"worker-{len(ws.procs)}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [EXE, "worker", "--processes", str(processes)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    ws.procs.append(proc)
    return proc


@dataclass
class PodEnv:
    """What every pod test uses: the ledger, its URL, SES/SQS in moto and the process logs."""

    engine: AsyncEngine
    url: str
    aws: MotoServer
    workers: Workers


@pytest.fixture
def pod_env(
    engine: AsyncEngine,
    migrated: str,
    aws: MotoServer,
    ses_identity: None,
    workers: Workers,
) -> PodEnv:
    return PodEnv(engine, migrated, aws, workers)


async def test_pod_child_killed_mid_plan_every_recipient_still_gets_one_email(pod_env: PodEnv) -> None:
    engine, aws, ws, n = pod_env.engine, pod_env.aws, pod_env.workers, 200
    plan_id = await make_plan(engine, emails(n), rate=60)
    port = free_port()
    env = worker_env(pod_env.url, plan_id, EMAILPLAN_LEASE_SECONDS="3", EMAILPLAN_METRICS_PORT=str(port))
    pod = start_pod(ws, env, processes=2)
    kids = await wait_children(pod.pid, 2, ws)
    await wait_counts(engine, plan_id, lambda c: c["sent"] >= 40, 90, ws)

    status, body = await health(port)
    assert (status, body["processes"], body["running"]) == (200, 2, 2)
    metrics = await _metrics(port)
    assert "emailplan_sender_sent_total" in metrics, "the pod's one endpoint shows its children's metrics"

    victim = kids[0]
    os.kill(victim, signal.SIGKILL)
    # In flight at the kill: what the killed process held and had not written back. Only those
    # may reach a recipient twice (DESIGN.md); its siblings' messages never.
    async with engine.connect() as conn:
        in_flight = set(
            (
                await conn.execute(
                    text(
                        "SELECT email FROM messages WHERE plan_id = :p AND status = 'processing' "
                        "AND lease_owner LIKE :owner"
                    ),
                    {"p": plan_id, "owner": f"%-{victim}-%"},
                )
            ).scalars()
        )
    # The pod replaces the dead process and goes on; it does not die with it.
    deadline = time.monotonic() + 60
    while victim in (replaced := await wait_children(pod.pid, 2, ws)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # the killed process is still being torn down
    assert victim not in replaced and pod.poll() is None

    await wait_exit([pod], ws, 180)
    got = collections.Counter(addressee(m) for m in received(aws))
    missing = set(emails(n)) - set(got)
    assert not missing, f"{len(missing)} recipients lost, e.g. {sorted(missing)[:3]}"
    twice = {address for address, times in got.items() if times > 1}
    assert twice <= in_flight, f"sent twice but not in flight at the kill: {sorted(twice - in_flight)[:5]}"
    assert max(got.values()) <= 2
    final = await plans.get_counts(engine, plan_id) or {}
    assert [final.get(k) for k in ("sent", "processing", "created")] == [n, 0, 0]


async def _metrics(port: int) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        return await response.text()


async def test_pod_sigterm_stops_every_process_and_releases_what_they_held(pod_env: PodEnv) -> None:
    ws = pod_env.workers
    plan_id: uuid.UUID = await make_plan(pod_env.engine, emails(80), rate=10)
    env = worker_env(pod_env.url, plan_id, EMAILPLAN_EXIT_WHEN_IDLE="false")
    pod = start_pod(ws, env, processes=2)
    kids = await wait_children(pod.pid, 2, ws)
    await wait_counts(pod_env.engine, plan_id, lambda c: c["sent"] >= 5, 60, ws)
    pod.send_signal(signal.SIGTERM)
    pod.wait(60)
    assert pod.returncode == 0, ws.logs()
    assert not any(_alive(k) for k in kids), "a worker process outlived its pod"
    counts = await plans.get_counts(pod_env.engine, plan_id)
    assert counts is not None and counts["processing"] == 0, "held messages were not released"
    assert counts["sent"] < 80, "the pod stopped early, not after finishing the plan"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
