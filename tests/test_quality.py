"""Static checks are part of the test command: ruff, mypy (strict) and import-linter contracts."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("check", ["ruff", "format", "mypy", "imports"])
def test_static_check_is_clean(repo_root: str, check: str) -> None:
    r = subprocess.run([sys.executable, "hack/lint.py", check], cwd=repo_root, capture_output=True, text=True)
    assert r.returncode == 0, f"{check} failed:\n{r.stdout[-8000:]}\n{r.stderr[-3000:]}"


# The project's size rules, measured: a module a reader can hold, a function that does one step.
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60
MEASURED = ("operator", "sender", "emailplan")


def _sources(repo_root: str) -> list[Path]:
    root = Path(repo_root)
    return sorted(
        p for d in MEASURED for p in (root / d).rglob("*.py") if "migrations" not in p.relative_to(root).parts
    )


def test_no_module_over_600_lines(repo_root: str) -> None:
    too_long = [
        f"{p.relative_to(repo_root)}: {n} lines"
        for p in _sources(repo_root)
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines (split them by concern):\n" + "\n".join(
        too_long
    )


def test_no_function_over_60_lines(repo_root: str) -> None:
    too_long = []
    for p in _sources(repo_root):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"{p.relative_to(repo_root)}:{node.lineno} {node.name}: {n} lines")
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines (name their steps):\n" + "\n".join(
        too_long
    )
