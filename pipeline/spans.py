"""Reading samples at their manifest spans from a build's shards, local or remote (torch-free).

`SpanReader` serves one build in one process (the trainer makes one per data-loader worker, `show` one per
call): local tars (and remote ones in a `ShardCache`) through open handles kept across samples, remote tars
without a cache by ranged requests, one per span, adjacent spans of one shard coalesced into one request,
all of a batch in flight together. Every span is checked before it is returned: inside its tar (build.json
gives the size), whole, one sample's members, with the key its manifest row names (`pipeline.shards`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from io import BufferedIOBase
from typing import Any

import numpy as np

from pipeline.shardcache import ShardCache
from pipeline.shards import SpanError, read_sample_span, span_problem, span_sample
from pipeline.storage import Store

DEFAULT_CACHE_LIMIT = 50 * 10**9  # bytes (--cache-limit 50GB)


@dataclass(frozen=True)
class ReadSettings:
    """How a reader reaches a build: its storage options and the optional local shard cache (remote only)."""

    storage_options: Mapping[str, Any] = field(default_factory=dict)  # fsspec filesystem options
    cache_dir: str = ""  # "" = no cache: remote spans are read by ranged requests
    cache_limit: int = DEFAULT_CACHE_LIMIT  # bytes of whole shards the cache keeps (LRU)

    def cache(self) -> ShardCache | None:
        return ShardCache(self.cache_dir, self.cache_limit) if self.cache_dir else None


@dataclass(frozen=True)
class SpanRequest:
    """One sample's span: `size` bytes at byte `offset` of its tar, which must hold sample `key`."""

    offset: int
    size: int
    key: str | None = None


@dataclass(frozen=True)
class ShardSpan:
    """A span in a shard of the build (its index in build.json's shard list)."""

    shard: int
    span: SpanRequest


def read_store_span(folder: Store, name: str, request: SpanRequest, tar_bytes: int) -> dict[str, memoryview]:
    """The members of the sample at `request` in the tar `name` (of `tar_bytes` bytes) of `folder`."""
    problem = span_problem(request.offset, request.size, tar_bytes)
    if problem:
        raise SpanError(problem)
    if folder.local:
        with folder.open_read(name) as handle:
            return read_sample_span(handle, request.offset, request.size, request.key, tar_bytes)
    start = request.offset
    (data,) = folder.read_ranges([(name, start, start + request.size)])
    return span_sample(writable(data), request.offset, request.size, request.key)


def writable(data: bytes) -> memoryview:
    """A writable copy of `data`: decoded clips are views of their span and augmentation may write to them."""
    buffer = np.empty(len(data), dtype=np.uint8)
    buffer[:] = np.frombuffer(data, dtype=np.uint8)
    return buffer.data


def coalesce(requests: Sequence[SpanRequest]) -> list[tuple[int, int, list[int]]]:
    """Runs of adjacent spans as `(start, end, indices into requests)`, by offset: one request each."""
    order = sorted(range(len(requests)), key=lambda i: requests[i].offset)
    runs: list[tuple[int, int, list[int]]] = []
    for i in order:
        start, end = requests[i].offset, requests[i].offset + requests[i].size
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], end, [*runs[-1][2], i])
        else:
            runs.append((start, end, [i]))
    return runs


class SpanReader:
    """Sample spans of one build (its folder and build.json shard entries), for the process that made it."""

    def __init__(self, folder: Store, shards: Sequence[dict], cache: ShardCache | None = None) -> None:
        self.folder, self.shards, self.cache = folder, list(shards), cache
        self.handles: dict[int, BufferedIOBase] = {}
        self.requests = 0  # ranged requests made (the benchmark reports it)
        self._pid = os.getpid()

    @property
    def ranged(self) -> bool:
        """Whether spans are read by ranged requests (a remote build without a cache)."""
        return not self.folder.local and self.cache is None

    def read(self, wanted: ShardSpan) -> dict[str, memoryview]:
        return self.read_many([wanted])[0]

    def read_many(self, wanted: Sequence[ShardSpan]) -> list[dict[str, memoryview]]:
        """The members of each wanted span, in order; `SpanError` (one line) for the first bad one."""
        for item in wanted:
            problem = span_problem(item.span.offset, item.span.size, int(self.shards[item.shard]["bytes"]))
            if problem:
                raise SpanError(f"{self.shards[item.shard]['name']}: {problem}")
        if self.ranged:
            return self._read_ranged(wanted)
        return [self._read_local(item) for item in wanted]

    def _read_local(self, item: ShardSpan) -> dict[str, memoryview]:
        span, entry = item.span, self.shards[item.shard]
        return read_sample_span(
            self._handle(item.shard), span.offset, span.size, span.key, int(entry["bytes"])
        )

    def _handle(self, shard: int) -> BufferedIOBase:
        """The open handle of a shard: its file, or its cached copy (filled on first use)."""
        if self._pid != os.getpid():  # a forked copy must not share its parent's file offsets
            self.handles, self._pid = {}, os.getpid()
        handle = self.handles.get(shard)
        if handle is None:
            entry = self.shards[shard]
            if self.cache is not None and not self.folder.local:
                handle = self.cache.open(self.folder, entry)
            else:
                handle = self.folder.open_read(entry["name"])
            self.handles[shard] = handle
        return handle

    def _read_ranged(self, wanted: Sequence[ShardSpan]) -> list[dict[str, memoryview]]:
        """One ranged request per run of adjacent spans of a shard, all issued together."""
        by_shard: dict[int, list[int]] = {}
        for index, item in enumerate(wanted):
            by_shard.setdefault(item.shard, []).append(index)
        ranges, placed = [], []  # (name, start, end) per request; (shard, start, indices) per request
        for shard, indices in by_shard.items():
            for start, end, run in coalesce([wanted[i].span for i in indices]):
                ranges.append((self.shards[shard]["name"], start, end))
                placed.append((start, [indices[i] for i in run]))
        self.requests += len(ranges)
        out: list[dict[str, memoryview] | None] = [None] * len(wanted)
        for (start, indices), data in zip(placed, self.folder.read_ranges(ranges), strict=True):
            buffer = writable(data)
            for i in indices:
                span = wanted[i].span
                piece = buffer[span.offset - start : span.offset - start + span.size]
                out[i] = span_sample(piece, span.offset, span.size, span.key)
        return [members for members in out if members is not None]

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()
        self.handles = {}
