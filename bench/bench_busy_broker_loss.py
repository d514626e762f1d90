"""A worker with both pool slots busy through Redis restarts: does it consume again, and how
many connections to Redis does each restart leave behind?

Real processes: the project's Celery worker (tests/integration/broker_loss_worker.py: the
`vigil worker` app and options, prefork, 2 slots, one task of its own that can be held open)
and an embedded Redis with its append-only file, killed with SIGKILL and started again on the
same port. One worker lives through every trial, as a deployment's would. Each trial:

1. two held ``acks_late`` tasks start (both slots busy, two unacknowledged messages);
2. Redis is killed and started again after an outage, the held tasks released at the moment
   the variant names: ``busy`` (after the restart), ``one_finishes`` (one just before the
   kill, the other after the restart), ``finish_in_outage`` (both while Redis is down),
   ``at_restart`` (both the instant Redis is back);
3. two probe tasks are sent; the trial passes when both run within ``--probe-seconds``.

A worker that does not consume in time is a *stall*: its log and its thread dump (SIGUSR1)
are kept, and a fresh worker takes the next trial. After each trial the worker's TCP
connections to Redis are counted (psutil, the worker and its pool children; ESTABLISHED and
the rest apart) and Redis's own ``CLIENT LIST``.

    python -m bench.bench_busy_broker_loss --trials 40 [--variants busy,one_finishes] [--keep DIR]

More variants: ``backlog`` (four more tasks queued while both slots are busy), ``split`` (one
released while Redis is down, the other after), ``double_restart`` (Redis killed again while
the worker reconnects), ``frees_into_backlog`` (one slot freed into a queued backlog 0-0.3 s
before the kill). ``--engine-queues`` makes the worker consume vigil's queues as well.
``--vigil-worker``: `vigil worker --concurrency 2` itself (its default queues), the held tasks
being its heartbeat task waiting on a row this process keeps locked in an embedded PostgreSQL
(tests/integration/busy_vigil_worker.py).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench.common import machine
from core.config import get_settings
from core.db import migrate
from core.endpoints import embedded_database_url, embedded_redis_url
from shell.runtime.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from tasks.app import create_app
from tests.integration.busy_broker import ALL_VARIANTS, ENGINE_QUEUES, Run
from tests.integration.busy_vigil_worker import VigilRun
from tests.integration.test_broker_loss import QUEUE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--variants", default=",".join(ALL_VARIANTS))
    parser.add_argument("--outages", default="0.5,2,5", help="outage seconds, cycled")
    parser.add_argument("--probe-seconds", type=float, default=60)
    parser.add_argument("--keep", type=Path, help="keep logs here (stalls are always printed)")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--census",
        action="store_true",
        help="the worker's own account of its sockets (forces a gc)",
    )
    parser.add_argument(
        "--vigil-worker",
        action="store_true",
        help="`vigil worker` itself, held by heartbeat tasks waiting on a row lock (PostgreSQL)",
    )
    parser.add_argument(
        "--engine-queues", action="store_true", help="consume vigil's queues too, as `vigil worker`"
    )
    args = parser.parse_args()
    variants = args.variants.split(",")
    outages = [float(x) for x in args.outages.split(",")]
    print(machine())
    base = Path(args.keep or tempfile.mkdtemp())
    base.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedRedis(base / "redis", free_port(), persist=True)
    broker.start()
    settings = get_settings().model_copy(update={"redis_url": embedded_redis_url(broker.port)})
    app = create_app(settings)
    queues = f"{QUEUE},{ENGINE_QUEUES}" if args.engine_queues else QUEUE
    postgres = None
    if args.vigil_worker:
        postgres = EmbeddedPostgres(base / "pg", free_port())
        postgres.start()
        postgres.create_database("vigil_busy")
        database_url = embedded_database_url(postgres.port, "vigil_busy")
        migrate.upgrade(database_url)
        run: Run = VigilRun(
            broker, base, app, args.probe_seconds, queues, False, database_url=database_url
        )
    else:
        run = Run(broker, base, app, args.probe_seconds, queues, args.census)
    try:
        for index in range(args.trials):
            variant = variants[index % len(variants)]
            outage = outages[(index // len(variants)) % len(outages)]
            trial = run.trial(index, variant, outage)
            print(json.dumps(trial.__dict__), flush=True)
    finally:
        run.stop()
        app.close()  # type: ignore[attr-defined]
        broker.stop()
        if postgres is not None:
            postgres.stop()
    stalls = [t for t in run.trials if t.consumed_after is None]
    print(f"trials {len(run.trials)}, stalls {len(stalls)}, workers {run.workers_started}")
    print(f"logs in {base}")
    if args.json:
        args.json.write_text(json.dumps([t.__dict__ for t in run.trials], indent=1))


if __name__ == "__main__":
    main()
