"""The source registry: every adapter by its CLI name.

Adapters are imported lazily so `pvit-pipeline build --source procedural` never pays for h5py or
scipy imports of adapters it does not use. A third-party adapter is added with `register(name,
"package.module:Class")` (or the class itself), or, so that every process finds it (Ray workers
too), by an entry point in the `pvit_pipeline.sources` group: `name = "package.module:Class"`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util

from pipeline.sources.base import Item, Option, Quarantine, Sample, SamplingRule, Source, SourceError

ENTRY_POINT_GROUP = "pvit_pipeline.sources"

_ADAPTERS: dict[str, str | type[Source]] = {
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

__all__ = [
    "Item",
    "Option",
    "Quarantine",
    "Sample",
    "SamplingRule",
    "Source",
    "SourceError",
    "get_source",
    "register",
    "source_names",
    "unregister",
]


def register(name: str, adapter: str | type[Source], replace: bool = False) -> None:
    """Add adapter `adapter` ("package.module:Class" or the class) under the CLI name `name`.

    A string target is imported only when used. Registering a name twice is an error unless
    `replace`: a third-party package silently shadowing a built-in adapter would be a bad surprise.
    """
    if not replace and name in _ADAPTERS:
        raise ValueError(f"a source named {name!r} is already registered ({_ADAPTERS[name]})")
    if isinstance(adapter, str) and adapter.count(":") != 1:
        raise ValueError(f"adapter target must be 'package.module:Class', got {adapter!r}")
    _ADAPTERS[name] = adapter


def unregister(name: str) -> None:
    """Remove `name` from the registry (tests, or a package replacing its own adapter)."""
    _ADAPTERS.pop(name, None)


def _load_entry_points() -> None:
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        _ADAPTERS.setdefault(entry.name, entry.value)


def _present(target: str | type[Source]) -> bool:
    return not isinstance(target, str) or importlib.util.find_spec(target.split(":")[0]) is not None


def source_names() -> list[str]:
    """Every registered adapter name whose module is present, in registry order."""
    return [name for name, target in _ADAPTERS.items() if _present(target)]


def get_source(name: str) -> type[Source]:
    """The adapter class registered as `name`; `SourceError` for an unknown name."""
    if name not in source_names():
        raise SourceError(f"unknown source {name!r}; known sources: {', '.join(source_names())}")
    target = _ADAPTERS[name]
    if not isinstance(target, str):
        return target
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


_load_entry_points()
