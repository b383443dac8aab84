"""The source registry: every adapter by its CLI name.

Adapters are imported lazily so `pvit-pipeline build --source procedural` never pays for h5py or
scipy imports of adapters it does not use.
"""

from __future__ import annotations

import importlib
import importlib.util

from pipeline.sources.base import Item, Quarantine, Sample, Source, SourceError

_ADAPTERS: dict[str, str] = {
    "procedural": "pipeline.sources.procedural:ProceduralSource",
    "hypersim": "pipeline.sources.hypersim:HypersimSource",
    "surreact": "pipeline.sources.surreact:SurreactSource",
    "phav": "pipeline.sources.phav:PhavSource",
    "kist-synadl": "pipeline.sources.kist_synadl:KistSynadlSource",
    "ehoi": "pipeline.sources.ehoi:EhoiSource",
    "ssv2": "pipeline.sources.ssv2:Ssv2Source",
    "something-else": "pipeline.sources.something_else:SomethingElseSource",
    "diving48": "pipeline.sources.diving48:Diving48Source",
    "ego4d": "pipeline.sources.ego4d:Ego4dSource",
    "ava": "pipeline.sources.ava:AvaSource",
    "videofolder": "pipeline.sources.videofolder:VideoFolderSource",
}

__all__ = ["Item", "Quarantine", "Sample", "Source", "SourceError", "get_source", "source_names"]


def source_names() -> list[str]:
    """Every registered adapter name whose module is present, in registry order."""
    return [name for name, target in _ADAPTERS.items() if importlib.util.find_spec(target.split(":")[0])]


def get_source(name: str) -> type[Source]:
    """The adapter class registered as `name`; `SourceError` for an unknown name."""
    if name not in source_names():
        raise SourceError(f"unknown source {name!r}; known sources: {', '.join(source_names())}")
    module_name, class_name = _ADAPTERS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)
