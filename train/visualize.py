"""What the task heads see on real clips (the paper's Fig. 3 / 5): one row per clip, the frame and each
synthetic-task head's prediction for it (depth, normals, segmentation, boxes, 3D pose).

    python -m train.visualize --checkpoint runs/demo/checkpoints/step_00000480.pt --shards shards \
        --source procedural [--count 4] [--frame middle] --out predictions.png

The trainer calls `save_prediction_figure()` at each evaluation: a PNG under `<out>/figures/` and the
same picture as a TensorBoard image. Colours are `pipeline.show`'s, so a prediction reads like the
labels of `pvit-pipeline show`. Real clips have no camera, so the predicted pose (metres, camera frame) is
projected with the source's known camera if it has one, else a nominal 60-degree camera.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from pipeline import show
from pipeline.fileio import OneLineParser, first_line
from pipeline.schema import SEGM_IGNORE
from pipeline.spans import ReadSettings
from pipeline.storage import parse_storage_options
from train.assemble import Run, geometry_for
from train.checkpoint import load_model, read_sidecar
from train.data import EvalBatches, Geometry, to_device
from train.sources import SourceData, open_source

if TYPE_CHECKING:  # the type only: tensorboard is imported where a run logs to it
    from torch.utils.tensorboard import SummaryWriter

FIGURE_TASKS = ("depth", "normal", "segm", "boxes", "pose3d")
NOMINAL_FOV_DEG = 60.0  # horizontal field of view assumed for a real clip's unknown camera
BOX_MIN_SCORE = 0.5  # a box slot is drawn when P(object) is at least this
FIGURES = "figures"


def nominal_camera(hw: tuple[int, int]) -> tuple[float, float, float, float]:
    h, w = hw
    focal = 0.5 * w / math.tan(math.radians(NOMINAL_FOV_DEG) / 2)
    return focal, focal, w / 2, h / 2


@torch.no_grad()
def predict(
    model: torch.nn.Module, video: torch.Tensor, device: torch.device, autocast: Callable | None = None
) -> dict[str, np.ndarray]:
    """The heads' outputs for uint8 clips `[B, T, H, W, 3]`, as numpy, in display form.

    depth `[B,T,h,w]` metres, normal `[B,T,h,w,3]` unit, segm `[B,T,h,w]` argmax ids, pose3d `[B,T,J,3]`,
    boxes `[B,T,O,4]` with `boxes_cls` `[B,T,O]` ids and `boxes_score` `[B,T,O]` = P(object).
    """
    was_training = model.training
    model.eval()
    try:
        inputs, _ = to_device({"video": video}, device)
        with autocast() if autocast is not None else torch.autocast(device.type, enabled=False):
            raw = model(inputs)
    finally:
        model.train(was_training)
    out = {}
    for task in ("depth", "pose3d", "boxes"):
        if task in raw:
            out[task] = raw[task].float().cpu().numpy()
    if "normal" in raw:
        out["normal"] = torch.nn.functional.normalize(raw["normal"].float(), dim=-1).cpu().numpy()
    if "segm" in raw:
        out["segm"] = raw["segm"].float().argmax(1).cpu().numpy()
    if "boxes_cls" in raw:
        probs = raw["boxes_cls"].float().softmax(-1)
        out["boxes_score"] = (1.0 - probs[..., -1]).cpu().numpy()  # the last logit is "no object"
        out["boxes_cls"] = probs[..., :-1].argmax(-1).cpu().numpy()
    if "action" in raw:
        out["action"] = raw["action"].float().argmax(-1).cpu().numpy()
    return out


def clip_indices(batch: dict, count: int) -> list[int]:
    """One view per clip: an eval batch holds `views` consecutive crops of each clip."""
    views = int(batch.get("views", 1) or 1)
    return list(range(0, len(batch["video"]), views))[:count]


def prediction_figure(
    model: torch.nn.Module,
    batch: dict,
    device: torch.device | str = "cpu",
    autocast: Callable | None = None,
    **options: object,
) -> Image.Image:
    """Rows = clips, columns = the frame and each head's prediction at that frame (middle one by default).

    `batch` is a collated eval batch (`train.data.EvalBatches`): uint8 `video [B, T, H, W, 3]`, optional
    `views`, `groups`, `action`. `options` are `prediction_sheet`'s (count, spaces, camera, frame, ...).
    """
    return prediction_sheet(model, batch, device, autocast, **options).image  # type: ignore[arg-type]


def prediction_sheet(
    model: torch.nn.Module,
    batch: dict,
    device: torch.device | str = "cpu",
    autocast: Callable | None = None,
    count: int = 4,
    spaces: dict[str, str | None] | None = None,
    camera: tuple[float, float, float, float] | None = None,
    frame: int | None = None,
    cell: int = 128,
    title: str = "",
) -> show.Sheet:
    """`prediction_figure` with its layout: which cell of the image holds which clip and column."""
    device = torch.device(device)
    picks = clip_indices(batch, count)
    video = torch.as_tensor(batch["video"])[picks]
    preds = predict(model, video, device, autocast)
    t_count, h, w = video.shape[1:4]
    t = t_count // 2 if frame is None else min(max(frame, 0), t_count - 1)
    size = (max(1, round(w * cell / h)), cell)
    camera = camera or nominal_camera((h, w))
    spaces = spaces or {}
    seg_names = show.class_names(spaces.get("segm"), model_classes(preds, "segm"))
    box_names = show.class_names(spaces.get("boxes"), model_classes(preds, "boxes_cls"))
    low, high = show.depth_range(preds["depth"][:, t]) if "depth" in preds else (1.0, 10.0)
    tasks = [task for task in FIGURE_TASKS if task in preds]
    rows = []
    for i, index in enumerate(picks):
        picture = Image.fromarray(np.asarray(video[i, t])).resize(size, Image.Resampling.BILINEAR)
        cells = [picture] + [
            _cell(task, preds, i, t, picture, (h, w), low, high, box_names, camera) for task in tasks
        ]
        side = _side_panel(preds, i, t, seg_names, low, high, cell, first=i == 0)
        rows.append(show.Row(f"{i + 1}. {_caption(batch, index, preds, i)}", cells, side))
    header = [title or "task-head predictions", f"frame t={t} of {t_count}; depth log-scaled, one scale"]
    return show.compose(header, rows, titles=["frame", *tasks], label_w=96)


def model_classes(preds: dict, key: str) -> int:
    if key not in preds:
        return 0
    return int(preds[key].max(initial=0)) + 1


def _cell(
    task: str,
    preds: dict,
    i: int,
    t: int,
    picture: Image.Image,
    hw: tuple[int, int],
    low: float,
    high: float,
    box_names: list[str],
    camera: tuple[float, float, float, float],
) -> Image.Image:
    size = picture.size
    if task == "depth":
        return show.dense_image(show.depth_colors(preds["depth"][i, t], low, high), size)
    if task == "normal":
        return show.dense_image(show.normal_colors(preds["normal"][i, t]), size)
    if task == "segm":
        return show.dense_image(show.segm_colors(preds["segm"][i, t]), size)
    if task == "boxes":
        keep = preds["boxes_score"][i, t] >= BOX_MIN_SCORE if "boxes_score" in preds else slice(None)
        ids = preds["boxes_cls"][i, t][keep] if "boxes_cls" in preds else np.zeros(0, np.int64)
        scores = preds["boxes_score"][i, t][keep] if "boxes_score" in preds else np.ones(len(ids))
        names = [f"{show.name_of(box_names, int(c))} {s:.2f}" for c, s in zip(ids, scores, strict=True)]
        return show.draw_boxes(
            picture, preds["boxes"][i, t][keep], names, [show.palette_color(int(c)) for c in ids]
        )
    scale = np.array([size[0] / hw[1], size[1] / hw[0]])
    return show.draw_skeleton(picture, show.project(preds["pose3d"][i, t], camera) * scale)


def _side_panel(
    preds: dict, i: int, t: int, seg_names: list[str], low: float, high: float, cell: int, first: bool
) -> Image.Image | None:
    panels = []
    if first and "depth" in preds:
        panels.append(show.depth_bar(low, high, cell, False))
    if "segm" in preds:
        present = [int(c) for c in np.unique(preds["segm"][i, t]) if c != SEGM_IGNORE]
        panels.append(
            show.legend([(show.name_of(seg_names, c), show.palette_color(c)) for c in present], cell)
        )
    if not panels:
        return None
    out = Image.new("RGB", (sum(p.size[0] for p in panels), cell), show.BACKGROUND)
    x = 0
    for panel in panels:
        out.paste(panel, (x, 0))
        x += panel.size[0]
    return out


def _caption(batch: dict, index: int, preds: dict, i: int) -> str:
    groups = batch.get("groups")
    name = str(groups[index // int(batch.get("views", 1) or 1)]) if groups is not None else f"clip {index}"
    parts = [name]
    if "action" in batch and int(batch["action"][index]) >= 0:
        parts.append(f"label {int(batch['action'][index])}")
    if "action" in preds:
        parts.append(f"pred {int(preds['action'][i])}")
    return " ".join(parts)


def save_prediction_figure(
    model: torch.nn.Module,
    batch: dict,
    out_dir: str | Path,
    step: int,
    device: torch.device | str = "cpu",
    autocast: Callable | None = None,
    writer: SummaryWriter | None = None,
    **figure_args: object,
) -> Path:
    """`<out_dir>/figures/predictions_step_XXXXXXXX.png`, and the same image under `predictions` in
    TensorBoard when `writer` (a SummaryWriter, e.g. `MetricLogger.writer`) is given."""
    image = prediction_figure(
        model, batch, device, autocast, title=f"task-head predictions, step {step}", **figure_args
    )
    path = Path(out_dir) / FIGURES / f"predictions_step_{step:08d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    if writer is not None:
        writer.add_image("predictions", np.asarray(image), step, dataformats="HWC")
    return path


# ----------------------------------------------------------------------------- the command


class VisualizeError(ValueError):
    """A user mistake (missing file, unreadable checkpoint, unknown source): one line, exit 2."""


def eval_batch(source: SourceData, geometry: Geometry, count: int) -> dict:
    """The first `count` val clips of an opened source, one view each, prepared exactly as the trainer
    evaluates them."""
    split = "val" if "val" in source.splits else next(iter(source.splits), None)
    if split is None:
        raise VisualizeError(f"source {source.name}: no samples")
    return EvalBatches(source, split, "real", 0, 1, count, geometry, views=1).batch(0)


def figure_at_eval(run: Run, step: int, writer: SummaryWriter | None, count: int = 4) -> Path | None:
    """The trainer's hook (rank 0, at each evaluation): predictions on the first real source's val clips.

    The TensorBoard image goes to `writer` when there is one. None when the model has no task heads (modes
    vpt, plain) or no real source has a val split.
    """
    if not run.model.cfg.has_heads:
        return None
    real = next((s for s in run.sources.get("real", []) if "val" in s.splits), None)
    if real is None:
        return None
    batch = eval_batch(real, run.geometry, count)
    hw = (int(batch["video"].shape[2]), int(batch["video"].shape[3]))
    camera = show.known_camera(real.name, hw)
    return save_prediction_figure(run.model, batch, run.cfg.out, step, run.dist.device, run.autocast, writer,
                                  count=count, spaces=run.label_spaces, camera=camera)  # fmt: skip


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m train.visualize", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a trainer checkpoint (step_*.pt)")
    parser.add_argument("--shards", required=True, help="directory or URL holding <source>/build.json")
    parser.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                        help="fsspec option of a URL --shards (repeatable)")  # fmt: skip
    parser.add_argument("--source", required=True, help="the source whose val clips to draw (e.g. ssv2)")
    parser.add_argument("--count", type=int, default=4, help="clips (rows), default 4")
    parser.add_argument("--frame", type=int, help="frame index to draw (default: the middle one)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--out", type=Path, default=Path("predictions.png"), help="PNG path")
    return parser


def main(argv: list[str] | None = None) -> Path:
    """Draw the checkpoint's predictions on the source's first val clips; returns the PNG's path."""
    args = build_parser().parse_args(argv)
    if args.count < 1:
        raise VisualizeError(f"--count must be at least 1, got {args.count}")
    if not args.checkpoint.is_file():
        raise VisualizeError(f"--checkpoint {args.checkpoint}: no such file")
    model, cfg = load_model(args.checkpoint)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    geometry = geometry_for(cfg, model.cfg.label_stride, model.cfg.num_box_slots)
    settings = ReadSettings(parse_storage_options(args.storage_option))
    batch = eval_batch(open_source(args.shards, args.source, settings), geometry, args.count)
    frames = int(batch["video"].shape[1])
    if args.frame is not None and not 0 <= args.frame < frames:
        raise VisualizeError(f"--frame {args.frame}: the clips have frames 0..{frames - 1}")
    h, w = (int(v) for v in batch["video"].shape[2:4])
    image = prediction_figure(
        model.to(device),
        batch,
        device,
        count=args.count,
        spaces=(read_sidecar(args.checkpoint) or {}).get("label_spaces") or {},
        camera=show.known_camera(args.source, (h, w)),
        frame=args.frame,
        title=f"{args.source} val: task-head predictions of {args.checkpoint}",
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out, optimize=True)
    print(args.out)
    return args.out


def cli() -> None:
    try:
        main()
    except (ValueError, FileNotFoundError, OSError) as error:  # FlagError, ShardMismatch, CheckpointError
        print(f"train.visualize: error: {first_line(error)}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    cli()
