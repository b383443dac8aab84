"""The one module that knows about Ray.

`run()` maps a function over work units and hands each result to a callback as it arrives, where
`Workers` says: serially in-process with `count=0` (debugging, tests), on a local Ray instance
with `count=N`, or on a running cluster with `address="auto"`. Tasks are retried when a worker
dies (`max_retries`); they must be idempotent and return small metadata only, since results travel
through the object store to the driver.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_RETRIES = 3  # Ray re-runs a task this many times when its worker process dies
INFLIGHT_PER_WORKER = 2  # submitted-but-unfinished tasks per worker: enough to hide scheduling gaps
CONNECT_TIMEOUT = 15.0  # seconds to reach a --ray-address before giving up (Ray itself waits minutes)


@dataclass(frozen=True)
class Workers:
    """Where `run()` runs its tasks."""

    count: int = 0  # local Ray workers; 0 (and no address) = serially, in this process
    address: str | None = None  # a running Ray cluster to join ("auto", host:port, ray://host:port)
    timeout: float = CONNECT_TIMEOUT  # seconds to wait for `address` to answer

    @property
    def serial(self) -> bool:
        return self.count == 0 and self.address is None


class ClusterUnreachable(ConnectionError):
    """`--ray-address` names no reachable Ray cluster; one line saying what to check."""


def _host_port(address: str) -> tuple[str, int] | None:
    """`host:port` of a Ray address (`ray://` client addresses too); None when it names no port."""
    address = address.removeprefix("ray://")
    host, _, port = address.rpartition(":")
    return (host.strip("[]"), int(port)) if host and port.isdigit() else None


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail fast, in one line, when nothing listens at a cluster address.

    `ray.init(address=...)` retries an unreachable head for minutes; a TCP connect to its port answers
    in at most `timeout` seconds. `auto` is resolved the way Ray resolves it (its cluster file or
    RAY_ADDRESS) first.
    """
    what = address
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address

        try:
            address = canonicalize_bootstrap_address("auto") or ""
        except ConnectionError:
            raise ClusterUnreachable(
                "--ray-address auto: no running Ray cluster found on this machine "
                "(start one with `ray start --head`, or pass host:port)"
            ) from None
    target = _host_port(address)
    if target is None:
        raise ClusterUnreachable(f"--ray-address {what}: expected host:port, ray://host:port or auto")
    try:
        socket.create_connection(target, timeout=timeout).close()
    except OSError as error:
        raise ClusterUnreachable(
            f"--ray-address {what}: nothing answered at {target[0]}:{target[1]} within {timeout:g}s "
            f"({error.strerror or error}); check that the head node runs (`ray status` there), "
            f"the address and port, and any firewall"
        ) from None


def run(
    fn: Callable[[T], R], tasks: Sequence[T], on_result: Callable[[R], Any], workers: Workers = Workers()
) -> None:
    """Call `fn(task)` for every task and `on_result(result)` in the driver as each finishes.

    `ClusterUnreachable` when `workers.address` does not answer within `workers.timeout`.
    """
    if not tasks:
        return
    if workers.serial:
        for task in tasks:
            on_result(fn(task))
        return
    _run_on_ray(fn, tasks, on_result, workers)


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
    fn: Callable[[T], R], tasks: Sequence[T], on_result: Callable[[R], Any], workers: Workers
) -> None:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        if workers.address is not None:
            check_reachable(workers.address, workers.timeout)
            ray.init(address=workers.address, logging_level=logging.ERROR, log_to_driver=True)
        else:
            ray.init(
                num_cpus=workers.count,
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=True,
            )
    try:
        remote = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(fn)
        capacity = max(1, int(ray.cluster_resources().get("CPU", workers.count or 1))) * INFLIGHT_PER_WORKER
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
