"""Celery's own CPU per task on a ``stops`` worker: an empty task, counted over the process tree.

``python bench/celery_overhead.py [--tasks 2000] [--task ping|price] [--compare REF] [--profile]``

What a price task costs before its first line runs and after its last: the worker's main
process reads the message and hands it to a pool process, which runs the task's wrappers,
sends its monitoring events and acknowledges the message. Measured with the ping task (it does
nothing) sent without a result, the way the ingest sends price tasks, as the CPU the worker's
process tree spent from the first send until the queue is drained, per task. With
``--compare REF`` the same is measured on the workers of a git revision in the same run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import redis
from common import ROOT, code_env, embedded_stores, export_revision, machine, wait_until
from worker_cost import own_cpu, tree_cpu

from core import task_names
from core.config import get_settings, load_settings

EMPTY_TASKS = {
    "ping": (task_names.PING, ()),
    # no symbol: the batch returns at once; the venue's name is any configured one's
    "price": (task_names.ON_PRICES, ("binance", [])),
}


def measure(
    code: Path, home: Path, tasks: int, tag: str, task: str = "ping", profile: bool = False
) -> tuple[float, float]:
    """CPU milliseconds per empty task of a 2-process ``stops`` worker running ``code``: the
    whole process tree, and its main process alone."""
    from tasks.app import create_app

    env = code_env(dict(os.environ, VIGIL_LOG_LEVEL="WARNING"), code)
    log = (home / f"worker-{tag}.log").open("ab")
    argv = [sys.executable, "-m", "shell.cli", "worker", "--queues", "stops", "--name", tag]
    pool = ["--pool", "prefork", "--concurrency", "2"]
    if profile:  # a solo worker under cProfile timed by CPU: where an empty task's CPU goes
        profiler = [str(Path(__file__).with_name("cpu_profile.py")), str(home / f"{tag}.prof")]
        argv = [sys.executable, *profiler, *argv[1:]]
        pool = ["--pool", "solo"]
    worker = subprocess.Popen(
        [*argv, *pool],
        env=env,
        cwd=code,
        start_new_session=True,
        stdout=log,
        stderr=log,
    )
    try:
        app = create_app(load_settings())
        app.send_task("vigil.maintenance.ping", queue="stops", ignore_result=False).get(timeout=90)
        rds = redis.Redis.from_url(str(get_settings().redis_url))
        time.sleep(2.0)  # the start-up's own tasks and connections settle
        name, task_args = EMPTY_TASKS[task]
        before, main_before = tree_cpu(worker.pid), own_cpu(worker.pid)
        for _ in range(tasks):
            app.send_task(name, args=task_args, queue="stops", ignore_result=True)
        wait_until(lambda: rds.llen("stops") == 0, 300, "drain")
        time.sleep(1.0)  # the last tasks finish
        tree = (tree_cpu(worker.pid) - before) * 1000 / tasks
        return tree, (own_cpu(worker.pid) - main_before) * 1000 / tasks
    finally:
        worker.terminate()  # warm shutdown: a profile is written
        worker.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--task", choices=sorted(EMPTY_TASKS), default="ping")
    parser.add_argument("--compare", metavar="REF")
    parser.add_argument("--profile", action="store_true", help="profile a solo worker; keep it")
    args = parser.parse_args()
    with embedded_stores("vigil-bench-celery-", keep_home=args.profile) as stores:
        print(machine(), flush=True)
        variants = [("working tree", ROOT)]
        if args.compare:
            variants.insert(0, (args.compare, export_revision(args.compare, stores.home / "ref")))
        for name, code in variants:
            tag = name.replace(" ", "-")
            tree, main = measure(code, stores.home, args.tasks, tag, args.task, args.profile)
            print(
                f"[{name}] stops worker CPU per empty {args.task} task: {tree:.2f} ms"
                f" (main process {main:.2f} ms)",
                flush=True,
            )
    if args.profile:
        print(f"profiles in {stores.home} (python -m pstats <file>)")


if __name__ == "__main__":
    main()
