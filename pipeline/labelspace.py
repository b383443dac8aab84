"""Segmentation label spaces, checked in under `manifests/labelspaces/<name>.yaml`.

A label space file holds an ordered `classes` list (class id = position). `segm.npy` values are
ids in the label space named by the sample's `meta.json` field `segm_space`; the trainer refuses to
mix sources whose label spaces differ, and sizes the segmentation head from `len(classes)`.

The `unified` space also records, under `mappings`, how each synthetic source's raw label values
(Hypersim NYU40 ids, SURREACT body-part indices, PHAV class names, EHOI category names) map into
it. `source_mapping()` reads one source's table; `lookup_table()` turns an integer-keyed table into
an array so a whole label map is converted with one fancy-index.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import yaml

MANIFESTS_DIR = Path(__file__).resolve().parents[1] / "manifests"
IGNORE = 65535  # segm.npy "no label" (pipeline.schema.SEGM_IGNORE)
IGNORE_NAME = "ignore"  # how a mapping says "this raw value is not a label"


@dataclass(frozen=True)
class LabelSpace:
    name: str
    classes: tuple[str, ...]

    def index(self, class_name: str) -> int:
        """The id of `class_name`; KeyError names the label space when it is unknown."""
        try:
            return self.classes.index(class_name)
        except ValueError:
            raise KeyError(f"class {class_name!r} is not in label space {self.name!r}") from None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _read(name: str) -> dict:
    path = MANIFESTS_DIR / "labelspaces" / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no label space {name!r}: {path} does not exist")
    return yaml.safe_load(path.read_text())


@cache
def load_label_space(name: str) -> LabelSpace:
    """Read `manifests/labelspaces/<name>.yaml`."""
    return LabelSpace(name=name, classes=tuple(_read(name)["classes"]))


def export_classes(name: str) -> list[str]:
    """The class list a segmentation (or box) head over label space `name` needs, id = position."""
    return list(load_label_space(name).classes)


@cache
def source_mapping(source: str, space: str = "unified") -> dict[object, int]:
    """Raw label value of `source` -> class id in `space` (`IGNORE` for values that carry no label).

    Keys are as written in the YAML (ints for id-valued sources, lower-case names for name-valued
    ones). A mapping that names a class missing from the space is a bug in the manifest: KeyError.
    """
    data = _read(space)
    try:
        table = data["mappings"][source]
    except KeyError:
        raise KeyError(f"label space {space!r} has no mapping for source {source!r}") from None
    labels = load_label_space(space)
    return {raw: IGNORE if target == IGNORE_NAME else labels.index(target) for raw, target in table.items()}


def lookup_table(source: str, low: int, high: int, space: str = "unified") -> np.ndarray:
    """uint16 array `lut` with `lut[raw - low]` = unified id for integer raw values `low..high`.

    Raw values in the range that the mapping does not list map to `IGNORE`.
    """
    lut = np.full(high - low + 1, IGNORE, dtype=np.uint16)
    for raw, target in source_mapping(source, space).items():
        if isinstance(raw, int) and low <= raw <= high:
            lut[raw - low] = target
    return lut
