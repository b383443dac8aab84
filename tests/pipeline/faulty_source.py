"""A test adapter: the procedural source with some inputs made bad on purpose.

Registered under the name `faulty` by the tests that use it (monkeypatching the registry), so
the engine's quarantine path is exercised by a real adapter subclass, in-process.
"""

from __future__ import annotations

from pipeline.sources import Item, Quarantine, Sample
from pipeline.sources.procedural import ProceduralSource

BAD_IDS = {
    "train-000003": "raises Quarantine",
    "train-000005": "negative depth",
    "train-000008": "adapter bug",
    "train-000011": "wrong frame count",
}


class FaultySource(ProceduralSource):
    name = "faulty"
    description = "procedural with four bad inputs (tests only)"

    def load(self, item: Item) -> Sample:
        sample = super().load(item)
        problem = BAD_IDS.get(item.id)
        if problem == "raises Quarantine":
            raise Quarantine(f"{item.id}.hdf5: truncated file (test)")
        if problem == "negative depth":
            sample.labels["depth.npy"][0, 0, 0] = -1
        if problem == "adapter bug":
            raise KeyError("no_such_key")
        if problem == "wrong frame count":
            sample.labels["segm.npy"] = sample.labels["segm.npy"][:-1]
        return sample


class RootedSource(ProceduralSource):
    name = "rooted"
    needs_root = True
