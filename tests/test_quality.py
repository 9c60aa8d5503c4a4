"""Static checks are part of the test command: ruff, mypy (strict) and import-linter contracts."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("check", ["ruff", "format", "mypy", "imports"])
def test_static_check_is_clean(repo_root: str, check: str) -> None:
    r = subprocess.run([sys.executable, "hack/lint.py", check], cwd=repo_root, capture_output=True, text=True)
    assert r.returncode == 0, f"{check} failed:\n{r.stdout[-8000:]}\n{r.stderr[-3000:]}"
