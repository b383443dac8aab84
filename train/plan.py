"""The deterministic sample order: which sample every rank reads at every step, from (seed, epoch) alone.

A *stream* (real or synthetic) is one or more sources drawn by weight. A source's unit is a *video*: a video
built with `--train-views K` has K stored samples (independent temporal samplings), and epoch e reads view
`(e + offset(video)) mod K` of it, the offset drawn once per video from the seed, so an epoch sees every video
once and successive epochs walk through its views. For each stream epoch the global order is formed at
shard granularity (shards permuted, samples shuffled within windows of a few consecutive
shards), padded by repetition to a multiple of the world size and cut into equal contiguous per-rank slices.
Every rank therefore runs exactly the same number of batches per epoch, however uneven the shards are (the
webdataset `split_by_node` hang), and a position in the stream is just (epoch, batch index): resuming needs
nothing else, and any rank can compute any position without reading a byte.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


def _rng(*parts: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]))


def source_order(shard: np.ndarray, seed: int, salt: tuple[int, ...], window: int) -> np.ndarray:
    """Row indices of one source in a shuffled order: shards permuted, rows shuffled within shard windows."""
    rng = _rng(seed, *salt)
    shard_ids = np.unique(shard)
    rng.shuffle(shard_ids)
    rows_by_shard = {int(s): np.flatnonzero(shard == s) for s in shard_ids}
    pieces = []
    for start in range(0, len(shard_ids), max(window, 1)):
        rows = np.concatenate([rows_by_shard[int(s)] for s in shard_ids[start : start + window]])
        rng.shuffle(rows)
        pieces.append(rows)
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)


def view_matrix(group: np.ndarray, view: np.ndarray) -> np.ndarray:
    """`[videos, K]` row indices: row of view k of each video (videos in order of first appearance).

    A video missing some views (one was quarantined) repeats the views it has, in view order.
    """
    _, first, inverse = np.unique(group, return_index=True, return_inverse=True)
    order = np.argsort(first)  # videos in the order their first row appears
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    video = rank[inverse]
    by_video: list[list[int]] = [[] for _ in range(len(order))]
    for row in np.lexsort((view, video)):
        by_video[video[row]].append(int(row))
    width = max((len(rows) for rows in by_video), default=1)
    return np.array([np.resize(rows, width) for rows in by_video], dtype=np.int64).reshape(-1, width)


def id_rank(ids: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random rank of every id (blake2b of the id string, ties broken by the id itself).

    Depends on the ids alone, not on the seed or the row order, so a subset cut by it is the same data for
    every seed and every rebuild that keeps the ids.
    """
    keys = [(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), str(i)) for i in ids]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    rank = np.empty(len(keys), dtype=np.int64)
    rank[order] = np.arange(len(keys))
    return rank


def fraction_subset(ids: np.ndarray, fraction: float) -> np.ndarray:
    """Indices (ascending) of the `round(fraction x n)` ids (at least one) that come first in `id_rank`.

    Nested by construction: every smaller fraction keeps a subset of a larger one's ids (Fig. 4b's data
    fractions), and 1.0 keeps all of them.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"a data fraction must be in (0, 1], got {fraction:g}")
    keep = max(1, round(fraction * len(ids))) if len(ids) else 0
    return np.flatnonzero(id_rank(ids) < keep)


def video_subset(views: np.ndarray, group: np.ndarray, fraction: float) -> np.ndarray:
    """The rows of a `view_matrix` (one per video) whose video id `group[views[:, 0]]` is in the
    `fraction_subset`; a plan over them has a proportionally shorter epoch."""
    return views[fraction_subset(group[views[:, 0]], fraction)]


@dataclass(frozen=True)
class StreamPlan:
    """The order of one stream over its sources, source i drawn with `weights[i]`."""

    shard_ids: tuple[np.ndarray, ...]  # per source: shard index of each row
    weights: tuple[float, ...]
    seed: int
    stream_id: int  # keeps the real and the synthetic stream's shuffles independent
    window: int = 4  # shards per shuffle window
    views: tuple[np.ndarray, ...] | None = None  # per source: `view_matrix`; None = every row is a video

    @property
    def epoch_length(self) -> int:
        """Samples in one stream epoch: every video of every source once (in expectation when mixed)."""
        return int(sum(len(self._videos(source)) for source in range(len(self.shard_ids))))

    def _videos(self, source: int) -> np.ndarray:
        if self.views is None:
            return np.arange(len(self.shard_ids[source]))[:, None]
        return self.views[source]

    def epoch_rows(self, source: int, epoch: int) -> np.ndarray:
        """The row of each video of `source` that epoch `epoch` reads (its view `(epoch + offset) mod K`)."""
        videos = self._videos(source)
        if videos.shape[1] == 1:
            return videos[:, 0]
        offset = _rng(self.seed, self.stream_id, source, 1 << 21).integers(0, videos.shape[1], len(videos))
        return videos[np.arange(len(videos)), (epoch + offset) % videos.shape[1]]

    def _order(self, source: int, epoch: int, salt: tuple[int, ...]) -> np.ndarray:
        rows = self.epoch_rows(source, epoch)
        return rows[source_order(self.shard_ids[source][rows], self.seed, salt, self.window)]

    def global_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(source index, row index) of every sample of `epoch`, the same on every rank."""
        if len(self.shard_ids) == 1:
            rows = self._order(0, epoch, (self.stream_id, epoch, 0, 0))
            return np.zeros(len(rows), dtype=np.int64), rows
        probs = np.asarray(self.weights, dtype=np.float64) / sum(self.weights)
        choice = _rng(self.seed, self.stream_id, epoch, 1 << 20).choice(
            len(probs), self.epoch_length, p=probs
        )
        rows = np.empty(len(choice), dtype=np.int64)
        for source in range(len(self.shard_ids)):
            where = np.flatnonzero(choice == source)
            rows[where] = self._draws(source, epoch, len(where))
        return choice.astype(np.int64), rows

    def _draws(self, source: int, epoch: int, count: int) -> np.ndarray:
        """`count` rows of one source: successive fresh shuffles of it (a heavily weighted source repeats,
        each repeat reading the next view of its videos)."""
        out: list[np.ndarray] = []
        cycle = 0
        while sum(len(o) for o in out) < count:
            out.append(self._order(source, epoch + cycle, (self.stream_id, epoch, source + 1, cycle)))
            cycle += 1
        return np.concatenate(out)[:count] if out else np.zeros(0, dtype=np.int64)

    def rank_order(self, epoch: int, rank: int, world: int) -> tuple[np.ndarray, np.ndarray]:
        """This rank's contiguous slice of the epoch, padded by repetition so all ranks get the same count."""
        source, rows = self.global_order(epoch)
        per_rank = -(-len(rows) // world)
        take = np.resize(np.arange(len(rows)), per_rank * world)[rank * per_rank : (rank + 1) * per_rank]
        return source[take], rows[take]

    def per_rank(self, world: int) -> int:
        return -(-self.epoch_length // world)


@dataclass(frozen=True)
class Position:
    """Where a stream stands: `batch` batches of `epoch` consumed by every rank."""

    epoch: int
    batch: int
    samples: int  # samples consumed per rank in this epoch (= batch x batch size)


def position(step: int, batches_per_epoch: int, batch_size: int) -> Position:
    """The stream position after `step` steps (each step takes one batch of every stream)."""
    epoch, batch = divmod(step, batches_per_epoch)
    return Position(epoch, batch, batch * batch_size)
