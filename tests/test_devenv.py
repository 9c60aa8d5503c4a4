"""`python hack/devenv/kube.py up`: the README's "cluster to poke at" is ready to use as printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kube]


def test_kube_up_installs_the_crd_and_says_where_helm_is(repo_root: str, tmp_path: Path) -> None:
    state = tmp_path / "kube"
    script = os.path.join(repo_root, "hack", "devenv", "kube.py")
    up = subprocess.run(
        [sys.executable, script, "up", "--detach", "--dir", str(state)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=repo_root,
    )
    try:
        assert up.returncode == 0, up.stderr
        kubeconfig = re.search(r"^export KUBECONFIG=(\S+)$", up.stdout, re.M)
        path = re.search(r'^export PATH="([^:"]+):\$PATH"', up.stdout, re.M)
        assert kubeconfig and path, up.stdout
        assert (Path(path.group(1)) / "helm").is_file(), "the printed PATH entry must hold helm"
        env = {
            **os.environ,
            "KUBECONFIG": kubeconfig.group(1),
            "PATH": f"{path.group(1)}:{os.environ['PATH']}",
        }
        got = subprocess.run(
            ["kubectl", "get", "eplan", "-A"], capture_output=True, text=True, env=env, timeout=60
        )
        assert got.returncode == 0 and "No resources found" in got.stderr, got.stderr
        helm = subprocess.run(
            ["helm", "version", "--short"], capture_output=True, text=True, env=env, timeout=60
        )
        assert helm.returncode == 0 and helm.stdout.startswith("v3."), helm.stderr
    finally:
        down = subprocess.run(
            [sys.executable, script, "down", "--dir", str(state)], capture_output=True, text=True, timeout=120
        )
        assert down.returncode == 0, down.stderr
