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
from datetime import datetime, timedelta
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from emailplan.contract.followups import FromPlanSource, RetryRequest
from emailplan.contract.health import Dependency
from emailplan.contract.plans import PlanView
from emailplan.contract.recipients import first_recipient
from emailplan.contract.spec import RecipientSource
from emailplan.operator import clock, followup, metrics, outages
from emailplan.operator import decide as plan_decide
from emailplan.operator.dataplane import DataPlane, DataPlaneRejected, DataPlaneUnavailable
from emailplan.operator.deployment import deployment_name, render_deployment
from emailplan.operator.kubeapi import GROUP, PLURAL, VERSION, KubeApi, load_config
from emailplan.operator.outages import Outage
from emailplan.operator.planspec import PlanSpec, Templates, read_spec
from emailplan.operator.recipients import content_type, inline_ndjson, text_chunks
from emailplan.operator.settings import OperatorSettings
from emailplan.operator.validation import check_address, check_campaign, check_templates

log = logging.getLogger("emailplan.operator")

FINALIZER = "emailplan.io/finalizer"


@dataclass
class PlanMemory:
    """What the operator remembers about one plan between passes (lost on restart, by design)."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    valid_generation: int | None = None
    templates: Templates | None = None
    list_text: str | None = None  # the ConfigMap list read while validating (uploaded from here)
    rejected: tuple[int, str] | None = None  # (generation, why) the data plane refused the plan
    replicas: int | None = None  # spec.replicas of the Deployment as last set (None: no Deployment)
    deployment_observed: bool = False  # the Deployment was read once since this process started
    registered: bool = False  # this process has PUT the plan (once after a restart or takeover)
    status: dict[str, Any] | None = None  # last status written
    interval: float = 5.0  # how long until the next pass (short while sending)
    unavailable: tuple[Dependency, datetime] | None = None  # what did not answer, first seen when


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
            metrics.publish_counts(
                str(body.meta.get("namespace")), str(body.meta.get("name")), mem.status or {}
            )
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
        delay = mem.interval if failures == 0 else min(60.0, interval * 2 ** min(failures, 5))
        await _sleep(stopped, mem.wake, delay)
    ctx.plans.pop(uid, None)
    ctx.phases.pop(uid, None)
    metrics.publish_phases(ctx.phases)
    metrics.forget_counts(str(body.meta.get("namespace")), str(body.meta.get("name")))


async def _sleep(stopped: kopf.DaemonStopped, wake: asyncio.Event, delay: float) -> None:
    """Sleep ``delay`` seconds, or less when the plan is woken or the daemon is stopped."""
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait())]
    try:
        await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


@kopf.on.delete(GROUP, VERSION, PLURAL, retries=None, backoff=5)
async def stop_plan(
    uid: str,
    name: str,
    body: kopf.Body,
    memo: kopf.Memo,
    retry: int,
    runtime: timedelta,
    **_: Any,
) -> None:
    """Before the plan goes: stop it in the data plane, so unsent messages become ``stopped``.

    The sender Deployment needs nothing here: its ownerReference lets the
    garbage collector delete it after the plan. A data plane that does not answer
    is retried with backoff, said in an Event, and after ``deletion_timeout_seconds``
    the finalizer is released anyway (``outages.deletion_step``): deletion never hangs.
    """
    ctx = _ctx(memo)
    try:
        await ctx.dataplane.stop(uid)
    except DataPlaneUnavailable as exc:
        step = outages.deletion_step(
            waited=runtime,
            attempt=retry,
            bound_seconds=ctx.settings.deletion_timeout_seconds,
            status=body.status,
            what=exc.dependency.words,
        )
        if step.event is not None:
            kopf.event(body, type=step.event.type, reason=step.event.reason, message=step.event.message)
        if step.release:
            log.warning("finalizer released without stopping the plan", extra={"plan": name, "uid": uid})
            return
        raise kopf.TemporaryError(
            f"data plane unavailable, cannot stop the plan yet: {exc}", delay=step.delay
        ) from exc
    except DataPlaneRejected as exc:
        log.warning("data plane refused to stop the plan", extra={"plan": name, "error": str(exc)})
    log.info("plan stopped", extra={"plan": name, "uid": uid})


# --- reconcile -------------------------------------------------------------------------------------------


async def reconcile(ctx: Context, body: kopf.Body, mem: PlanMemory) -> None:
    """One idempotent pass: observe once, decide (pure, ``decide.decide``), apply."""
    meta = body.meta
    if meta.get("deletionTimestamp"):
        return
    uid = str(meta["uid"])
    name = str(meta["name"])
    namespace = str(meta["namespace"])
    generation = int(meta.get("generation") or 0)
    if mem.status is None:
        mem.status = dict(body.status)
    spec = read_spec(body.spec, ctx.settings)

    # --- observe
    problems: list[str] = []
    reason = "InvalidSpec"
    if spec.recipients.from_plan is not None and spec.recipients.from_plan.name == name:
        problems.append("recipients.fromPlan.name: a follow-up cannot take its audience from itself")
    templates: Templates | None = None
    try:
        templates = await _validate(ctx, mem, namespace, generation, spec)
    except InvalidPlan as exc:
        problems, reason = exc.problems, exc.reason
    if not problems and mem.rejected is not None and mem.rejected[0] == generation:
        problems, reason = [mem.rejected[1]], "RejectedByDataPlane"
    view, outage = await _observe_view(ctx, mem, uid, name) if not problems else (None, None)
    from_plan = spec.recipients.from_plan
    source = None
    if from_plan is not None and not problems and not (view is not None and view.recipients_loaded):
        source = followup.read_source(await ctx.kube.plan(namespace, from_plan.name))
    if not mem.deployment_observed:
        mem.replicas = await ctx.kube.deployment_replicas(namespace, deployment_name(name))
        mem.deployment_observed = True
    observed = plan_decide.Observed(
        name=name,
        namespace=namespace,
        generation=generation,
        spec=spec,
        status=mem.status,
        now=clock.now(ctx.settings),
        problems=tuple(problems),
        problem_reason=reason,
        templates=templates,
        view=view,
        replicas=mem.replicas or 0,
        registered_here=mem.registered,
        backlog_per_replica=ctx.settings.backlog_per_replica,
        status_interval=ctx.settings.status_interval_seconds,
        outage=outage,
        source=source,
    )

    # --- decide
    decision = plan_decide.decide(observed)

    # --- apply
    await _apply(ctx, mem, body, spec, decision)


async def _apply(
    ctx: Context, mem: PlanMemory, body: kopf.Body, spec: PlanSpec, decision: plan_decide.Decision
) -> None:
    """Do what the decision says: register the plan, start a load, scale, Events, one status patch."""
    meta = body.meta
    uid, name, namespace = str(meta["uid"]), str(meta["name"]), str(meta["namespace"])
    generation = int(meta.get("generation") or 0)
    try:
        if decision.payload is not None:
            await ctx.dataplane.put_plan(uid, decision.payload)
            mem.registered = True
            log.info("plan registered", extra={"plan": name, "namespace": namespace, "uid": uid})
    except DataPlaneRejected as exc:
        mem.rejected = (generation, f"the data plane refused the plan: {exc}")
        mem.wake.set()  # report it at once
        return
    if decision.retry is not None:
        await _retry(ctx, mem, body, uid, decision.retry)
    if decision.load is not None:
        try:
            await _start_load(ctx, mem, uid, spec, decision.load, decision.load_from)
        except DataPlaneRejected as exc:  # the load job records why; the next pass shows it
            log.warning("recipient list refused", extra={"plan": name, "error": str(exc)})
    await _scale(ctx, mem, name, namespace, uid, decision.replicas)
    for event in decision.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    await _write_status(ctx, mem, name, namespace, decision.status)
    mem.interval = decision.requeue_after
    ctx.phases[uid] = decision.phase.value


async def _retry(ctx: Context, mem: PlanMemory, body: kopf.Body, uid: str, asked: RetryRequest) -> None:
    """Ask the data plane to retry the done plan, and say what it queued in an Event."""
    name = str(body.meta.get("name"))
    try:
        result = await ctx.dataplane.retry(uid, asked)
    except DataPlaneRejected as exc:  # the plan changed state since it was observed: the next pass sees it
        log.warning("retry refused", extra={"plan": name, "error": str(exc)})
        return
    what = f"retry {result.generation}: {result.requeued} transient failures and soft bounces queued again"
    kopf.event(body, type="Normal", reason="Retrying" if result.requeued else "NothingToRetry", message=what)
    log.info(
        "plan retried", extra={"plan": name, "generation": result.generation, "requeued": result.requeued}
    )
    mem.wake.set()  # show Sending at once


async def _observe_view(
    ctx: Context, mem: PlanMemory, uid: str, name: str
) -> tuple[PlanView | None, Outage | None]:
    """The plan view, or what is down when the data plane cannot give it (first seen when)."""
    try:
        view = await ctx.dataplane.get_plan(uid)
    except DataPlaneUnavailable as exc:
        if mem.unavailable is None or mem.unavailable[0] is not exc.dependency:
            mem.unavailable = (exc.dependency, clock.now(ctx.settings))
        log.warning("data plane unavailable", extra={"plan": name, "error": str(exc)})
        return None, Outage(exc.dependency, str(exc)[:300], mem.unavailable[1])
    mem.unavailable = None
    return view, None


async def _start_load(
    ctx: Context,
    mem: PlanMemory,
    uid: str,
    spec: PlanSpec,
    action: plan_decide.LoadAction,
    source: FromPlanSource | None,
) -> None:
    """Start the load the decision asked for: the data plane reads S3 itself, lists the operator sends."""
    if action is plan_decide.LoadAction.S3:
        await ctx.dataplane.load_s3(uid, plan_decide.s3_source(spec))
        return
    if action is plan_decide.LoadAction.FROM_PLAN:
        assert source is not None, "a fromPlan load names its source"
        await ctx.dataplane.load_from_plan(uid, source)
        return
    recipients = spec.recipients
    if recipients.inline is not None:
        rows = [r.model_dump(exclude_none=True) for r in recipients.inline]
        await ctx.dataplane.load_list(uid, inline_ndjson(rows), content_type("jsonl"))
        return
    assert recipients.config_map_ref is not None
    fmt = recipients.config_map_ref.format.value
    if mem.list_text is None:
        raise DataPlaneUnavailable("the ConfigMap list was not read yet")
    await ctx.dataplane.load_list(uid, text_chunks(mem.list_text), content_type(fmt))


async def _validate(
    ctx: Context, mem: PlanMemory, namespace: str, generation: int, spec: PlanSpec
) -> Templates:
    """Everything the schema cannot check; cached per generation once valid.

    An invalid plan is re-checked on every pass, so creating a missing ConfigMap
    or Secret later fixes the plan without touching it.
    """
    if mem.valid_generation == generation and mem.templates is not None:
        return mem.templates
    if spec.problems:  # the spec does not parse: nothing else can be judged
        raise InvalidPlan(list(spec.problems))
    problems = check_address(spec.sender, "from")
    for i, addr in enumerate(spec.reply_to):
        problems += check_address(addr, f"replyTo[{i}]")

    html, text = await _template_bodies(ctx, namespace, spec, problems)
    source = spec.recipients_source
    sample = await _sample_recipient(ctx, mem, namespace, spec, problems)

    for secret in ctx.settings.sender_secret_name:
        if await ctx.kube.secret_exists(namespace, secret) is False:
            problems.append(f"Secret {secret!r} for the sender pods not found in namespace {namespace!r}")

    templates = Templates(subject=spec.subject, html=html, text=text)
    problems += check_templates(templates, sample if source != "s3" else None)
    problems += check_campaign(spec, templates, sample if source != "s3" else None)
    if problems:
        raise InvalidPlan(problems)
    mem.valid_generation = generation
    mem.templates = templates
    return templates


async def _template_bodies(
    ctx: Context, namespace: str, spec: PlanSpec, problems: list[str]
) -> tuple[str | None, str | None]:
    """HTML and text, from the spec or its ``templateRef`` ConfigMap (what is missing is a problem)."""
    html, text = spec.html, spec.text
    ref = spec.template_ref
    if ref is not None:
        data = await ctx.kube.config_map_data(namespace, ref.name)
        if data is None:
            problems.append(f"templateRef: ConfigMap {ref.name!r} not found in namespace {namespace!r}")
        else:
            for key_field, key in (("htmlKey", ref.html_key), ("textKey", ref.text_key)):
                if key and key not in data:
                    problems.append(f"templateRef.{key_field}: key {key!r} not in ConfigMap {ref.name!r}")
            html = data.get(ref.html_key or "") or None
            text = data.get(ref.text_key or "") or None
    return html, text


async def _sample_recipient(
    ctx: Context, mem: PlanMemory, namespace: str, spec: PlanSpec, problems: list[str]
) -> dict[str, Any] | None:
    """The first recipient (the templates are tried on it); reads and keeps a ConfigMap list."""
    sample: dict[str, Any] | None = None
    source = spec.recipients_source
    inline, listed = spec.recipients.inline, spec.recipients.config_map_ref
    if inline:
        sample = inline[0].model_dump(exclude_none=True)
    elif listed is not None:
        lists = await ctx.kube.config_map_data(namespace, listed.name)
        if lists is None:
            problems.append(
                f"recipients.configMapRef: ConfigMap {listed.name!r} not found in namespace {namespace!r}"
            )
        elif listed.key not in lists:
            problems.append(f"recipients.configMapRef: key {listed.key!r} not in ConfigMap {listed.name!r}")
        else:
            mem.list_text = lists[listed.key]
            try:
                first = first_recipient(mem.list_text, listed.format.value)
            except ValueError as exc:
                problems.append(f"recipients.configMapRef: {exc}")
                first = None
            if first is None:
                problems.append("recipients.configMapRef: the list has no valid recipient")
            else:
                sample = first.as_context()
    elif source not in (RecipientSource.S3, RecipientSource.FROM_PLAN):
        problems.append("recipients: set exactly one of inline, configMapRef, s3 or fromPlan")
    return sample


async def _scale(ctx: Context, mem: PlanMemory, name: str, namespace: str, uid: str, replicas: int) -> None:
    """Create the Deployment when pods are first wanted, else set its replicas when they changed.

    ``mem.replicas`` is what the Deployment has (None: it does not exist), observed once per
    process and then kept up to date by this function, so an idle plan costs no Kubernetes call.
    """
    dep = deployment_name(name)
    if mem.replicas is None:
        if replicas <= 0:
            return  # no pods wanted and none there: nothing to create
        manifest = render_deployment(
            plan_name=name, namespace=namespace, plan_uid=uid, replicas=replicas, settings=ctx.settings
        )
        await ctx.kube.create_deployment(namespace, manifest)
        log.info("sender deployment created", extra={"plan": name, "deployment": dep, "replicas": replicas})
        mem.replicas = replicas
        return
    if mem.replicas == replicas:
        return
    if not await ctx.kube.scale_deployment(namespace, dep, replicas):
        mem.replicas = None  # deleted behind our back: created again when pods are wanted
        return
    log.info("sender deployment scaled", extra={"plan": name, "from": mem.replicas, "to": replicas})
    mem.replicas = replicas


async def _write_status(
    ctx: Context, mem: PlanMemory, name: str, namespace: str, changes: dict[str, Any]
) -> None:
    """One merge patch with the fields the decision changed (nothing when nothing changed)."""
    if not changes:
        return
    try:
        await ctx.kube.patch_status(namespace, name, changes)
    except ApiException as exc:
        if exc.status == 404:
            return
        raise
    metrics.STATUS_PATCHES.inc()
    mem.status = {**(mem.status or {}), **changes}
