"""`pvit-pipeline show`: exact colours for known labels, boxes on the right pixels, one row per label."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import show
from pipeline.cli import main
from pipeline.schema import NUM_JOINTS, mask_of

H, W, T, STRIDE = 24, 40, 3, 4  # a non-square frame with labels at a quarter of its size


def hand_made_sample(source: str = "unit", camera: dict | None = None) -> dict:
    """Every synthetic label with known values: depth 2 m left / 5 m right, one NaN pixel, normals facing
    the camera, segm ids 0/1 with an ignored pixel, one box, a pose 2 m in front of the camera."""
    h, w = H // STRIDE, W // STRIDE
    depth = np.full((T, h, w), 2.0, np.float16)
    depth[:, :, w // 2 :] = 5.0
    depth[:, 0, 0] = np.nan
    normal = np.zeros((T, h, w, 3), np.float16)
    normal[..., 2] = -1.0
    segm = np.zeros((T, h, w), np.uint16)
    segm[:, h // 2 :] = 1
    segm[:, 0, w - 1] = show.SEGM_IGNORE
    boxes = np.full((T, 2, 4), np.nan, np.float32)
    boxes[:, 0] = (0.25, 0.5, 0.75, 1.0)
    boxes_cls = np.full((T, 2), -1, np.int16)
    boxes_cls[:, 0] = 1
    pose = np.full((T, NUM_JOINTS, 3), np.nan, np.float32)
    pose[:, :4] = [[0.0, 0.2, 2.0], [0.0, 0.0, 2.0], [0.0, -0.2, 2.0], [0.0, -0.3, 2.0]]
    meta = {
        "source": source,
        "id": "clip-1",
        "split": "val",
        "label": 3,
        "label_name": "rise",
        "mask": mask_of(["action", "depth", "normal", "segm", "pose3d", "boxes"]),
        "config_hash": "abc123",
        "segm_space": "procedural",
        "box_space": "procedural",
    }
    if camera is not None:
        meta["intrinsics"] = camera
    video = np.full((T, H, W, 3), 200, np.uint8)
    return {
        "__key__": "unit-clip-1",
        "meta": meta,
        "video": video,
        "depth.npy": depth,
        "normal.npy": normal,
        "segm.npy": segm,
        "boxes.npy": boxes,
        "boxes_cls.npy": boxes_cls,
        "pose3d.npy": pose,
    }


def cell_pixels(sheet: show.Sheet, row: str, column: int = 0) -> np.ndarray:
    x0, y0, x1, y1 = sheet.cells[(row, column)]
    return np.asarray(sheet.image)[y0:y1, x0:x1]


def at_label_pixel(cell: np.ndarray, r: int, c: int) -> np.ndarray:
    """The display pixel at the centre of label pixel (r, c) of an [H/STRIDE, W/STRIDE] map."""
    ch, cw = cell.shape[:2]
    return cell[int((r + 0.5) * ch / (H // STRIDE)), int((c + 0.5) * cw / (W // STRIDE))]


def colours_of(pixels: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in p) for p in pixels.reshape(-1, 3)}


def test_depth_two_values_give_two_colours_and_nan_is_grey() -> None:
    depth = np.array([[2.0, 5.0], [5.0, np.nan]])
    rgb = show.depth_colors(depth, 2.0, 5.0)
    assert tuple(rgb[1, 1]) == show.GREY
    assert len(colours_of(rgb[np.isfinite(depth)])) == 2
    assert tuple(rgb[0, 0]) == tuple(show._colormap(show.DEPTH_COLORMAP)[0])  # the near end
    assert tuple(rgb[0, 1]) == tuple(show._colormap(show.DEPTH_COLORMAP)[255])  # the far end


def test_normal_colours_are_half_n_plus_one() -> None:
    rgb = show.normal_colors(np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [np.nan, 0.0, 0.0]]))
    assert tuple(rgb[0]) == (128, 128, 0)  # facing the camera (OpenCV z forward)
    assert tuple(rgb[1]) == (255, 128, 128)
    assert tuple(rgb[2]) == show.GREY


def test_segm_palette_is_fixed_and_ignore_is_grey() -> None:
    rgb = show.segm_colors(np.array([0, 1, show.SEGM_IGNORE, 1]))
    assert tuple(rgb[0]) == show.palette_color(0) != tuple(rgb[1]) == show.palette_color(1)
    assert tuple(rgb[2]) == show.GREY
    assert len({show.palette_color(i) for i in range(40)}) == 40


def test_box_lands_on_the_expected_pixels() -> None:
    image = Image.new("RGB", (40, 20))
    drawn = np.asarray(show.draw_boxes(image, np.array([[0.25, 0.5, 0.75, 1.0]]), [""], [(255, 0, 0)]))
    red = (drawn == (255, 0, 0)).all(-1)
    assert red[10, 10] and red[19, 29] and red[15, 11] and red[15, 28]  # corners and the 2-px sides
    assert not red[15, 12] and not red[9, 10] and not red[15, 30]  # inside and outside stay black
    assert red.sum() == red[10:20, 10:30].sum()


def test_nearest_upsampling_keeps_stored_values() -> None:
    label = np.arange(6).reshape(2, 3)
    up = show.upsample_nearest(label, (4, 9))
    assert up.shape == (4, 9)
    assert (up[:2, :3] == 0).all() and (up[2:, 6:] == 5).all()


def test_sheet_has_one_row_per_label_with_exact_colours() -> None:
    sample = hand_made_sample()
    sheet = show.sample_sheet(sample, cell=96)
    assert sheet.rows == ["frames", "depth", "normal", "segm", "pose3d", "boxes"]
    x0, y0, x1, y1 = sheet.cells[("depth", 0)]
    assert (x1 - x0, y1 - y0) == (round(W * 96 / H), 96)  # the frame's aspect ratio is kept
    depth = cell_pixels(sheet, "depth")
    low, high = show.depth_range(sample["depth.npy"])
    assert colours_of(depth) == colours_of(show.depth_colors(np.array([2.0, 5.0, np.nan]), low, high))
    assert tuple(at_label_pixel(depth, 0, 0)) == show.GREY
    assert tuple(at_label_pixel(depth, 3, 1)) == tuple(show.depth_colors(np.array(2.0), low, high))
    assert tuple(at_label_pixel(depth, 3, 8)) == tuple(show.depth_colors(np.array(5.0), low, high))
    assert colours_of(cell_pixels(sheet, "normal")) == {(128, 128, 0)}
    segm = cell_pixels(sheet, "segm")
    assert tuple(at_label_pixel(segm, 1, 1)) == show.palette_color(0)
    assert tuple(at_label_pixel(segm, 4, 1)) == show.palette_color(1)
    assert tuple(at_label_pixel(segm, 0, 9)) == show.GREY
    boxes = cell_pixels(sheet, "boxes")
    cw = boxes.shape[1]
    assert tuple(boxes[95, int(0.25 * cw) + 1]) == show.palette_color(1)  # the box's left side, bottom row


def test_pose_is_projected_with_the_camera_in_meta() -> None:
    # Source frame 48 x 100 px, of which the stored 24 x 40 frame kept columns 10..89 at half size.
    camera = {"fx": 40.0, "fy": 40.0, "cx": 50.0, "cy": 24.0}
    sample = hand_made_sample(camera=camera)
    sample["meta"].update(orig_hw=[48, 100], crop_box=[0, 10, 48, 80])
    assert show.camera_of(sample["meta"], (H, W)) == (20.0, 20.0, 20.0, 12.0)
    uv = show.project(sample["pose3d.npy"][0, :2], (20.0, 20.0, 20.0, 12.0))
    assert np.allclose(uv, [[20.0, 14.0], [20.0, 12.0]])
    pose = cell_pixels(show.sample_sheet(sample, cell=96), "pose3d")
    x, y = round(20 * 96 / H), round(12 * 96 / H)  # spine_mid at the principal point, on the frame
    assert tuple(pose[y, x]) == show.CENTRE


def test_pose_without_a_camera_is_a_side_view() -> None:
    sample = hand_made_sample(source="unit-no-camera")
    assert show.camera_of(sample["meta"], (H, W)) is None
    pose = cell_pixels(show.sample_sheet(sample, cell=96), "pose3d")
    assert tuple(pose[0, 0]) == (40, 40, 48)  # a drawn panel, not the frame (grey 200)
    assert show.CENTRE in colours_of(pose)


def test_procedural_camera_is_known() -> None:
    fx, fy, cx, cy = show.camera_of({"source": "procedural"}, (64, 64))
    assert fx == fy > 0 and (cx, cy) == (32, 32)


def test_surreact_camera_scales_with_the_stored_short_side() -> None:
    assert show.camera_of({"source": "surreact"}, (240, 320)) == (600.0, 600.0, 160.0, 120.0)
    assert show.known_camera("surreact", (120, 160)) == (300.0, 300.0, 80.0, 60.0)


def test_a_source_declares_its_own_fixed_camera(monkeypatch: pytest.MonkeyPatch) -> None:
    """`show` asks the adapter (no per-source branch): a new source with a fixed camera needs no edit here."""
    from pipeline import sources
    from pipeline.sources.procedural import ProceduralSource

    class FixedLens(ProceduralSource):
        name = "fixed-lens"

        @classmethod
        def fixed_camera(cls, hw: tuple[int, int]) -> tuple[float, float, float, float]:
            return 10.0 * hw[1], 10.0 * hw[1], 1.0, 2.0

    monkeypatch.setitem(sources._ADAPTERS, "fixed-lens", FixedLens)
    assert show.camera_of({"source": "fixed-lens"}, (8, 6)) == (60.0, 60.0, 1.0, 2.0)
    assert show.known_camera("no-such-source", (8, 6)) is None
    assert show.known_camera("ssv2", (8, 6)) is None  # a real video: its camera is unknown


def test_pnr_frame_is_among_the_shown_frames() -> None:
    sample = {
        "video": np.zeros((16, 8, 8, 3), np.uint8),
        "meta": {},
        "pnr.npy": np.eye(16, dtype=np.float32)[5],
    }
    frames = show.shown_frames(sample)
    assert len(frames) == 8 and 5 in frames


def test_show_command_on_a_build(
    procedural_build: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "sheet.png"
    assert main(["show", str(procedural_build), "--split", "val", "--count", "2", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    sample = show.read_samples(procedural_build, split="val")[0]
    one = show.sample_sheet(sample)
    assert len(one.rows) == 1 + 5  # frames + depth, normal, segm, pose3d, boxes
    image = Image.open(out)
    assert image.size == (one.image.size[0], 2 * one.image.size[1])
    x0, y0, x1, y1 = one.cells[("depth", 0)]
    written = np.asarray(image.convert("RGB"))[y0:y1, x0:x1]
    low, high = show.depth_range(sample["depth.npy"][show.shown_frames(sample)])
    expected = show.dense_image(show.depth_colors(sample["depth.npy"][0], low, high), (x1 - x0, y1 - y0))
    assert np.array_equal(written, np.asarray(expected))


def test_show_by_key_and_default_output(procedural_build: Path, capsys: pytest.CaptureFixture) -> None:
    key = show.read_samples(procedural_build, split="train")[0]["__key__"]
    assert main(["show", str(procedural_build), "--key", key]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == procedural_build.parent / f"{procedural_build.name}.show.{key}.png" and path.is_file()
    path.unlink()


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--key", "nope"], "no sample with key 'nope'"),
        (["--split", "test"], "no samples in split 'test'"),
        (["--count", "0"], "--count must be at least 1"),
    ],
)
def test_show_mistakes_are_one_line(
    procedural_build: Path, capsys: pytest.CaptureFixture, args: list[str], expect: str
) -> None:
    assert main(["show", str(procedural_build), *args]) == 2
    err = capsys.readouterr().err
    assert expect in err and err.count("\n") == 1


def test_show_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["show", str(tmp_path / "absent")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_show_runs_without_torch(procedural_build: Path, tmp_path: Path) -> None:
    out = tmp_path / "sheet.png"
    code = f"""
import sys, importlib.abc
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'torchvision', 'pvit', 'train'):
            raise ModuleNotFoundError(f'No module named {{name!r}} (blocked by the test)')
sys.meta_path.insert(0, NoTorch())
from pipeline.cli import main
assert main(['show', {str(procedural_build)!r}, '--out', {str(out)!r}]) == 0
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert Image.open(out).size[0] > 0


def test_ava_persons_on_the_keyframe_and_the_pnr_frame_marked() -> None:
    video = np.full((8, H, W, 3), 200, np.uint8)
    ava = {
        "video": video,
        "meta": {
            "source": "ava",
            "mask": mask_of(["ava"]),
            "frame_indices": list(range(0, 32, 4)),
            "keyframe_index": 13,
        },
        "ava_boxes.npy": np.array([[0.25, 0.5, 0.75, 1.0]], np.float32),
        "ava_labels.npy": np.eye(60, dtype=np.uint8)[[10]],
    }
    assert show.ava_keyframe(ava) == 3  # source frame 12 is the sampled frame nearest 13
    sheet = show.sample_sheet(ava, cell=96)
    assert sheet.rows == ["frames", "ava (keyframe)"]
    key = cell_pixels(sheet, "ava (keyframe)", show.shown_frames(ava).index(3))
    assert tuple(key[95, int(0.25 * key.shape[1]) + 1]) == show.palette_color(0)
    assert show.class_names("ava")[10] == "stand"  # id 12 of the label map
    other = cell_pixels(sheet, "ava (keyframe)", 0)
    assert len(colours_of(other)) == 1 and colours_of(other) < {(79, 79, 79), (80, 80, 80)}  # dimmed, no box
    ego = {
        "video": video,
        "meta": {"source": "ego4d", "mask": mask_of(["pnr"]), "oscc": 1},
        "pnr.npy": np.eye(8, dtype=np.float32)[5],
    }
    sheet = show.sample_sheet(ego, cell=96)
    assert sheet.rows == ["frames", "pnr"]
    assert tuple(cell_pixels(sheet, "pnr", 5)[0, 0]) == (255, 40, 40)
    assert tuple(cell_pixels(sheet, "pnr", 4)[0, 0]) == (200, 200, 200)
