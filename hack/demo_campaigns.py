"""Campaign walk-throughs on the demo: ``./hack/demo.sh --campaign abtest|rollout|window``.

Each applies one example of ``examples/`` as it is (the file a user applies), after uploading
a generated recipient list to the S3 stand-in (moto) at the bucket and key the example names.
Simulated mailboxes report deliveries and a few bounces as signed SNS notifications and open
or click the mail, so the numbers the operator decides on are real counts of the data plane.

Hours of waiting (an A/B test's ``decideAfter``, a rollout step's ``hold``, a closed send
window) pass through the operator's development test clock (``EMAILPLAN_CLOCK_OFFSET_FILE``,
dev mode only, ``operator/clock.py``): when the plan waits, the demo moves that clock to the
instant the plan's own status names (``status.abTest.decideAt``, the hold's end,
``status.window.nextChange``). Every decision is the operator's; the demo only narrates it.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import boto3
import yaml
from demo import NAMESPACE, ROOT, Audience, Demo, bucket, caught_up, status_line

from devenv.kube import controlplane_bin
from devenv.moto import CREDENTIALS
from devenv.stack import LocalStack
from emailplan import devsns

CLOCK_ENV = "EMAILPLAN_CLOCK_OFFSET_FILE"
POLL_SECONDS = 0.5
WAIT_SECONDS = 150.0  # the longest a single step of a walk-through may take before it gives up
PAST_SECONDS = 5.0  # the clock lands this far past the instant the plan waits for
VARIANT_HEADER = "X-EmailPlan-Variant"


@dataclass(frozen=True)
class Campaign:
    """One walk-through: the example it applies and the simulated list and mailboxes."""

    example: str  # a file in examples/, applied unchanged
    recipients: int  # rows of the generated list uploaded to the example's S3 key
    prefix: str  # addresses are <prefix>NNNN@example.com
    bounce_every: int  # SES reports a hard bounce for every n-th message arriving (first included)
    # Per A/B variant, the share of delivered mail opened (the other examples track no opens).
    open_percent: dict[str, int] = field(default_factory=dict)
    intro: str = ""


CAMPAIGNS = {
    "abtest": Campaign(
        "emailplan-abtest.yaml",
        2400,
        "customer",
        bounce_every=100,
        open_percent={"plain": 15, "question": 40},
        intro="an A/B test: 20 % of the list gets one of two subject lines, the better one goes to the rest",
    ),
    "rollout": Campaign(
        "emailplan-rollout.yaml",
        1500,
        "dormant",
        bounce_every=30,
        intro="a progressive rollout to a list dormant since 2024: 1 %, then 10 %, then everyone, "
        "each step judged on its own bounces (one address in 30 no longer exists)",
    ),
    "window": Campaign(
        "emailplan-window.yaml",
        420,
        "account",
        bounce_every=50,
        intro="a send window: weekday office hours in Berlin; outside them the plan waits by itself",
    ),
}


class TestClock:
    """The operator's "now" in development: real time plus the seconds in a file it reads every pass."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("0")

    def env(self) -> dict[str, str]:
        return {CLOCK_ENV: str(self.path), "EMAILPLAN_DEV_MODE": "1"}

    def offset(self) -> float:
        return float(self.path.read_text() or 0)

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset())

    def move_to(self, instant: datetime) -> float:
        """Shift the operator's clock so that it reads ``instant`` now; returns the seconds skipped."""
        skipped = (instant - self.now()).total_seconds()
        self.path.write_text(str((instant - datetime.now(UTC)).total_seconds()))
        return skipped


class Mailboxes(Audience):
    """The recipients of a walk-through, decided per message so the counts are known in advance.

    SES reports a hard bounce for every n-th message to arrive (the first one included, so
    even a rollout's 1 % step has one) and a delivery for the rest; of the delivered mail a
    share opens it, per A/B variant (``X-EmailPlan-Variant``) when the plan has variants,
    chosen by a hash of the address; a third of those who open also click the link.
    """

    def __init__(self, stack: LocalStack, campaign: Campaign) -> None:
        super().__init__(stack)
        self.campaign = campaign
        self.arrived = 0
        self.opens_by_variant: Counter[str] = Counter()
        self._order = threading.Lock()

    def _mailbox(self, mail: devsns.SentMail) -> None:
        with self._order:
            self.arrived += 1
            nth = self.arrived
        if nth % self.campaign.bounce_every == 1 % self.campaign.bounce_every:
            self._ses("Bounce", mail)
            self._count("bounces")
            return
        self._ses("Delivery", mail)
        self._count("deliveries")
        variant = str(mail.message.get(VARIANT_HEADER, "") or "")
        share = self.campaign.open_percent.get(variant, 0)
        roll = bucket(mail.address, 100)
        if roll >= share:
            return
        if roll < share // 3 and mail.link:
            devsns.visit(mail.link)
            self._count("clicks")
        elif mail.pixel:
            devsns.visit(mail.pixel)
        else:
            return
        self._count("opens")
        with self._lock:
            self.opens_by_variant[variant] += 1


def upload_list(stack: LocalStack, spec: dict[str, Any], campaign: Campaign) -> str:
    """The example's S3 list, generated and put where the example says it is; returns its s3:// URL."""
    where = spec["recipients"]["s3"]
    rows = ["email,name"] + [
        f"{campaign.prefix}{i:04d}@example.com,{campaign.prefix.title()} {i}"
        for i in range(1, campaign.recipients + 1)
    ]
    s3 = boto3.client(
        "s3",
        endpoint_url=stack.moto.endpoint_url,
        region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    s3.create_bucket(Bucket=where["bucket"])
    s3.put_object(Bucket=where["bucket"], Key=where["key"], Body=("\n".join(rows) + "\n").encode())
    return f"s3://{where['bucket']}/{where['key']}"


def parse_time(value: Any) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def zoned(instant: datetime, zone: str) -> str:
    """``2026-12-07 09:00 Europe/Berlin (2026-12-07T08:00:00Z)``: the plan's zone, then UTC."""
    utc = instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    local = instant.astimezone(ZoneInfo(zone)).strftime("%a %Y-%m-%d %H:%M")
    return f"{local} {zone} ({utc})"


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


class Walk:
    """One walk-through on a started demo stack: apply, watch, narrate, move the clock."""

    def __init__(self, demo: Demo, name: str, clock: TestClock) -> None:
        self.demo = demo
        self.stack = demo.stack
        self.campaign = CAMPAIGNS[name]
        self.example = ROOT / "examples" / self.campaign.example
        self.doc = yaml.safe_load(self.example.read_text())
        self.plan = str(self.doc["metadata"]["name"])
        self.clock = clock
        self.readers = Mailboxes(self.stack, self.campaign)
        demo.audience = self.readers  # stopped with the demo
        self._phase = ""
        self._line = ""

    # --- saying and looking ------------------------------------------------------------------------

    def say(self, text: str) -> None:
        """A narrated line: what happened and why, in plain words."""
        self.demo.console.print(f"[bold magenta]>>[/] {text}", highlight=False, soft_wrap=True)

    def status(self) -> dict[str, Any]:
        status = self.stack.status(NAMESPACE, self.plan)
        self._show(status)
        return status

    def _show(self, status: dict[str, Any]) -> None:
        """The counts when they change; the phase with the operator's own words when it changes."""
        line = status_line(status)
        if line != self._line:
            self.demo.console.print(f"    {line}", highlight=False, soft_wrap=True)
            self._line = line
        phase = str(status.get("phase") or "")
        if phase and phase != self._phase:
            # A pause's message is narrated with what to do about it (``resume``).
            message = "" if phase == "Suspended" else condition(status, "Ready").get("message") or ""
            self.say(f"phase {phase}" + (f": {message}" if message else ""))
            self._phase = phase

    def watch(self, until: Callable[[dict[str, Any]], Any], what: str) -> dict[str, Any]:
        """Poll the plan's status until ``until`` holds; a Failed plan or a timeout ends the walk."""
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            status = self.status()
            if until(status):
                return status
            if status.get("phase") == "Failed":
                raise WalkFailed(f"the plan failed while waiting for: {what}")
            time.sleep(POLL_SECONDS)
        raise WalkFailed(f"not reached in {WAIT_SECONDS:.0f}s: {what}")

    def settle(self) -> dict[str, Any]:
        """Wait until the mailboxes handled every sent message and the status counts their events."""
        return self.watch(lambda s: caught_up(s, self.readers), "the simulated readers' events counted")

    def jump(self, instant: datetime, why: str) -> None:
        skipped = self.clock.move_to(instant + timedelta(seconds=PAST_SECONDS))
        self.say(
            f"the clock jumps {_duration(skipped)} ahead to {instant.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ} "
            f"({why}; the operator's test clock, {CLOCK_ENV})"
        )

    def kubectl(self, *args: str) -> None:
        """Run a kubectl command as the user would type it, showing it first."""
        shown = " ".join(f"'{a}'" if "{" in a else a for a in args)
        self.demo.console.print(f"[bold cyan]==>[/] kubectl {shown}", highlight=False, soft_wrap=True)
        self.stack.kubectl(*args)

    # --- the walk ---------------------------------------------------------------------------------

    def start(self) -> None:
        self.say(f"{self.plan}: {self.campaign.intro}")
        url = upload_list(self.stack, self.doc["spec"], self.campaign)
        self.say(f"uploaded {self.campaign.recipients} recipients to {url} (the S3 stand-in, moto)")
        self.kubectl("apply", "-n", NAMESPACE, "-f", str(self.example))
        self.readers.start()

    def finish(self) -> dict[str, Any]:
        status = self.watch(lambda s: s.get("phase") == "Completed", "the plan completed")
        status = self.settle()
        self.say(
            f"completed: {status.get('sent')} of {status.get('total')} sent, {status.get('delivered')} "
            f"delivered, {status.get('bounced')} bounced, {status.get('opened')} opened, "
            f"{status.get('clicked')} clicked; SES received {len(self.stack.received())} messages"
        )
        wide = self.stack.kubectl("get", "emailplans", "-n", NAMESPACE, "-o", "wide")
        self.demo.console.print(wide, highlight=False, markup=False)
        return {
            **status,
            "plan": self.plan,
            "sesReceived": sum(self.stack.received().values()),
            "uniqueRecipients": len(self.stack.received()),
            **self.readers.summary(),
            "simulatedOpensByVariant": dict(self.readers.opens_by_variant),
        }


class WalkFailed(Exception):
    """The walk-through did not reach a step it waits for (the message says which)."""


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds / 60) * 60)  # whole minutes: "4h", not "3h 59m" for 4h less a few seconds
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours else []
    parts += [f"{minutes}m"] if minutes or not parts else []
    return " ".join(parts)


# --- the three walk-throughs ------------------------------------------------------------------------


def ab_rows(status: dict[str, Any]) -> list[dict[str, Any]]:
    return list((status.get("abTest") or {}).get("variants") or [])


def walk_abtest(w: Walk) -> dict[str, Any]:
    w.say(
        "the example keeps SES's default 14 messages/s; to finish in minutes the demo raises the "
        "plan's rate (a live change: no pod restarts)"
    )
    w.kubectl(
        "patch",
        "eplan",
        w.plan,
        "-n",
        NAMESPACE,
        "--type",
        "merge",
        "-p",
        '{"spec":{"rate":{"perSecond":100}}}',
    )
    status = w.watch(
        lambda s: s.get("phase") == "Holding" and (s.get("abTest") or {}).get("cohortFinishedAt"),
        "the A/B test cohort sent",
    )
    ab = status["abTest"]
    w.say(
        f"the test cohort is sent: {status.get('sent')} of {status.get('total')} recipients "
        f"({ab['testPercent']:g} % of the list), split over the variants; the other "
        f"{int(status.get('total') or 0) - int(status.get('sent') or 0)} wait for the winner"
    )
    status = w.settle()
    cohort_opens = dict(w.readers.opens_by_variant)  # only the cohort has been sent so far
    for row in ab_rows(status):
        w.say(
            f"variant {row['name']}: {row['sent']} sent, {row['opened']} opened ({row['openRate']:.1%}), "
            f"{row['clicked']} clicked, {row['bounced']} bounced"
        )
    ab = status["abTest"]
    after = w.doc["spec"]["abTest"]["decideAfter"]
    w.say(f"the operator chooses the winner by {ab['metric']} at {ab['decideAt']} ({after} after the cohort)")
    w.jump(parse_time(ab["decideAt"]), f"abTest.decideAfter: {after}")
    status = w.watch(lambda s: (s.get("abTest") or {}).get("winner"), "the A/B winner chosen")
    ab = status["abTest"]
    w.say(f"winner: {ab['winner']}, because {ab['reason']}")
    rest = int(status.get("total") or 0) - sum(int(r["sent"]) for r in ab_rows(status))
    w.say(f"the rest of the list ({rest} recipients) now gets {ab['winner']}")
    final = w.finish()
    final["winner"] = ab["winner"]
    final["simulatedCohortOpensByVariant"] = cohort_opens
    return final


def walk_window(w: Walk) -> dict[str, Any]:
    zone = str(w.doc["spec"]["schedule"]["window"].get("timeZone") or "UTC")
    closed_mid_list = False
    while True:
        status = w.watch(
            lambda s: (
                s.get("phase") in ("Scheduled", "Completed")
                or (s.get("phase") == "Sending" and int(s.get("sent") or 0) * 3 >= int(s.get("total") or 1))
            ),
            "the window open or closed",
        )
        window = status.get("window") or {}
        if status.get("phase") == "Completed":
            return w.finish()
        change = parse_time(window["nextChange"])
        if status.get("phase") == "Sending" and not closed_mid_list:
            w.say(f"the window is open and closes at {zoned(change, zone)}; {status.get('sent')} sent so far")
            w.jump(change, "to the window's end")
            closed_mid_list = True
            w.watch(lambda s: s.get("phase") == "Scheduled", "the window closed")
            continue
        if status.get("phase") == "Sending":
            w.watch(lambda s: s.get("phase") == "Completed", "the plan completed")
            continue
        w.watch(lambda s: w.stack.running(NAMESPACE, w.plan) == 0, "no sender pods outside the window")
        status = w.settle()  # what the stopped pods sent is counted
        w.say(
            f"the window is closed ({window.get('schedule')}): {status.get('sent')} of {status.get('total')} "
            f"sent, no sender pods; it opens at {zoned(change, zone)}"
        )
        w.say(f"InSendWindow=False: {condition(status, 'InSendWindow').get('message')}")
        time.sleep(3)
        status = w.status()
        w.say(f"{status.get('sent')} sent after waiting: nothing goes out while the window is closed")
        w.jump(change, "to the window's opening")
        status = w.watch(lambda s: s.get("phase") != "Scheduled", "the window opened")
        how = "resumes" if int(status.get("sent") or 0) else "starts"
        w.say(f"the window is open: sending {how} ({condition(status, 'InSendWindow').get('message')})")


def walk_rollout(w: Walk) -> dict[str, Any]:
    while True:
        status = w.watch(lambda s: s.get("phase") in ("Holding", "Suspended", "Completed"), "a rollout step")
        if status.get("phase") == "Completed":
            return w.finish()
        if status.get("phase") == "Holding":
            hold(w, w.settle())
        else:
            resume(w, status)


def hold(w: Walk, status: dict[str, Any]) -> None:
    """A step is sent: its counts, then the clock to the end of its hold."""
    ro = status["rollout"]
    w.say(
        f"rollout step {ro['step']} of {ro['steps']} ({ro['percent']:g} % of the list) is sent: "
        f"{ro['stepSample']} reached a mailbox decision, bounce rate {ro['stepBounceRate']:.2%}; "
        f"it holds {_duration(ro['holdSeconds'])} before the gate judges it"
    )
    end = parse_time(ro["holdStartedAt"]) + timedelta(seconds=int(ro["holdSeconds"]))
    w.jump(end, f"the hold of step {ro['step']}")
    step = ro["step"]
    w.watch(
        lambda s: s.get("phase") != "Holding" or (s.get("rollout") or {}).get("step") != step,
        "the hold's end",
    )


def resume(w: Walk, status: dict[str, Any]) -> None:
    """The plan paused: why, the command that continues it, and that command run."""
    paused = condition(status, "Suspended")
    w.say(f"paused ({paused.get('reason')}): {paused.get('message')}")
    ro = status.get("rollout") or {}
    field = "rollout" if paused.get("reason") == "RolloutGateFailed" else "safety"
    rate = float(ro.get("stepBounceRate") or 0) if field == "rollout" else 0.0
    limit = max(0.05, round(rate + 0.02, 2))
    patch = json.dumps({"spec": {field: {"maxBounceRate": limit}}}, separators=(",", ":"))
    w.say(
        f"to continue, accept this list's bounces by raising spec.{field}.maxBounceRate to {limit:g} "
        f"(or fix the list and raise it later):"
    )
    w.say(f"  kubectl patch eplan {w.plan} -n {NAMESPACE} --type merge -p '{patch}'")
    w.say("the demo runs that command now, as you would")
    w.kubectl("patch", "eplan", w.plan, "-n", NAMESPACE, "--type", "merge", "-p", patch)
    w.watch(lambda s: s.get("phase") != "Suspended", "the plan continued")
    w.say("the gate passes with the raised limit: the rollout continues")


WALKS: dict[str, Callable[[Walk], dict[str, Any]]] = {
    "abtest": walk_abtest,
    "rollout": walk_rollout,
    "window": walk_window,
}


def run(demo: Demo, name: str, clock: TestClock) -> dict[str, Any]:
    """Start the demo stack, then walk one campaign through to Completed; returns the final counts."""
    demo.step("building or reusing the local control plane (first run: 10-20 min)")
    controlplane_bin()
    demo.stack.start(progress=demo.step)
    demo.stack.kubectl("create", "namespace", NAMESPACE)
    walk = Walk(demo, name, clock)
    try:
        walk.start()
        return WALKS[name](walk)
    except WalkFailed as exc:
        walk.say(f"the walk-through stopped: {exc}")
        return {**walk.status(), "plan": walk.plan, "walkFailed": str(exc)}
