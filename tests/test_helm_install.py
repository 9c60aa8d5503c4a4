"""`helm install` into a real local API server, and what the operator's service account may do.

The control plane has no kubelet, so pods never run: these tests check what Helm
creates and what RBAC allows (`kubectl auth can-i --as=<operator service account>`).
The migration hook Job would wait for a pod forever, so installs pass --no-hooks;
the hook itself is checked by the render tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.kube

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "emailplan"


class Release:
    def __init__(self, helm_bin: str, kubeconfig: Path, name: str, namespace: str) -> None:
        self.helm_bin, self.kubeconfig, self.name, self.namespace = helm_bin, kubeconfig, name, namespace
        self.fullname = f"{name}-emailplan"
        self.sa = f"system:serviceaccount:{namespace}:{self.fullname}-operator"

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.helm_bin, f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=180,
            env={
                "PATH": "/usr/bin:/bin",
                "HOME": "/tmp",
                "HELM_CACHE_HOME": "/tmp/helm-cache",
                "HELM_CONFIG_HOME": "/tmp/helm-config",
                "HELM_DATA_HOME": "/tmp/helm-data",
            },
        )
        if check:
            assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args], capture_output=True, text=True, timeout=60
        )
        if check:
            assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        ns = ["-n", namespace] if namespace else []
        return json.loads(self.kubectl("get", kind, name, *ns, "-o", "json").stdout)

    def can(
        self, verb: str, resource: str, namespace: str | None = None, subresource: str | None = None
    ) -> bool:
        args = ["auth", "can-i", verb, resource, f"--as={self.sa}"]
        args += ["-n", namespace] if namespace else ["--all-namespaces"]
        if subresource:
            args.append(f"--subresource={subresource}")
        proc = self.kubectl(*args, check=False)
        answer = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        assert answer in ("yes", "no"), proc.stdout + proc.stderr
        return answer == "yes"


def _install(helm_bin: str, kube: Any, *values: str) -> Iterator[Release]:
    suffix = uuid.uuid4().hex[:6]
    rel = Release(helm_bin, Path(kube.kubeconfig), f"r{suffix}", f"mail-{suffix}")
    proc = rel.helm(
        "install",
        rel.name,
        str(CHART),
        "--namespace",
        rel.namespace,
        "--create-namespace",
        "--no-hooks",
        *values,
    )
    rel.notes = proc.stdout  # type: ignore[attr-defined]
    try:
        yield rel
    finally:
        rel.helm("uninstall", rel.name, "--namespace", rel.namespace, "--wait=false", check=False)
        rel.kubectl("delete", "namespace", rel.namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def cluster_wide(helm_bin: str, kube: Any) -> Iterator[Release]:
    yield from _install(helm_bin, kube)


@pytest.fixture(scope="module")
def namespaced(helm_bin: str, kube: Any) -> Iterator[Release]:
    suffix = uuid.uuid4().hex[:6]
    watched, other = f"camp-{suffix}", f"other-{suffix}"
    for ns in (watched, other):
        subprocess.run(
            ["kubectl", f"--kubeconfig={kube.kubeconfig}", "create", "namespace", ns],
            check=True,
            capture_output=True,
        )
    try:
        for rel in _install(helm_bin, kube, "--set", f"watchNamespaces[0]={watched}"):
            rel.watched, rel.other = watched, other  # type: ignore[attr-defined]
            yield rel
    finally:
        for ns in (watched, other):
            subprocess.run(
                ["kubectl", f"--kubeconfig={kube.kubeconfig}", "delete", "namespace", ns, "--wait=false"],
                capture_output=True,
            )


def test_install_creates_the_product(cluster_wide: Release) -> None:
    rel = cluster_wide
    status = json.loads(rel.helm("status", rel.name, "-n", rel.namespace, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    notes = rel.notes  # type: ignore[attr-defined]
    assert "kubectl get emailplans -w" in notes
    assert "kind: EmailPlan" in notes and "{{ name }}" in notes, "a first plan to apply"
    assert "create secret generic emailplan-database --from-literal=EMAILPLAN_DATABASE_URL=" in notes, (
        "which Secrets to create"
    )
    crd = rel.get("crd", "emailplans.emailplan.io")
    assert crd["spec"]["group"] == "emailplan.io"
    rel.get("crd", "clusterkopfpeerings.kopf.dev")
    operator = rel.get("deployment", f"{rel.fullname}-operator", rel.namespace)
    assert operator["spec"]["replicas"] == 2
    assert operator["spec"]["template"]["spec"]["serviceAccountName"] == f"{rel.fullname}-operator"
    api = rel.get("deployment", f"{rel.fullname}-api", rel.namespace)
    assert api["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz"
    service = rel.get("service", f"{rel.fullname}-api", rel.namespace)
    assert service["spec"]["ports"][0]["port"] == 80
    rel.get("poddisruptionbudget", f"{rel.fullname}-operator", rel.namespace)
    rel.get("serviceaccount", f"{rel.fullname}-dataplane", rel.namespace)
    rel.get("configmap", f"{rel.fullname}-dataplane", rel.namespace)
    rel.get("clusterkopfpeering", rel.fullname)
    rel.get("clusterrole", f"{rel.fullname}-operator")
    # An EmailPlan can be created once the chart is in (the CRD is served).
    plan = (
        "apiVersion: emailplan.io/v1alpha1\nkind: EmailPlan\nmetadata: {name: hello}\n"
        "spec:\n  from: team@example.com\n  subject: Hi\n  text: Hello\n"
        "  recipients:\n    inline: [{email: a@example.com}]\n"
    )
    proc = subprocess.run(
        ["kubectl", f"--kubeconfig={rel.kubeconfig}", "apply", "-n", rel.namespace, "-f", "-"],
        input=plan,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


NEEDED = [
    # (verb, resource, subresource)
    ("get", "emailplans.emailplan.io", None),
    ("list", "emailplans.emailplan.io", None),
    ("watch", "emailplans.emailplan.io", None),
    ("patch", "emailplans.emailplan.io", None),
    ("patch", "emailplans.emailplan.io", "status"),
    ("update", "emailplans.emailplan.io", "finalizers"),
    ("create", "deployments.apps", None),
    ("patch", "deployments.apps", None),
    ("delete", "deployments.apps", None),
    ("watch", "deployments.apps", None),
    ("get", "configmaps", None),
    ("watch", "configmaps", None),
    ("create", "events", None),
    ("create", "events.events.k8s.io", None),
]
FORBIDDEN = [
    ("get", "secrets", None),
    ("list", "secrets", None),
    ("watch", "secrets", None),
    ("create", "emailplans.emailplan.io", None),
    ("delete", "emailplans.emailplan.io", None),
    ("create", "pods", None),
    ("create", "pods", "exec"),
    ("create", "serviceaccounts", "token"),
    ("update", "configmaps", None),
    ("delete", "configmaps", None),
    ("create", "services", None),
    ("get", "nodes", None),
    ("create", "roles.rbac.authorization.k8s.io", None),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", None),
    ("update", "customresourcedefinitions.apiextensions.k8s.io", None),
    ("delete", "namespaces", None),
    ("create", "namespaces", None),
]


@pytest.mark.parametrize(("verb", "resource", "sub"), NEEDED)
def test_operator_can_do_what_it_needs(
    cluster_wide: Release, verb: str, resource: str, sub: str | None
) -> None:
    assert cluster_wide.can(verb, resource, "default", sub), f"operator cannot {verb} {resource} {sub or ''}"


@pytest.mark.parametrize(("verb", "resource", "sub"), FORBIDDEN)
def test_operator_cannot_do_more(cluster_wide: Release, verb: str, resource: str, sub: str | None) -> None:
    for ns in ("default", cluster_wide.namespace, None):
        assert not cluster_wide.can(verb, resource, ns, sub), (
            f"operator may {verb} {resource} {sub or ''} in {ns}"
        )


def test_operator_kopf_needs_cluster_wide(cluster_wide: Release) -> None:
    rel = cluster_wide
    assert rel.can("list", "customresourcedefinitions.apiextensions.k8s.io")
    assert not rel.can("watch", "namespaces"), "cluster-wide kopf never lists namespaces"
    assert rel.can("list", "clusterkopfpeerings.kopf.dev")
    assert rel.can("patch", f"clusterkopfpeerings.kopf.dev/{rel.fullname}")
    assert not rel.can("patch", "clusterkopfpeerings.kopf.dev/someone-elses-operator"), "only its own peering"


def test_namespaced_operator_is_confined(namespaced: Release) -> None:
    rel = namespaced
    watched, other = rel.watched, rel.other  # type: ignore[attr-defined]
    assert rel.can("create", "deployments.apps", watched)
    assert rel.can("patch", "emailplans.emailplan.io", watched, "status")
    assert rel.can("get", "configmaps", watched)
    assert rel.can("patch", f"kopfpeerings.kopf.dev/{rel.fullname}", watched)
    rel.get("kopfpeering", rel.fullname, watched)
    # What the sender pods there need besides the Secrets.
    rel.get("serviceaccount", f"{rel.fullname}-dataplane", watched)
    rel.get("configmap", f"{rel.fullname}-dataplane", watched)
    for ns in (other, "default"):
        assert not rel.can("create", "deployments.apps", ns), f"may create deployments in {ns}"
        assert not rel.can("get", "configmaps", ns)
        assert not rel.can("watch", "emailplans.emailplan.io", ns)
    # kopf observes the namespaces it serves (names only); without it, start-up stalls.
    assert rel.can("list", "namespaces") and rel.can("watch", "namespaces")
    assert not rel.can("delete", "namespaces") and not rel.can("create", "namespaces")
    assert not rel.can("get", "secrets", watched)
    assert rel.can("list", "customresourcedefinitions.apiextensions.k8s.io")


def test_upgrade_then_uninstall(helm_bin: str, kube: Any) -> None:
    for rel in _install(helm_bin, kube):
        # An upgrade changes the running objects in place (here: the sender rate default).
        rel.helm(
            "upgrade",
            rel.name,
            str(CHART),
            "--namespace",
            rel.namespace,
            "--no-hooks",
            "--reuse-values",
            "--set",
            "sender.perPodRate=20",
            "--set",
            "api.replicas=3",
        )
        api = rel.get("deployment", f"{rel.fullname}-api", rel.namespace)
        assert api["spec"]["replicas"] == 3
        operator = rel.get("deployment", f"{rel.fullname}-operator", rel.namespace)
        env = {
            e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["EMAILPLAN_DEFAULT_PER_POD_RATE"] == "20"
        # A bad value is refused before anything changes.
        proc = rel.helm(
            "upgrade",
            rel.name,
            str(CHART),
            "--namespace",
            rel.namespace,
            "--no-hooks",
            "--reuse-values",
            "--set",
            "operator.replicas=0",
            check=False,
        )
        assert proc.returncode != 0 and "/operator/replicas" in proc.stderr, proc.stderr
        status = json.loads(rel.helm("status", rel.name, "-n", rel.namespace, "-o", "json").stdout)
        assert status["version"] == 2 and status["info"]["status"] == "deployed"

        rel.helm("uninstall", rel.name, "--namespace", rel.namespace, "--wait")
        for kind, name in [
            ("clusterrole", f"{rel.fullname}-operator"),
            ("clusterrolebinding", f"{rel.fullname}-operator"),
            ("clusterkopfpeering", rel.fullname),
        ]:
            proc = rel.kubectl("get", kind, name, check=False)
            assert proc.returncode != 0 and "NotFound" in proc.stderr, f"{kind}/{name} left behind"
        # CRDs stay (Helm never deletes them): EmailPlans survive an uninstall.
        rel.get("crd", "emailplans.emailplan.io")


def _run_operator_on_a_broken_plan(rel: Release, tmp_path: Path, plan_name: str, drop_env: set[str]) -> str:
    """Run `emailplan operator` as the chart runs it, with the chart's service-account token,
    apply a plan with a template error and wait until the operator has marked it Failed.
    Returns the operator's log. (Namespaced, so it never touches other tests' plans.)"""
    watched = rel.watched  # type: ignore[attr-defined]
    token = rel.kubectl("create", "token", f"{rel.fullname}-operator", "-n", rel.namespace).stdout.strip()
    admin = yaml.safe_load(Path(rel.kubeconfig).read_text())
    cluster = admin["clusters"][0]["cluster"]
    kubeconfig = tmp_path / "operator.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "operator", "user": {"token": token}}],
                "contexts": [{"name": "operator", "context": {"cluster": "c", "user": "operator"}}],
                "current-context": "operator",
            }
        )
    )
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "EMAILPLAN_API_URL": "http://127.0.0.1:9",
        "EMAILPLAN_METRICS_PORT": "0",
    }
    # The arguments and plain settings the chart gives the operator (its secrets are not readable here).
    spec = rel.get("deployment", f"{rel.fullname}-operator", rel.namespace)["spec"]["template"]["spec"]
    args = spec["containers"][0]["args"]
    assert f"--namespace={watched}" in args
    plain = {e["name"]: e["value"] for e in spec["containers"][0]["env"] if "value" in e}
    drop = {"EMAILPLAN_API_URL", "EMAILPLAN_METRICS_PORT", *drop_env}
    env.update({k: v for k, v in plain.items() if k not in drop})
    log = tmp_path / "operator.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "emailplan.cli", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    plan = (
        "apiVersion: emailplan.io/v1alpha1\nkind: EmailPlan\nmetadata: {name: " + plan_name + "}\n"
        "spec:\n  from: team@example.com\n  subject: 'Hi {{ name'\n  text: Hello\n"
        "  recipients:\n    inline: [{email: a@example.com}]\n"
    )
    try:
        applied = subprocess.run(
            ["kubectl", f"--kubeconfig={rel.kubeconfig}", "apply", "-n", watched, "-f", "-"],
            input=plan,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert applied.returncode == 0, applied.stderr
        deadline = time.monotonic() + 60
        obj: dict[str, Any] = {}
        while time.monotonic() < deadline:
            obj = rel.get("emailplans.emailplan.io", plan_name, watched)
            if obj.get("status", {}).get("phase") == "Failed" and obj["metadata"].get("finalizers"):
                break
            assert proc.poll() is None, log.read_text()[-3000:]
            assert "forbidden" not in log.read_text().lower(), log.read_text()[-3000:]
            time.sleep(1)
        assert obj.get("status", {}).get("phase") == "Failed", (obj.get("status"), log.read_text()[-3000:])
        events = json.loads(rel.kubectl("get", "events", "-n", watched, "-o", "json").stdout)["items"]
        assert any(e["reason"] == "InvalidSpec" and e["involvedObject"]["name"] == plan_name for e in events)
        peering = rel.get("kopfpeering", rel.fullname, watched)
        assert peering.get("status"), "the operator announced itself in its peering object"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        rel.kubectl(
            "patch",
            "emailplans.emailplan.io",
            plan_name,
            "-n",
            watched,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )
    return log.read_text()


def test_real_operator_works_with_only_the_chart_rbac(namespaced: Release, tmp_path: Path) -> None:
    """kopf starts, joins the peering and handles a plan (finalizer, status, Event) with the chart's
    RBAC and no Forbidden. Without the sender Secret names: see the next test."""
    log = _run_operator_on_a_broken_plan(namespaced, tmp_path, "broken", {"EMAILPLAN_SENDER_SECRET_NAME"})
    assert "forbidden" not in log.lower(), log[-3000:]


def test_real_operator_with_all_chart_settings_never_needs_secrets(
    namespaced: Release, tmp_path: Path
) -> None:
    log = _run_operator_on_a_broken_plan(namespaced, tmp_path, "broken-full", set())
    assert "forbidden" not in log.lower(), log[-3000:]
