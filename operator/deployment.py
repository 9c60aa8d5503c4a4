"""The per-plan sender Deployment, rendered as a plain dict (pure, no API calls).

The pod learns only its plan id from the manifest; template and current rate
come from the data plane, so the operator changes a running plan by changing
``spec.replicas`` alone and never forces a rolling restart. Secrets reach the
pod by reference (``envFrom``), never by value, so the Deployment can be read by
anyone who may read Deployments without leaking credentials.

Every name and label value built from the plan's name goes through
:func:`capped`: an EmailPlan name may be 253 characters, a Deployment whose
pods get sensible hostnames and a label value may not, so a long name is cut
and given a short hash of the whole name (two long names that share a prefix
still get different objects).
"""

from __future__ import annotations

import hashlib
from typing import Any

from emailplan.operator.settings import OperatorSettings

COMPONENT = "sender"
MANAGED_BY = "emailplan-operator"
PLAN_UID_LABEL = "emailplan.io/plan-uid"


NAME_LIMIT = 63  # DNS label: pod hostnames and label values
HASH_CHARS = 8


def capped(text: str, limit: int = NAME_LIMIT, *, prefix: str = "", suffix: str = "") -> str:
    """``prefix + text + suffix`` if it fits in ``limit``, else with ``text`` cut and a hash of it appended.

    Deterministic, so every pass (and every operator replica) finds the same
    object; the cut never leaves a trailing ``-`` or ``.``, which names may not end in.
    """
    whole = f"{prefix}{text}{suffix}"
    if len(whole) <= limit:
        return whole
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_CHARS]
    room = limit - len(prefix) - len(suffix) - HASH_CHARS - 1
    return f"{prefix}{text[: max(0, room)].rstrip('-_.')}-{digest}{suffix}"


def deployment_name(plan_name: str) -> str:
    """The sender Deployment of a plan (at most 63 characters, however long the plan's name)."""
    return capped(plan_name, prefix="emailplan-", suffix="-sender")


def labels(plan_name: str, plan_uid: str) -> dict[str, str]:
    """Recommended ``app.kubernetes.io`` labels plus the plan uid for exact selection."""
    return {
        "app.kubernetes.io/name": "emailplan",
        "app.kubernetes.io/instance": capped(plan_name),
        "app.kubernetes.io/component": COMPONENT,
        "app.kubernetes.io/part-of": "emailplan",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        PLAN_UID_LABEL: plan_uid,
    }


def _container(plan_uid: str, settings: OperatorSettings) -> dict[str, Any]:
    """The sender container: ``emailplan worker`` for the plan, locked down, with its env and limits."""
    env: list[dict[str, Any]] = [
        {"name": "EMAILPLAN_PLAN_ID", "value": plan_uid},
        {"name": "EMAILPLAN_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    env += [
        {"name": k, "value": v}
        for k, v in sorted(settings.sender_env.items())
        if k not in ("EMAILPLAN_PLAN_ID", "EMAILPLAN_POD_NAME")
    ]
    env_from: list[dict[str, Any]] = [{"secretRef": {"name": n}} for n in settings.sender_secret_name]
    env_from += [{"configMapRef": {"name": n}} for n in settings.sender_config_map_name]
    resources: dict[str, Any] = {
        "requests": {"cpu": settings.sender_cpu_request, "memory": settings.sender_memory_request},
    }
    limits = {
        k: v for k, v in (("cpu", settings.sender_cpu_limit), ("memory", settings.sender_memory_limit)) if v
    }
    if limits:
        resources["limits"] = limits
    container: dict[str, Any] = {
        "name": "sender",
        "image": settings.sender_image,
        "imagePullPolicy": settings.sender_image_pull_policy,
        "command": ["emailplan", "worker"],
        "env": env,
        "resources": resources,
        "ports": [{"name": "metrics", "containerPort": settings.sender_metrics_port}],
        # The root filesystem is read-only; libraries that want a scratch file get /tmp.
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108 - a private emptyDir
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if env_from:
        container["envFrom"] = env_from
    return container


def _pod_spec(container: dict[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    """The sender pod: non-root, seccomp, no service account token unless one is named."""
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # A worker finishes its in-flight sends and flushes results on SIGTERM.
        "terminationGracePeriodSeconds": 60,
        "automountServiceAccountToken": False,
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
    }
    if settings.sender_image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in settings.sender_image_pull_secrets]
    if settings.sender_service_account:
        pod_spec["serviceAccountName"] = settings.sender_service_account
    return pod_spec


def render_deployment(
    *,
    plan_name: str,
    namespace: str,
    plan_uid: str,
    replicas: int,
    settings: OperatorSettings,
) -> dict[str, Any]:
    """The Deployment that runs ``emailplan worker`` for one plan.

    Owned by the EmailPlan (``ownerReferences``), so the garbage collector
    removes it with the plan; ``blockOwnerDeletion`` keeps foreground deletion honest.
    """
    meta_labels = labels(plan_name, plan_uid)
    selector = {PLAN_UID_LABEL: plan_uid, "app.kubernetes.io/component": COMPONENT}
    pod_spec = _pod_spec(_container(plan_uid, settings), settings)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(plan_name),
            "namespace": namespace,
            "labels": meta_labels,
            "ownerReferences": [
                {
                    "apiVersion": "emailplan.io/v1alpha1",
                    "kind": "EmailPlan",
                    "name": plan_name,
                    "uid": plan_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            # Pods of one plan are interchangeable; never run more than asked while rolling.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": {
                "metadata": {
                    "labels": meta_labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(settings.sender_metrics_port),
                    },
                },
                "spec": pod_spec,
            },
        },
    }
