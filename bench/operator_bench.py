"""Operator benchmark: time from ``kubectl apply`` to the first non-zero ``status.sent``, and the
operator's CPU and memory while 100 plans are in flight.

Real parts only: local kube-apiserver + controller-manager, PostgreSQL, moto, the
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
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))

from devenv.kube import KubeCluster
from devenv.moto import MotoServer
from devenv.ports import free_port, port_open, wait_for
from devenv.postgres import PostgresServer
from devenv.procs import spawn, stop
from devenv.runner import PodRunner

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

    base = Path(tempfile.mkdtemp(prefix="emailplan-bench-op-"))
    pg, moto, kube = PostgresServer().start(), MotoServer().start(), KubeCluster().start()
    api = operator = None
    runner: PodRunner | None = None
    try:
        kube.kubectl("apply", "-f", str(REPO / "crds" / "emailplan.yaml"))
        kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/emailplans.emailplan.io")
        import boto3

        boto3.client(
            "ses",
            endpoint_url=moto.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).verify_domain_identity(Domain="example.com")
        api_port, key = free_port(), "bench-" + uuid.uuid4().hex[:8]
        data_env = {
            **moto.env(),
            "EMAILPLAN_DATABASE_URL": pg.url,
            "EMAILPLAN_API_KEY": key,
            "EMAILPLAN_TOKEN_KEY": "bench",
            "EMAILPLAN_PUBLIC_URL": f"http://127.0.0.1:{api_port}",
            "EMAILPLAN_METRICS_PORT": "0",
            "EMAILPLAN_MAX_SEND_RATE": "2000",
            "EMAILPLAN_FLUSH_SECONDS": "1",
        }
        subprocess.run(
            [str(VENV_BIN / "emailplan"), "db", "upgrade"],
            env={**os.environ, **data_env},
            check=True,
            capture_output=True,
        )
        api = spawn(
            [str(VENV_BIN / "emailplan"), "api", "--host", "127.0.0.1", "--port", str(api_port)],
            base / "api.log",
            env={**os.environ, **data_env},
        )
        wait_for(lambda: port_open(api_port), 60, "api")
        runner = PodRunner(
            kube.kubeconfig,
            extra_env=data_env,
            command_map={"emailplan": str(VENV_BIN / "emailplan")},
            log_dir=base / "pods",
        ).start()
        operator = spawn(
            [str(VENV_BIN / "emailplan"), "operator", "--standalone"],
            base / "operator.log",
            env={
                **os.environ,
                "KUBECONFIG": str(kube.kubeconfig),
                "EMAILPLAN_API_URL": f"http://127.0.0.1:{api_port}",
                "EMAILPLAN_API_KEY": key,
                "EMAILPLAN_STATUS_INTERVAL_SECONDS": str(args.interval),
                "EMAILPLAN_METRICS_PORT": "0",
            },
        )
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
        if runner:
            runner.stop()
        stop(operator)
        stop(api)
        kube.cleanup()
        moto.stop()
        pg.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
