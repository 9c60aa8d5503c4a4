"""Run a module under cProfile timed by this process's CPU clock, not the wall clock.

``python -m cProfile`` times with the wall clock: on a shared machine every moment the
process waits for a core, or for the network, is charged to whatever frame was running, so
a profile says more about the machine's load than about the code. This one charges CPU
seconds (``time.process_time``), the figure the throughput benchmark compares.

    python bench/cpuprofile.py OUT.prof -m emailplan.cli worker --processes 1
"""

from __future__ import annotations

import cProfile
import runpy
import sys
import time


def main() -> None:
    out, flag, module, *args = sys.argv[1:]
    if flag != "-m":
        raise SystemExit("usage: cpuprofile.py OUT.prof -m MODULE [ARGS...]")
    sys.argv = [module, *args]
    profile = cProfile.Profile(time.process_time)
    try:
        profile.runcall(runpy.run_module, module, run_name="__main__", alter_sys=True)
    except SystemExit as done:
        code = done.code
    else:
        code = 0
    finally:
        profile.dump_stats(out)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
