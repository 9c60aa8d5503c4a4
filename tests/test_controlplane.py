"""The local control plane is the real thing: versioned binaries, RBAC, GC, Deployments, clean stop."""

from __future__ import annotations

import json
import os
import time

import pytest

from devenv.kube import KubeCluster, controlplane_bin

pytestmark = pytest.mark.kube


def test_kubectl_version_shows_the_built_server_version(kube: KubeCluster) -> None:
    out = json.loads(kube.kubectl("version", "-o", "json").stdout)
    assert out["serverVersion"]["gitVersion"] == "v1.34.4"
    assert out["serverVersion"]["minor"] == "34"


def test_rbac_is_enforced(kube: KubeCluster, namespace: str) -> None:
    r = kube.kubectl(
        "auth",
        "can-i",
        "list",
        "secrets",
        "-n",
        namespace,
        f"--as=system:serviceaccount:{namespace}:default",
        check=False,
    )
    assert r.stdout.strip() == "no"
    r = kube.kubectl("auth", "can-i", "list", "secrets", "-n", namespace)
    assert r.stdout.strip() == "yes"


def _wait(check, timeout: float = 60) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return False


def test_deployment_gets_a_replicaset_and_owner_gc_works(kube: KubeCluster, namespace: str) -> None:
    kube.kubectl(
        "create", "deployment", "web", "-n", namespace, "--image=example.invalid/web:1", "--replicas=2"
    )
    assert _wait(lambda: kube.kubectl("get", "rs", "-n", namespace, "-o", "name").stdout.strip() != "")
    uid = kube.kubectl("get", "deployment", "web", "-n", namespace, "-o", "jsonpath={.metadata.uid}").stdout
    owned = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "owned",
            "namespace": namespace,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": uid}],
        },
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(owned))
    kube.kubectl("delete", "deployment", "web", "-n", namespace)
    assert _wait(
        lambda: kube.kubectl("get", "configmap", "owned", "-n", namespace, check=False).returncode != 0
    )
    assert _wait(lambda: kube.kubectl("get", "rs", "-n", namespace, "-o", "name").stdout.strip() == "")


def test_stop_leaves_no_process_behind(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cluster = KubeCluster(base=tmp_path / "kube", with_controller_manager=False, bin_dir=controlplane_bin())
    cluster.start()
    pids = [p.pid for p in cluster.procs.values()]
    assert cluster.kubectl("get", "namespace", "default").returncode == 0
    cluster.stop()
    for pid in pids:
        stat = f"/proc/{pid}/stat"
        assert not os.path.exists(stat) or open(stat).read().split()[2] == "Z"  # noqa: SIM115


def test_warm_build_reuses_the_cache() -> None:
    start = time.monotonic()
    path = controlplane_bin()
    assert time.monotonic() - start < 10, "a warm run must not rebuild"
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "helm"):
        assert (path / name).exists()
    assert not str(path).startswith(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
