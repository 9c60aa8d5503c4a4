"""`emailplan operator` with a configuration it cannot use: one line, a non-zero exit, no retry loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devenv.kube import KubeCluster
from devenv.ports import free_port

EMAILPLAN = os.path.join(os.path.dirname(sys.executable), "emailplan")
SECRET_TOKEN = "tok-do-not-print-0123456789"


def operator(kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")},
        "KUBECONFIG": str(kubeconfig),
        "EMAILPLAN_METRICS_PORT": "0",
    }
    return subprocess.run(
        [EMAILPLAN, "operator", "--standalone"], capture_output=True, text=True, env=env, timeout=120, cwd="/"
    )


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert SECRET_TOKEN not in r.stderr + r.stdout
    assert lines[0].startswith("emailplan: error: ")
    return lines[0]


def kubeconfig(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "config"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
                "users": [{"name": "u", "user": {"token": SECRET_TOKEN}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    return path


def test_missing_and_broken_kubeconfig(tmp_path: Path) -> None:
    line = one_line(operator(tmp_path / "nope"))
    assert "no usable Kubernetes configuration" in line and str(tmp_path / "nope") in line
    assert "point KUBECONFIG at a valid kubeconfig" in line
    broken = tmp_path / "broken"
    broken.write_text("this: [is not a kubeconfig")
    assert "no usable Kubernetes configuration" in one_line(operator(broken))


def test_unreachable_server(tmp_path: Path) -> None:
    server = f"https://127.0.0.1:{free_port()}"
    line = one_line(operator(kubeconfig(tmp_path, server)))
    assert f"cannot reach the Kubernetes API at {server}" in line and "check the server" in line


@pytest.mark.kube
def test_refused_credentials(tmp_path: Path, kube: KubeCluster) -> None:
    line = one_line(operator(kubeconfig(tmp_path, kube.server)))
    assert "refused the credentials (401" in line and "fix the user" in line
