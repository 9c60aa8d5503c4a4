"""Operator benchmark: time from ``kubectl apply`` to the first non-zero ``status.sent``, and the
operator's CPU and memory while 100 plans are in flight.

Real parts only, started by the shared launcher (hack/devenv/stack.py): local
kube-apiserver + controller-manager, PostgreSQL, moto, the
``emailplan api`` process, the operator process and the local pod runner with real
workers. The 100 plans are registered and loaded but scheduled an hour ahead, so
the operator does its full per-plan work (status refresh from the data plane every
``EMAILPLAN_STATUS_INTERVAL_SECONDS``, default 5 s) without 100 sets of sender
processes competing for the two cores the measurement runs on.

    .venv/bin/python bench/operator_bench.py [--plans 100] [--measure-seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))

from devenv.stack import LocalStack, StackOptions

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def plan(name: str, recipients: list[str], *, start_at: str | None = None, rate: float = 200) -> str:
    spec: dict[str, object] = {
        "from": "Bench <bench@example.com>",
        "subject": "Hello {{ name }}",
        "text": "Hi {{ name }}",
        "rate": {"perSecond": rate},
        "senders": {"maxReplicas": 1, "perPodRate": rate},
        "recipients": {"inline": [{"email": e, "name": "N"} for e in recipients]},
    }
    if start_at:
        spec["schedule"] = {"startAt": start_at}
    return json.dumps(
        {"apiVersion": "emailplan.io/v1alpha1", "kind": "EmailPlan", "metadata": {"name": name}, "spec": spec}
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=100)
    parser.add_argument("--measure-seconds", type=float, default=60)
    parser.add_argument("--interval", type=float, default=5.0, help="operator status interval (s)")
    args = parser.parse_args()

    stack = LocalStack(options=StackOptions(status_interval_seconds=args.interval))
    try:
        stack.start(progress=lambda step: print(f"==> {step}", file=sys.stderr, flush=True))
        kube, operator = stack.kube, stack.operator
        time.sleep(3)

        # 1. apply -> first sent
        t0 = time.monotonic()
        done = kube.kubectl(
            "apply",
            "-f",
            "-",
            input=plan("first", [f"first{i}@example.com" for i in range(200)]),
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        while True:
            out = kube.kubectl(
                "get", "emailplans.emailplan.io", "first", "-o", "jsonpath={.status.sent}", check=False
            ).stdout.strip()
            if out and int(out) > 0:
                break
            if time.monotonic() - t0 > 120:
                raise TimeoutError("no email sent within 120 s")
            time.sleep(0.2)
        first_sent = time.monotonic() - t0
        print(f"apply -> first status.sent > 0: {first_sent:.1f} s", flush=True)

        # 2. N plans in flight
        start = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        items = [
            json.loads(plan(f"p{i:03d}", [f"p{i}-{j}@example.com" for j in range(20)], start_at=start))
            for i in range(args.plans)
        ]
        docs = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        done = kube.kubectl("apply", "-f", "-", input=docs, check=False)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        t1 = time.monotonic()
        while True:
            out = kube.kubectl(
                "get", "emailplans.emailplan.io", "-o", "jsonpath={.items[*].status.phase}"
            ).stdout
            if out.split().count("Scheduled") >= args.plans:
                break
            if time.monotonic() - t1 > 600:
                raise TimeoutError(f"plans not all Scheduled: {out.split().count('Scheduled')}")
            time.sleep(1)
        settle = time.monotonic() - t1
        print(f"{args.plans} plans registered, loaded and Scheduled in {settle:.1f} s", flush=True)
        assert operator is not None
        c0, w0 = cpu_seconds(operator.pid), time.monotonic()
        time.sleep(args.measure_seconds)
        cores = (cpu_seconds(operator.pid) - c0) / (time.monotonic() - w0)
        rss = rss_mib(operator.pid)
        print(
            f"operator with {args.plans} plans in flight: {cores:.3f} cores, {rss:.0f} MiB RSS "
            f"(status interval {args.interval:g} s)",
            flush=True,
        )
        print(
            json.dumps(
                {
                    "first_sent_seconds": round(first_sent, 2),
                    "plans": args.plans,
                    "settle_seconds": round(settle, 1),
                    "cpu_cores": round(cores, 3),
                    "rss_mib": round(rss),
                    "interval": args.interval,
                }
            )
        )
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
