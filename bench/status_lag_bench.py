"""Status-lag benchmark: how far ``status.sent`` of an EmailPlan trails the ledger while it sends.

Real parts only, started by the shared launcher (hack/devenv/stack.py): PostgreSQL, moto,
the local control plane, ``emailplan api``, the operator and the local pod runner with real
workers. One plan of ``--recipients`` addresses at ``--rate`` emails/s; every 0.5 s the
benchmark reads the ledger's sent count (``GET /v1/results/count/{uid}``, one primary-key
read) and the resource's ``status.sent`` (kube-apiserver), and records their difference
while the plan is sending (first ledger send until the ledger has sent everything). The
lag in seconds is the difference divided by the measured send rate.

    .venv/bin/python bench/status_lag_bench.py [--recipients 15000] [--rate 500] [--interval 5]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))

from devenv.stack import LocalStack, StackOptions
from emailplan.operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_INTERVAL = float(OperatorSettings.model_fields["status_interval_seconds"].default)

SAMPLE_SECONDS = 0.5
NAMESPACE = "bench"
PLAN = "lag"


def manifest(recipients: int, rate: float) -> dict[str, Any]:
    rows = "email,name\n" + "".join(f"lag{i:06d}@example.com,R{i}\n" for i in range(recipients))
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "lag-list"},
                "data": {"recipients.csv": rows},
            },
            {
                "apiVersion": "emailplan.io/v1alpha1",
                "kind": "EmailPlan",
                "metadata": {"name": PLAN},
                "spec": {
                    "from": "Bench <bench@example.com>",
                    "subject": "Hello {{ name }}",
                    "text": "Hi {{ name }}",
                    "rate": {"perSecond": rate},
                    "senders": {"maxReplicas": 2, "perPodRate": rate / 2},
                    "recipients": {
                        "configMapRef": {"name": "lag-list", "key": "recipients.csv", "format": "csv"}
                    },
                },
            },
        ],
    }


def percentile(values: list[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if 1 <= q <= 99 else max(values)


def measure(stack: LocalStack, recipients: int, rate: float, timeout: float) -> dict[str, Any]:
    stack.kubectl("create", "namespace", NAMESPACE)
    # create, not apply: a 400 kB list would not fit in the last-applied annotation (256 kB).
    stack.kubectl("create", "-n", NAMESPACE, "-f", "-", input=json.dumps(manifest(recipients, rate)))
    uid = ""
    samples: list[tuple[float, int, int]] = []  # (time, ledger sent, status sent)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        plan = stack.plan(NAMESPACE, PLAN) or {}
        uid = uid or str(plan.get("metadata", {}).get("uid", ""))
        status_sent = int((plan.get("status") or {}).get("sent") or 0)
        try:
            ledger_sent = int(stack.counts_from_api(uid).get("sent", 0)) if uid else 0
        except OSError:
            ledger_sent = 0  # not registered yet
        samples.append((t0, ledger_sent, status_sent))
        if ledger_sent >= recipients and status_sent >= recipients:
            break
        time.sleep(max(0.0, SAMPLE_SECONDS - (time.monotonic() - t0)))
    sending = [(t, led, st) for t, led, st in samples if led > 0 and (led < recipients or st < recipients)]
    if len(sending) < 2:
        raise RuntimeError(f"too few samples while sending: {samples[-5:]}")
    lags = [float(led - st) for _, led, st in sending]
    first = next(s for s in samples if s[1] > 0)
    done = next((s for s in samples if s[1] >= recipients), samples[-1])
    measured_rate = (done[1] - first[1]) / max(done[0] - first[0], 1e-9)
    finished = done[1] >= recipients and samples[-1][2] >= recipients
    status_done = next((s[0] for s in samples if s[2] >= recipients), samples[-1][0])
    return {
        "finished": finished,
        "ledger_sent": samples[-1][1],
        "samples": len(sending),
        "p50": percentile(lags, 50),
        "p95": percentile(lags, 95),
        "max": max(lags),
        "rate": measured_rate,
        "status_after_ledger_s": status_done - done[0] if finished else None,
        "distinct_status_values": len({st for _, _, st in sending}),
    }


def report(r: dict[str, Any], args: argparse.Namespace) -> str:
    per_s = r["rate"] or args.rate
    return (
        "## Status lag\n\n"
        f"`python bench/status_lag_bench.py` (one plan of {args.recipients:,} recipients at "
        f"{args.rate:g}/s, operator status interval {args.interval:g} s (1 s while a plan sends), "
        "results written by group commit as SES answers, the shared 2-core machine): "
        f"every {SAMPLE_SECONDS} s while the plan sends, the ledger's sent count minus the "
        "EmailPlan's `status.sent`.\n\n"
        "| what | result | target |\n| --- | --- | --- |\n"
        f"| samples while sending | {r['samples']} ({r['distinct_status_values']} distinct "
        "`status.sent` values) | |\n"
        f"| lag p50 | {r['p50']:,.0f} emails ({r['p50'] / per_s:.1f} s at {per_s:,.0f}/s measured) | |\n"
        f"| lag p95 | {r['p95']:,.0f} emails ({r['p95'] / per_s:.1f} s) | ≤ 2 s |\n"
        f"| lag max | {r['max']:,.0f} emails ({r['max'] / per_s:.1f} s) | |\n"
        + (
            f"| `status.sent` complete after the ledger | {r['status_after_ledger_s']:.1f} s | |\n"
            if r["finished"]
            else f"| plan not finished within --timeout {args.timeout:g} s | {r['ledger_sent']:,} sent | |\n"
        )
        + (
            f"\nThe machine sent {per_s:,.0f}/s, not the {args.rate:g}/s asked for: the lag in seconds "
            "is the honest figure, the lag in emails is smaller than it would be at full rate.\n"
            if per_s < 0.9 * args.rate
            else ""
        )
    )


def write_section(path: Path, section: str) -> None:
    """Replace (or append) the '## Status lag' section, leaving other sections alone."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    pattern = re.compile(r"^## Status lag\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip() + "\n\n", text)
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=15000)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument(
        "--interval",
        type=float,
        default=SHIPPED_INTERVAL,
        help="operator status interval (s); default as shipped",
    )
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    options = StackOptions(
        status_interval_seconds=args.interval,
        data_env={"EMAILPLAN_LOG_LEVEL": "WARNING"},
        operator_namespaces=[NAMESPACE],
    )
    stack = LocalStack(options=options).start(progress=lambda s: print(f"==> {s}", file=sys.stderr))
    try:
        result = measure(stack, args.recipients, args.rate, args.timeout)
    finally:
        stack.stop()
    print(json.dumps(result))
    section = report(result, args)
    print(section)
    if not args.no_write:
        write_section(ROOT / "docs" / "benchmarks.md", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
