"""The package installs the way the Dockerfile installs it.

The image's builder stage copies a fixed set of paths (see the COPY lines of the
Dockerfile) and builds a wheel; the final stage installs only that wheel. Here we
copy the same paths into an empty directory, build the wheel there, install it into
a fresh virtualenv and use it from a directory that is not the repository, so a
missing subpackage, data file or COPY line fails here instead of in a broken image.

There is no Docker engine and no index is used: the wheel is installed without
dependencies, and the fresh venv sees the dependencies of the project venv through
a path entry placed *after* its own site-packages (plain path entries do not run the
project's editable-install hook, so ``emailplan`` can only come from the wheel).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def builder_copy_sources() -> list[str]:
    """The source paths of the COPY lines in the Dockerfile's builder stage."""
    sources: list[str] = []
    stage = None
    for line in (REPO / "Dockerfile").read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0].upper() == "FROM":
            stage = words[-1] if len(words) >= 4 and words[-2].upper() == "AS" else None
        elif words[0].upper() == "COPY" and stage == "builder":
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    assert sources, "no COPY lines found in the Dockerfile's builder stage"
    return sources


PACKAGE_DIRS = {"emailplan": "emailplan", "operator": "emailplan/operator", "sender": "emailplan/sender"}


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build context holding exactly what the Dockerfile's builder stage copies."""
    context = tmp_path_factory.mktemp("context")
    for src in builder_copy_sources():
        path = REPO / src
        assert path.exists(), f"the Dockerfile copies {src}, which is missing from the repository"
        if path.is_dir():
            shutil.copytree(path, context / src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, context / src)
    return context


@pytest.fixture(scope="module")
def wheel(context: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (
        f"building the wheel from the Dockerfile's files failed:\n{proc.stderr[-3000:]}"
    )
    wheels = list(out.glob("emailplan-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Dependencies from the project venv, searched after the wheel's own files.
    (Path(site) / "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def _run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(cwd)},
    )


def test_wheel_contains_every_module_and_data_file(context: Path, wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = []
    for src_dir, pkg_dir in PACKAGE_DIRS.items():
        for path in (context / src_dir).rglob("*"):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            if path.suffix not in {".py", ".ini", ".mako", ".typed"}:
                continue
            rel = path.relative_to(context / src_dir).as_posix()
            if f"{pkg_dir}/{rel}" not in names:
                missing.append(f"{src_dir}/{rel}")
    assert not missing, f"not in the wheel (add the subpackage to pyproject.toml packages?): {missing}"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "emailplan = emailplan.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_console_command_works_outside_the_repository(installed: Path, tmp_path: Path) -> None:
    proc = _run(installed, str(installed / "bin" / "emailplan"), "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for sub in ("operator", "worker", "api", "db upgrade"):
        assert sub in proc.stdout
    proc = _run(installed, str(installed / "bin" / "emailplan"), "--version", cwd=tmp_path)
    assert proc.returncode == 0 and "0.1.0" in proc.stdout


def test_every_module_imports_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    code = """
import importlib, pkgutil, sys
import emailplan
site = sys.argv[1]
assert emailplan.__file__.startswith(site), emailplan.__file__
import emailplan.operator, emailplan.sender
names = []
for pkg in (emailplan,):
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        # Alembic's env.py and revision files run only inside a migration context.
        if ".migrations." in info.name + ".":
            continue
        importlib.import_module(info.name)
        names.append(info.name)
for name in ("emailplan.operator", "emailplan.sender"):
    mod = importlib.import_module(name)
    assert mod.__file__.startswith(site), (name, mod.__file__)
print(len(names), "modules")
"""
    site = str(installed)
    proc = _run(installed, str(installed / "bin" / "python"), "-c", code, site, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "modules" in proc.stdout


def test_the_tests_run_with_the_pinned_versions() -> None:
    """constraints.txt pins what every install gets (setup, image); it must be what was tested.

    A dependency added to pyproject.toml, or upgraded in .venv, without refreshing the file
    would install a version nobody ran the tests with: a new release on the index then breaks
    a fresh machine (it did: sentry-sdk 3.0 changed ``init()``).
    """
    from importlib import metadata

    from packaging.requirements import Requirement

    pinned: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            pinned[req.name.lower().replace("_", "-")] = str(req.specifier).removeprefix("==")
    installed = {
        (d.metadata["Name"] or "").lower().replace("_", "-"): d.version for d in metadata.distributions()
    }
    unpinned = sorted(
        f"{name}=={version}"
        for name, version in installed.items()
        if name not in ("emailplan", "pip", "setuptools", "wheel") and pinned.get(name) != version
    )
    assert not unpinned, (
        f"installed but not pinned so in constraints.txt (refresh it, see its header): {unpinned}"
    )
