"""The one module that knows about Ray.

`run()` maps a function over work units and hands each result to a callback as it arrives:
serially in-process with `workers=0` (debugging, tests), on a local Ray instance with
`workers=N`, or on a running cluster with `ray_address="auto"`. Tasks are retried when a worker
dies (`max_retries`); they must be idempotent and return small metadata only, since results travel
through the object store to the driver.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_RETRIES = 3  # Ray re-runs a task this many times when its worker process dies
INFLIGHT_PER_WORKER = 2  # submitted-but-unfinished tasks per worker: enough to hide scheduling gaps


def run(
    fn: Callable[[T], R],
    tasks: Sequence[T],
    on_result: Callable[[R], Any],
    workers: int = 0,
    ray_address: str | None = None,
) -> None:
    """Call `fn(task)` for every task and `on_result(result)` in the driver as each finishes."""
    if workers == 0 and ray_address is None:
        for task in tasks:
            on_result(fn(task))
        return
    _run_on_ray(fn, tasks, on_result, workers, ray_address)


@contextlib.contextmanager
def local_ray(workers: int) -> Iterator[None]:
    """Keep one local Ray instance up across several `run()` calls (benchmarks: no start-up in timings)."""
    import ray

    ray.init(num_cpus=workers, include_dashboard=False, logging_level=logging.ERROR)
    try:
        yield
    finally:
        ray.shutdown()


def _run_on_ray(
    fn: Callable[[T], R],
    tasks: Sequence[T],
    on_result: Callable[[R], Any],
    workers: int,
    ray_address: str | None,
) -> None:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        if ray_address is not None:
            ray.init(address=ray_address, logging_level=logging.ERROR, log_to_driver=True)
        else:
            ray.init(
                num_cpus=workers, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=True
            )
    try:
        remote = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(fn)
        capacity = max(1, int(ray.cluster_resources().get("CPU", workers or 1))) * INFLIGHT_PER_WORKER
        pending = list(reversed(tasks))
        inflight: list = []
        while pending or inflight:
            while pending and len(inflight) < capacity:
                inflight.append(remote.remote(pending.pop()))
            done, inflight = ray.wait(inflight, num_returns=1)
            for ref in done:
                on_result(ray.get(ref))
    finally:
        if started_here:
            ray.shutdown()
