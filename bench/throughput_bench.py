"""Side by side: this project's sender against the Go service it replaces, same stub, same machine.

Every side sends the same number of emails to the same SES v2 stub (``bench/sesstub``, Go,
standard library only, built here with the machine's Go) in interleaved rounds, so machine
load that comes and goes hits all alike. The sides (``--sides``, default ``raw:1 raw:2
bulk:2 go``): ``API:N`` is ``emailplan worker --processes N`` with ``ses.sendApi`` API
(raw: one SendEmail of rendered MIME an email; bulk: SendBulkEmail, up to 50 an call) and
the production features on (open and click tracking, List-Unsubscribe); ``API:N:plain`` is
the same with only what the Go service's emails carry (the open pixel); ``go`` is
aws-ses-sender-go. Per round and side:

* emails/s: (accepted - 1) / (last - first accept) as the stub timed them;
* sends in flight (the pod's slots over its processes, the Go service's ``MAX_CONCURRENT``),
  and what each side puts on the wire: request body bytes per email and emails per call,
  counted by the stub;
* CPU-ms per email of the sender: every process it ran, from the first accepted send until
  the last of them ended (``procstat.Charged``: its own process group, this harness a child
  subreaper, so a pod's forkserver and the workers it forked are charged too);
* CPU-ms per email of the pipeline: the sender plus the stub, and for the pod PostgreSQL and
  the local SQS (moto) too; the Go service keeps its queue in SQLite inside its own process;
* the whole machine's busy CPU over the same window (``/proc/stat``), and the cross-check:
  CPU charged to everything this benchmark runs, harness included, against it. A negative
  figure, or a disagreement over 15 % on an otherwise quiet machine, is flagged in the
  output; on a busy machine (other work measured just before each round) the check is
  reported as not made.

The Go service is aws-ses-sender-go, built from its public source (``--seed-src DIR``,
``go build``; needs only the Go module proxy) or given as a binary (``--seed-binary PATH``).
Its code is never part of this project. How it runs here: SQLite file in a temporary
directory (``DB_PATH``) filled with the requests before its scheduler's first tick (the
scheduler claims work once a minute, so each of its rounds waits up to 60 s first),
``EMAIL_RATE`` raised far above what the machine can do, ``MAX_CONCURRENT`` equal to the
pod's sends in flight, SES endpoint pointed at the stub with ``AWS_ENDPOINT_URL``.

    ./hack/bench.sh throughput -- --seed-src /tmp/seed-src [--rounds 3] [--emails 20000]
    .venv/bin/python bench/throughput_bench.py --seed-binary ./aws-ses-sender --sides raw:2 go
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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack"))
sys.path.insert(0, str(ROOT / "bench"))

from procstat import (  # noqa: E402
    Charged,
    background_cores,
    cpu_flags,
    machine_busy_seconds,
    self_cpu_seconds,
    tree_cpu,
)
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
# ``API:N:plain``: what the Go service puts in an email and nothing more (the open pixel; no
# click tracking, no List-Unsubscribe), for the like-for-like row; plain ``API:N`` keeps
# SPEC, the production features on.
PLAIN = {**SPEC, "tracking": {"opens": True, "clicks": False}, "unsubscribe": {"enabled": False}}
POLL = 0.02
SECTION = "## Side by side with aws-ses-sender-go (sender throughput)"
NOTES = "<!-- notes below this line are kept when the benchmark rewrites the section -->"
GO_SIDE = "go"


@dataclass(frozen=True)
class Side:
    """One contender: the Go service, or a pod of ``processes`` with ``ses.sendApi`` ``api``
    (``plain``: the emails carry only what the Go service's do)."""

    api: str
    processes: int
    plain: bool = False

    @property
    def name(self) -> str:
        if self.api == GO_SIDE:
            return GO_SIDE
        return f"{self.api}:{self.processes}" + (":plain" if self.plain else "")

    @property
    def spec(self) -> dict[str, Any]:
        return {**(PLAIN if self.plain else SPEC), "ses": {"sendApi": self.api}}

    @staticmethod
    def parse(text: str) -> Side:
        if text == GO_SIDE:
            return Side(GO_SIDE, 1)
        api, _, rest = text.partition(":")
        count, _, variant = rest.partition(":")
        if (
            api not in ("raw", "bulk")
            or not count.isdigit()
            or int(count) < 1
            or variant not in ("", "plain")
        ):
            raise argparse.ArgumentTypeError(
                f"side {text!r}: expected go, raw:N or bulk:N (N >= 1), optionally :plain"
            )
        return Side(api, int(count), variant == "plain")


@dataclass
class Window:
    """CPU seconds over one round's window, from the first accepted send until the sender ended."""

    code: int
    sender: float
    servers: dict[str, float]
    harness: float
    machine: float
    seconds: float
    strays: list[int]


@dataclass
class Round:
    side: str
    round: int
    emails: int
    rate: float
    in_flight: int
    bytes_per_email: float
    emails_per_call: float
    sender_cpu_ms: float
    pipeline_cpu_ms: float
    machine_busy_ms: float
    accounted_vs_machine: float
    background_cores: float
    exit: int
    flags: list[str] = field(default_factory=list)
    # CPU-ms per email of each server the side used (postgres, sqs, stub): where the pipeline's
    # share beyond the sender goes (JSON only).
    servers_cpu_ms: dict[str, float] = field(default_factory=dict)


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


def wait_count(stub: Stub, n: int, run: Charged, timeout: float) -> bool:
    """Poll the stub until it has accepted ``n`` sends; False if the sender ended or time ran out."""
    deadline = time.monotonic() + timeout
    while stub.stats()["count"] < n:
        if run.exited() or time.monotonic() > deadline:
            return False
        time.sleep(POLL)
    return True


def rate_of(stats: dict[str, int]) -> float:
    span = (stats["last_ns"] - stats["first_ns"]) / 1e9
    return (stats["count"] - 1) / span if span > 0 else 0.0


class Servers:
    """The long-running processes a round may use besides the sender, by name (pid)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def cpu(self) -> dict[str, float]:
        return {name: tree_cpu(pid) for name, pid in self.pids.items()}


def measure_window(
    stub: Stub, run: Charged, n: int, servers: Servers, settle: Callable[[], None]
) -> Window | None:
    """CPU of the sender, each server, this harness and the machine from the stub's first accepted
    send until the sender ended (``settle`` makes it end once ``n`` are accepted); None if the
    sender sent nothing."""
    if not wait_count(stub, 1, run, 300):
        if not run.exited():
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        return None
    sender0, servers0, harness0 = run.cpu_so_far(), servers.cpu(), self_cpu_seconds()
    busy0, t0 = machine_busy_seconds(), time.monotonic()
    wait_count(stub, n, run, 600)
    settle()
    code, sender_total = run.wait()
    servers1 = servers.cpu()
    busy1, t1 = machine_busy_seconds(), time.monotonic()
    return Window(
        code=code,
        sender=sender_total - sender0,
        servers={k: servers1[k] - servers0[k] for k in servers0},
        harness=self_cpu_seconds() - harness0,
        machine=busy1 - busy0,
        seconds=t1 - t0,
        strays=run.strays(),
    )


def measured(
    side: Side,
    rnd: int,
    in_flight: int,
    stats: dict[str, int],
    w: Window,
    pipeline: list[str],
    background: float,
) -> Round:
    """One round's figures per email, and what is wrong with them (``procstat.cpu_flags``)."""
    n = max(1, stats["count"])
    piped = w.sender + sum(w.servers[name] for name in pipeline)
    accounted = w.sender + sum(w.servers.values()) + w.harness
    flags = cpu_flags({"sender CPU": w.sender, "pipeline CPU": piped}, accounted, w.machine, background)
    if w.strays:
        flags.append(f"processes left running, not charged: {w.strays}")
    return Round(
        side=side.name,
        round=rnd,
        emails=stats["count"],
        rate=rate_of(stats),
        in_flight=in_flight,
        bytes_per_email=stats["bytes"] / n,
        emails_per_call=stats["count"] / max(1, stats["calls"]),
        sender_cpu_ms=w.sender / n * 1000,
        pipeline_cpu_ms=piped / n * 1000,
        machine_busy_ms=w.machine / n * 1000,
        accounted_vs_machine=accounted / w.machine if w.machine > 0 else float("nan"),
        background_cores=background,
        exit=w.code,
        flags=flags,
        servers_cpu_ms={name: w.servers[name] / n * 1000 for name in pipeline},
    )


# ----------------------------------------------------------------------------- the pod


async def ledger_sent(url: str, plan_id: uuid.UUID) -> int:
    from emailplan.sender.db import make_engine
    from emailplan.sender.store import plans

    engine = make_engine(url=url, pool_size=1)
    counts = await plans.get_counts(engine, plan_id) or {}
    await engine.dispose()
    return int(counts.get("sent", 0))


def pod_env(
    args: argparse.Namespace, pg_url: str, plan_id: uuid.UUID, stub: Stub, side: Side
) -> dict[str, str]:
    return {
        **os.environ,
        "EMAILPLAN_DATABASE_URL": pg_url,
        "EMAILPLAN_PLAN_ID": str(plan_id),
        "EMAILPLAN_SES_ENDPOINT_URL": stub.url,
        "EMAILPLAN_METRICS_PORT": "0",
        "EMAILPLAN_MAX_SEND_RATE": "1000000",
        "EMAILPLAN_EXIT_WHEN_IDLE": "true",
        "EMAILPLAN_POLL_WAIT_SECONDS": "1",
        "EMAILPLAN_FLUSH_SECONDS": "1",
        "EMAILPLAN_WORKER_CONCURRENCY": str(slots(args, side)),
        "EMAILPLAN_PUBLIC_URL": "https://mail.example.org",
        "EMAILPLAN_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        "EMAILPLAN_DEV_MODE": "1",  # built-in development keys: a local benchmark
    }


def slots(args: argparse.Namespace, side: Side) -> int:
    """Send slots per worker process: the sends in flight shared over the pod's processes."""
    return max(1, args.in_flight // side.processes)


def run_pod(args: argparse.Namespace, rnd: int, stub: Stub, pg: Any, servers: Servers, side: Side) -> Round:
    n = args.emails
    plan_id = asyncio.run(make_plan(pg.url, n, rate=1e6, spec=side.spec))
    stub.reset()
    background = background_cores()
    cmd = [EXE, "worker", "--processes", str(side.processes)]
    if os.environ.get("BENCH_PROFILE"):  # one process under cProfile (CPU clock), stats in that file
        cmd = [sys.executable, str(ROOT / "bench" / "cpuprofile.py"), os.environ["BENCH_PROFILE"]]
        cmd += ["-m", "emailplan.cli", "worker", "--processes", "1"]
    run = Charged(cmd, env=pod_env(args, pg.url, plan_id, stub, side))
    window = measure_window(stub, run, n, servers, settle=lambda: None)
    if window is None:
        raise RuntimeError(f"{side.name} round {rnd}: the pod sent nothing (exit {run.proc.returncode})")
    stats = stub.stats()
    sent = asyncio.run(ledger_sent(pg.url, plan_id))
    if sent != n or stats["count"] != n:
        print(f"{side.name} round {rnd}: ledger sent {sent}, stub {stats['count']}, of {n}", file=sys.stderr)
    in_flight = slots(args, side) * side.processes
    return measured(side, rnd, in_flight, stats, window, ["postgres", "sqs", "stub"], background)


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


def seed_env(args: argparse.Namespace, tmp: str, db_path: Path, port: int, stub: Stub) -> dict[str, str]:
    return {
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


def run_seed(args: argparse.Namespace, rnd: int, stub: Stub, servers: Servers, binary: Path) -> Round:
    from devenv.ports import free_port, port_open, wait_for

    n = args.emails
    stub.reset()
    with tempfile.TemporaryDirectory(prefix="seed-") as tmp:
        db_path, port, log_path = Path(tmp) / "app.db", free_port(), Path(tmp) / "seed.log"
        with open(log_path, "wb") as log:
            run = Charged(
                [str(binary)],
                cwd=tmp,
                env=seed_env(args, tmp, db_path, port, stub),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for(lambda: port_open(port), 60, "aws-ses-sender-go")
            html = str(SPEC["html"]).replace("{{ name }}", "N1").replace("{{ code }}", "1")
            fill_sqlite(db_path, n, html, "Hello N1")
            background = background_cores()
            print(f"go round {rnd}: waiting for its scheduler's first tick (60 s)", file=sys.stderr)

            def settle() -> None:
                deadline = time.monotonic() + 30
                while sqlite_sent(db_path) < n and time.monotonic() < deadline:
                    time.sleep(POLL)  # its status update follows each send
                os.kill(run.pid, signal.SIGTERM)

            window = measure_window(stub, run, n, servers, settle)
            if window is None:
                raise RuntimeError("aws-ses-sender-go sent nothing: " + log_path.read_text()[-2000:])
            sent = sqlite_sent(db_path)
        finally:
            if run.proc.returncode is None:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()
    stats = stub.stats()
    if sent != n or stats["count"] != n:
        print(f"go round {rnd}: sqlite sent {sent}, stub {stats['count']}, of {n}", file=sys.stderr)
    return measured(Side.parse(GO_SIDE), rnd, args.in_flight, stats, window, ["stub"], background)


# ----------------------------------------------------------------------------- report


def spread(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def vs_go(rounds: list[Round], side: str, key: str) -> str:
    """Median (min-max) of the per-round ratios of ``side`` to the Go service on ``key``."""
    go = {r.round: getattr(r, key) for r in rounds if r.side == GO_SIDE}
    ratios = [getattr(r, key) / go[r.round] for r in rounds if r.side == side and go.get(r.round)]
    return spread(ratios, ".2f")


SUMMARY = (
    "| side | sends in flight | request bytes per email | emails per call | emails/s | x Go "
    "| sender CPU-ms per email | pipeline CPU-ms per email | x Go | machine busy CPU-ms per email "
    "| accounted / machine busy |"
)


def summary_row(rounds: list[Round], side: str) -> str:
    mine = [r for r in rounds if r.side == side]

    def col(key: str, fmt: str) -> str:
        return spread([getattr(r, key) for r in mine], fmt)

    cells = [
        side,
        str(mine[0].in_flight),
        col("bytes_per_email", ".0f"),
        col("emails_per_call", ".1f"),
        col("rate", ".0f"),
        vs_go(rounds, side, "rate"),
        col("sender_cpu_ms", ".3f"),
        col("pipeline_cpu_ms", ".3f"),
        vs_go(rounds, side, "pipeline_cpu_ms"),
        col("machine_busy_ms", ".3f"),
        col("accounted_vs_machine", ".2f"),
    ]
    return "| " + " | ".join(cells) + " |"


def report(rounds: list[Round], args: argparse.Namespace, started: str, command: str, load: str) -> str:
    sides = list(dict.fromkeys(r.side for r in rounds))
    flagged = [r for r in rounds if r.flags]
    lines = [
        SECTION,
        "",
        f"Run {started}, {args.rounds} interleaved rounds of {args.emails:,} emails per side, "
        f"{os.cpu_count()} cores, load average {load}. Sides: `raw:N` / `bulk:N` = `emailplan worker "
        "--processes N` with `ses.sendApi` raw / bulk, open and click tracking and List-Unsubscribe on; "
        "`:plain` = only the open pixel, what the Go service's emails carry; `go` = aws-ses-sender-go. "
        "Command:",
        "",
        f"    {command}",
        "",
        "Median (min-max) over the rounds; x Go = median of the per-round ratios:",
        "",
        SUMMARY,
        "| " + " | ".join(["---"] * (SUMMARY.count(" | ") + 1)) + " |",
        *(summary_row(rounds, side) for side in sides),
        "",
        "CPU check: "
        + ("every round's figures passed it." if not flagged else f"{len(flagged)} round(s) flagged:"),
        *(f"- round {r.round} {r.side}: {'; '.join(r.flags)}" for r in flagged),
        "",
        "Rounds in the order they ran:",
        "",
        "| round | side | emails | emails/s | sender CPU-ms | pipeline CPU-ms | machine busy CPU-ms "
        "| accounted / machine | other work, cores | exit |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rounds:
        lines.append(
            f"| {r.round} | {r.side} | {r.emails} | {r.rate:.0f} | {r.sender_cpu_ms:.3f} | "
            f"{r.pipeline_cpu_ms:.3f} | {r.machine_busy_ms:.3f} | {r.accounted_vs_machine:.2f} | "
            f"{r.background_cores:.2f} | {r.exit} |"
        )
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seed-src", type=Path, default=None, help="aws-ses-sender-go source directory to build"
    )
    parser.add_argument("--seed-binary", type=Path, default=None, help="a built aws-ses-sender-go binary")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--emails", type=int, default=20000)
    parser.add_argument(
        "--sides",
        nargs="+",
        type=Side.parse,
        default=[Side.parse(t) for t in ("raw:1", "raw:2", "bulk:2", GO_SIDE)],
        help="go, raw:N, bulk:N (N worker processes), raw:N:plain (only an open pixel, like the "
        "Go service's emails); default raw:1 raw:2 bulk:2 go",
    )
    parser.add_argument("--in-flight", type=int, default=64, help="sends in flight, each side")
    parser.add_argument("--json", type=Path, default=None, help="also write the rounds as JSON here")
    parser.add_argument(
        "--out", type=Path, default=None, help="markdown file whose side-by-side section to replace"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    from devenv.moto import MotoServer
    from devenv.postgres import PostgresServer
    from emailplan.sender.migrate import upgrade_to

    command = "./hack/bench.sh throughput -- " + " ".join(sys.argv[1:])
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    loads = [os.getloadavg()[0]]
    work = Path(tempfile.mkdtemp(prefix="throughput-bench-"))
    stub_bin = go_build(ROOT / "bench" / "sesstub", work / "sesstub", offline=True)
    seed_bin = args.seed_binary
    if seed_bin is None and args.seed_src is not None:
        seed_bin = go_build(args.seed_src.resolve(), work / "aws-ses-sender-go", offline=False)
    sides = [s for s in args.sides if s.api != GO_SIDE or seed_bin is not None]
    pg = PostgresServer().start()
    moto = MotoServer().start()
    os.environ.update(moto.env())
    stub = Stub(stub_bin)
    assert pg.proc is not None and moto.proc is not None
    servers = Servers({"postgres": pg.proc.pid, "sqs": moto.proc.pid, "stub": stub.proc.pid})
    rounds: list[Round] = []
    try:
        upgrade_to(pg.url)
        for rnd in range(1, args.rounds + 1):
            for side in sides if rnd % 2 else list(reversed(sides)):
                if side.api == GO_SIDE:
                    r = run_seed(args, rnd, stub, servers, seed_bin)  # type: ignore[arg-type]
                else:
                    r = run_pod(args, rnd, stub, pg, servers, side)
                loads.append(os.getloadavg()[0])
                print(json.dumps(asdict(r)), flush=True)
                rounds.append(r)
    finally:
        stub.stop()
        moto.stop()
        pg.cleanup()
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rounds], indent=1))
    section = report(rounds, args, started, command, f"{min(loads):.1f}-{max(loads):.1f}")
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
