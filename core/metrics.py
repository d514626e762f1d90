"""Prometheus instruments shared by every process, kept in Redis and served by ``vigil api``.

Why Redis and not prometheus_client's multiprocess mode: workers run on any machine (and in
separate containers), so a shared directory of mmap files does not exist; Redis does, every
process already talks to it, and a counter there survives a worker restart. Updates are
``HINCRBY``/``HINCRBYFLOAT`` sent together in one script call; the API reads
the hashes at scrape time and renders them as ordinary Prometheus counters and histograms.

Metrics never break trading: a Redis error while recording is logged (at most once a minute)
and the sample dropped.

A task's updates are held until it ends and written together with its own count and
duration (one round trip per task instead of one per update); updates outside a task are
written at once. The threads of a price batch hand theirs to the task's thread
(``held_for_hand_over``, ``hand_over``), so a batch is one round trip too.

Instruments written here (by any process):
- ``vigil_tasks_total{task, outcome}`` and ``vigil_task_duration_seconds{task}``: Celery
  signals in the workers (``install_task_metrics``).
- ``vigil_tick_to_order_seconds``: the price path, through ``observe_tick_to_order``.
- ``vigil_exchange_errors_total{kind}``: the exchange adapter, by error class.
- ``vigil_lock_wait_seconds{outcome}``: the symbol lock, acquired or timed out.
Gauges read from the database (positions, events, alerts) are computed by the API itself
(core/api/collectors.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from core.redis_scripts import run_script

log = logging.getLogger(__name__)

PREFIX = "vigil:metrics:"
_SEP = "\x1f"


@dataclass(frozen=True)
class CounterSpec:
    name: str  # without the _total suffix Prometheus adds
    help: str
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class HistogramSpec:
    name: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

TASKS = CounterSpec(
    "vigil_tasks", "Celery tasks finished, by task name and outcome.", ("task", "outcome")
)
TASK_DURATION = HistogramSpec(
    "vigil_task_duration_seconds",
    "Run time of Celery tasks, by task name.",
    ("task",),
    (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
TICK_TO_ORDER = HistogramSpec(
    "vigil_tick_to_order_seconds",
    "From the price tick that required a stop move (or close) to the order being sent.",
    (),
    LATENCY_BUCKETS,
)
EXCHANGE_ERRORS = CounterSpec(
    "vigil_exchange_errors", "Failed exchange calls, by error class.", ("kind",)
)
LOCK_WAIT = HistogramSpec(
    "vigil_lock_wait_seconds",
    "Time spent waiting for a symbol lock, by outcome (acquired, timeout).",
    ("outcome",),
    LATENCY_BUCKETS,
)
COUNTERS: tuple[CounterSpec, ...] = (TASKS, EXCHANGE_ERRORS)
HISTOGRAMS: tuple[HistogramSpec, ...] = (TASK_DURATION, TICK_TO_ORDER, LOCK_WAIT)


def _labels_key(values: Sequence[str]) -> str:
    return json.dumps(list(values))


Write = Callable[[Any], None]
"""One instrument update, queued on a Redis pipeline (or anything with its ``hincrby`` and
``hincrbyfloat``, such as ``_Increments``)."""

# KEYS: one hash per increment. ARGV: per increment, 'i' (HINCRBY) or 'f' (HINCRBYFLOAT),
# the field and the amount.
_INCREMENTS = """
for k = 1, #KEYS do
  local op, field, amount = ARGV[3 * k - 2], ARGV[3 * k - 1], ARGV[3 * k]
  if op == 'i' then redis.call('hincrby', KEYS[k], field, amount)
  else redis.call('hincrbyfloat', KEYS[k], field, amount) end
end
return #KEYS
"""


class _Increments:
    """Collects hash increments (the pipeline methods the writes call) for ``_INCREMENTS``."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.args: list[str | float] = []

    def hincrby(self, key: str, field: str, amount: int) -> None:
        self.keys.append(key)
        self.args += ("i", field, amount)

    def hincrbyfloat(self, key: str, field: str, amount: float) -> None:
        self.keys.append(key)
        self.args += ("f", field, amount)


def inc_into(pipe: Any, spec: CounterSpec, labels: Sequence[str], amount: float) -> None:
    pipe.hincrbyfloat(PREFIX + spec.name, _labels_key(labels), amount)


def observe_into(pipe: Any, spec: HistogramSpec, labels: Sequence[str], value: float) -> None:
    key, field = PREFIX + spec.name, _labels_key(labels)
    bucket = next((i for i, le in enumerate(spec.buckets) if value <= le), len(spec.buckets))
    pipe.hincrby(key, f"{field}{_SEP}b{bucket}", 1)
    pipe.hincrbyfloat(key, f"{field}{_SEP}sum", value)
    pipe.hincrby(key, f"{field}{_SEP}count", 1)


class MetricsStore:
    """Instrument updates and reads against one Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def inc(self, spec: CounterSpec, labels: Sequence[str] = (), amount: float = 1) -> None:
        self.write([lambda pipe: inc_into(pipe, spec, labels, amount)])

    def observe(self, spec: HistogramSpec, labels: Sequence[str], value: float) -> None:
        self.write([lambda pipe: observe_into(pipe, spec, labels, value)])

    def write(self, writes: Sequence[Write]) -> None:
        """Instrument updates, all in one round trip: one script call (``_INCREMENTS``),
        which costs the client a fraction of a pipeline of one command per increment."""
        increments = _Increments()
        for write in writes:
            write(increments)
        if increments.keys:
            keys = increments.keys
            run_script(self.client, _INCREMENTS, len(keys), *keys, *increments.args)

    def counter_values(self, spec: CounterSpec) -> dict[tuple[str, ...], float]:
        raw: dict[Any, Any] = self.client.hgetall(PREFIX + spec.name)
        return {tuple(json.loads(_s(k))): float(_s(v)) for k, v in raw.items()}

    def histogram_values(
        self, spec: HistogramSpec
    ) -> dict[tuple[str, ...], tuple[list[float], float, float]]:
        """Per label set: cumulative bucket counts (last is +Inf), sum, count."""
        raw: dict[Any, Any] = self.client.hgetall(PREFIX + spec.name)
        per: dict[tuple[str, ...], dict[str, float]] = {}
        for k, v in raw.items():
            labels, part = _s(k).split(_SEP, 1)
            per.setdefault(tuple(json.loads(labels)), {})[part] = float(_s(v))
        out: dict[tuple[str, ...], tuple[list[float], float, float]] = {}
        for label_values, parts in per.items():
            running, cumulative = 0.0, []
            for i in range(len(spec.buckets) + 1):
                running += parts.get(f"b{i}", 0.0)
                cumulative.append(running)
            out[label_values] = (cumulative, parts.get("sum", 0.0), parts.get("count", 0.0))
        return out


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisCollector(Collector):
    """Renders the Redis-held instruments for a prometheus_client registry."""

    def __init__(self, store: MetricsStore) -> None:
        self.store = store

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        for spec in COUNTERS:
            counter = CounterMetricFamily(spec.name, spec.help, labels=list(spec.labels))
            for labels, value in sorted(self.store.counter_values(spec).items()):
                counter.add_metric(list(labels), value)
            yield counter
        for hspec in HISTOGRAMS:
            hist = HistogramMetricFamily(hspec.name, hspec.help, labels=list(hspec.labels))
            for labels, (cumulative, total, _count) in sorted(
                self.store.histogram_values(hspec).items()
            ):
                bounds = [_le(b) for b in hspec.buckets] + ["+Inf"]
                hist.add_metric(list(labels), list(zip(bounds, cumulative, strict=True)), total)
            yield hist


def _le(bound: float) -> str:
    return repr(float(bound))


# --- the process-wide sink ------------------------------------------------------------------

_lock = threading.Lock()
_store: MetricsStore | None = None
_last_warning = 0.0


def configure_metrics(client: redis.Redis | None) -> None:
    """Point this process's instruments at a Redis (None: resolve from settings on next use)."""
    global _store
    with _lock:
        _store = MetricsStore(client) if client is not None else None


def store() -> MetricsStore:
    global _store
    with _lock:
        if _store is None:
            from core.endpoints import resolve_redis_url

            _store = MetricsStore(
                redis.Redis.from_url(
                    resolve_redis_url(), socket_timeout=1.0, socket_connect_timeout=1.0
                )
            )
        return _store


def _safely(action: str, fn: Any, *args: Any) -> None:
    global _last_warning
    try:
        fn(*args)
    except redis.RedisError as exc:
        now = time.monotonic()
        if now - _last_warning > 60:
            _last_warning = now
            log.warning("metrics: %s not recorded: %s", action, exc)


def inc(spec: CounterSpec, labels: Sequence[str] = (), amount: float = 1) -> None:
    _record(spec.name, lambda pipe: inc_into(pipe, spec, labels, amount))


def observe(spec: HistogramSpec, labels: Sequence[str], value: float) -> None:
    _record(spec.name, lambda pipe: observe_into(pipe, spec, labels, value))


class _Batch(threading.local):
    """A task's instrument updates, held until it ends (see ``install_task_metrics``)."""

    def __init__(self) -> None:
        self.depth = 0
        self.writes: list[Write] = []


_batch = _Batch()


def _record(action: str, write: Write) -> None:
    if _batch.depth:
        _batch.writes.append(write)
        return
    _safely(action, lambda: store().write([write]))


def _begin_batch() -> None:
    _batch.depth += 1


def _end_batch() -> None:
    """The outermost task ended: its updates (and any nested task's) in one round trip."""
    _batch.depth = max(0, _batch.depth - 1)
    if _batch.depth or not _batch.writes:
        return
    writes, _batch.writes = _batch.writes, []
    _safely("task metrics", lambda: store().write(writes))


@contextmanager
def held_for_hand_over() -> Iterator[list[Write]]:
    """This thread's updates during the block, held in the list it yields instead of written:
    a thread that works for a task (a price batch's run) hands them to the task's thread
    (``hand_over``), so they go out with the task's own, in its one round trip."""
    depth, writes = _batch.depth, _batch.writes
    _batch.depth, _batch.writes = 1, []
    held = _batch.writes
    try:
        yield held
    finally:
        _batch.depth, _batch.writes = depth, writes


def hand_over(writes: Sequence[Write]) -> None:
    """Updates another thread held for this one (``held_for_hand_over``): with this task's
    own when a task is running here, else written now."""
    if not writes:
        return
    if _batch.depth:
        _batch.writes.extend(writes)
        return
    _safely("handed-over metrics", lambda: store().write(list(writes)))


def observe_tick_to_order(seconds: float) -> None:
    """The price path: time from the tick that required an order to that order being sent."""
    observe(TICK_TO_ORDER, (), seconds)


def observe_task(task: str, outcome: str, seconds: float | None) -> None:
    inc(TASKS, (task, outcome))
    if seconds is not None:
        observe(TASK_DURATION, (task,), seconds)


def count_exchange_error(kind: str) -> None:
    """One failed exchange call, labelled by the engine's error class (RateLimited, ...)."""
    inc(EXCHANGE_ERRORS, (kind,))


def observe_lock_wait(seconds: float, *, acquired: bool) -> None:
    observe(LOCK_WAIT, ("acquired" if acquired else "timeout",), seconds)


# --- Celery task hooks ----------------------------------------------------------------------

_started: dict[str, float] = {}


def install_task_metrics(signals: Any) -> None:
    """Count tasks and time them in whichever worker runs them.

    ``signals`` is ``celery.signals``, passed in so that core never imports Celery. prerun
    and postrun fire in the pool process that runs the task, so a per-process dict of start
    times is enough.
    """

    def _prerun(task_id: str | None = None, **_: Any) -> None:
        _begin_batch()  # the task's updates (lock wait, tick to order...) go out at its end
        if task_id:
            _started[task_id] = time.monotonic()

    def _postrun(
        task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any
    ) -> None:
        started = _started.pop(task_id, None) if task_id else None
        seconds = time.monotonic() - started if started is not None else None
        name = getattr(task, "name", None) or "unknown"
        observe_task(name, (state or "unknown").lower(), seconds)
        _end_batch()

    signals.task_prerun.connect(_prerun, weak=False)
    signals.task_postrun.connect(_postrun, weak=False)
