"""Sender benchmarks: throughput, CPU per email, rate accuracy, recipient ingest.

Everything runs on loopback with real parts: a private PostgreSQL, moto for SQS,
and a minimal SES v2 endpoint (aiohttp, answers SendEmail like SES does) in its
own process so its CPU is not charged to the worker. Each number is reported
with a baseline measured in the same run, so results from different machines
compare as ratios:

* throughput: one ``emailplan worker`` process vs the plain aiobotocore SES v2
  client (32 in flight) against the same endpoint;
* rate: measured vs configured plan rate (14/s and 500/s, 1, 2 and 4 workers);
* ingest: ``loading.insert_recipients`` (validated, deduplicated, counted) vs a
  raw asyncpg COPY of the same rows, into an unindexed unlogged table (what the rows
  cost) and into the ledger's ``messages`` table (what storing them there costs).

    .venv/bin/python bench/sender_bench.py [--quick] [--out docs/benchmarks.md]
    .venv/bin/python bench/sender_bench.py --only rate [--rate-seconds 16] [--repeat 3]
    .venv/bin/python bench/sender_bench.py --only ingest [--ingest-rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack"))
sys.path.insert(0, str(ROOT / "bench"))

from procstat import Charged  # noqa: E402

EXE = str(Path(sys.executable).with_name("emailplan"))
SPEC = {
    "from": "News <news@example.com>",
    "subject": "Hello {{ name }}",
    "html": "<p>Hi {{ name }}, your code is {{ code }}</p>" + "<p>Lorem ipsum dolor sit amet.</p>" * 40,
    "text": "Hi {{ name }}, your code is {{ code }}",
    "tracking": {"opens": True, "clicks": True},
}


# ----------------------------------------------------------------------------- SES stub


def serve_stub(port: int) -> None:
    """A minimal SES v2 SendEmail endpoint (no cap): checks the request shape, answers a MessageId."""
    from aiohttp import web

    async def send(request: web.Request) -> web.Response:
        body = await request.json()
        if "Raw" not in body.get("Content", {}) or "Authorization" not in request.headers:
            return web.json_response({"__type": "BadRequestException", "message": "bad"}, status=400)
        return web.json_response({"MessageId": uuid.uuid4().hex})

    async def template(request: web.Request) -> web.Response:
        return web.json_response({})

    async def bulk(request: web.Request) -> web.Response:
        """SendBulkEmail: one SUCCESS per entry (rate runs with ``--send-api bulk``)."""
        body = await request.json()
        entries = body.get("BulkEmailEntries", [])
        if not 1 <= len(entries) <= 50 or "Authorization" not in request.headers:
            return web.json_response({"__type": "BadRequestException", "message": "bad"}, status=400)
        results = [{"Status": "SUCCESS", "MessageId": uuid.uuid4().hex} for _ in entries]
        return web.json_response({"BulkEmailEntryResults": results})

    app = web.Application()
    app.router.add_post("/v2/email/outbound-emails", send)
    app.router.add_post("/v2/email/templates", template)
    app.router.add_post("/v2/email/outbound-bulk-emails", bulk)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def start_stub() -> tuple[subprocess.Popen[bytes], str]:
    from devenv.ports import free_port, port_open, wait_for

    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-stub", str(port)])
    wait_for(lambda: port_open(port), 20, "SES stub")
    return proc, f"http://127.0.0.1:{port}"


# ----------------------------------------------------------------------------- helpers


def child_cpu(cmd: list[str], env: dict[str, str]) -> tuple[int, float]:
    """Run ``cmd``: (exit code, user+system CPU seconds of every process it ran, forked ones
    that outlived it included: ``procstat.Charged``)."""
    return Charged(cmd, env=env).wait()


async def make_plan(url: str, n: int, rate: float, spec: dict[str, Any] | None = None) -> uuid.UUID:
    from emailplan.sender.db import make_engine
    from emailplan.sender.settings import SenderSettings
    from emailplan.sender.store import loading, plans
    from emailplan.sender.workqueue import WorkQueue

    engine = make_engine(url=url, pool_size=2)
    plan_id = uuid.uuid4()
    await plans.upsert_plan(
        engine, plan_id, name="bench", namespace="b", spec=spec or SPEC, rate_per_second=rate
    )
    rows = (
        (i, {"email": f"u{i}@example.com", "name": f"N{i}", "vars": {"code": str(i)}})
        for i in range(1, n + 1)
    )
    await loading.insert_recipients(engine, plan_id, rows)
    async with WorkQueue.open(SenderSettings()) as queue:
        await loading.complete_recipients(engine, plan_id, queue)
    await engine.dispose()
    return plan_id


async def sent_span(url: str, plan_id: uuid.UUID) -> tuple[int, float]:
    """(messages sent, seconds between the first and the last send) from the ledger."""
    from sqlalchemy import text

    from emailplan.sender.db import make_engine

    engine = make_engine(url=url, pool_size=1)
    async with engine.connect() as conn:
        n, first, last = (
            await conn.execute(
                text(
                    "SELECT count(*), min(sent_at), max(sent_at) FROM messages "
                    "WHERE plan_id = :p AND status = 'sent'"
                ),
                {"p": plan_id},
            )
        ).one()
    await engine.dispose()
    return int(n), (last - first).total_seconds() if n > 1 else 0.0


def worker_env(url: str, plan_id: uuid.UUID, ses_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "EMAILPLAN_DATABASE_URL": url,
        "EMAILPLAN_PLAN_ID": str(plan_id),
        "EMAILPLAN_SES_ENDPOINT_URL": ses_url,
        "EMAILPLAN_METRICS_PORT": "0",
        "EMAILPLAN_MAX_SEND_RATE": "100000",
        "EMAILPLAN_EXIT_WHEN_IDLE": "true",
        "EMAILPLAN_POLL_WAIT_SECONDS": "1",
        "EMAILPLAN_FLUSH_SECONDS": "1",
        "EMAILPLAN_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        "EMAILPLAN_DEV_MODE": "1",  # built-in development keys: a local benchmark
        **extra,
    }


# ----------------------------------------------------------------------------- benchmarks


async def baseline_client(ses_url: str, n: int, in_flight: int = 32) -> tuple[float, float]:
    """Plain aiobotocore SES v2 SendEmail (Raw), ``in_flight`` concurrent: (calls/s, CPU s per 1000)."""
    from aiobotocore.session import get_session

    from emailplan.sender.rendering import compile_plan, render
    from emailplan.sender.tokens import make_token

    plan = compile_plan(SPEC, "bench")
    raw = render(
        plan,
        message_id=1,
        email="u@example.com",
        name="N",
        variables={"code": "1"},
        public_url="https://x",
        sign=functools.partial(make_token, b"k"),
    ).raw
    session = get_session()
    from botocore.config import Config

    async with session.create_client(
        "sesv2", region_name="us-east-1", endpoint_url=ses_url, config=Config(max_pool_connections=in_flight)
    ) as client:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n):
            queue.put_nowait(i)

        async def one() -> None:
            while not queue.empty():
                queue.get_nowait()
                await client.send_email(FromEmailAddress="news@example.com", Content={"Raw": {"Data": raw}})

        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*[one() for _ in range(in_flight)])
        cpu1, t1 = time.process_time(), time.perf_counter()
    return n / (t1 - t0), (cpu1 - cpu0) / n * 1000


async def bench_throughput(url: str, ses_url: str, n: int) -> dict[str, Any]:
    plan_id = await make_plan(url, n, rate=100000)
    env = worker_env(
        url, plan_id, ses_url, EMAILPLAN_WORKER_CONCURRENCY=os.environ.get("BENCH_CONCURRENCY", "64")
    )
    t0 = time.perf_counter()
    code, cpu = child_cpu([EXE, "worker", "--processes", "1"], env)
    wall = time.perf_counter() - t0
    sent, span = await sent_span(url, plan_id)
    base_rate, base_cpu = await baseline_client(ses_url, min(n, 10000))
    rate = sent / span if span else 0.0
    return {
        "n": n,
        "exit": code,
        "sent": sent,
        "wall_s": wall,
        "rate": rate,
        "cpu_per_1000": cpu / max(sent, 1) * 1000,
        "baseline_rate": base_rate,
        "baseline_cpu_per_1000": base_cpu,
    }


async def bench_rate(
    url: str, ses_url: str, rate: float, workers: int, seconds: float, send_api: str = "raw"
) -> dict[str, Any]:
    n = int(rate * seconds)
    plan_id = await make_plan(url, n, rate=rate, spec={**SPEC, "ses": {"sendApi": send_api}})
    env = worker_env(url, plan_id, ses_url, EMAILPLAN_WORKER_CONCURRENCY="32")
    procs = [subprocess.Popen([EXE, "worker"], env=env) for _ in range(workers)]
    for p in procs:
        p.wait(600)
    sent, span = await sent_span(url, plan_id)
    # Steady-state rate: n-1 intervals; the shared bucket starts empty (no initial burst beyond rate/2).
    measured = (sent - 1) / span if span else 0.0
    return {
        "rate": rate,
        "workers": workers,
        "sent": sent,
        "span_s": span,
        "measured": measured,
        "ratio": measured / rate,
        "send_api": send_api,
    }


def ingest_child(url: str, n: int, mode: str) -> None:
    """Run in a subprocess: ingest ``n`` rows, print JSON with seconds and peak RSS."""

    async def run() -> dict[str, Any]:
        from emailplan.contract.plans import ALL_RELEASED
        from emailplan.sender.db import make_engine
        from emailplan.sender.store import loading, plans

        rows = (
            (i, {"email": f"user{i}@example.com", "name": f"User {i}", "vars": {"code": f"C{i}"}})
            for i in range(1, n + 1)
        )
        engine = make_engine(url=url, pool_size=2)
        t0 = time.perf_counter()
        if mode in ("ledger", "ledger-split"):
            # "ledger-split": a plan that splits its list (a rollout's first 10 %), whose rows
            # also go into the bucket index (migration 0013); "ledger": one that sends it whole.
            plan_id = uuid.uuid4()
            release = 10.0 if mode == "ledger-split" else ALL_RELEASED
            await plans.upsert_plan(
                engine, plan_id, name="ingest", namespace="b", spec=SPEC, release_percent=release
            )
            result = await loading.insert_recipients(engine, plan_id, rows)
            extra = {"accepted": result.accepted, "rejected": result.rejected}
        else:
            # "copy": what PostgreSQL needs for the bare rows (an unlogged table without indexes);
            # "copy-ledger": what it needs to store them in the ledger's own table (its indexes,
            # its computed cohort bucket, write-ahead log), one transaction per batch as the
            # loader commits. The loader's own cost is the difference to the second.
            import json as _json

            table, columns = "copy_baseline", ["row_no", "email", "name", "vars"]
            prefix: tuple[Any, ...] = ()
            suffix: tuple[Any, ...] = ()
            if mode == "copy-ledger":
                plan_id = uuid.uuid4()
                await plans.upsert_plan(engine, plan_id, name="ingest", namespace="b", spec=SPEC)
                table, columns = "messages", ["plan_id", *columns, "status"]
                prefix, suffix = (plan_id,), ("created",)
            async with engine.connect() as conn:
                raw = await conn.get_raw_connection()
                pg = raw.driver_connection
                await pg.execute(
                    "CREATE UNLOGGED TABLE IF NOT EXISTS copy_baseline "
                    "(row_no int, email text, name text, vars jsonb)"
                )
                await conn.commit()
                batch: list[tuple[Any, ...]] = []
                for i, r in rows:
                    batch.append((*prefix, i, r["email"], r["name"], _json.dumps(r["vars"]), *suffix))
                    if len(batch) == loading.INSERT_BATCH:
                        async with pg.transaction():
                            await pg.copy_records_to_table(table, records=batch, columns=columns)
                        batch = []
                if batch:
                    async with pg.transaction():
                        await pg.copy_records_to_table(table, records=batch, columns=columns)
            extra = {}
        seconds = time.perf_counter() - t0
        await engine.dispose()
        return {"seconds": seconds, **extra}

    out = asyncio.run(run())
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the (bigger) parent.
    status = Path("/proc/self/status").read_text()
    out["max_rss_mb"] = (
        int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmHWM:"))) / 1024
    )
    print(json.dumps(out))


INGEST_MODES = ("copy", "copy-ledger", "ledger", "ledger-split")


async def _empty_tables(url: str) -> None:
    """Every ingest run starts on empty tables, so no run pays for the index pages an earlier one grew."""
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute("TRUNCATE messages; DROP TABLE IF EXISTS copy_baseline")
    finally:
        await conn.close()


async def bench_ingest(url: str, n: int, rounds: int) -> dict[str, Any]:
    """``rounds`` interleaved rounds (the order reverses every round), each run in a fresh process."""
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in INGEST_MODES}
    for round_no in range(rounds):
        for mode in INGEST_MODES if round_no % 2 == 0 else INGEST_MODES[::-1]:
            await _empty_tables(url)
            out = subprocess.run(
                [sys.executable, __file__, "--ingest-child", url, str(n), mode],
                check=True,
                capture_output=True,
                text=True,
            )
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"n": n, "rounds": rounds, **runs}


def spread(values: list[float], fmt: str) -> str:
    """Median (min-max)."""
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


# ----------------------------------------------------------------------------- report


def report(tp: dict[str, Any], rates: list[dict[str, Any]], ingest: dict[str, Any], started: str) -> str:
    lines = [
        "## Sender",
        "",
        f"Run {started} on {os.cpu_count()} cores shared with the other servers of the run (PostgreSQL,",
        "moto SQS, the SES stub) and whatever else the machine was doing (other builds and test suites);",
        "`bench/sender_bench.py --out docs/benchmarks.md` reproduces it.",
        "",
        "### Throughput of one worker process (no rate cap, stub SES v2 endpoint)",
        "",
        "| measure | worker | baseline: plain aiobotocore sesv2 client, 32 in flight | ratio |",
        "| --- | --- | --- | --- |",
        f"| emails/s | {tp['rate']:.0f} | {tp['baseline_rate']:.0f} calls/s "
        f"| {tp['rate'] / tp['baseline_rate']:.2f} |",
        f"| CPU s per 1000 emails | {tp['cpu_per_1000']:.2f} | {tp['baseline_cpu_per_1000']:.2f} "
        f"| {tp['cpu_per_1000'] / tp['baseline_cpu_per_1000']:.2f} |",
        "",
        f"{tp['sent']} of {tp['n']} emails sent, worker exit {tp['exit']}, wall time {tp['wall_s']:.1f} s "
        "including start-up and the final idle check. The worker does everything the baseline does not: SQS "
        "intake, ledger claims and leases, shared rate bucket, rendering (sandboxed Jinja2, tracking, MIME), "
        "batched result writes.",
        "Target ≥ 1000 emails/s: " + ("met." if tp["rate"] >= 1000 else "**missed**."),
        "",
        "### Rate held across pods (stub SES, measured from ledger `sent_at`)",
        "",
        "| configured /s | workers | sent | measured /s | measured / configured |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rates:
        lines.append(
            f"| {r['rate']:.0f} | {r['workers']} | {r['sent']} | {r['measured']:.1f} | {r['ratio']:.3f} |"
        )
    lines += ingest_report(ingest)
    return "\n".join(lines)


def ingest_report(ingest: dict[str, Any]) -> list[str]:
    """The ingest table: median (min-max) of every figure and of the per-round ratios."""
    led, cp, cpl = ingest["ledger"], ingest["copy"], ingest["copy-ledger"]

    def row(key: str, fmt: str, mode: str = "ledger") -> str:
        ours, bare, stored = ([r[key] for r in runs] for runs in (ingest[mode], cp, cpl))
        vs_bare = [a / b for a, b in zip(ours, bare, strict=True)]
        vs_stored = [a / b for a, b in zip(ours, stored, strict=True)]
        label = key if mode == "ledger" else f"{key}, a plan that splits its list (rows in the bucket index)"
        return (
            f"| {label} | {spread(ours, fmt)} | {spread(bare, fmt)} | {spread(vs_bare, '.2f')} "
            f"| {spread(stored, fmt)} | {spread(vs_stored, '.2f')} |"
        )

    worst_s, worst_mb = max(r["seconds"] for r in led), max(r["max_rss_mb"] for r in led)
    return [
        "",
        f"### Ingest of {ingest['n']:,} recipients ({ingest['rounds']} interleaved rounds: median (min-max); "
        "ratios per round)",
        "",
        "| measure | `loading.insert_recipients` (validate, dedupe, suppress, count) | baseline: raw COPY "
        "into an unlogged table without indexes | ratio | baseline: raw COPY into the ledger's "
        "`messages` table | ratio |",
        "| --- | --- | --- | --- | --- | --- |",
        row("seconds", ".1f"),
        row("seconds", ".1f", "ledger-split"),
        row("max_rss_mb", ".0f"),
        "",
        "Targets < 60 s and < 200 MB in every round: "
        + ("time met" if worst_s < 60 else "time **missed**")
        + ", "
        + ("memory met." if worst_mb < 200 else "memory **missed**."),
        "",
    ]


def write_section(path: Path, section: str) -> None:
    """Replace (or add) the '## Sender' section of docs/benchmarks.md, keeping other sections."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    start = text.find("## Sender")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + ("\n" + text[end + 1 :] if end >= 0 else "")
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)


async def main_async(args: argparse.Namespace) -> None:
    from devenv.moto import MotoServer
    from devenv.postgres import PostgresServer
    from emailplan.sender.migrate import upgrade_to

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    parts = set(args.only or ["throughput", "rate", "ingest"])
    tp: dict[str, Any] = {}
    ingest: dict[str, Any] = {}
    pg = PostgresServer().start()
    moto = MotoServer().start()
    stub, ses_url = start_stub()
    os.environ.update(moto.env())
    try:
        await asyncio.to_thread(upgrade_to, pg.url)
        if "throughput" in parts:
            tp = await bench_throughput(pg.url, ses_url, 5000 if args.quick else 20000)
            print(json.dumps(tp), flush=True)
        rates = []
        if "rate" in parts:
            for rate, seconds in ((14.0, 10.0), (500.0, 8.0)):
                if rate not in args.rates:
                    continue
                for workers in args.workers:
                    for _ in range(args.repeat):
                        span = (args.rate_seconds or seconds) / (2 if args.quick else 1)
                        r = await bench_rate(pg.url, ses_url, rate, workers, span, args.send_api)
                        print(json.dumps(r), flush=True)
                        rates.append(r)
        if "ingest" in parts:
            ingest = await bench_ingest(pg.url, 100_000 if args.quick else 1_000_000, args.ingest_rounds)
            print(json.dumps(ingest), flush=True)
    finally:
        stub.terminate()
        moto.stop()
        pg.cleanup()
    if parts == {"ingest"}:
        print("\n".join(ingest_report(ingest)))
    if parts != {"throughput", "rate", "ingest"}:
        return  # a partial run prints its JSON lines (and the ingest table); the report needs every part
    section = report(tp, rates, ingest, started)
    print(section)
    if args.out:
        write_section(Path(args.out), section)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller runs (smoke test)")
    parser.add_argument("--out", default=None, help="markdown file to update (section '## Sender')")
    parser.add_argument(
        "--only",
        action="append",
        choices=["throughput", "rate", "ingest"],
        help="run only these parts (repeatable); prints JSON lines, writes no report",
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="worker counts (rate part)")
    parser.add_argument(
        "--rates", type=float, nargs="+", default=[14.0, 500.0], help="plan rates (rate part)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per rate and worker count")
    parser.add_argument("--ingest-rounds", type=int, default=3, help="interleaved rounds of the ingest part")
    parser.add_argument("--send-api", choices=["raw", "bulk"], default="raw", help="the plans' ses.sendApi")
    parser.add_argument(
        "--rate-seconds",
        type=float,
        default=None,
        help="planned seconds per rate run (default 10 at 14/s, 8 at 500/s)",
    )
    parser.add_argument("--serve-stub", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ingest-child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_stub:
        serve_stub(args.serve_stub)
        return
    if args.ingest_child:
        url, n, mode = args.ingest_child
        ingest_child(url, int(n), mode)
        return
    tempfile.tempdir = tempfile.gettempdir()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
