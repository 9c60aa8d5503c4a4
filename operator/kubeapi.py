"""The few Kubernetes API calls the reconciler makes besides kopf's own watching.

The official client is synchronous, so every call runs in a worker thread and
the event loop (which serves all plans) never blocks on the network.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

import kubernetes
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

GROUP = "emailplan.io"
VERSION = "v1alpha1"
PLURAL = "emailplans"


def load_config() -> None:
    """In-cluster service-account credentials in a pod, else the kubeconfig (``KUBECONFIG``)."""
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]


class KubeApi:
    """ConfigMaps and Secrets (read), Deployments (create/scale), EmailPlan status (patch)."""

    def __init__(self) -> None:
        client = kubernetes.client.ApiClient()
        self.core = kubernetes.client.CoreV1Api(client)
        self.apps = kubernetes.client.AppsV1Api(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)

    async def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """The ConfigMap's ``data``, or None when it does not exist."""
        cm = await _read(self.core.read_namespaced_config_map, name, namespace)
        return None if cm is None else dict(cm.data or {})

    async def secret_exists(self, namespace: str, name: str) -> bool | None:
        """Whether the Secret exists, or None when the operator may not look.

        Least privilege (the Helm chart) grants the operator no access to Secrets
        at all: it only names them in the pod template. Then a missing Secret shows
        as sender pods that do not start, not as a validation error.
        """
        try:
            await asyncio.to_thread(self.core.read_namespaced_secret, name, namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return False
            if exc.status == 403:
                return None
            raise
        return True

    async def deployment_replicas(self, namespace: str, name: str) -> int | None:
        """``spec.replicas`` of the Deployment, or None when it does not exist."""
        dep = await _read(self.apps.read_namespaced_deployment, name, namespace)
        return None if dep is None else int(dep.spec.replicas or 0)

    async def create_deployment(self, namespace: str, manifest: dict[str, Any]) -> None:
        """Create the Deployment; one that already exists is left as it is (a replica patch follows)."""
        try:
            await asyncio.to_thread(self.apps.create_namespaced_deployment, namespace, cast(Any, manifest))
        except ApiException as exc:
            if exc.status != 409:
                raise

    async def scale_deployment(self, namespace: str, name: str, replicas: int) -> bool:
        """Set ``spec.replicas``; False when the Deployment is gone."""
        try:
            await asyncio.to_thread(
                self.apps.patch_namespaced_deployment, name, namespace, {"spec": {"replicas": replicas}}
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def plan(self, namespace: str, name: str) -> dict[str, Any] | None:
        """An EmailPlan (a follow-up's source) as a dict, or None when it does not exist."""
        try:
            obj = await asyncio.to_thread(
                self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return cast(dict[str, Any], obj)

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the EmailPlan's status subresource."""
        await asyncio.to_thread(
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
            _content_type="application/merge-patch+json",  # custom resources have no strategic merge
        )


async def _read(call: Callable[..., Any], name: str, namespace: str) -> Any:
    """A Kubernetes read in a thread; None when the object does not exist (404)."""
    try:
        return await asyncio.to_thread(call, name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
