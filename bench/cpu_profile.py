"""Run a module under cProfile timed by CPU (``time.process_time``), not wall clock.

``python bench/cpu_profile.py OUT -m MODULE ARGS...``: what ``python -m cProfile -o OUT -m
MODULE`` does, except that time spent waiting (on PostgreSQL, Redis, the exchange) does not
count, so the profile names what the process itself spends its CPU on.
"""

from __future__ import annotations

import cProfile
import runpy
import sys
import time


def main() -> None:
    out, flag, module, *args = sys.argv[1:]
    if flag != "-m":
        raise SystemExit(__doc__)
    sys.argv = [module, *args]
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == "__main__":
    main()
