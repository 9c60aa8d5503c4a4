"""The benchmarks' CPU accounting (``bench/procstat.py``) charges every process a command ran.

A sender pod's worker processes are forked by a forkserver that outlives the pod's main
process, so the main process's ``wait4`` rusage never holds their CPU: the throughput
benchmark once published negative CPU per email for every pod of more than one process.
These tests run a process tree of that shape for real (a grandchild that outlives its
parent and keeps burning CPU) and check that it is charged in full. The work is counted in
loop iterations, never in time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

from procstat import AGREEMENT, QUIET_CORES, TICK, cpu_flags  # noqa: E402

# The command under test: it forks a grandchild, then waits to be killed. The grandchild
# counts, reports its own CPU (rusage) and blocks on stdin; once its parent is gone it counts
# again, reports its CPU and its parent (now the benchmark, which adopted it), and exits.
TREE = r"""
import os, resource, signal, sys
def burn():
    total = 0
    for i in range(3_000_000):
        total += i
def report(*extra):
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(usage.ru_utime + usage.ru_stime, *extra, flush=True)
if os.fork() == 0:
    burn()
    report()
    sys.stdin.readline()
    burn()
    report(os.getppid())
    os._exit(0)
signal.pause()
"""

# The benchmark's side: run the tree as a charged command, snapshot its CPU while the
# grandchild is halfway (and blocked), end the parent, let the grandchild finish, charge.
DRIVER = r"""
import json, os, signal, subprocess, sys
from procstat import Charged
run = Charged([sys.executable, "-c", sys.argv[1]], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
half = float(run.proc.stdout.readline())
before = run.cpu_so_far()
os.kill(run.pid, signal.SIGTERM)
os.waitid(os.P_PID, run.pid, os.WEXITED | os.WNOWAIT)  # the parent is gone, not yet reaped
run.proc.stdin.write(b"go\n")
run.proc.stdin.flush()
end, adopted_by = run.proc.stdout.readline().split()
code, total = run.wait()
print(json.dumps({"half": half, "end": float(end), "adopted_by": int(adopted_by), "me": os.getpid(),
                  "before": before, "total": total, "code": code, "strays": run.strays()}))
"""


def test_a_grandchild_that_outlives_its_parent_is_charged_to_the_command() -> None:
    out = subprocess.run(
        [sys.executable, "-c", DRIVER, TREE],
        env={"PYTHONPATH": str(BENCH), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        check=True,
        timeout=120,
    )
    got = json.loads(out.stdout)
    assert got["adopted_by"] == got["me"], "the grandchild was not adopted by the benchmark"
    assert got["code"] == -15 and got["strays"] == []
    grandchild_second_half = got["end"] - got["half"]
    assert grandchild_second_half > 0
    # over the whole run: at least all the grandchild's own CPU
    assert got["total"] >= got["end"] > 0
    # over a window opened while the tree ran (as the benchmark opens it at the first send):
    # at least what the grandchild burned after it, give or take /proc's clock tick
    window = got["total"] - got["before"]
    assert window > 0
    assert window >= grandchild_second_half - 1 / TICK


QUIET = QUIET_CORES / 2


@pytest.mark.parametrize(
    ("figures", "accounted", "machine", "background", "expected"),
    [
        ({"sender": 1.2, "pipeline": 2.0}, 2.0, 2.1, QUIET, []),
        ({"sender": 1.2, "pipeline": 2.0}, 2.0, 2.0 / (1 - AGREEMENT / 2), QUIET, []),
        ({"sender": -0.08, "pipeline": 0.5}, 0.5, 2.1, QUIET, ["sender negative", "0.24x"]),
        ({"sender": 1.2, "pipeline": 2.0}, 2.0, 3.0, QUIET, ["0.67x"]),
        ({"sender": 1.2, "pipeline": 2.0}, 2.0, 1.5, QUIET, ["1.33x"]),
        ({"sender": 1.2, "pipeline": 2.0}, 2.0, 0.0, QUIET, ["nanx"]),
        ({"sender": 1.2, "pipeline": 2.0}, 2.0, 9.0, 1.5, ["unchecked: 1.50 cores"]),
        ({"sender": -0.1, "pipeline": 2.0}, 2.0, 9.0, 1.5, ["sender negative", "unchecked"]),
    ],
)
def test_cpu_figures_that_cannot_be_true_are_flagged(
    figures: dict[str, float], accounted: float, machine: float, background: float, expected: list[str]
) -> None:
    flags = cpu_flags(figures, accounted, machine, background)
    assert len(flags) == len(expected)
    for flag, part in zip(flags, expected, strict=True):
        assert part in flag
