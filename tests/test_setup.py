"""`hack/setup.sh` is quiet: one line a step on the terminal, the tools' output in a log named on failure.

Run on a copy of the script in a scratch project (a stub control-plane build, a
pyproject whose dependency cannot be installed), so it takes seconds and touches
nothing of the real checkout.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = """[project]
name = "scratch"
version = "0"
dependencies = [{deps}]
[project.optional-dependencies]
demo = []
dev = []
[tool.setuptools]
py-modules = []
"""


def scratch(tmp_path: Path, deps: str) -> Path:
    (tmp_path / "hack" / "controlplane").mkdir(parents=True)
    shutil.copy(REPO / "hack" / "setup.sh", tmp_path / "hack" / "setup.sh")
    (tmp_path / "hack" / "controlplane" / "build.sh").write_text(
        'echo "[controlplane] building etcd (1/4)" >&2\n'
        'for i in $(seq 200); do echo "go: compiling package $i" >&2; done\n'
        'echo "$PWD/bin"\n'
    )
    (tmp_path / "hack" / "node").mkdir()
    (tmp_path / "hack" / "node" / "setup.sh").write_text('echo "ok: node mode (stub)"\n')
    (tmp_path / "pyproject.toml").write_text(PYPROJECT.format(deps=deps))
    (tmp_path / "constraints.txt").write_text("")
    return tmp_path


def setup(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "hack/setup.sh", *args], cwd=root, capture_output=True, text=True, timeout=600
    )


def test_a_failing_step_names_itself_and_the_log(tmp_path: Path) -> None:
    root = scratch(tmp_path, '"no-such-package-for-emailplan-tests==9"')
    r = setup(root, "--runtime-only")
    assert r.returncode == 1
    log = root / ".devenv" / "setup.log"
    assert 'setup failed at "python virtualenv (.venv, .[demo])"' in r.stderr
    assert f"full output: {log}" in r.stderr
    assert "no-such-package-for-emailplan-tests" in r.stderr, "the last lines of the log say why"
    assert "no-such-package-for-emailplan-tests" in log.read_text()
    assert "control plane" not in r.stderr, "nothing runs after a failed step"


def test_a_good_run_prints_a_line_a_step(tmp_path: Path) -> None:
    root = scratch(tmp_path, "")
    r = setup(root, "--runtime-only")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert [line for line in lines if line.startswith("==> ")] == [
        "==> system packages",
        "==> python virtualenv (.venv, .[demo])",
        "==> local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, helm)",
    ]
    assert "[controlplane] building etcd (1/4)" in lines, "the long build's progress is shown"
    assert len(lines) < 12, r.stderr
    log = (root / ".devenv" / "setup.log").read_text()
    assert "go: compiling package 200" in log and "go: compiling package" not in r.stderr
    assert (root / ".venv" / "controlplane-bin").read_text().strip() == f"{root}/bin"
    again = setup(root)  # the dev install is a separate stamp and adds node mode: still quiet
    assert again.returncode == 0 and len(again.stderr.splitlines()) < 12, again.stderr
    assert "ok: node mode (stub)" in again.stderr and "node mode" not in r.stderr, "the demo skips node mode"
