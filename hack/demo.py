"""The demo: one EmailPlan sent end to end on local defaults.

Starts real parts on loopback (PostgreSQL, moto as SES/SQS/SNS/S3, the local
Kubernetes control plane, the data-plane API, the operator and the local pod
runner), applies examples/emailplan.yaml (3,000 recipients, 3 invalid, 5 on
the suppression list), shows the plan's progress live until it completes,
prints the final counts and stops everything, also on Ctrl-C.

    python hack/demo.py [--non-interactive] [--timeout SECONDS] [--keep-logs]
"""

from __future__ import annotations

import argparse
import email
import email.policy
import email.utils
import hashlib
import html as htmlmod
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from devenv.kube import KubeCluster, controlplane_bin
from devenv.moto import MotoServer
from devenv.ports import free_port, wait_for
from devenv.postgres import PostgresServer
from devenv.procs import spawn, stop
from emailplan.contract import STATUS_COUNTS

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "emailplan.yaml"
NAMESPACE = "demo"
PLAN = "spring-launch"
SUPPRESSED = [
    "reader0100@example.com",
    "reader0200@example.com",
    "reader0300@example.com",
    "reader0400@example.com",
    "reader0500@example.com",
]
API_KEY = "demo-api-key"
EMAILPLAN = str(Path(sys.executable).parent / "emailplan")


class Readers:
    """Simulated people reading the campaign: fetch pixels and follow links of delivered mail.

    Which recipients open (about 30 %), click (about 10 %) and unsubscribe with one click
    (about 1 %, through the List-Unsubscribe header as a mailbox provider does) is decided by a
    hash of the address, so the expected counts are known and the final status can be checked.
    """

    PIXEL = re.compile(r'src="(https?://[^"]*/v1/events/open\?requestId=[^"]+)"')
    LINK = re.compile(r'href="(https?://[^"]*/v1/events/click\?[^"]+)"')
    BROWSER = (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
    )

    def __init__(self, moto: MotoServer) -> None:
        self.moto = moto
        self.seen: set[str] = set()
        self.opens = 0
        self.clicks = 0
        self.unsubscribes = 0

    @staticmethod
    def _bucket(address: str) -> int:
        return int(hashlib.sha256(address.encode()).hexdigest(), 16) % 100

    def read_new_mail(self) -> None:
        for stored in self.moto.sent_emails():
            raw = stored.get("raw_data")
            if not raw:
                continue
            msg = email.message_from_string(raw, policy=email.policy.default)
            address = email.utils.parseaddr(str(msg.get("To", "")))[1].lower()
            if not address or address in self.seen:
                continue
            self.seen.add(address)
            bucket = self._bucket(address)
            if bucket == 99:
                self._unsubscribe(str(msg.get("List-Unsubscribe", "")))
            if bucket >= 30:
                continue
            body = msg.get_body(preferencelist=("html",))
            html = body.get_content() if body is not None else ""
            pixel = self.PIXEL.search(html)
            link = self.LINK.search(html)
            if bucket < 10 and link:
                self._get(htmlmod.unescape(link.group(1)))
                self.clicks += 1
                self.opens += 1
            elif pixel:
                self._get(htmlmod.unescape(pixel.group(1)))
                self.opens += 1

    def _unsubscribe(self, header: str) -> None:
        """RFC 8058 one-click: POST List-Unsubscribe=One-Click to the https/http URL in the header."""
        url = next((u.strip(" <>") for u in header.split(",") if "://" in u), "")
        if not url:
            return
        req = urllib.request.Request(
            url,
            data=b"List-Unsubscribe=One-Click",
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        urllib.request.urlopen(req, timeout=5).close()
        self.unsubscribes += 1

    def _get(self, url: str) -> None:
        req = urllib.request.Request(url, headers={"User-Agent": self.BROWSER})
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            opener.open(req, timeout=5).close()
        except urllib.error.HTTPError as exc:
            if exc.code != 302:  # the click redirect points outside; not followed
                raise


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Demo:
    def __init__(self, console: Console, logs: Path) -> None:
        self.console = console
        self.logs = logs
        self.stack = ExitStack()
        self.env: dict[str, str] = {}

    def step(self, text: str) -> None:
        self.console.print(f"[bold cyan]==>[/] {text}")

    def start(self) -> None:
        self.step("building or reusing the local control plane (first run: 10-20 min, see progress above)")
        bins = controlplane_bin()
        self.step("starting PostgreSQL 15 (private cluster)")
        pg = PostgresServer(base=Path(tempfile.mkdtemp(prefix="emailplan-demo-pg-"))).start()
        self.stack.callback(pg.cleanup)
        self.step("starting moto server (SES, SQS, SNS, S3)")
        moto = MotoServer().start()
        self.stack.callback(moto.stop)
        self.moto = moto
        self.readers = Readers(moto)
        self.step("starting etcd + kube-apiserver + kube-controller-manager")
        kube = KubeCluster(bin_dir=bins).start()
        self.stack.callback(kube.cleanup)
        self.kube = kube

        api_port = free_port()
        self.api_url = f"http://127.0.0.1:{api_port}"
        self.env = {
            **os.environ,
            **moto.env(),
            "EMAILPLAN_DATABASE_URL": pg.url,
            "EMAILPLAN_API_KEY": API_KEY,
            "EMAILPLAN_TOKEN_KEY": "demo-token-key",
            "EMAILPLAN_PUBLIC_URL": self.api_url,
            "EMAILPLAN_LOG_FORMAT": "json",
            # Simulated readers open seconds after delivery; don't file them as machine opens.
            "EMAILPLAN_OPEN_MACHINE_WINDOW_SECONDS": "0",
            "EMAILPLAN_OPEN_FLUSH_SECONDS": "0.5",
            "EMAILPLAN_METRICS_PORT": "0",
        }
        self._verify_sender_identity()
        self.step("migrating the ledger (emailplan db upgrade)")
        subprocess.run([EMAILPLAN, "db", "upgrade"], env=self.env, check=True, capture_output=True)
        self.step(f"starting the data-plane API on {self.api_url}")
        self._proc("api", [EMAILPLAN, "api", "--host", "127.0.0.1", "--port", str(api_port)], self.env)
        wait_for(lambda: _http_status(self.api_url + "/readyz") == 200, 60, "data-plane API")
        self._suppress(SUPPRESSED)

        self.step("installing the EmailPlan CRD and starting the operator and the local pod runner")
        kube.kubectl("apply", "-f", str(ROOT / "crds" / "emailplan.yaml"))
        kube.kubectl("wait", "--for=condition=Established", "crd/emailplans.emailplan.io")
        kube.kubectl("create", "namespace", NAMESPACE)
        # What a sender pod gets from its Secret in a real cluster; the runner resolves it.
        sender_secret = {
            k: self.env[k]
            for k in (
                "EMAILPLAN_DATABASE_URL",
                "EMAILPLAN_TOKEN_KEY",
                "EMAILPLAN_PUBLIC_URL",
                "EMAILPLAN_AWS_ENDPOINT_URL",
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_DEFAULT_REGION",
            )
        }
        kube.kubectl(
            "create",
            "secret",
            "generic",
            "emailplan-sender",
            "-n",
            NAMESPACE,
            *[f"--from-literal={k}={v}" for k, v in sender_secret.items()],
        )
        op_env = {
            **os.environ,
            "KUBECONFIG": str(kube.kubeconfig),
            "EMAILPLAN_API_URL": self.api_url,
            "EMAILPLAN_API_KEY": API_KEY,
            "EMAILPLAN_SENDER_SECRET_NAME": "emailplan-sender",
            "EMAILPLAN_STATUS_INTERVAL_SECONDS": "1",
            "EMAILPLAN_METRICS_PORT": "0",
            # moto reports the SES sandbox quota (1/s); a production account's is far higher.
            "EMAILPLAN_SENDER_ENV": json.dumps(
                {"EMAILPLAN_METRICS_PORT": "0", "EMAILPLAN_MAX_SEND_RATE": "1000"}
            ),
        }
        self._proc("operator", [EMAILPLAN, "operator", "--standalone", "--namespace", NAMESPACE], op_env)
        runner_env = {**os.environ, "PYTHONPATH": str(ROOT / "hack")}
        self._proc(
            "runner",
            [
                sys.executable,
                str(ROOT / "hack" / "devenv" / "runner.py"),
                "--kubeconfig",
                str(kube.kubeconfig),
                "--command-map",
                f"emailplan={EMAILPLAN}",
                "--log-dir",
                str(self.logs / "pods"),
            ],
            runner_env,
        )

    def _proc(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        proc = spawn(argv, self.logs / f"{name}.log", env=env)
        self.stack.callback(stop, proc, 20)

    def _verify_sender_identity(self) -> None:
        import boto3

        ses = boto3.client(
            "sesv2",
            endpoint_url=self.moto.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        ses.create_email_identity(EmailIdentity="example.com")

    def _suppress(self, emails: list[str]) -> None:
        """Put addresses on the suppression list through the administration API."""
        body = json.dumps({"emails": emails, "reason": "manual"}).encode()
        req = urllib.request.Request(
            self.api_url + "/v1/suppressions",
            data=body,
            method="POST",
            headers={"x-api-key": API_KEY, "content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status in (200, 201), r.status

    def apply_and_watch(self, timeout: float, interactive: bool) -> dict[str, Any]:
        self.step(f"kubectl apply -f {EXAMPLE.relative_to(ROOT)}")
        self.kube.kubectl("apply", "-n", NAMESPACE, "-f", str(EXAMPLE))
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            console=self.console,
            disable=not interactive,
        ) as bar:
            task = bar.add_task(PLAN, total=None, counts="")
            last = ""
            settled_at: float | None = None
            while time.monotonic() < deadline:
                self.readers.read_new_mail()
                status = self.status()
                total = int(status.get("total") or 0)
                done = sum(int(status.get(k) or 0) for k in ("sent", "failed", "stopped", "suppressed"))
                line = (
                    f"phase={status.get('phase', '-')} sent={status.get('sent', 0)} "
                    f"failed={status.get('failed', 0)} suppressed={status.get('suppressed', 0)} "
                    f"opened={status.get('opened', 0)} clicked={status.get('clicked', 0)}"
                )
                bar.update(task, total=total or None, completed=done, counts=line)
                if not interactive and line != last:
                    self.console.print(f"    {line} progress={status.get('progress', '-')}")
                    last = line
                if status.get("phase") == "Failed":
                    break
                if status.get("phase") == "Completed":
                    # Give the last pixel hits a few status refreshes to show up.
                    settled_at = settled_at or time.monotonic()
                    caught_up = (
                        int(status.get("opened") or 0) >= self.readers.opens
                        and int(status.get("unsubscribed") or 0) >= self.readers.unsubscribes
                    )
                    if caught_up or time.monotonic() - settled_at > 20:
                        break
                time.sleep(1)
        return status

    def status(self) -> dict[str, Any]:
        r = self.kube.kubectl("get", "emailplan", PLAN, "-n", NAMESPACE, "-o", "json", check=False)
        if r.returncode != 0:
            return {}
        return dict(json.loads(r.stdout).get("status") or {})

    def report(self, status: dict[str, Any]) -> None:
        self.console.print()
        self.console.print(self.kube.kubectl("get", "emailplans", "-n", NAMESPACE, "-o", "wide").stdout)
        table = Table(title=f"EmailPlan {NAMESPACE}/{PLAN}")
        table.add_column("count")
        table.add_column("value", justify="right")
        for key in STATUS_COUNTS:
            table.add_row(key, str(status.get(key, 0)))
        table.add_row("SES messages received (moto)", str(len(self.moto.sent_emails())))
        r = self.readers
        table.add_row(
            "simulated readers: opened / clicked / unsubscribed", f"{r.opens} / {r.clicks} / {r.unsubscribes}"
        )
        self.console.print(table)
        self.console.print(
            "Where to look next:\n"
            f"  kubectl describe emailplan {PLAN} -n {NAMESPACE}   (conditions and Events)\n"
            f"  {self.api_url}/v1/openapi.json                      (the data-plane API)\n"
            f"  logs of every process: {self.logs}\n"
            "  examples/ for inline, ConfigMap and S3 plans; charts/emailplan to install on a cluster"
        )

    def close(self) -> None:
        self.stack.close()


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--non-interactive", action="store_true", help="plain log lines, no live bar")
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    parser.add_argument("--json", type=Path, help="write the final status as JSON to this file")
    args = parser.parse_args()
    console = Console()
    logs = Path(tempfile.mkdtemp(prefix="emailplan-demo-logs-"))
    demo = Demo(console, logs)
    try:
        demo.start()
        status = demo.apply_and_watch(
            args.timeout, interactive=not args.non_interactive and console.is_terminal
        )
        final = {
            **status,
            "sesReceived": len(demo.moto.sent_emails()),
            "simulatedOpens": demo.readers.opens,
            "simulatedClicks": demo.readers.clicks,
            "simulatedUnsubscribes": demo.readers.unsubscribes,
        }
        demo.report(status)
        if args.json:
            args.json.write_text(json.dumps(final, indent=2))
        ok = status.get("phase") == "Completed"
        console.print(
            "[bold green]demo completed[/]" if ok else f"[bold red]demo did not complete[/] (logs in {logs})"
        )
        return 0 if ok else 1
    except KeyboardInterrupt:
        console.print("\ninterrupted: stopping everything")
        return 130
    finally:
        console.print("[dim]stopping all demo processes[/]")
        demo.close()


if __name__ == "__main__":
    sys.exit(main())
