"""Fault benchmark: a plan broken the way an operator would break it, measured from what SES got.

Worker processes (``emailplan worker``) send a plan through a stand-in SES v2 endpoint
that answers after a short latency, like SES, and records every message it accepted
(by the ``emailplan-message`` tag) and the requests it has not answered yet. Real
PostgreSQL (stopped and started for the outage fault) and moto SQS. Per fault:

* lost: recipients SES never accepted; repeated: extra copies SES accepted;
* in flight at the kills: messages the killed pod held whose request SES had received
  and whose outcome was not in the ledger at the instant of the kill (of which "not yet
  answered" had no SES answer yet): the most a kill may repeat;
* time to Completed, against the same plan with no fault;
* the ledger's sum (total = sent + failed + stopped + suppressed, nothing processing).

Every fault runs ``--runs`` times; the table shows min / median / max.

    .venv/bin/python bench/fault_bench.py [--n 10000 --rate 200 --pods 2 --runs 3] [--out docs/benchmarks.md]
    .venv/bin/python bench/fault_bench.py --only sigkill --runs 1
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack"))

EXE = str(Path(sys.executable).with_name("emailplan"))
SPEC = {
    "from": "News <news@example.com>",
    "subject": "Hello {{ name }}",
    "html": "<p>Hi {{ name }}, your code is {{ code }}</p>",
    "text": "Hi {{ name }}, your code is {{ code }}",
}
FAULTS = ["none", "sigkill", "db_down", "suspend_resume", "throttle", "sigkill_delete"]


# ----------------------------------------------------------------------------- SES stand-in


def serve_ses(port: int, latency: float) -> None:
    """SES v2 SendEmail after ``latency`` s; /stats tells what it accepted and what it is still answering."""
    from aiohttp import web

    accepted: collections.Counter[str] = collections.Counter()
    pending: set[str] = set()
    state = {"calls": 0, "throttled": 0, "every": 0}
    per_second: collections.Counter[int] = collections.Counter()

    async def send(request: web.Request) -> web.Response:
        body = await request.json()
        tags = {t["Name"]: t["Value"] for t in body.get("EmailTags", [])}
        mid = tags.get("emailplan-message", "?")
        state["calls"] += 1
        pending.add(mid)
        try:
            await asyncio.sleep(latency)
            if state["every"] and state["calls"] % state["every"] == 0:
                state["throttled"] += 1
                return web.json_response(
                    {"__type": "TooManyRequestsException", "message": "Maximum sending rate exceeded."},
                    status=429,
                    headers={"x-amzn-ErrorType": "TooManyRequestsException"},
                )
            accepted[mid] += 1
            per_second[int(time.time())] += 1
            return web.json_response({"MessageId": uuid.uuid4().hex})
        finally:
            pending.discard(mid)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {"accepted": accepted, "pending": sorted(pending), **state, "per_second": per_second}
        )

    async def configure(request: web.Request) -> web.Response:
        body = await request.json()
        if "every" in body:
            state["every"] = int(body["every"])
        if body.get("reset"):
            accepted.clear()
            per_second.clear()
            state.update(calls=0, throttled=0, every=0)
        return web.json_response(state)

    app = web.Application()
    app.router.add_post("/v2/email/outbound-emails", send)
    app.router.add_get("/stats", stats)
    app.router.add_post("/config", configure)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


class Ses:
    """Client side of the stand-in."""

    def __init__(self, latency: float) -> None:
        from devenv.ports import free_port, port_open, wait_for

        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve-ses", str(self.port), str(latency)])
        wait_for(lambda: port_open(self.port), 20, "SES stand-in")
        self.url = f"http://127.0.0.1:{self.port}"

    async def call(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import aiohttp

        async with aiohttp.ClientSession() as http:
            if body is None:
                async with http.get(self.url + path) as r:
                    return dict(await r.json())
            async with http.post(self.url + path, json=body) as r:
                return dict(await r.json())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# ----------------------------------------------------------------------------- one run


@dataclass
class Run:
    fault: str
    seconds: float = 0.0
    lost: int = 0
    repeated: int = 0
    in_flight: int = 0  # at the kills: SES had the request, the ledger not the outcome
    unanswered: int = 0  # of those, SES had not answered yet
    sums_hold: bool = False
    processing_left: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        from devenv.moto import MotoServer
        from devenv.postgres import PostgresServer

        self.args = args
        self.pg = PostgresServer().start()
        self.moto = MotoServer().start()
        os.environ.update(self.moto.env())
        self.ses = Ses(args.latency)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logdir = Path(args.logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        self.ses.stop()
        self.moto.stop()
        self.pg.cleanup()

    def engine(self) -> Any:
        from emailplan.sender.db import make_engine

        return make_engine(url=self.pg.url, pool_size=2)

    async def make_plan(self) -> uuid.UUID:
        from emailplan.sender.settings import SenderSettings
        from emailplan.sender.store import loading, plans
        from emailplan.sender.workqueue import WorkQueue

        engine = self.engine()
        plan_id = uuid.uuid4()
        await plans.upsert_plan(
            engine, plan_id, name="faults", namespace="b", spec=SPEC, rate_per_second=self.args.rate
        )
        rows = (
            (i, {"email": f"u{i}@example.com", "name": f"N{i}", "vars": {"code": str(i)}})
            for i in range(1, self.args.n + 1)
        )
        await loading.insert_recipients(engine, plan_id, rows)
        async with WorkQueue.open(SenderSettings()) as queue:
            await loading.complete_recipients(engine, plan_id, queue)
        await engine.dispose()
        return plan_id

    def start_pod(self, plan_id: uuid.UUID, slot: int) -> subprocess.Popen[bytes]:
        """Pod ``slot``: a restart keeps its name, as Kubernetes restarts a killed container."""
        env = {
            "EMAILPLAN_POD_NAME": f"bench-sender-{slot}",
            **os.environ,
            "EMAILPLAN_DATABASE_URL": self.pg.url,
            "EMAILPLAN_PLAN_ID": str(plan_id),
            "EMAILPLAN_SES_ENDPOINT_URL": self.ses.url,
            "EMAILPLAN_METRICS_PORT": "0",
            "EMAILPLAN_MAX_SEND_RATE": "100000",
            "EMAILPLAN_POLL_WAIT_SECONDS": "1",
            "EMAILPLAN_EXIT_WHEN_IDLE": "true",
            "EMAILPLAN_WORKER_CONCURRENCY": str(self.args.concurrency),
            "EMAILPLAN_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
            "EMAILPLAN_DEV_MODE": "1",  # built-in development keys: a local benchmark
        }
        log = open(self.logdir / f"pod-{len(self.procs)}.log", "wb")  # noqa: SIM115
        # one process per pod, as the runs had: the kill takes the whole sender
        argv = [EXE, "worker", "--processes", "1"]
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    async def counts(self, engine: Any, plan_id: uuid.UUID) -> dict[str, int]:
        from emailplan.sender.store import plans

        try:
            return await plans.get_counts(engine, plan_id) or {}
        except Exception:  # the database is down (that fault)
            return {}

    async def wait_sent(self, engine: Any, plan_id: uuid.UUID, at_least: int) -> None:
        while (await self.counts(engine, plan_id)).get("sent", 0) < at_least:
            await asyncio.sleep(0.05)

    async def held_by(self, engine: Any, pid: int) -> set[str]:
        """Message ids the (dead) pod ``pid`` still held in the ledger: its unrecorded work."""
        from sqlalchemy import text

        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT id FROM messages WHERE status = 'processing' AND lease_owner LIKE :o"),
                {"o": f"%-{pid}-%"},
            )
            return {str(i) for i in rows.scalars()}

    async def kill(
        self, engine: Any, pods: list[subprocess.Popen[bytes]], i: int, plan_id: uuid.UUID, run: Run
    ) -> None:
        victim = pods[i]
        run.extra.setdefault("kill_at", []).append(time.time())
        victim.send_signal(signal.SIGKILL)
        before = await self.ses.call("/stats")
        await asyncio.to_thread(victim.wait, 10)
        held = await self.held_by(engine, victim.pid)
        after = await self.ses.call("/stats")
        reached = set(after["accepted"]) | set(before["pending"]) | set(after["pending"])
        run.in_flight += len(held & reached)
        run.unanswered += len(held & set(before["pending"]))
        pods[i] = self.start_pod(plan_id, i)

    async def one(self, fault: str) -> Run:
        await self.ses.call("/config", {"reset": True})
        plan_id = await self.make_plan()
        engine = self.engine()
        run = Run(fault)
        n, args = self.args.n, self.args
        t0 = time.monotonic()
        pods = [self.start_pod(plan_id, i) for i in range(args.pods)]
        try:
            action = FAULT_ACTIONS[fault]
            await action(self, engine, pods, plan_id, run)
            while True:
                c = await self.counts(engine, plan_id)
                if (
                    c
                    and c["created"] == 0
                    and c["processing"] == 0
                    and (c["sent"] + c["failed"] + c["suppressed"] + c["stopped"] == c["total"])
                ):
                    break
                if time.monotonic() - t0 > args.timeout:
                    run.extra["timeout"] = True
                    break
                failed = [p for p in pods if p.poll() not in (None, 0, -signal.SIGKILL)]
                if failed:  # a pod that cannot start would leave the run waiting for nothing
                    raise SystemExit(f"a worker exited with {failed[0].returncode}: see {self.logdir}")
                await asyncio.sleep(0.1)
            run.seconds = time.monotonic() - t0 - run.extra.get("suspended_s", 0.0)
            for p in pods:
                await asyncio.to_thread(p.wait, 120)
            c = await self.counts(engine, plan_id)
            stats = await self.ses.call("/stats")
            accepted = {int(k): v for k, v in stats["accepted"].items() if k.isdigit()}
            run.repeated = sum(v - 1 for v in accepted.values())
            run.sums_hold = c["total"] == c["sent"] + c["failed"] + c["stopped"] + c["suppressed"]
            run.processing_left = c["processing"]
            if fault == "sigkill_delete":
                run.extra["ses_minus_ledger"] = len(accepted) - c["sent"]
                run.lost = 0
            else:
                run.lost = n - len(accepted)
            run.extra["per_second"] = stats["per_second"]
            if fault == "throttle":
                run.extra["throttled"] = stats["throttled"]
        finally:
            for p in pods:
                if p.poll() is None:
                    p.kill()
            await engine.dispose()
        line = json.dumps(run.__dict__, default=str)
        with open(self.logdir / "runs.jsonl", "a") as out:  # every run in full, for a closer look
            out.write(line + "\n")
        print(line[:600], flush=True)
        return run


async def fault_none(b: Bench, engine: Any, pods: list[Any], plan_id: uuid.UUID, run: Run) -> None:
    return None


async def fault_sigkill(b: Bench, engine: Any, pods: list[Any], plan_id: uuid.UUID, run: Run) -> None:
    kills, n = b.args.kills, b.args.n
    for k in range(kills):
        await b.wait_sent(engine, plan_id, (k + 1) * n // (kills + 2))
        await b.kill(engine, pods, k % len(pods), plan_id, run)


async def fault_db_down(b: Bench, engine: Any, pods: list[Any], plan_id: uuid.UUID, run: Run) -> None:
    for k in range(2):
        await b.wait_sent(engine, plan_id, (k + 1) * b.args.n // 4)
        await engine.dispose()
        run.extra.setdefault("db_down_at", []).append(time.time())
        await asyncio.to_thread(b.pg.restart, b.args.db_down)
        run.extra.setdefault("db_back_at", []).append(time.time())


async def fault_suspend_resume(b: Bench, engine: Any, pods: list[Any], plan_id: uuid.UUID, run: Run) -> None:
    from devenv.suspend import set_suspended

    cycles, n, suspended = 5, b.args.n, 0.0
    for k in range(cycles):
        await b.wait_sent(engine, plan_id, (k + 1) * n // (cycles + 3))
        t = time.monotonic()
        await set_suspended(engine, plan_id, True)
        await asyncio.sleep(1.0)
        await set_suspended(engine, plan_id, False)
        suspended += time.monotonic() - t
    run.extra["suspended_s"] = suspended


async def fault_throttle(b: Bench, engine: Any, pods: list[Any], plan_id: uuid.UUID, run: Run) -> None:
    n = b.args.n
    await b.wait_sent(engine, plan_id, n // 10)
    run.extra["throttle_from"] = time.time()
    await b.ses.call("/config", {"every": 10})
    await b.wait_sent(engine, plan_id, n * 6 // 10)
    await b.ses.call("/config", {"every": 0})
    run.extra["throttle_until"] = time.time()


async def fault_sigkill_delete(b: Bench, engine: Any, pods: list[Any], plan_id: uuid.UUID, run: Run) -> None:
    from emailplan.sender.store import plans

    await b.wait_sent(engine, plan_id, b.args.n // 4)
    await b.kill(engine, pods, 0, plan_id, run)
    pods[0].kill()  # deleted: the pod does not come back
    await asyncio.to_thread(pods[0].wait, 10)
    await asyncio.sleep(0.5)
    await plans.stop_plan(engine, plan_id, None)


FAULT_ACTIONS: dict[str, Callable[[Bench, Any, list[Any], uuid.UUID, Run], Awaitable[None]]] = {
    "none": fault_none,
    "sigkill": fault_sigkill,
    "db_down": fault_db_down,
    "suspend_resume": fault_suspend_resume,
    "throttle": fault_throttle,
    "sigkill_delete": fault_sigkill_delete,
}


# ----------------------------------------------------------------------------- report


def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    if not values:
        return "—"
    lo, mid, hi = min(values), statistics.median(values), max(values)
    return " / ".join(fmt.format(v) for v in (lo, mid, hi))


def throttle_curve(run: Run, rate: float) -> str:
    per = {int(k): v for k, v in run.extra.get("per_second", {}).items()}
    if not per:
        return ""
    start, until = int(run.extra.get("throttle_from", 0)), int(run.extra.get("throttle_until", 0))
    first = min(per)
    rows = []
    for s in range(first, max(per) + 1):
        mark = "throttled" if start <= s < until else ""
        rows.append(f"| {s - first} | {per.get(s, 0)} | {per.get(s, 0) / rate:.2f} | {mark} |")
    return "\n".join(["| second | accepted | / configured | |", "| --- | --- | --- | --- |", *rows])


def recovery_seconds(run: Run, rate: float) -> float | None:
    """Seconds from the end of throttling until a 3 s average is back at 90 % of the rate."""
    per = {int(k): v for k, v in run.extra.get("per_second", {}).items()}
    until = int(run.extra.get("throttle_until", 0))
    if not per or not until:
        return None
    for s in range(until, max(per) - 1):
        if sum(per.get(s + i, 0) for i in range(3)) / 3 >= 0.9 * rate:
            return float(s - until)
    return None


TARGETS = {"sigkill": "≤ 1.5", "db_down": "≤ 1.5", "suspend_resume": "≤ 1.2"}


def report(runs: dict[str, list[Run]], args: argparse.Namespace, started: str) -> str:
    bases = [r.seconds for r in runs.get("none", [])]
    names = {
        "none": "no fault",
        "sigkill": f"a sender SIGKILLed {args.kills} times (restarted at once)",
        "db_down": f"PostgreSQL down {args.db_down:.0f} s, twice",
        "suspend_resume": "suspend 1 s / resume, 5 times (suspended time subtracted)",
        "throttle": "every 10th SES call throttled (from 10 % to 60 % of the plan)",
        "sigkill_delete": "a sender SIGKILLed, the plan deleted (stopped) 0.5 s later",
    }
    lines = [
        "## Faults",
        "",
        f"Run {started}: {args.n:,} recipients at {args.rate:.0f}/s, {args.pods} worker processes with "
        f"{args.concurrency} send slots each, SES stand-in answering after {args.latency * 1000:.0f} ms; "
        f"{args.runs} interleaved rounds (every fault once per round), min / median / max; "
        "x no-fault divides each run by the no-fault run of its round. "
        "`bench/fault_bench.py` reproduces it.",
        "",
        "| fault | lost | repeated | in flight at the kills (not yet answered) | time to Completed s "
        "| x no-fault | target | sums hold, none processing |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for fault, rs in runs.items():
        flight = (
            f"{spread([r.in_flight for r in rs])} ({spread([r.unanswered for r in rs])})"
            if fault.startswith("sigkill")
            else "—"
        )
        lost = (
            "SES minus ledger sent: " + spread([r.extra.get("ses_minus_ledger", 0) for r in rs])
            if fault == "sigkill_delete"
            else spread([r.lost for r in rs])
        )
        ratio = (
            spread([r.seconds / b for r, b in zip(rs, bases, strict=False) if b], "{:.2f}")
            if bases and fault != "sigkill_delete"
            else "—"
        )
        ok = all(r.sums_hold and r.processing_left == 0 for r in rs)
        lines.append(
            f"| {names[fault]} | {lost} | {spread([r.repeated for r in rs])} | {flight} "
            f"| {spread([r.seconds for r in rs], '{:.1f}')} | {ratio} | {TARGETS.get(fault, '')} "
            f"| {'yes' if ok else '**no**'} |"
        )
    if runs.get("throttle"):
        back = [b for b in (recovery_seconds(r, args.rate) for r in runs["throttle"]) if b is not None]
        lines += [
            "",
            "Back at 90 % of the configured rate (3 s average) this many seconds after throttling "
            f"stopped: {spread(back, '{:.0f}')} (target ≤ 10).",
            "",
            "Accepted sends per second in the first throttle run:",
            "",
            throttle_curve(runs["throttle"][0], args.rate),
        ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace the '## Faults' section of docs/benchmarks.md where it stands (or append it).

    Only the generated section is replaced: the reading of the numbers lives in a
    section of its own after it, written by a person.
    """
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    parts = re.split(r"(?m)^(?=## )", text)
    new = section.rstrip() + "\n\n"
    if any(p.startswith("## Faults\n") for p in parts):
        parts = [new if p.startswith("## Faults\n") else p for p in parts]
    else:
        parts.append(new)
    path.write_text("".join(parts).rstrip() + "\n")


async def main_async(args: argparse.Namespace) -> None:
    from emailplan.sender.migrate import upgrade_to

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    bench = Bench(args)
    runs: dict[str, list[Run]] = {}
    try:
        await asyncio.to_thread(upgrade_to, bench.pg.url)
        # Interleaved rounds (every fault once per round), so a slow spell of this shared
        # machine hits a round, not one fault; ratios are taken within each round.
        faults = list(args.only or FAULTS)
        if "none" not in faults:
            faults.insert(0, "none")
        for _ in range(args.runs):
            for fault in faults:
                runs.setdefault(fault, []).append(await bench.one(fault))
    finally:
        bench.close()
    section = report(runs, args, started)
    print(section)
    if args.out:
        write_section(Path(args.out), section)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10_000, help="recipients")
    parser.add_argument("--rate", type=float, default=200.0, help="plan rate /s")
    parser.add_argument("--pods", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=32, help="send slots per worker")
    parser.add_argument("--latency", type=float, default=0.03, help="SES stand-in answer latency (s)")
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs in the sigkill fault")
    parser.add_argument("--db-down", type=float, default=10.0, help="seconds PostgreSQL is down, twice")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=900.0, help="give up on a run after this long")
    parser.add_argument("--only", action="append", choices=FAULTS)
    parser.add_argument("--out", default=None, help="markdown file to update (section '## Faults')")
    parser.add_argument("--logdir", default="/tmp/fault-bench-logs")
    parser.add_argument("--serve-ses", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_ses:
        serve_ses(int(args.serve_ses[0]), float(args.serve_ses[1]))
        return
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
