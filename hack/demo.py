"""The demo: one EmailPlan sent end to end on local defaults.

Starts real parts on loopback (PostgreSQL, moto as SES/SQS/SNS/S3, the local Kubernetes
control plane, the data-plane API, the operator and the local pod runner) with the same
launcher the e2e tests use (hack/devenv/stack.py), applies examples/emailplan.yaml
(3,000 recipients, 3 invalid, 5 on the suppression list) and shows the plan's progress
live until it completes. Meanwhile simulated recipients read their mail (pixel, link,
one-click unsubscribe) and SES "reports" deliveries, a few bounces and one complaint
as signed SNS notifications to the API, so every column moves. It prints the final
counts and stops everything, also on Ctrl-C; with --keep it leaves the stack running
to explore with kubectl and the API until Ctrl-C.

    python hack/demo.py [--keep] [--keep-logs] [--non-interactive] [--timeout SECONDS] [--json FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from devenv import reaper
from devenv.kube import controlplane_bin
from devenv.procs import stop_like_ctrl_c
from devenv.stack import EMAILPLAN, LocalStack, StackOptions
from emailplan import devsns
from emailplan.contract import STATUS_COUNTS
from emailplan.contract.httpapi import OPENAPI, SUPPRESSIONS
from emailplan.sender.settings import SenderSettings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "emailplan.yaml"
NAMESPACE = "demo"
PLAN = "spring-launch"
SUPPRESSED = [f"reader0{n}00@example.com" for n in range(1, 6)]
API_KEY = "demo-api-key"
# Deliveries SES has reported before the one complaint arrives: one complaint in 2,000
# deliveries (0.05 %) stays under SES's 0.1 % review line, so the plan's breaker holds.
COMPLAINT_AFTER_DELIVERIES = 2000
POLL_SECONDS = 0.5  # how often the bar reads the plan's status
READ_SECONDS = 1.0  # how often the audience looks for new mail (moto exports all of it each time)
# Readers act this long after a message arrives: later than the data plane's machine-open window.
READ_AFTER_SECONDS = float(SenderSettings.model_fields["open_machine_window_seconds"].default) + 1.0
# After Completed, the longest wait for the readers and their events (a loaded machine needs minutes).
SETTLE_SECONDS = 180
# Who does what, by a hash of the address (``bucket``): per mille of messages SES reports as
# hard bounces / reports at all (deliveries in between); percent of the delivered who open,
# who click (of those), and the one percent bucket that unsubscribes.
BOUNCED_PER_MILLE = 2
REPORTED_PER_MILLE = 850
OPENED_PERCENT = 30
CLICKED_PERCENT = 10
UNSUBSCRIBE_BUCKET = 99


def bucket(address: str, size: int) -> int:
    """A stable pseudo-random number in [0, size) per address: who opens, bounces, complains."""
    return int(hashlib.sha256(address.encode()).hexdigest(), 16) % size


def delivered_unopened(address: str) -> bool:
    """A reader whose mail SES reports delivered and who neither opens nor unsubscribes."""
    reported = BOUNCED_PER_MILLE <= bucket(address, 1000) < REPORTED_PER_MILLE
    return reported and OPENED_PERCENT <= bucket(address, 100) < UNSUBSCRIBE_BUCKET


class Audience:
    """The recipients and their mailbox providers, simulated from the mail SES (moto) accepted.

    For each new message, decided by a hash of the address so the expected counts are known:
    SES reports a hard bounce or a delivery through a signed SNS notification, as a
    configuration set's event destination would; of the delivered mail a share is opened (the
    tracking pixel), clicked, or unsubscribed with one click (RFC 8058, as a mailbox provider
    does), in the shares the constants above give; one delivered recipient complains, late
    in the plan.
    """

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.seen: set[str] = set()
        self._arrived: dict[str, tuple[float, devsns.SentMail]] = {}
        self._stored = 0  # messages of SES's store read so far (it only grows)
        self.opens = self.clicks = self.unsubscribes = 0
        self.deliveries = self.bounces = self.complaints = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="mailbox")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audience", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(60)
        self._pool.shutdown(wait=True)

    def summary(self) -> dict[str, int]:
        return {
            "simulatedOpens": self.opens,
            "simulatedClicks": self.clicks,
            "simulatedUnsubscribes": self.unsubscribes,
            "simulatedDeliveries": self.deliveries,
            "simulatedBounces": self.bounces,
            "simulatedComplaints": self.complaints,
        }

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.read_new_mail()
            except (OSError, ValueError) as exc:  # a busy API or moto: try again next round
                self.errors.append(str(exc))
            self._stop.wait(READ_SECONDS)

    def read_new_mail(self) -> int:
        """Handle every message not seen yet; returns how many messages SES holds in all.

        Mailboxes act in parallel (as people do): each SNS post waits for the API's group
        commit, so one at a time would fall far behind the plan's send rate.
        """
        new, self._stored = devsns.sent_mail_since(self.stack.moto.endpoint_url, self._stored)
        now = time.monotonic()
        for mail in new:
            if mail.address not in self.seen and mail.address not in self._arrived:
                self._arrived[mail.address] = (now, mail)
        # People read their mail a few seconds after it arrives: a pixel fetched within the data
        # plane's machine-open window of the send is a mail proxy's, and counts apart.
        due = [a for a, (at, _) in self._arrived.items() if now - at >= READ_AFTER_SECONDS]
        self.handle([self._arrived.pop(address)[1] for address in due])
        return self._stored

    def handle(self, mails: list[devsns.SentMail]) -> None:
        """Let each mailbox act on its message; raises the first mailbox's error, if any.

        A message is *seen* only once its mailbox is done: ``caught_up`` takes "everyone has
        read their mail" to mean their events are posted, and then compares the status with
        the counts. A failed mailbox is seen too: posting its events again would count twice.
        """
        done = wait([self._pool.submit(self._mailbox, mail) for mail in mails]).done
        self.seen.update(mail.address for mail in mails)
        errors = [error for future in done if (error := future.exception()) is not None]
        if errors:
            raise errors[0]

    def _mailbox(self, mail: devsns.SentMail) -> None:
        address = mail.address
        if bucket(address, 1000) < BOUNCED_PER_MILLE:
            self._ses("Bounce", mail)
            self._count("bounces")
            return
        if bucket(address, 1000) >= REPORTED_PER_MILLE:
            return  # SES has not reported these (yet): they stay "sent"
        self._ses("Delivery", mail)
        self._count("deliveries")
        share = bucket(address, 100)
        if share == UNSUBSCRIBE_BUCKET:
            if self._unsubscribe(str(mail.message.get("List-Unsubscribe", ""))):
                self._count("unsubscribes")
        elif self._complaint_due():
            self._ses("Complaint", mail)
        if share >= OPENED_PERCENT:
            return
        if share < CLICKED_PERCENT and mail.link:
            devsns.visit(mail.link)
            self._count("clicks")
            self._count("opens")
        elif mail.pixel:
            devsns.visit(mail.pixel)
            self._count("opens")

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def _complaint_due(self) -> bool:
        """True once: for the first delivery after enough others (late, so the breaker holds)."""
        with self._lock:
            if self.complaints or self.deliveries < COMPLAINT_AFTER_DELIVERIES:
                return False
            self.complaints = 1
            return True

    def _ses(self, kind: str, mail: devsns.SentMail) -> None:
        event = devsns.ses_event(kind, mail.ses_id, [mail.address], message_ref=mail.message_ref)
        self.stack.post_sns(self.stack.ses_notification(event))

    def _unsubscribe(self, header: str) -> bool:
        """RFC 8058 one-click: POST List-Unsubscribe=One-Click to the https/http URL in the header."""
        url = next((u.strip(" <>") for u in header.split(",") if "://" in u), "")
        if not url:
            return False
        req = urllib.request.Request(
            url,
            data=b"List-Unsubscribe=One-Click",
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        urllib.request.urlopen(req, timeout=10).close()
        return True


def done_count(status: dict[str, Any]) -> int:
    """Recipients the plan is finished with: what the bar fills up with."""
    return sum(int(status.get(k) or 0) for k in ("sent", "failed", "stopped", "suppressed"))


def status_line(status: dict[str, Any]) -> str:
    keys = ("sent", "failed", "suppressed", "delivered", "bounced", "complained", "opened", "clicked")
    return f"{status.get('phase', '-'):<9} " + " ".join(f"{k}={status.get(k, 0)}" for k in keys)


def caught_up(status: dict[str, Any], audience: Audience) -> bool:
    """The audience has read every sent message and the status shows every event it produced."""
    if len(audience.seen) < int(status.get("sent") or 0):
        return False
    return events_shown(status, audience)


def events_shown(status: dict[str, Any], audience: Audience) -> bool:
    """The status shows every event the audience produced (the API and the operator caught up)."""
    want = {
        "opened": audience.opens,
        "clicked": audience.clicks,
        "unsubscribed": audience.unsubscribes,
        "delivered": audience.deliveries,
        "bounced": audience.bounces,
        "complained": audience.complaints,
    }
    return all(int(status.get(k) or 0) >= v for k, v in want.items())


class Demo:
    def __init__(self, console: Console, base: Path, operator_env: dict[str, str] | None = None) -> None:
        self.console = console
        self.base = base
        options = StackOptions(
            api_key=API_KEY,
            data_env={
                "EMAILPLAN_LOG_FORMAT": "json",
                # Simulated readers open seconds after delivery; don't file them as machine opens.
                "EMAILPLAN_OPEN_MACHINE_WINDOW_SECONDS": "0",
                "EMAILPLAN_OPEN_FLUSH_SECONDS": "0.5",
            },
            # Every namespace: a plan applied to `default` (or any other) is sent too.
            operator_namespaces=[],
            operator_env=dict(operator_env or {}),
        )
        self.stack = LocalStack(base / "logs", options)
        self.audience = Audience(self.stack)

    def step(self, text: str) -> None:
        self.console.print(f"[bold cyan]==>[/] {text}")

    def start(self) -> None:
        self.step("building or reusing the local control plane (first run: 10-20 min)")
        controlplane_bin()
        self.stack.start(progress=self.step)
        self.stack.kubectl("create", "namespace", NAMESPACE)
        via = f"{SUPPRESSIONS.method} {SUPPRESSIONS.path}"
        self.step(f"suppressing {len(SUPPRESSED)} addresses through the API ({via})")
        self.stack.suppress(SUPPRESSED)

    def apply_and_watch(self, timeout: float, interactive: bool) -> dict[str, Any]:
        self.step(f"kubectl apply -f {EXAMPLE.relative_to(ROOT)}")
        self.stack.kubectl("apply", "-n", NAMESPACE, "-f", str(EXAMPLE))
        self.audience.start()
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        last = ""
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
            completed_at: float | None = None
            while time.monotonic() < deadline:
                status = self.stack.status(NAMESPACE, PLAN)
                line = status_line(status)
                total = int(status.get("total") or 0) or None
                bar.update(task, total=total, completed=done_count(status), counts=line)
                if line != last and not interactive:
                    self.console.print(f"    {line} progress={status.get('progress', '-')}", highlight=False)
                last = line
                phase = status.get("phase")
                if phase == "Failed":
                    break
                if phase == "Completed":
                    if completed_at is None:
                        completed_at = time.monotonic()
                        bar.stop_task(task)  # the clock shows the sending time, not the settling
                        bar.update(task, description=f"{PLAN} (Completed; last events arriving)")
                    # SES events and opens of the last messages reach the status a moment later.
                    if caught_up(status, self.audience) or time.monotonic() - completed_at > SETTLE_SECONDS:
                        bar.update(task, description=PLAN)
                        break
                time.sleep(POLL_SECONDS)
        self.audience.stop()
        # Events the audience sent while stopping reach the status a moment later: the final
        # table compares the two, so wait for them (on a slow machine the settling above may
        # have ended while the readers were still busy).
        settle = time.monotonic() + SETTLE_SECONDS
        while True:
            status = self.stack.status(NAMESPACE, PLAN) or status
            if events_shown(status, self.audience) or time.monotonic() > settle:
                return status
            time.sleep(POLL_SECONDS)

    def rejected(self) -> tuple[int, str]:
        """Rows the data plane refused (not part of ``total``), with examples from the plan's Events."""
        count, detail = 0, ""
        for event in self.stack.events(NAMESPACE, PLAN):
            message = str(event.get("message") or "")
            found = re.search(r"(\d+) (?:rows )?rejected", message)
            if found:
                count = max(count, int(found.group(1)))
            if event.get("reason") == "RecipientsRejected":
                detail = message
        return count, detail

    def report(self, status: dict[str, Any]) -> dict[str, Any]:
        self.console.print()
        wide = self.stack.kubectl("get", "emailplans", "-n", NAMESPACE, "-o", "wide")
        self.console.print(wide, highlight=False, markup=False)
        rejected, detail = self.rejected()
        received = len(self.stack.moto.sent_emails())
        table = Table(title=f"EmailPlan {NAMESPACE}/{PLAN}")
        table.add_column("count")
        table.add_column("value", justify="right")
        table.add_column("where it comes from")
        notes = {
            "total": "recipients accepted into the plan (valid rows, suppressed ones included)",
            "suppressed": "on the suppression list before the plan started: never sent",
            "delivered": "SES Delivery notifications (simulated, signed SNS)",
            "bounced": "SES Bounce notifications (simulated); hard bounces get suppressed",
            "complained": "SES Complaint notifications (simulated)",
            "opened": "tracking pixel fetched by simulated readers",
            "clicked": "tracked links followed by simulated readers",
            "unsubscribed": "one-click List-Unsubscribe by simulated readers",
        }
        table.add_row("rejected rows", str(rejected), "invalid rows, refused with row numbers; not in total")
        for key in STATUS_COUNTS:
            table.add_row(key, str(status.get(key, 0)), notes.get(key, ""))
        table.add_row("SES messages received (moto)", str(received), "each sent address once")
        self.console.print(table)
        if detail:
            self.console.print(f"[dim]RecipientsRejected Event: {detail}[/]")
        return {**status, "rejected": rejected, "sesReceived": received, **self.audience.summary()}

    def explore(self, name: str = PLAN) -> None:
        """What to type in another terminal while the stack keeps running."""
        st = self.stack
        plan = f"{NAMESPACE}/{name}"
        self.console.print(
            "\n[bold]The stack keeps running[/] (Ctrl-C here stops every process). In another terminal:\n"
            f"  export KUBECONFIG={st.kubeconfig}\n"
            f"  export EMAILPLAN_API_URL={st.api_url} EMAILPLAN_API_KEY={API_KEY}\n"
            f"  export {devsns.SES_URL_ENV}={st.moto.endpoint_url} EMAILPLAN_DEV_MODE=1\n"
            f"  export {devsns.KEY_FILE_ENV}={st.ident.key_file} {devsns.CERT_URL_ENV}={st.certs.cert_url}\n"
            f'  export PATH="{Path(EMAILPLAN).parent}:$PATH"\n'
            "The operator watches every namespace: apply plans to `demo`, `default` or one you create.\n"
            "Then try:\n"
            f"  kubectl get emailplans -A -o wide\n"
            f"  kubectl describe emailplan {name} -n {NAMESPACE}      # conditions and Events\n"
            f"  emailplan stats {plan}\n"
            f"  emailplan sns bounce {plan} --count 2     # SES events, signed as SNS signs them\n"
            f"  emailplan sns open {plan} --count 5       # readers: open, click\n"
            f"  kubectl apply -n default -f {ROOT / 'examples' / 'emailplan-inline.yaml'}   # any namespace\n"
            f"SES, SQS, SNS and S3 (moto): {st.moto.endpoint_url}; the mail SES accepted: "
            f"{st.moto.endpoint_url}/moto-api/data.json\n"
            f"PostgreSQL: {st.database_url}\n"
            f"The API's OpenAPI document: {st.api_url}{OPENAPI.path}; process logs: {st.base}\n"
            "ready: the stack keeps running",
            highlight=False,
            soft_wrap=True,
        )

    def close(self) -> None:
        self.audience.stop()
        self.stack.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--keep", action="store_true", help="after completion keep everything running until Ctrl-C"
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the process logs after stopping (kept on failure)"
    )
    parser.add_argument("--non-interactive", action="store_true", help="plain log lines, no live bar")
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    parser.add_argument("--json", type=Path, help="write the final status as JSON to this file")
    parser.add_argument(
        "--campaign",
        choices=("abtest", "rollout", "window"),
        help="instead: walk examples/emailplan-<campaign>.yaml through with a fast clock, narrated",
    )
    args = parser.parse_args()
    stop_like_ctrl_c()  # SIGTERM, SIGHUP, the parent's death: the same clean stop as Ctrl-C
    console = Console()
    # Removed when the demo ends however it ends (the watchdog, devenv.reaper), unless kept below.
    base = reaper.temp_dir("emailplan-demo-")
    # Every temporary file of the demo and of what it starts (the Kubernetes client writes the
    # kubeconfig's client key to one) goes below a directory the watchdog removes in any case.
    # Short names: sockets live below it (PostgreSQL's, the workers' forkserver).
    tmp = reaper.temp_dir("ep-")
    for path in (base, tmp):  # PostgreSQL (its own user when we are root) reaches its directory
        path.chmod(0o711)
    os.environ["TMPDIR"] = str(tmp)
    tempfile.tempdir = None  # read TMPDIR again
    clock = None
    if args.campaign:
        # The walk-throughs' one dependency on this module is loaded as `demo` (this file).
        sys.modules.setdefault("demo", sys.modules[__name__])
        import demo_campaigns

        clock = demo_campaigns.TestClock(base / "clock-offset")
    demo = Demo(console, base, operator_env=clock.env() if clock else None)
    ok = False
    failed = True  # keep the logs to look at, unless the demo completed or was told to stop
    try:
        if args.campaign and clock:
            final = demo_campaigns.run(demo, args.campaign, clock)
        else:
            demo.start()
            status = demo.apply_and_watch(
                args.timeout, interactive=not args.non_interactive and console.is_terminal
            )
            final = demo.report(status)
        if args.json:
            args.json.write_text(json.dumps(final, indent=2))
        ok = final.get("phase") == "Completed" and "walkFailed" not in final
        failed = not ok
        console.print("[bold green]demo completed[/]" if ok else "[bold red]demo did not complete[/]")
        if args.keep:
            demo.explore(str(final.get("plan") or PLAN))
            signal.pause()
        else:
            console.print("To explore the stack with kubectl and the API afterwards: ./hack/demo.sh --keep")
        return 0 if ok else 1
    except KeyboardInterrupt:
        failed = False
        console.print("\ninterrupted: stopping everything")
        return 130 if not ok else 0
    finally:
        console.print("[dim]stopping all demo processes[/]")
        demo.close()
        if failed or args.keep_logs:
            reaper.keep(base)
            shutil.rmtree(tmp, ignore_errors=True)
            console.print(f"logs kept in {base / 'logs'}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
