"""The deterministic sample order: which sample every rank reads at every step, from (seed, epoch) alone.

A *stream* (real or synthetic) is one or more sources drawn by weight. For each stream epoch the global order
is formed at shard granularity (shards permuted, samples shuffled within windows of a few consecutive
shards), padded by repetition to a multiple of the world size and cut into equal contiguous per-rank slices.
Every rank therefore runs exactly the same number of batches per epoch, however uneven the shards are (the
webdataset `split_by_node` hang), and a position in the stream is just (epoch, batch index): resuming needs
nothing else, and any rank can compute any position without reading a byte.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class StreamPlan:
    """The order of one stream over its sources. `sizes[i]` rows in source i, drawn with `weights[i]`."""

    shard_ids: tuple[np.ndarray, ...]  # per source: shard index of each row
    weights: tuple[float, ...]
    seed: int
    stream_id: int  # keeps the real and the synthetic stream's shuffles independent
    window: int = 4  # shards per shuffle window

    @property
    def epoch_length(self) -> int:
        """Samples in one stream epoch: every row of every source once (in expectation when mixed)."""
        return int(sum(len(s) for s in self.shard_ids))

    def global_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(source index, row index) of every sample of `epoch`, the same on every rank."""
        if len(self.shard_ids) == 1:
            rows = source_order(self.shard_ids[0], self.seed, (self.stream_id, epoch, 0, 0), self.window)
            return np.zeros(len(rows), dtype=np.int64), rows
        probs = np.asarray(self.weights, dtype=np.float64) / sum(self.weights)
        choice = _rng(self.seed, self.stream_id, epoch, 1 << 20).choice(
            len(probs), self.epoch_length, p=probs
        )
        rows = np.empty(len(choice), dtype=np.int64)
        for source, shards in enumerate(self.shard_ids):
            where = np.flatnonzero(choice == source)
            rows[where] = self._draws(source, shards, epoch, len(where))
        return choice.astype(np.int64), rows

    def _draws(self, source: int, shards: np.ndarray, epoch: int, count: int) -> np.ndarray:
        """`count` rows of one source: successive fresh shuffles of it (a heavily weighted source repeats)."""
        out, cycle = [], 0
        while sum(len(o) for o in out) < count:
            out.append(
                source_order(shards, self.seed, (self.stream_id, epoch, source + 1, cycle), self.window)
            )
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
