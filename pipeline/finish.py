"""Finishing one sample: an adapter's `Sample` becomes meta.json, clip and label members the schema accepts.

The adapter's label arrays are cast to their members' dtypes (never by a cast that changes a value),
the clip and labels are framed by one call into `pipeline.geometry.fit_sample`, and meta.json is
filled in; `schema.validate_sample` checks the result before anything is encoded. Every failure is a
`SampleError`, whose one-line message becomes the input's quarantine reason.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pipeline.config import BuildConfig
from pipeline.geometry import FittedSample, fit_sample
from pipeline.schema import LABEL_MEMBERS, MEMBER_SPECS, SampleError, mask_of, tasks_of, validate_sample
from pipeline.sources import Item, Sample


class FinishedSample(NamedTuple):
    """One sample ready to encode: its meta.json, its stored clip and its label members."""

    meta: dict
    video: np.ndarray
    labels: dict[str, np.ndarray]


def finish_sample(
    sample: Sample, item: Item, source: str, config: BuildConfig, config_hash: str
) -> FinishedSample:
    """Turn an adapter's `Sample` of `item` into a sample that satisfies the schema."""
    check_clip(sample.video, config.frames)
    labels = member_labels(sample.labels)
    fitted = fit_sample(sample.video, labels, config, sample.orig_hw, sample.dense_on_label_grid)
    meta = sample_meta(sample, item, source, fitted, config_hash)
    validate_sample(meta, fitted.labels, fitted.video.shape)
    return FinishedSample(meta, fitted.video, fitted.labels)


def check_clip(video: np.ndarray, frames: int) -> None:
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise SampleError(f"video: {video.dtype} {video.shape}, expected uint8 [T,H,W,3]")
    if video.shape[0] != frames:
        raise SampleError(f"video has {video.shape[0]} frames, expected {frames}")


def member_labels(labels: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The adapter's label arrays in their members' dtypes; `SampleError` for an unknown member."""
    cast = {name: _as_member_dtype(name, array) for name, array in labels.items() if name in MEMBER_SPECS}
    unknown = sorted(set(labels) - set(MEMBER_SPECS))
    if unknown:
        raise SampleError(f"unknown label member(s) {', '.join(unknown)}")
    return cast


def _as_member_dtype(name: str, array: np.ndarray) -> np.ndarray:
    """Cast an adapter's array to the member's dtype, refusing casts that would change values."""
    want = np.dtype(MEMBER_SPECS[name].dtype)
    array = np.asarray(array)
    if array.dtype == want:
        return array
    if want.kind == "f":
        if array.dtype.kind not in "fiu":
            raise SampleError(f"{name}: dtype {array.dtype} is not numeric")
        return array.astype(want)
    info = np.iinfo(want)
    if array.dtype.kind == "f" and np.isnan(array).any():
        raise SampleError(f"{name}: NaN in an integer label")
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise SampleError(f"{name}: values outside the {want} range")
    return array.astype(want)


def sample_meta(sample: Sample, item: Item, source: str, fitted: FittedSample, config_hash: str) -> dict:
    """meta.json of a fitted sample (architecture.md §3): the adapter's own fields, then the engine's."""
    present = {LABEL_MEMBERS[name] for name in fitted.labels}
    if sample.label is not None:
        present.add("action")
    if sample.oscc is not None:
        present.add("oscc")
    mask = mask_of(present)
    meta = {
        **sample.extra,
        "source": source,
        "id": item.id,
        "split": item.split,
        "mask": mask,
        "tasks": tasks_of(mask),
        "label": None if sample.label is None else int(sample.label),
        "label_name": sample.label_name,
        "fps": float(sample.fps),
        "frame_indices": [int(i) for i in sample.frame_indices],
        "orig_hw": list(fitted.geometry.source_hw),
        "hw": list(fitted.video.shape[1:3]),
        "crop_box": list(
            fitted.geometry.crop_box
        ),  # the kept window, source pixels (top, left, height, width)
        "view": item.view,
        "view_group": item.group,
        "config_hash": config_hash,
    }
    if sample.oscc is not None:
        meta["oscc"] = int(sample.oscc)
    return meta
