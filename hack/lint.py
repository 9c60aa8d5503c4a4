"""Static checks: ruff, mypy (strict) and import-linter.

The package lives in three directories (emailplan/, operator/, sender/) joined
by setuptools' package-dir mapping, which mypy and import-linter cannot follow.
So both run on a mirror, ``.typecheck/emailplan``, made of symlinks to the real
files: error paths point into the mirror but name the same relative files.

    python hack/lint.py [ruff|format|mypy|imports|all]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIRROR = ROOT / ".typecheck"
PARTS = {
    "emailplan": ROOT / "emailplan",
    "emailplan/operator": ROOT / "operator",
    "emailplan/sender": ROOT / "sender",
}
BIN = Path(sys.executable).parent


def build_mirror() -> Path:
    shutil.rmtree(MIRROR, ignore_errors=True)
    for target, source in PARTS.items():
        for path in source.rglob("*"):
            if (
                "__pycache__" in path.parts
                or not path.is_file()
                or path.suffix not in (".py", ".pyi", ".typed")
            ):
                continue
            dest = MIRROR / target / path.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                dest.symlink_to(path)
    return MIRROR


def run(argv: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> int:
    print("$", " ".join(argv), flush=True)
    return subprocess.run(argv, cwd=cwd, env=env).returncode


def main(which: str) -> int:
    checks = {
        "ruff": lambda: run([str(BIN / "ruff"), "check", "."]),
        "format": lambda: run([str(BIN / "ruff"), "format", "--check", "."]),
        "mypy": lambda: run(
            [str(BIN / "mypy"), str(build_mirror() / "emailplan")],
            env={**os.environ, "MYPYPATH": str(MIRROR)},
        ),
        # cwd is the mirror so that the mirror, not the repo's emailplan/, is imported
        "imports": lambda: run(
            [str(BIN / "lint-imports"), str(ROOT / "pyproject.toml")],
            env={**os.environ, "PYTHONPATH": str(build_mirror())},
            cwd=MIRROR,
        ),
    }
    names = list(checks) if which == "all" else [which]
    return max(checks[n]() for n in names)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "all"))
