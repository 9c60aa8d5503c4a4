"""The local pod runner (hack/devenv/runner.py) plays the kubelet for sender Pods.

Against the session control plane (all controllers, no kubelet, no scheduler): a
Deployment's ReplicaSet creates Pods, the runner runs them as local processes and
reports their status, so the controllers themselves count ready replicas.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devenv.kube import KubeCluster
from devenv.ports import wait_for
from devenv.runner import PodRunner

NAME = "sleeper"

# Writes its environment to OUT_DIR/<pod name>.json, ignores SIGTERM (so only the grace
# period's SIGKILL ends it), then sleeps.
SCRIPT = """
import json, os, pathlib, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
out = pathlib.Path(os.environ["OUT_DIR"]) / (os.environ["POD_NAME"] + ".json")
out.write_text(json.dumps(dict(os.environ)))
time.sleep(600)
"""


def deployment(namespace: str, out_dir: Path, replicas: int) -> dict[str, Any]:
    labels = {"app.kubernetes.io/component": "sender", "app": NAME}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {
                            "name": "sleeper",
                            "image": "example.invalid/sleeper:1",
                            "command": ["python", "-c"],
                            "args": [SCRIPT],
                            "envFrom": [{"secretRef": {"name": "bulk"}, "prefix": "BULK_"}],
                            "env": [
                                {"name": "OUT_DIR", "value": str(out_dir)},
                                {"name": "OVERRIDDEN", "value": "by-pod"},
                                {
                                    "name": "TOKEN",
                                    "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}},
                                },
                                {
                                    "name": "COLOUR",
                                    "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "colour"}},
                                },
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                },
                                {
                                    "name": "POD_NAMESPACE",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                                },
                            ],
                        }
                    ],
                },
            },
        },
    }


@pytest.fixture
def runner(kube: KubeCluster, tmp_path: Path) -> Iterator[PodRunner]:
    r = PodRunner(
        kube.kubeconfig,
        extra_env={"OVERRIDDEN": "by-runner", "EXTRA": "yes"},
        command_map={"python": sys.executable},
        log_dir=tmp_path / "logs",
        interval=0.2,
    ).start()
    try:
        yield r
    finally:
        r.stop()


def get(kube: KubeCluster, *args: str) -> Any:
    return json.loads(kube.kubectl("get", *args, "-o", "json").stdout)


def alive(runner: PodRunner, ns: str) -> list[subprocess.Popen[bytes]]:
    return [p for p in runner.processes(ns, NAME) if p.poll() is None]


def pods(kube: KubeCluster, ns: str) -> list[dict[str, Any]]:
    return list(get(kube, "pods", "-n", ns, "-l", f"app={NAME}")["items"])


def ready_replicas(kube: KubeCluster, ns: str) -> int:
    return int(get(kube, "deployment", NAME, "-n", ns).get("status", {}).get("readyReplicas") or 0)


def test_runner_runs_pods_like_a_kubelet(
    kube: KubeCluster, namespace: str, runner: PodRunner, tmp_path: Path
) -> None:
    ns = namespace
    out = tmp_path / "env"
    out.mkdir()
    kube.kubectl("create", "secret", "generic", "creds", "-n", ns, "--from-literal=token=s3cret")
    kube.kubectl("create", "secret", "generic", "bulk", "-n", ns, "--from-literal=KEY=from-env-from")
    kube.kubectl("create", "configmap", "settings", "-n", ns, "--from-literal=colour=teal")
    kube.kubectl("apply", "-f", "-", input=json.dumps(deployment(ns, out, replicas=2)))

    # Two processes, two Running and Ready pods, and the controllers say 2/2.
    wait_for(lambda: len(alive(runner, ns)) == 2, 60, "two processes")
    wait_for(lambda: ready_replicas(kube, ns) == 2, 60, "readyReplicas == 2")
    dep = get(kube, "deployment", NAME, "-n", ns)
    assert dep["status"]["availableReplicas"] == 2 and dep["status"]["replicas"] == 2
    table = kube.kubectl("get", "deployment", NAME, "-n", ns).stdout
    assert "2/2" in table, table
    listed = pods(kube, ns)
    assert len(listed) == 2
    for pod in listed:
        st = pod["status"]
        assert st["phase"] == "Running" and st["podIP"] == "127.0.0.1" and st.get("startTime")
        conds = {c["type"]: c["status"] for c in st["conditions"]}
        assert conds == {
            "PodScheduled": "True",
            "Initialized": "True",
            "ContainersReady": "True",
            "Ready": "True",
        }
        (cs,) = st["containerStatuses"]
        assert cs["ready"] and cs["started"] and cs["restartCount"] == 0 and "running" in cs["state"]
    assert runner.processes(ns, "other") == []

    # Each process got the pod's environment, resolved through the API, with the runner's overlay.
    names = sorted(p["metadata"]["name"] for p in listed)
    wait_for(lambda: len(list(out.glob("*.json"))) == 2, 30, "environment files")
    for pod_name in names:
        env = json.loads((out / f"{pod_name}.json").read_text())
        assert env["TOKEN"] == "s3cret" and env["BULK_KEY"] == "from-env-from"
        assert env["COLOUR"] == "teal" and env["POD_NAMESPACE"] == ns and env["POD_NAME"] == pod_name
        assert env["OVERRIDDEN"] == "by-runner" and env["EXTRA"] == "yes"

    # A process that dies is restarted, and its pod's restartCount goes up.
    victim = alive(runner, ns)[0]
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(10)

    def restarted() -> bool:
        counts = [p["status"]["containerStatuses"][0]["restartCount"] for p in pods(kube, ns)]
        return sorted(counts) == [0, 1]

    wait_for(restarted, 60, "restartCount 1")
    wait_for(lambda: len(alive(runner, ns)) == 2, 30, "two processes again")
    wait_for(lambda: ready_replicas(kube, ns) == 2, 60, "readyReplicas == 2 after the restart")
    bumped = next(p for p in pods(kube, ns) if p["status"]["containerStatuses"][0]["restartCount"] == 1)
    assert bumped["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 137

    # Scale to 1: the ReplicaSet deletes a pod, its process exits (SIGKILL after the grace period).
    before = alive(runner, ns)
    kube.kubectl("scale", "deployment", NAME, "-n", ns, "--replicas=1")
    wait_for(lambda: len(runner.processes(ns, NAME)) == 1, 60, "one process after scaling down")
    assert sum(1 for p in before if p.poll() is None) == 1
    assert [p.returncode for p in before if p.poll() is not None] == [-signal.SIGKILL]
    wait_for(lambda: len(pods(kube, ns)) == 1 and ready_replicas(kube, ns) == 1, 60, "1/1")

    # Delete the Deployment: the garbage collector removes its pods, and every process exits.
    last = alive(runner, ns)
    assert len(last) == 1
    kube.kubectl("delete", "deployment", NAME, "-n", ns)
    wait_for(lambda: runner.processes(ns, NAME) == [], 60, "no processes after the Deployment is gone")
    assert all(p.poll() is not None for p in last)
