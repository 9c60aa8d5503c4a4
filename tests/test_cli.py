"""The one console command and its subcommands explain themselves."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

EMAILPLAN = os.path.join(os.path.dirname(sys.executable), "emailplan")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EMAILPLAN, *args], capture_output=True, text=True, cwd="/")


def test_help_lists_every_process() -> None:
    r = run("--help")
    assert r.returncode == 0
    for word in ("operator", "worker", "api", "db upgrade", "EMAILPLAN_"):
        assert word in r.stdout


@pytest.mark.parametrize("sub", [["operator"], ["worker"], ["api"], ["db", "upgrade"]])
def test_subcommand_help(sub: list[str]) -> None:
    r = run(*sub, "--help")
    assert r.returncode == 0, r.stderr
    assert "usage: emailplan " + " ".join(sub) in r.stdout


def test_unknown_subcommand_is_a_clear_error() -> None:
    r = run("sendall")
    assert r.returncode == 2
    assert "invalid choice: 'sendall'" in r.stderr


def test_bad_flag_value_names_the_flag() -> None:
    r = run("api", "--port", "eighty")
    assert r.returncode == 2
    assert "--port" in r.stderr and "invalid int value" in r.stderr


def test_version() -> None:
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("emailplan ")
