"""Node mode: the image, the chart with its hooks and real Pods on a real kubelet.

hack/node/cluster.py starts, in a network namespace of this run, the control plane,
containerd + runc, a kubelet, kube-scheduler and kube-proxy, PostgreSQL and moto.
The project image is built from the Dockerfile with buildah (hack/node/image.sh,
cached) and imported into containerd. Nothing here is a stand-in for Kubernetes:
the Pods are containers that the kubelet runs, the chart's hook Job really runs
``emailplan db upgrade``, and the operator's sender Deployments become containers.

If the node cannot start, the tests fail with the reason (they are not skipped).
"""

from __future__ import annotations

import email.utils
import json
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from node.cluster import NodeCluster

from devenv.postgres import pg_bin

pytestmark = [pytest.mark.node, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "emailplan"
LOCAL_VALUES = CHART / "ci" / "values-local.yaml"
RELEASE = "emailplan"
NS = "emailplan-system"
TIMEOUT = 300.0


class Node:
    """The running node cluster with the commands a user types."""

    def __init__(self, cluster: NodeCluster) -> None:
        self.cluster = cluster
        assert cluster.kube is not None and cluster.postgres is not None and cluster.moto is not None
        self.kube = cluster.kube
        self.postgres = cluster.postgres
        self.moto = cluster.moto
        self.helm_bin = str(cluster.kube.bin_dir / "helm") if cluster.kube.bin_dir else "helm"

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        proc = self.kube.kubectl(*args, input=input, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr}\n{self.cluster.logs()}")
        return proc.stdout

    def json(self, *args: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl(*args, "-o", "json")))

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.helm_bin, *args], env=self.kube.env(), capture_output=True, text=True, timeout=TIMEOUT + 60
        )

    def wait(self, check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(1)
        pods = self.kubectl("get", "pods", "-A", "-o", "wide", check=False)
        events = self.kubectl("get", "events", "-A", "--sort-by=.lastTimestamp", check=False)[-4000:]
        raise AssertionError(f"timed out: {what}\n{pods}\n{events}\n{self.cluster.logs()}")

    def pods(self, ns: str, selector: str) -> list[dict[str, Any]]:
        return list(self.json("get", "pods", "-n", ns, "-l", selector)["items"])

    def psql(self, sql: str) -> str:
        return subprocess.run(
            [
                *(pg_bin("psql"), "-h", "127.0.0.1", "-p", str(self.postgres.port)),
                *("-U", self.postgres.user, "-d", self.postgres.database, "-tA", "-c", sql),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    cluster = NodeCluster()
    try:
        cluster.start()
        yield Node(cluster)
    finally:
        cluster.cleanup()


def _ready(pod: dict[str, Any]) -> bool:
    conds = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def _pod_spec(image: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """A Pod that runs the image the way the chart does: non-root, read-only root, private /tmp."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "img-" + uuid.uuid4().hex[:6]},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001},
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "args": args,
                    "env": [{"name": k, "value": v} for k, v in env.items()],
                    "securityContext": {
                        "readOnlyRootFilesystem": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }


def _run_pod(node: Node, image: str, args: list[str], env: dict[str, str]) -> tuple[str, str]:
    """Run a Pod to its end; (phase, logs)."""
    spec = _pod_spec(image, args, env)
    name = spec["metadata"]["name"]
    node.kubectl("apply", "-n", "default", "-f", "-", input=json.dumps(spec))

    def finished() -> bool:
        phase = node.json("get", "pod", name, "-n", "default")["status"].get("phase")
        return phase in ("Succeeded", "Failed")

    node.wait(finished, f"pod {name} ({' '.join(args)}) to finish")
    phase = node.json("get", "pod", name, "-n", "default")["status"]["phase"]
    logs = node.kubectl("logs", name, "-n", "default")
    node.kubectl("delete", "pod", name, "-n", "default", "--wait=false")
    return str(phase), logs


def test_image_runs_help_and_db_upgrade_as_the_chart_runs_it(node: Node) -> None:
    image = node.cluster.images["IMAGE"]
    phase, logs = _run_pod(node, image, ["--help"], {})
    assert phase == "Succeeded", logs
    for command in ("operator", "worker", "api", "db"):
        assert command in logs
    url = node.postgres.pod_url()
    phase, logs = _run_pod(node, image, ["db", "upgrade"], {"EMAILPLAN_DATABASE_URL": url})
    assert phase == "Succeeded", logs
    # The migrations really ran, from inside the container, over the Pod network.
    assert node.psql("SELECT count(*) FROM alembic_version") == "1"
    tables = node.psql("SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname='public'")
    assert "suppressions" in tables


def _create_secrets(node: Node) -> None:
    node.kubectl("create", "namespace", NS)
    secrets = {
        "emailplan-database": {"EMAILPLAN_DATABASE_URL": node.postgres.pod_url()},
        "emailplan-token-key": {"EMAILPLAN_TOKEN_KEY": uuid.uuid4().hex},
        "emailplan-api-key": {"EMAILPLAN_API_KEY": uuid.uuid4().hex},
        "emailplan-aws": {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"},
    }
    for name, data in secrets.items():
        literals = [f"--from-literal={k}={v}" for k, v in data.items()]
        node.kubectl("create", "secret", "generic", name, "-n", NS, *literals)


def _install_args(node: Node, *extra: str) -> list[str]:
    return [
        RELEASE,
        str(CHART),
        "-n",
        NS,
        "-f",
        str(LOCAL_VALUES),
        "--set",
        f"image.tag={node.cluster.images['IMAGE'].rsplit(':', 1)[1]}",
        "--set",
        f"aws.endpointUrl={node.moto.pod_url()}",
        "--set",
        f"aws.sesAccountEndpointUrl={node.cluster.account_pod_url()}",
        "--wait",
        f"--timeout={int(TIMEOUT)}s",
        *extra,
    ]


def _verify_sender_domain(node: Node) -> None:
    import boto3

    from devenv.moto import CREDENTIALS

    session = boto3.Session(
        CREDENTIALS["AWS_ACCESS_KEY_ID"], CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1"
    )
    session.client("ses", endpoint_url=node.moto.endpoint_url).verify_domain_identity(Domain="example.com")


def _received(node: Node, marker: str) -> Counter[str]:
    got: Counter[str] = Counter()
    for msg in node.moto.sent_emails():
        dests = msg.get("destinations")
        addrs = [a for v in dests.values() for a in v or []] if isinstance(dests, dict) else dests or []
        for addr in {email.utils.parseaddr(a)[1].lower() for a in addrs}:
            if marker in addr:
                got[addr] += 1
    return got


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "no log lines"
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"a log line is not JSON: {line[:300]!r}") from None
    return records


@pytest.fixture(scope="module")
def installed(node: Node) -> Node:
    _create_secrets(node)
    _verify_sender_domain(node)
    proc = node.helm("install", *_install_args(node))
    assert proc.returncode == 0, f"helm install failed: {proc.stderr}\n{node.cluster.logs()}"
    return node


def test_helm_install_runs_the_migration_hook_and_starts_the_pods(installed: Node) -> None:
    node = installed
    # The pre-install hook Job ran `emailplan db upgrade` in a Pod (and was deleted on success).
    assert node.psql("SELECT count(*) FROM alembic_version") == "1"
    status = node.helm("status", RELEASE, "-n", NS, "-o", "json")
    release = json.loads(status.stdout)
    assert release["info"]["status"] == "deployed"
    hooks = {h["name"]: h["last_run"]["phase"] for h in release.get("hooks", [])}
    assert hooks.get(f"{RELEASE}-migrate-1") == "Succeeded", hooks
    for component in ("operator", "api"):
        pods = node.pods(NS, f"app.kubernetes.io/component={component}")
        assert pods and all(_ready(p) for p in pods), component
        assert all(p["spec"]["nodeName"] == "emailplan-node" for p in pods)
        assert all(p["status"]["podIP"].startswith("10.88.0.") for p in pods)


def test_plan_sent_by_sender_pods_on_the_kubelet(installed: Node) -> None:
    node = installed
    marker = "node" + uuid.uuid4().hex[:6]
    emails = [f"{marker}-{i}@example.com" for i in range(300)]
    csv = "email,name\n" + "".join(f"{e},Reader {i}\n" for i, e in enumerate(emails))
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "readers"}, "data": {"list.csv": csv}}
    node.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(cm))
    plan = {
        "apiVersion": "emailplan.io/v1alpha1",
        "kind": "EmailPlan",
        "metadata": {"name": "node-launch"},
        "spec": {
            "from": "Acme <news@example.com>",
            "subject": "Hello {{ name }}",
            "text": "Hi {{ name }}.",
            "html": "<p>Hi {{ name }}.</p>",
            "recipients": {"configMapRef": {"name": "readers", "key": "list.csv", "format": "csv"}},
            "rate": {"perSecond": 100},
            "senders": {"maxReplicas": 2, "perPodRate": 50},
        },
    }
    node.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(plan))
    sender = "app.kubernetes.io/component=sender"
    seen_sender: list[str] = []

    def completed() -> bool:
        pods = node.pods(NS, sender)
        seen_sender.extend(p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running")
        status = node.json("get", "emailplans.emailplan.io", "node-launch", "-n", NS).get("status", {})
        return bool(status.get("phase") == "Completed")

    node.wait(completed, "EmailPlan node-launch Completed")
    status = node.json("get", "emailplans.emailplan.io", "node-launch", "-n", NS)["status"]
    assert status["total"] == 300 and status["sent"] == 300
    assert status["failed"] == 0 and status["suppressed"] == 0
    table = node.kubectl("get", "emailplans.emailplan.io", "-n", NS)
    assert "Completed" in table and "300" in table
    got = _received(node, marker)
    assert set(got) == set(emails) and max(got.values()) == 1
    assert seen_sender, "no sender pod ran on the kubelet"
    node.wait(lambda: not node.pods(NS, sender), "sender pods gone after completion")
    # The pods' logs are JSON lines, read through the kubelet.
    records = _json_lines(node.kubectl("logs", "-n", NS, f"deploy/{RELEASE}-operator"))
    assert any("node-launch" in json.dumps(r) for r in records)
    api_records = _json_lines(node.kubectl("logs", "-n", NS, f"deploy/{RELEASE}-api"))
    assert all({"ts", "level", "msg"} <= set(r) for r in api_records)


def test_helm_upgrade_runs_the_hook_again_and_rolls_the_pods(installed: Node) -> None:
    node = installed
    before = {p["metadata"]["name"] for p in node.pods(NS, "app.kubernetes.io/component=operator")}
    proc = node.helm("upgrade", *_install_args(node, "--set", "operator.statusIntervalSeconds=3"))
    assert proc.returncode == 0, f"helm upgrade failed: {proc.stderr}\n{node.cluster.logs()}"
    release = json.loads(node.helm("status", RELEASE, "-n", NS, "-o", "json").stdout)
    assert release["version"] == 2 and release["info"]["status"] == "deployed"
    hooks = {h["name"]: h["last_run"]["phase"] for h in release.get("hooks", [])}
    assert hooks.get(f"{RELEASE}-migrate-2") == "Succeeded", hooks
    # The operator rolled: its old pod goes away (it may still be terminating when helm returns).
    selector = "app.kubernetes.io/component=operator"

    def rolled() -> bool:
        pods = node.pods(NS, selector)
        names = {p["metadata"]["name"] for p in pods}
        return bool(pods) and before.isdisjoint(names) and all(_ready(p) for p in pods)

    node.wait(rolled, "operator pods replaced by the upgrade")
    env = node.pods(NS, selector)[0]["spec"]["containers"][0]["env"]
    assert {"name": "EMAILPLAN_STATUS_INTERVAL_SECONDS", "value": "3"} in env


def test_helm_uninstall_leaves_no_pod_and_keeps_the_crd(installed: Node) -> None:
    node = installed
    proc = node.helm("uninstall", RELEASE, "-n", NS, "--wait", f"--timeout={int(TIMEOUT)}s")
    assert proc.returncode == 0, proc.stderr
    node.wait(lambda: not node.json("get", "pods", "-n", NS)["items"], "no pod left in the namespace")
    assert node.kubectl("get", "crd", "emailplans.emailplan.io", "-o", "name").strip()
    # The release's Deployments are gone. What stays is the EmailPlan (its CRD stays, so do the
    # plans) with its sender Deployment, owned by the plan and scaled to zero since it completed.
    left = node.json("get", "deployments", "-n", NS)["items"]
    assert [d["metadata"]["labels"].get("app.kubernetes.io/component") for d in left] in ([], ["sender"])
    assert all(d["spec"]["replicas"] == 0 for d in left)
    assert all(d["metadata"]["ownerReferences"][0]["kind"] == "EmailPlan" for d in left)
    # The kubelet stopped every container it ran: containerd has no running task left.
    node.wait(
        lambda: "RUNNING" not in node.cluster.ctr("tasks", "ls"),
        "no container left running in containerd",
    )
