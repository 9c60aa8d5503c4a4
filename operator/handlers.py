"""kopf handlers: one reconciling daemon per EmailPlan, a wake-up on spec changes, a stop on deletion.

Why a daemon and not a set of create/update/timer handlers: one loop per plan
serialises everything that touches the plan (validation, registration, upload,
scaling, status), so there are no races between handlers, and every pass is
idempotent, so an operator restart simply runs the next pass. Progress that must
survive a restart (the recipient list was uploaded and completed) is recorded in
the plan's status before anything else happens.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from emailplan.operator import decisions as d
from emailplan.operator import metrics
from emailplan.operator.dataplane import DataPlane, DataPlaneRejected, DataPlaneUnavailable
from emailplan.operator.deployment import deployment_name, render_deployment
from emailplan.operator.kubeapi import GROUP, PLURAL, VERSION, KubeApi, load_config
from emailplan.operator.planspec import PlanSpec, Templates, plan_payload, read_spec
from emailplan.operator.recipients import content_type, first_recipient, inline_ndjson, text_chunks
from emailplan.operator.settings import OperatorSettings
from emailplan.operator.validation import check_address, check_templates

log = logging.getLogger("emailplan.operator")

FINALIZER = "emailplan.io/finalizer"
# Data-plane states that mean the list is complete (docs/architecture.md).
LOADED_STATES = {"ready", "suspended", "done", "stopped"}


@dataclass
class PlanMemory:
    """What the operator remembers about one plan between passes (lost on restart, by design)."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    valid_generation: int | None = None
    templates: Templates | None = None
    registered: tuple[int, bool] | None = None  # (generation, suspended) last PUT
    dp_suspended: bool | None = None
    replicas: int | None = None  # spec.replicas of the Deployment as last set
    status: dict[str, Any] | None = None  # last status written
    reported: str | None = None  # last problem reported as an Event
    tripped: str | None = None  # reason of the breaker trip last reported


@dataclass
class Context:
    """Process-wide state shared by the handlers (kept in kopf's memo)."""

    settings: OperatorSettings
    dataplane: DataPlane
    kube: KubeApi
    plans: dict[str, PlanMemory] = field(default_factory=dict)
    phases: dict[str, str] = field(default_factory=dict)

    def memory(self, uid: str) -> PlanMemory:
        return self.plans.setdefault(uid, PlanMemory())


class InvalidPlan(Exception):
    """What is wrong with a plan, in words for its owner."""

    def __init__(self, problems: list[str], reason: str = "InvalidSpec") -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.reason = reason


def _ctx(memo: Any) -> Context:
    ctx = memo.get("ctx") if isinstance(memo, Mapping) else getattr(memo, "ctx", None)
    if not isinstance(ctx, Context):
        raise kopf.TemporaryError("operator not started yet", delay=1)
    return ctx


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Configure kopf and create the shared clients.

    kopf keeps its own bookkeeping in annotations under our prefix (not in
    ``status``, which is ours and schema-checked), posts only warnings from its
    own logs as Events (our Events are explicit), and peers with a random
    priority so two replicas never tie and both pause.
    """
    ours: OperatorSettings = memo.get("settings") or OperatorSettings()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="emailplan.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="emailplan.io")
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.peering.lifetime = ours.peering_lifetime_seconds
    if ours.priority is not None:
        settings.peering.priority = ours.priority
    elif settings.peering.priority == 0:
        settings.peering.priority = random.randint(1, 1_000_000)  # not security: only breaks ties
    load_config()
    memo["ctx"] = Context(
        settings=ours,
        dataplane=DataPlane(ours.api_url, ours.api_key, timeout=ours.api_timeout_seconds),
        kube=KubeApi(),
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    ctx = memo.get("ctx")
    if isinstance(ctx, Context):
        await ctx.dataplane.close()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def wake_on_change(
    uid: str, meta: Mapping[str, Any], status: Mapping[str, Any], memo: kopf.Memo, **_: Any
) -> None:
    """Wake the plan's daemon at once when the spec changed, instead of at its next tick."""
    ctx = memo.get("ctx")
    if isinstance(ctx, Context) and uid in ctx.plans:
        generation = meta.get("generation")
        if generation is not None and generation != status.get("observedGeneration"):
            ctx.plans[uid].wake.set()


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=15)
async def plan_daemon(
    stopped: kopf.DaemonStopped, body: kopf.Body, uid: str, memo: kopf.Memo, **_: Any
) -> None:
    """Reconcile the plan every ``status_interval_seconds`` (sooner when woken) until it goes away."""
    ctx = _ctx(memo)
    mem = ctx.memory(uid)
    failures = 0
    while not stopped:
        started = time.perf_counter()
        mem.wake.clear()
        try:
            await reconcile(ctx, body, mem)
            failures = 0
        except DataPlaneUnavailable as exc:
            failures += 1
            metrics.RECONCILE_ERRORS.labels(kind="dataplane").inc()
            log.warning("data plane unavailable", extra={"plan": body.meta.get("name"), "error": str(exc)})
        except ApiException as exc:
            failures += 1
            metrics.RECONCILE_ERRORS.labels(kind="kubernetes").inc()
            log.warning(
                "kubernetes API error",
                extra={"plan": body.meta.get("name"), "status": exc.status, "reason": exc.reason},
            )
            if exc.status == 422 and failures == 1:  # refused as invalid: retrying alone will not help
                kopf.event(body, type="Warning", reason="KubernetesRefused", message=str(exc.body)[:1000])
        except Exception:
            failures += 1
            metrics.RECONCILE_ERRORS.labels(kind="unexpected").inc()
            log.exception("reconcile failed", extra={"plan": body.meta.get("name")})
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
            metrics.publish_phases(ctx.phases)
        interval = ctx.settings.status_interval_seconds
        delay = interval if failures == 0 else min(60.0, interval * 2 ** min(failures, 5))
        await _sleep(stopped, mem.wake, delay)
    ctx.plans.pop(uid, None)
    ctx.phases.pop(uid, None)
    metrics.publish_phases(ctx.phases)


async def _sleep(stopped: kopf.DaemonStopped, wake: asyncio.Event, delay: float) -> None:
    """Sleep ``delay`` seconds, or less when the plan is woken or the daemon is stopped."""
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait())]
    try:
        await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


@kopf.on.delete(GROUP, VERSION, PLURAL, retries=60, backoff=5)
async def stop_plan(uid: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Before the plan goes: stop it in the data plane, so unsent messages become ``stopped``.

    The sender Deployment needs nothing here: its ownerReference lets the
    garbage collector delete it after the plan.
    """
    ctx = _ctx(memo)
    try:
        await ctx.dataplane.stop(uid)
    except DataPlaneUnavailable as exc:
        raise kopf.TemporaryError(
            f"data plane unavailable, cannot stop the plan yet: {exc}", delay=5
        ) from exc
    except DataPlaneRejected as exc:
        log.warning("data plane refused to stop the plan", extra={"plan": name, "error": str(exc)})
    log.info("plan stopped", extra={"plan": name, "uid": uid})


# --- reconcile -------------------------------------------------------------------------------------------


async def reconcile(ctx: Context, body: kopf.Body, mem: PlanMemory) -> None:
    """One idempotent pass: validate, register, load, read counts, decide, scale, write status."""
    meta = body.meta
    if meta.get("deletionTimestamp"):
        return
    uid = str(meta["uid"])
    name = str(meta["name"])
    namespace = str(meta["namespace"])
    generation = int(meta.get("generation") or 0)
    status = dict(body.status)
    if mem.status is None:
        mem.status = status
    spec = read_spec(
        body.spec,
        default_max_bounce_rate=ctx.settings.default_max_bounce_rate,
        default_max_complaint_rate=ctx.settings.default_max_complaint_rate,
        default_min_sample=ctx.settings.breaker_min_sample,
    )
    now = datetime.now(UTC)
    conditions: list[dict[str, Any]] = list(mem.status.get("conditions") or [])

    try:
        templates = await _validate(ctx, mem, namespace, generation, spec)
    except InvalidPlan as exc:
        await _report_invalid(ctx, body, mem, exc, generation, now, conditions, name, namespace)
        return
    valid_cond = d.condition(
        conditions, "Valid", True, "SpecValid", "the plan is valid", now=now, generation=generation
    )

    # The breaker decides from the latest counts; before the first read it is closed.
    counts = d.normalize_counts(mem.status)
    trip = d.circuit_breaker(
        counts,
        max_bounce_rate=spec.max_bounce_rate,
        max_complaint_rate=spec.max_complaint_rate,
        min_sample=spec.min_sample,
    )
    suspended = spec.suspend or trip is not None

    try:
        await _register(ctx, mem, uid, name, namespace, generation, spec, templates, suspended)
        loaded, load_cond, load_message = await _load(ctx, body, mem, uid, namespace, spec, now, conditions)
    except DataPlaneRejected as exc:
        await _report_invalid(
            ctx,
            body,
            mem,
            InvalidPlan([f"the data plane refused the plan: {exc}"], reason="RejectedByDataPlane"),
            generation,
            now,
            conditions,
            name,
            namespace,
        )
        return
    except InvalidPlan as exc:
        await _report_invalid(ctx, body, mem, exc, generation, now, conditions, name, namespace)
        return

    raw_counts = await ctx.dataplane.counts(uid)
    if raw_counts is not None:
        counts = d.normalize_counts(raw_counts)
    trip = d.circuit_breaker(
        counts,
        max_bounce_rate=spec.max_bounce_rate,
        max_complaint_rate=spec.max_complaint_rate,
        min_sample=spec.min_sample,
    )
    suspended = spec.suspend or trip is not None
    await _apply_suspension(ctx, mem, body, uid, suspended, trip)

    backlog = d.remaining(counts)
    phase = d.phase(
        valid=True,
        registered=True,
        loaded=loaded,
        backlog=backlog,
        now=now,
        start_at=spec.start_at,
        suspended=spec.suspend,
        tripped=trip is not None,
    )
    replicas = d.desired_replicas(
        now=now,
        start_at=spec.start_at,
        suspended=suspended,
        loaded=loaded,
        backlog=backlog,
        rate_per_second=spec.rate,
        per_pod_rate=spec.per_pod_rate,
        max_replicas=spec.max_replicas,
        backlog_per_replica=ctx.settings.backlog_per_replica,
        current=mem.replicas or 0,
    )
    await _scale(ctx, mem, name, namespace, uid, replicas)

    if trip is not None:
        paused_cond = d.condition(conditions, "Suspended", True, trip.reason, trip.message, now=now)
    elif spec.suspend:
        paused_cond = d.condition(
            conditions, "Suspended", True, "SuspendedBySpec", "spec.suspend is true", now=now
        )
    else:
        paused_cond = d.condition(conditions, "Suspended", False, "NotSuspended", "", now=now)
    ready = phase in (d.SENDING, d.SCHEDULED, d.COMPLETED)
    ready_cond = d.condition(
        conditions,
        "Ready",
        ready,
        phase,
        _ready_message(phase, spec, backlog),
        now=now,
        generation=generation,
    )

    desired: dict[str, Any] = {k: counts[k] for k in d.COUNT_FIELDS}
    desired.update(
        phase=phase,
        progress=d.progress(counts, completed=phase == d.COMPLETED),
        replicas=replicas,
        observedGeneration=generation,
        registeredGeneration=generation,
        recipientsLoaded=loaded,
        message=load_message if phase == d.LOADING else _ready_message(phase, spec, backlog),
        conditions=d.merge_conditions(conditions, [valid_cond, load_cond, paused_cond, ready_cond]),
    )
    if phase in (d.SENDING, d.COMPLETED) or counts["sent"] > 0:
        desired["startedAt"] = mem.status.get("startedAt") or d.format_time(now)
    if phase == d.COMPLETED:
        desired["completedAt"] = mem.status.get("completedAt") or d.format_time(now)
        if mem.status.get("phase") != d.COMPLETED:
            kopf.event(
                body,
                type="Normal",
                reason="Completed",
                message=f"plan completed: {counts['sent']} sent, {counts['failed']} failed, "
                f"{counts['suppressed']} suppressed of {counts['total']}",
            )
    await _write_status(ctx, mem, name, namespace, desired)
    ctx.phases[uid] = phase


def _ready_message(phase: str, spec: PlanSpec, backlog: int) -> str:
    if phase == d.SCHEDULED and spec.start_at:
        return f"waiting for schedule.startAt {d.format_time(spec.start_at)}"
    if phase == d.SENDING:
        return f"sending at up to {spec.rate:g}/s, {backlog} left"
    if phase == d.PAUSED:
        return f"paused, {backlog} left"
    if phase == d.COMPLETED:
        return "all messages handled"
    return phase


async def _validate(
    ctx: Context, mem: PlanMemory, namespace: str, generation: int, spec: PlanSpec
) -> Templates:
    """Everything the schema cannot check; cached per generation once valid.

    An invalid plan is re-checked on every pass, so creating a missing ConfigMap
    or Secret later fixes the plan without touching it.
    """
    if mem.valid_generation == generation and mem.templates is not None:
        return mem.templates
    problems = check_address(spec.sender, "from")
    for i, addr in enumerate(spec.reply_to):
        problems += check_address(addr, f"replyTo[{i}]")

    html, text = spec.html, spec.text
    if spec.template_ref:
        ref_name = str(spec.template_ref.get("name") or "")
        data = await ctx.kube.config_map_data(namespace, ref_name)
        if data is None:
            problems.append(f"templateRef: ConfigMap {ref_name!r} not found in namespace {namespace!r}")
        else:
            for key_field in ("htmlKey", "textKey"):
                key = spec.template_ref.get(key_field)
                if key and key not in data:
                    problems.append(f"templateRef.{key_field}: key {key!r} not in ConfigMap {ref_name!r}")
            html = data.get(str(spec.template_ref.get("htmlKey") or "")) or None
            text = data.get(str(spec.template_ref.get("textKey") or "")) or None

    sample: dict[str, Any] | None = None
    source = spec.recipients_source
    if source == "inline":
        sample = dict(spec.recipients["inline"][0])
    elif source == "configMapRef":
        ref = spec.recipients["configMapRef"]
        data = await ctx.kube.config_map_data(namespace, str(ref.get("name")))
        if data is None:
            problems.append(
                f"recipients.configMapRef: ConfigMap {ref.get('name')!r} not found in namespace {namespace!r}"
            )
        elif str(ref.get("key")) not in data:
            problems.append(
                f"recipients.configMapRef: key {ref.get('key')!r} not in ConfigMap {ref.get('name')!r}"
            )
        else:
            sample = first_recipient(data[str(ref.get("key"))], str(ref.get("format") or "csv"))
            if sample is None:
                problems.append("recipients.configMapRef: the list has no recipients")
    elif source != "s3":
        problems.append("recipients: set exactly one of inline, configMapRef or s3")

    for secret in ctx.settings.sender_secret_name:
        if await ctx.kube.secret_exists(namespace, secret) is False:
            problems.append(f"Secret {secret!r} for the sender pods not found in namespace {namespace!r}")

    templates = Templates(subject=spec.subject, html=html, text=text)
    problems += check_templates(templates, sample if source != "s3" else None)
    if problems:
        raise InvalidPlan(problems)
    mem.valid_generation = generation
    mem.templates = templates
    return templates


async def _report_invalid(
    ctx: Context,
    body: kopf.Body,
    mem: PlanMemory,
    exc: InvalidPlan,
    generation: int,
    now: datetime,
    conditions: list[dict[str, Any]],
    name: str,
    namespace: str,
) -> None:
    """Failed phase, Valid=False and Ready=False conditions, one Warning Event per distinct problem.

    A plan that was valid and running before keeps its data-plane state, but its
    pods are scaled to zero so nothing is sent from a spec its owner broke.
    """
    mem.valid_generation = None
    mem.templates = None
    message = str(exc)
    if mem.reported != message:
        kopf.warn(body, reason=exc.reason, message=message[:1000])
        log.warning("invalid plan", extra={"plan": name, "namespace": namespace, "problems": exc.problems})
        mem.reported = message
    if mem.replicas:
        await _scale(ctx, mem, name, namespace, str(body.meta["uid"]), 0)
    desired = {
        "phase": d.FAILED,
        "observedGeneration": generation,
        "message": message[:4096],
        "conditions": d.merge_conditions(
            conditions,
            [
                d.condition(conditions, "Valid", False, exc.reason, message, now=now, generation=generation),
                d.condition(conditions, "Ready", False, exc.reason, message, now=now, generation=generation),
            ],
        ),
    }
    if mem.replicas is not None:
        desired["replicas"] = 0
    await _write_status(ctx, mem, name, namespace, desired)
    ctx.phases[str(body.meta["uid"])] = d.FAILED


async def _register(
    ctx: Context,
    mem: PlanMemory,
    uid: str,
    name: str,
    namespace: str,
    generation: int,
    spec: PlanSpec,
    templates: Templates,
    suspended: bool,
) -> None:
    """PUT the plan when it is new to this process or its spec or suspension changed (idempotent by uid)."""
    key = (generation, suspended)
    if mem.registered == key:
        return
    payload = plan_payload(
        name=name, namespace=namespace, spec=spec, templates=templates, suspended=suspended
    )
    await ctx.dataplane.put_plan(uid, payload)
    if mem.registered is None:
        log.info("plan registered", extra={"plan": name, "namespace": namespace, "uid": uid})
    mem.registered = key


async def _load(
    ctx: Context,
    body: kopf.Body,
    mem: PlanMemory,
    uid: str,
    namespace: str,
    spec: PlanSpec,
    now: datetime,
    conditions: list[dict[str, Any]],
) -> tuple[bool, dict[str, Any], str]:
    """Upload the recipient list once; return (loaded, RecipientsLoaded condition, status message).

    ``status.recipientsLoaded`` is written the moment the data plane confirmed the
    list complete, so a restarted operator never uploads or enqueues again; the
    data plane's own ``recipientsLoaded`` covers a crash between the two writes.
    """
    assert mem.status is not None
    old = next((c for c in conditions if c.get("type") == "RecipientsLoaded"), None)
    if mem.status.get("recipientsLoaded") and old is not None:
        return True, old, str(old.get("message") or "")
    view = await ctx.dataplane.get_plan(uid)
    if view and (view.get("recipientsLoaded") or view.get("state") in LOADED_STATES):
        cond = d.condition(conditions, "RecipientsLoaded", True, "Loaded", _summary(view), now=now)
        await _write_status(
            ctx,
            mem,
            str(body.meta["name"]),
            namespace,
            {"recipientsLoaded": True, "conditions": d.merge_conditions(conditions, [cond])},
        )
        return True, cond, cond["message"]

    source = spec.recipients_source
    if source == "s3":
        s3 = spec.recipients["s3"]
        if not (old and old.get("reason") == "LoadingFromS3"):
            await ctx.dataplane.load_s3(
                uid, str(s3["bucket"]), str(s3["key"]), str(s3.get("format") or "csv")
            )
            kopf.event(
                body,
                type="Normal",
                reason="LoadingRecipients",
                message=f"loading s3://{s3['bucket']}/{s3['key']}",
            )
        msg = f"the data plane is loading s3://{s3['bucket']}/{s3['key']}"
        cond = d.condition(conditions, "RecipientsLoaded", False, "LoadingFromS3", msg, now=now)
        await _write_status(
            ctx,
            mem,
            str(body.meta["name"]),
            namespace,
            {"conditions": d.merge_conditions(conditions, [cond])},
        )
        return False, cond, msg

    if source == "inline":
        answer = await ctx.dataplane.upload_recipients(
            uid, inline_ndjson(list(spec.recipients["inline"])), content_type("jsonl")
        )
    else:
        ref = spec.recipients["configMapRef"]
        data = await ctx.kube.config_map_data(namespace, str(ref["name"]))
        if data is None or str(ref["key"]) not in data:
            raise InvalidPlan([f"recipients.configMapRef: {ref['name']}/{ref['key']} disappeared"])
        fmt = str(ref.get("format") or "csv")
        answer = await ctx.dataplane.upload_recipients(
            uid, text_chunks(data[str(ref["key"])]), content_type(fmt)
        )
    done = await ctx.dataplane.complete_recipients(uid)
    summary = _summary({**answer, **{k: v for k, v in done.items() if k == "total"}})
    cond = d.condition(conditions, "RecipientsLoaded", True, "Loaded", summary, now=now)
    await _write_status(
        ctx,
        mem,
        str(body.meta["name"]),
        namespace,
        {"recipientsLoaded": True, "conditions": d.merge_conditions(conditions, [cond])},
    )
    kopf.event(body, type="Normal", reason="RecipientsLoaded", message=summary)
    if answer.get("rejected"):
        errors = answer.get("errors") or []
        sample = "; ".join(
            f"row {e.get('row')}: {e.get('message')}" for e in errors[:5] if isinstance(e, dict)
        )
        kopf.warn(
            body,
            reason="RecipientsRejected",
            message=f"{answer.get('rejected')} rows rejected" + (f" (e.g. {sample})" if sample else ""),
        )
    return True, cond, summary


def _summary(answer: Mapping[str, Any]) -> str:
    parts = [
        f"{answer[k]} {k}"
        for k in ("accepted", "rejected", "duplicates", "suppressed", "total")
        if isinstance(answer.get(k), int)
    ]
    return "recipients loaded" + (f": {', '.join(parts)}" if parts else "")


async def _apply_suspension(
    ctx: Context, mem: PlanMemory, body: kopf.Body, uid: str, suspended: bool, trip: d.Trip | None
) -> None:
    """Suspend or resume in the data plane when the effective state changed; report breaker trips."""
    if trip is not None and mem.tripped != trip.reason:
        kopf.warn(body, reason=trip.reason, message=trip.message)
        log.warning("circuit breaker tripped", extra={"plan": body.meta.get("name"), "reason": trip.reason})
        mem.tripped = trip.reason
    elif trip is None and mem.tripped is not None:
        kopf.event(
            body, type="Normal", reason="CircuitBreakerReset", message="rates are within the limits again"
        )
        mem.tripped = None
    if mem.dp_suspended == suspended:
        return
    if suspended:
        await ctx.dataplane.suspend(uid)
    else:
        await ctx.dataplane.resume(uid)
    mem.dp_suspended = suspended


async def _scale(ctx: Context, mem: PlanMemory, name: str, namespace: str, uid: str, replicas: int) -> None:
    """Create the Deployment if missing, else set its replicas when they differ from what we last set."""
    dep = deployment_name(name)
    if mem.replicas is None:
        mem.replicas = await ctx.kube.deployment_replicas(namespace, dep)
        if mem.replicas is None:
            manifest = render_deployment(
                plan_name=name, namespace=namespace, plan_uid=uid, replicas=replicas, settings=ctx.settings
            )
            await ctx.kube.create_deployment(namespace, manifest)
            log.info(
                "sender deployment created", extra={"plan": name, "deployment": dep, "replicas": replicas}
            )
            mem.replicas = replicas
            return
    if mem.replicas == replicas:
        return
    if not await ctx.kube.scale_deployment(namespace, dep, replicas):
        mem.replicas = None  # deleted behind our back: recreate on the next pass
        return
    log.info("sender deployment scaled", extra={"plan": name, "from": mem.replicas, "to": replicas})
    mem.replicas = replicas


async def _write_status(
    ctx: Context, mem: PlanMemory, name: str, namespace: str, desired: dict[str, Any]
) -> None:
    """Patch only the fields that changed since the last write (or since the object was read)."""
    current = mem.status or {}
    changes = d.status_changes(current, desired)
    if not changes:
        return
    try:
        await ctx.kube.patch_status(namespace, name, changes)
    except ApiException as exc:
        if exc.status == 404:
            return
        raise
    metrics.STATUS_PATCHES.inc()
    mem.status = {**current, **changes}
