"""`train.visualize`: the heads' predictions drawn in `show`'s colours, from a model or a checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import show
from tests.train.conftest import train_args
from train import visualize
from train.assemble import geometry_for, prepare
from train.checkpoint import load_model
from train.config import parse_config
from train.distributed import setup
from train.sources import open_source

B, T, H, W, STRIDE, SLOTS = 3, 4, 32, 48, 4, 2


class FixedHeads(torch.nn.Module):
    """Predictions with known values: depth 2 m left / 5 m right, normals facing the camera (unnormalised),
    segmentation class 2, one confident class-1 box and one "no object" slot, a pose 2 m ahead."""

    class cfg:  # lower case: mimics PViT.cfg
        has_heads = True

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def forward(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, t, h, w = video.shape
        lh, lw = h // STRIDE, w // STRIDE
        depth = torch.full((b, t, lh, lw), 2.0)
        depth[..., lw // 2 :] = 5.0
        normal = torch.zeros(b, t, lh, lw, 3)
        normal[..., 2] = -3.0
        segm = torch.zeros(b, 3, t, lh, lw)
        segm[:, 2] = 1.0
        boxes = torch.tensor([0.25, 0.5, 0.75, 1.0]).expand(b, t, SLOTS, 4)
        logits = torch.tensor([[0.0, 9.0, 0.0], [0.0, 0.0, 9.0]]).expand(b, t, SLOTS, 3)
        pose = torch.zeros(b, t, 25, 3)
        pose[..., 2] = 2.0
        action = torch.zeros(b, 5) + self.weight
        return {
            "action": action,
            "depth": depth,
            "normal": normal,
            "segm": segm,
            "pose3d": pose,
            "boxes": boxes,
            "boxes_cls": logits,
        }


def fake_batch() -> dict:
    video = torch.full((B, T, H, W, 3), 90, dtype=torch.uint8)
    return {"video": video, "action": torch.tensor([1, 4, -1]), "views": 1, "groups": ["a", "b", "c"]}


def colours(pixels: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in p) for p in pixels.reshape(-1, 3)}


def test_prediction_sheet_layout_and_colours() -> None:
    sheet = visualize.prediction_sheet(FixedHeads(), fake_batch(), count=2, cell=64)
    assert len(sheet.rows) == 2  # --count clips, one row each
    first = sheet.rows[0]
    assert {j for (row, j) in sheet.cells if row == first} == set(range(6))  # frame + 5 heads
    image = np.asarray(sheet.image)

    def cell(j: int) -> np.ndarray:
        x0, y0, x1, y1 = sheet.cells[(first, j)]
        assert (x1 - x0, y1 - y0) == (96, 64)  # the 48 x 32 frame's aspect ratio
        return image[y0:y1, x0:x1]

    low, high = show.depth_range(np.array([2.0, 5.0]))
    assert colours(cell(1)) == colours(show.depth_colors(np.array([2.0, 5.0]), low, high))
    assert colours(cell(2)) == {(128, 128, 0)}  # normalised (0, 0, -1)
    assert colours(cell(3)) == {show.palette_color(2)}
    boxes = cell(4)
    assert tuple(boxes[63, 25]) == show.palette_color(1)  # slot 0's left side; slot 1 is "no object"
    assert tuple(boxes[40, 48]) == (90, 90, 90)
    pose = cell(5).copy()
    assert tuple(pose[32, 48]) != (90, 90, 90)  # every joint on the optical axis: the image centre
    pose[29:36, 45:52] = 90
    assert colours(pose) == {(90, 90, 90)}  # and nothing drawn anywhere else


def test_save_prediction_figure_writes_png_and_tensorboard(tmp_path: Path) -> None:
    class Writer:
        def add_image(self, tag: str, array: np.ndarray, step: int, dataformats: str) -> None:
            self.call = (tag, array.shape, step, dataformats)

    writer = Writer()
    path = visualize.save_prediction_figure(FixedHeads(), fake_batch(), tmp_path, 12, writer=writer, count=3)
    assert path == tmp_path / "figures" / "predictions_step_00000012.png"
    width, height = Image.open(path).size
    assert writer.call == ("predictions", (height, width, 3), 12, "HWC")


@pytest.fixture(scope="module")
def checkpoint(shards_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from train.main import main

    out = tmp_path_factory.mktemp("run")
    main(train_args(shards_dir, out, "--steps", "2", "--save-every", "2"))
    return next((out / "checkpoints").glob("step_*.pt"))


def test_visualize_command_on_a_checkpoint(checkpoint: Path, shards_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred.png"
    args = ["--checkpoint", str(checkpoint), "--shards", str(shards_dir), "--source", "procedural"]
    assert visualize.main([*args, "--count", "2", "--out", str(out)]) == out
    image = Image.open(out)
    model, cfg = load_model(checkpoint)  # the model alone: no source opened, no optimiser built
    geometry = geometry_for(cfg, model.cfg.label_stride, model.cfg.num_box_slots)
    batch = visualize.eval_batch(open_source(shards_dir, "procedural"), geometry, 2)
    sheet = visualize.prediction_sheet(model, batch, count=2)
    assert image.size == sheet.image.size
    assert len(sheet.rows) == 2 and len([key for key in sheet.cells if key[0] == sheet.rows[0]]) == 6


def test_figure_at_eval_is_the_trainer_hook(shards_dir: Path, tmp_path: Path) -> None:
    run = prepare(parse_config(train_args(shards_dir, tmp_path)), setup("cpu"))
    path = visualize.figure_at_eval(run, 7, writer=None)
    assert path == tmp_path / "figures" / "predictions_step_00000007.png" and path.is_file()


@pytest.mark.parametrize("damage", ["missing", "garbage", "truncated"])
def test_bad_checkpoint_is_one_line_exit_2(
    damage: str,
    checkpoint: Path,
    shards_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "step_00000002.pt"
    if damage == "garbage":
        path.write_bytes(b"not a checkpoint")
        path.with_suffix(".json").write_text(checkpoint.with_suffix(".json").read_text())
    elif damage == "truncated":
        path.write_bytes(checkpoint.read_bytes()[:5000])
    argv = ["x", "--checkpoint", str(path), "--shards", str(shards_dir), "--source", "procedural"]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        visualize.cli()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("train.visualize: error: ") and err.count("\n") == 1
    assert {"missing": "no such file", "garbage": "not a readable", "truncated": "not a readable"}[
        damage
    ] in err


def test_the_checkpoint_alone_is_enough(checkpoint: Path, shards_dir: Path, tmp_path: Path) -> None:
    """The .pt holds the model's config: without its sidecar only the label-space names are missing."""
    path = tmp_path / "step_00000002.pt"
    path.write_bytes(checkpoint.read_bytes())
    args = ["--checkpoint", str(path), "--shards", str(shards_dir), "--source", "procedural"]
    assert visualize.main([*args, "--count", "1", "--out", str(tmp_path / "p.png")]).is_file()


def test_unknown_source_is_one_line_exit_2(
    checkpoint: Path, shards_dir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["x", "--checkpoint", str(checkpoint), "--shards", str(shards_dir), "--source", "nope"]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        visualize.cli()
    assert exit_info.value.code == 2 and "nope" in capsys.readouterr().err
