"""The five synthetic adapters through the real build engine: bad inputs quarantined, the rest built."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from synthetic_fixtures import (
    rect_polygon,
    write_ehoi,
    write_hypersim,
    write_phav_video,
    write_surreact_clip,
    write_synadl_clip,
)

from pipeline.build import BuildRequest, build_source
from pipeline.config import BuildConfig
from pipeline.manifest import read_build
from pipeline.reader import iter_samples, verify
from pipeline.schema import mask_of
from pipeline.sources import get_source

CONFIG = BuildConfig(frames=2, size=16, label_stride=2, max_objects=4)


def _hypersim(root: Path) -> str:
    write_hypersim(root, {("ai_001_001", "cam_00"): ("train", 2), ("ai_001_002", "cam_00"): ("train", 2)})
    (root / "ai_001_002/images/scene_cam_00_geometry_hdf5/frame.0001.normal_cam.hdf5").unlink()
    return "missing file frame.0001.normal_cam.hdf5"


def _surreact(root: Path) -> str:
    write_surreact_clip(root, seq="S001C001P001R001A001", t=3)
    write_surreact_clip(root, seq="S001C001P001R001A002", t=3, segm_frames=2)
    return "frame counts disagree"


def _phav(root: Path) -> str:
    write_phav_video(root, "a_good_video", t=2)
    write_phav_video(root, "b_bad_video", t=2, depth_8bit=True)
    return "not single-channel 16-bit"


def _kist(root: Path) -> str:
    write_synadl_clip(root, "A001_P101_G001_C001", t=3)
    pose, _ = write_synadl_clip(root, "A002_P101_G001_C001", t=3)
    pose.write_text(json.dumps({"data": []}))
    return "no annotations"


def _ehoi(root: Path) -> str:
    good = {"category_id": 19, "bbox": [2, 4, 10, 8], "segmentation": rect_polygon(2, 4, 10, 8)}
    write_ehoi(root, images=[{"id": 1, "anns": [good]}, {"id": 2, "anns": []}])
    return "no annotations"


CASES = {
    "hypersim": (_hypersim, {"depth", "normal", "segm"}),
    "surreact": (_surreact, {"segm", "pose3d"}),
    "phav": (_phav, {"depth", "segm"}),
    "kist-synadl": (_kist, {"pose3d"}),
    "ehoi": (_ehoi, {"segm", "boxes"}),
}


@pytest.mark.parametrize("source", list(CASES))
def test_bad_input_is_quarantined_and_the_rest_builds(tmp_path: Path, source: str) -> None:
    write, tasks = CASES[source]
    reason = write(tmp_path / "raw")
    raw = tmp_path / "raw"
    report = build_source(
        BuildRequest(source, tmp_path / "out", CONFIG, root=raw, splits=["train"], workers=0)
    )
    assert report.samples == 1
    assert len(report.quarantined) == 1 and reason in report.quarantined[0][2]
    (sample,) = iter_samples(report.out_dir)
    meta = sample["meta"]
    assert sample["meta"]["mask"] == mask_of(tasks)
    assert sample["video"].shape[:2] == (2, 16) and sample["video"].shape[2] >= 16  # whole frame
    assert sample["meta"]["hw"] == list(sample["video"].shape[1:3])
    if "segm" in tasks:
        assert sample["meta"]["segm_space"] == "unified"
        assert sample["segm.npy"].shape[:2] == (2, 8)
    if "boxes" in tasks:
        assert sample["meta"]["box_space"] == "ehoi_boxes" and sample["boxes.npy"].shape == (2, 4, 4)
    if "pose3d" in tasks:
        assert np.isfinite(sample["pose3d.npy"]).all(axis=-1).any()
    build = read_build(report.out_dir)  # the trainer's one record of the samples' label spaces
    assert (build["segm_space"], build["box_space"]) == (meta.get("segm_space"), meta.get("box_space"))
    assert verify(report.out_dir) == []


@pytest.mark.parametrize("source", list(CASES))
def test_adapters_describe_themselves_for_the_sources_command(source: str) -> None:
    adapter = get_source(source)
    assert adapter.name == source
    assert set(adapter.tasks) == CASES[source][1] | ({"depth"} if source == "surreact" else set())
    assert len(adapter.description) > 40 and adapter.splits
