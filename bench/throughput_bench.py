"""Side by side: one sender pod (``emailplan worker --processes N``) against the Go service it replaces.

Both send the same number of emails to the same SES v2 stub (``bench/sesstub``, Go, standard
library only, built here with the machine's Go) in interleaved rounds, so machine load that
comes and goes hits both alike. Per round and side:

* emails/s: (accepted - 1) / (last - first accept) as the stub timed them;
* CPU-ms per email of the sender: its process tree from the first accepted send until it
  exited (``os.wait4`` charges the processes it reaped);
* CPU-ms per email of everything the pipeline runs: the sender plus the stub, and for the
  pod PostgreSQL and the local SQS (moto) too; the Go service keeps its queue in SQLite
  inside its own process;
* the whole machine's busy CPU over the window (everything else on it included) as a noise gauge.

The Go service is aws-ses-sender-go, built from its public source (``--seed-src DIR``,
``go build``; needs only the Go module proxy) or given as a binary (``--seed-binary PATH``).
Its code is never part of this project. How it runs here: SQLite file in a temporary
directory (``DB_PATH``) filled with the requests before its scheduler's first tick (the
scheduler claims work once a minute, so each of its rounds waits up to 60 s first),
``EMAIL_RATE`` raised far above what the machine can do, ``MAX_CONCURRENT`` equal to the
pod's sends in flight, SES endpoint pointed at the stub with ``AWS_ENDPOINT_URL``.

    ./hack/bench.sh throughput -- --seed-src /tmp/seed-src [--rounds 3] [--emails 20000]
    .venv/bin/python bench/throughput_bench.py --seed-binary ./aws-ses-sender [--processes 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack"))
sys.path.insert(0, str(ROOT / "bench"))

from procstat import machine_busy_seconds, tree_cpu  # noqa: E402
from sender_bench import make_plan  # noqa: E402

EXE = str(Path(sys.executable).with_name("emailplan"))
GO = os.environ.get("GO", "/usr/local/go/bin/go")
SPEC = {
    "from": "News <news@example.com>",
    "subject": "Hello {{ name }}",
    "html": '<p>Hi {{ name }}, your code is {{ code }}</p><a href="https://shop.example.com/">shop</a>'
    + "<p>Lorem ipsum dolor sit amet.</p>" * 40,
    "text": "Hi {{ name }}, your code is {{ code }}",
    "tracking": {"opens": True, "clicks": True},
    "unsubscribe": {"enabled": True},
}
POLL = 0.02
SECTION = "## Side by side with aws-ses-sender-go (sender throughput)"
NOTES = "<!-- notes below this line are kept when the benchmark rewrites the section -->"


@dataclass
class Round:
    side: str
    round: int
    emails: int
    rate: float
    sender_cpu_ms: float
    pipeline_cpu_ms: float
    machine_busy_ms: float
    exit: int


# ----------------------------------------------------------------------------- building


def go_build(src: Path, out: Path, *, offline: bool) -> Path:
    """``go build`` ``src`` into ``out`` (the stub needs no module; the seed needs the module proxy)."""
    env = {**os.environ, "CGO_ENABLED": "1", "GOTOOLCHAIN": "local"}
    if offline:
        env["GOPROXY"] = "off"
    print(f"building {src} ...", file=sys.stderr, flush=True)
    subprocess.run([GO, "build", "-o", str(out), "."], cwd=src, env=env, check=True)
    return out


class Stub:
    """The SES v2 stub process and its counters."""

    def __init__(self, binary: Path) -> None:
        self.proc = subprocess.Popen([str(binary)], stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().split()
        self.url = f"http://{line[1]}"

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=5) as r:
            return dict(json.loads(r.read()))

    def reset(self) -> None:
        req = urllib.request.Request(f"{self.url}/reset", method="POST")
        urllib.request.urlopen(req, timeout=5).close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def wait_count(stub: Stub, n: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Poll the stub until it has accepted ``n`` sends; False if ``proc`` exited or time ran out."""
    deadline = time.monotonic() + timeout
    while stub.stats()["count"] < n:
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(POLL)
    return True


def rate_of(stats: dict[str, int]) -> float:
    span = (stats["last_ns"] - stats["first_ns"]) / 1e9
    return (stats["count"] - 1) / span if span > 0 else 0.0


def measured(
    side: str, rnd: int, stats: dict[str, int], sender_s: float, others_s: float, busy_s: float, code: int
) -> Round:
    """One round's figures per email from CPU seconds over the window and the stub's counters."""
    n = max(1, stats["count"])
    return Round(
        side=side,
        round=rnd,
        emails=stats["count"],
        rate=rate_of(stats),
        sender_cpu_ms=sender_s / n * 1000,
        pipeline_cpu_ms=(sender_s + others_s) / n * 1000,
        machine_busy_ms=busy_s / n * 1000,
        exit=code,
    )


def waited_cpu(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    """Wait for ``proc``: (exit code, CPU seconds of it and every descendant it reaped)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


# ----------------------------------------------------------------------------- the pod


async def ledger_sent(url: str, plan_id: uuid.UUID) -> int:
    from emailplan.sender.db import make_engine
    from emailplan.sender.store import ledger

    engine = make_engine(url=url, pool_size=1)
    counts = await ledger.get_counts(engine, plan_id) or {}
    await engine.dispose()
    return int(counts.get("sent", 0))


def run_pod(
    args: argparse.Namespace,
    rnd: int,
    stub: Stub,
    pg: Any,
    moto: Any,
    processes: int,
    send_api: str,
    side: str,
) -> Round:
    n = args.emails
    spec = {**SPEC, "ses": {"sendApi": send_api}}
    plan_id = asyncio.run(make_plan(pg.url, n, rate=1e6, spec=spec))
    stub.reset()
    env = {
        **os.environ,
        "EMAILPLAN_DATABASE_URL": pg.url,
        "EMAILPLAN_PLAN_ID": str(plan_id),
        "EMAILPLAN_SES_ENDPOINT_URL": stub.url,
        "EMAILPLAN_METRICS_PORT": "0",
        "EMAILPLAN_MAX_SEND_RATE": "1000000",
        "EMAILPLAN_EXIT_WHEN_IDLE": "true",
        "EMAILPLAN_POLL_WAIT_SECONDS": "1",
        "EMAILPLAN_FLUSH_SECONDS": "1",
        "EMAILPLAN_WORKER_CONCURRENCY": str(max(1, args.in_flight // processes)),
        "EMAILPLAN_PUBLIC_URL": "https://mail.example.org",
        "EMAILPLAN_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        "EMAILPLAN_DEV_MODE": "1",  # built-in development keys: a local benchmark
    }
    cmd = [EXE, "worker", "--processes", str(processes)]
    if os.environ.get("BENCH_PROFILE"):  # one process under cProfile, stats written to that file
        cmd = [sys.executable, "-m", "cProfile", "-o", os.environ["BENCH_PROFILE"], "-m", "emailplan.cli"]
        cmd += ["worker", "--processes", "1"]
    proc = subprocess.Popen(cmd, env=env)
    others = [pg.proc.pid, moto.proc.pid, stub.proc.pid]
    wait_count(stub, 1, proc, 300)
    sender0 = tree_cpu(proc.pid)
    others0 = sum(tree_cpu(p) for p in others)
    busy0 = machine_busy_seconds()
    wait_count(stub, n, proc, 600)
    busy1 = machine_busy_seconds()
    code, sender_total = waited_cpu(proc)
    others1 = sum(tree_cpu(p) for p in others)
    stats = stub.stats()
    sent = asyncio.run(ledger_sent(pg.url, plan_id))
    if sent != n or stats["count"] != n:
        print(f"pod round {rnd}: ledger sent {sent}, stub {stats['count']}, of {n}", file=sys.stderr)
    return measured(side, rnd, stats, sender_total - sender0, others1 - others0, busy1 - busy0, code)


# ----------------------------------------------------------------------------- the Go service


def fill_sqlite(path: Path, n: int, html: str, subject: str) -> None:
    """The Go service's own tables (created by its AutoMigrate), filled as its API would."""
    now = datetime.now(UTC).replace(tzinfo=None)
    stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")
    due = (now - timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
    db = sqlite3.connect(path, timeout=30)
    with db:
        db.execute(
            "INSERT INTO email_contents (created_at, updated_at, subject, content) VALUES (?, ?, ?, ?)",
            (stamp, stamp, subject, html),
        )
        content_id = db.execute("SELECT max(id) FROM email_contents").fetchone()[0]
        db.executemany(
            "INSERT INTO email_requests (created_at, updated_at, topic_id, message_id, "
            '"to", content_id, scheduled_at, status, error) '
            "VALUES (?, ?, 'bench', '', ?, ?, ?, 0, '')",
            ((stamp, stamp, f"u{i}@example.com", content_id, due) for i in range(1, n + 1)),
        )
    db.close()


def sqlite_sent(path: Path) -> int:
    db = sqlite3.connect(path, timeout=30)
    try:
        return int(db.execute("SELECT count(*) FROM email_requests WHERE status = 2").fetchone()[0])
    finally:
        db.close()


def run_seed(args: argparse.Namespace, rnd: int, stub: Stub, binary: Path) -> Round:
    from devenv.ports import free_port, port_open, wait_for

    n = args.emails
    stub.reset()
    with tempfile.TemporaryDirectory(prefix="seed-") as tmp:
        db_path = Path(tmp) / "app.db"
        port = free_port()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": tmp,
            "DB_PATH": str(db_path),
            "SERVER_PORT": str(port),
            "SERVER_HOST": "https://mail.example.org",
            "ENV": "bench",
            "EMAIL_RATE": "1000000",
            "MAX_CONCURRENT": str(args.in_flight),
            "EMAIL_SENDER": "news@example.com",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_ENDPOINT_URL": stub.url,
        }
        log = open(Path(tmp) / "seed.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([str(binary)], cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: port_open(port), 60, "aws-ses-sender-go")
            html = SPEC["html"].replace("{{ name }}", "N1").replace("{{ code }}", "1")
            fill_sqlite(db_path, n, html, "Hello N1")
            print(f"seed round {rnd}: waiting for its scheduler's first tick (60 s)", file=sys.stderr)
            if not wait_count(stub, 1, proc, 120):
                raise RuntimeError(
                    "aws-ses-sender-go sent nothing: " + (Path(tmp) / "seed.log").read_text()[-2000:]
                )
            sender0 = tree_cpu(proc.pid)
            stub0 = tree_cpu(stub.proc.pid)
            busy0 = machine_busy_seconds()
            wait_count(stub, n, proc, 600)
            deadline = time.monotonic() + 30
            while sqlite_sent(db_path) < n and time.monotonic() < deadline:
                time.sleep(POLL)  # its status update follows each send
            busy1 = machine_busy_seconds()
            stub1 = tree_cpu(stub.proc.pid)
            proc.send_signal(signal.SIGTERM)
            code, sender_total = waited_cpu(proc)
            sent = sqlite_sent(db_path)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            log.close()
    stats = stub.stats()
    if sent != n or stats["count"] != n:
        print(f"seed round {rnd}: sqlite sent {sent}, stub {stats['count']}, of {n}", file=sys.stderr)
    return measured("go", rnd, stats, sender_total - sender0, stub1 - stub0, busy1 - busy0, code)


# ----------------------------------------------------------------------------- report


def spread(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def report(rounds: list[Round], args: argparse.Namespace, started: str, command: str) -> str:
    pod = [r for r in rounds if r.side == "pod"]
    go = [r for r in rounds if r.side == "go"]
    lines = [
        SECTION,
        "",
        f"Run {started}, {len(pod)} interleaved rounds of {args.emails:,} emails per side, "
        f"{os.cpu_count()} cores shared with everything else on the machine. Command:",
        "",
        f"    {command}",
        "",
        "Median (min-max) over the rounds:",
        "",
        "| measure | emailplan pod "
        f"({args.processes} processes, {args.in_flight} in flight, sendApi {args.send_api}) | "
        f"aws-ses-sender-go (MAX_CONCURRENT {args.in_flight}) | "
        "ratio pod / Go (median of per-round ratios) |",
        "| --- | --- | --- | --- |",
    ]
    pairs = list(zip(pod, go, strict=False))
    rows = [
        ("emails/s", "rate", ".0f"),
        ("sender CPU-ms per email", "sender_cpu_ms", ".3f"),
        (
            "pipeline CPU-ms per email (sender + stub, + PostgreSQL + SQS for the pod)",
            "pipeline_cpu_ms",
            ".3f",
        ),
        ("whole machine busy CPU-ms per email (everything running, noise gauge)", "machine_busy_ms", ".3f"),
    ]
    for title, key, fmt in rows:
        mine = [getattr(r, key) for r in pod]
        theirs = [getattr(r, key) for r in go]
        ratio = (
            spread([getattr(a, key) / getattr(b, key) for a, b in pairs if getattr(b, key)], ".2f")
            if pairs
            else "-"
        )
        mine_s = spread(mine, fmt) if mine else "-"
        theirs_s = spread(theirs, fmt) if theirs else "-"
        lines.append(f"| {title} | {mine_s} | {theirs_s} | {ratio} |")
    extra = [r for r in rounds if r.side.startswith("pod-")]
    if extra and pod:
        ratios = [a.rate / b.rate for a, b in zip(pod, extra, strict=False) if b.rate]
        lines += [
            "",
            f"Same pod with {extra[0].side[4:]} process(es), interleaved with the rounds above: "
            f"{spread([r.rate for r in extra], '.0f')} emails/s, sender "
            f"{spread([r.sender_cpu_ms for r in extra], '.3f')} CPU-ms per email; "
            f"{args.processes} processes / {extra[0].side[4:]}: {spread(ratios, '.2f')} times the emails/s.",
        ]
    other = [r for r in rounds if r.side in ("raw", "bulk")]
    if other and pod:
        go_by_round = {r.round: r for r in go}
        vs_go = [
            r.pipeline_cpu_ms / go_by_round[r.round].pipeline_cpu_ms for r in other if r.round in go_by_round
        ]
        lines += [
            "",
            f"Same pod with sendApi {other[0].side}, interleaved with the rounds above: "
            f"{spread([r.rate for r in other], '.0f')} emails/s, sender "
            f"{spread([r.sender_cpu_ms for r in other], '.3f')} CPU-ms per email, pipeline "
            f"{spread([r.pipeline_cpu_ms for r in other], '.3f')} CPU-ms per email"
            + (f" ({spread(vs_go, '.2f')} times the Go service's)." if vs_go else "."),
        ]
    lines += [
        "",
        "Rounds in the order they ran:",
        "",
        "| round | side | emails | emails/s | sender CPU-ms | pipeline CPU-ms | machine busy CPU-ms | exit |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rounds:
        lines.append(
            f"| {r.round} | {r.side} | {r.emails} | {r.rate:.0f} | {r.sender_cpu_ms:.3f} | "
            f"{r.pipeline_cpu_ms:.3f} | {r.machine_busy_ms:.3f} | {r.exit} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seed-src", type=Path, default=None, help="aws-ses-sender-go source directory to build"
    )
    parser.add_argument("--seed-binary", type=Path, default=None, help="a built aws-ses-sender-go binary")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--emails", type=int, default=20000)
    parser.add_argument("--processes", type=int, default=2, help="worker processes in the pod")
    parser.add_argument(
        "--also-processes", type=int, default=None, help="also run the pod with this many processes"
    )
    parser.add_argument("--in-flight", type=int, default=64, help="sends in flight, each side")
    parser.add_argument(
        "--send-api",
        choices=["raw", "bulk"],
        default="raw",
        help="the pod's ses.sendApi (raw: one call an email)",
    )
    parser.add_argument(
        "--also-send-api",
        choices=["raw", "bulk"],
        default=None,
        help="also run the pod with this ses.sendApi",
    )
    parser.add_argument("--only", choices=["pod", "go"], default=None, help="run one side only")
    parser.add_argument("--json", type=Path, default=None, help="also write the rounds as JSON here")
    parser.add_argument(
        "--out", type=Path, default=None, help="markdown file whose side-by-side section to replace"
    )
    args = parser.parse_args()

    from devenv.moto import MotoServer
    from devenv.postgres import PostgresServer
    from emailplan.sender.migrate import upgrade_to

    command = "./hack/bench.sh throughput -- " + " ".join(sys.argv[1:])
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    work = Path(tempfile.mkdtemp(prefix="throughput-bench-"))
    stub_bin = go_build(ROOT / "bench" / "sesstub", work / "sesstub", offline=True)
    seed_bin = args.seed_binary
    if seed_bin is None and args.seed_src is not None:
        seed_bin = go_build(args.seed_src.resolve(), work / "aws-ses-sender-go", offline=False)
    sides = ["pod", "go"] if seed_bin is not None else ["pod"]
    if args.only:
        sides = [args.only]
    if args.also_processes:
        sides.append(f"pod-{args.also_processes}")
    if args.also_send_api and args.also_send_api != args.send_api:
        sides.append(args.also_send_api)
    pg = PostgresServer().start()
    moto = MotoServer().start()
    os.environ.update(moto.env())
    stub = Stub(stub_bin)
    rounds: list[Round] = []
    try:
        upgrade_to(pg.url)
        for rnd in range(1, args.rounds + 1):
            order = sides if rnd % 2 else list(reversed(sides))
            for side in order:
                if side == "go":
                    r = run_seed(args, rnd, stub, seed_bin)  # type: ignore[arg-type]
                elif side.startswith("pod-"):
                    r = run_pod(args, rnd, stub, pg, moto, int(side[4:]), args.send_api, side)
                else:
                    api = args.send_api if side == "pod" else side
                    r = run_pod(args, rnd, stub, pg, moto, args.processes, api, side)
                print(json.dumps(asdict(r)), flush=True)
                rounds.append(r)
    finally:
        stub.stop()
        moto.stop()
        pg.cleanup()
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rounds], indent=1))
    section = report(rounds, args, started, command)
    print(section)
    if args.out:
        write_section(args.out, section)


def write_section(path: Path, section: str) -> None:
    """Replace this benchmark's section of ``path`` (measured part only; notes after NOTES stay)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(SECTION)
    if start < 0:
        path.write_text(text.rstrip() + "\n\n" + section + "\n" + NOTES + "\n")
        return
    end = text.find("\n## ", start + 1)
    end = len(text) if end < 0 else end + 1
    old = text[start:end]
    notes = old[old.find(NOTES) :] if NOTES in old else NOTES + "\n"
    path.write_text(text[:start] + section + "\n" + notes.rstrip() + "\n\n" + text[end:].lstrip("\n"))


if __name__ == "__main__":
    main()
