"""Time to page when the price stream, then beat, then every worker is killed, with the
default settings.

Real processes on embedded storage and the paper exchange: one worker, beat, the API and
an ingest (the mark-price stream), with one position open (opened on the paper exchange
by hand and adopted by reconciliation); a local HTTP endpoint stands for the alert webhook
and the dead-man's URL. Prints the seconds from each SIGKILL to the webhook receiving the
page, who noticed, and how many dead-man's pings arrived after beat was killed.

    python -m bench.bench_paging
"""

from __future__ import annotations

from bench.common import bench_env, machine
from sim.state import SimOptions
from tests.integration.test_paging import Inbox
from tests.integration.test_paging_processes import page_times


def main() -> None:
    print(machine())
    inbox = Inbox()
    try:
        with bench_env(SimOptions()) as env:
            figures = page_times(dict(env.env), inbox, timeout=600)
    finally:
        inbox.close()
    for name, value in figures.items():
        print(f"{name:>26}: {value}")


if __name__ == "__main__":
    main()
