"""The data-side ablation switches (paper §A.2, Fig. 4b): each changes exactly what it names.

`--shuffle-synthetic-labels`, `--synthetic-fraction`, `--synthetic-only` and `--init-from` (pretrain on
synthetic data, then fine-tune the backbone on the real task).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pvit
import pytest
import torch

from pipeline.schema import SYNTHETIC_TASKS, TASK_BIT, TASKS
from tests.train.conftest import train_args
from train.assemble import make_streams, open_streams, prepare
from train.augment import Protocol
from train.checkpoint import init_backbone, is_backbone_key
from train.config import make_config, parse_config
from train.data import TASK_LABEL_KEYS, Geometry, MixedBatches, StreamSpec, make_loader, shuffle_task_labels
from train.distributed import Dist
from train.main import main
from train.plan import StreamPlan, _rng, fraction_subset, video_subset
from train.sources import open_source

CPU = Dist(rank=0, world=1, local_rank=0, device=torch.device("cpu"))
GEOMETRY = Geometry(Protocol(24, (32, 40), True, 4), 8)


# ----------------------------------------------------------------------------- shuffled labels


def _synthetic_stream(shards: Path, shuffle: bool, batch: int = 4) -> StreamSpec:
    source = open_source(shards, "procedural")
    table = source.split("train")
    plan = StreamPlan((table.shard,), (1.0,), seed=0, stream_id=1, views=(table.view_matrix(),))
    return StreamSpec("synthetic", plan, [source], [table], batch, world=1, rank=0, shuffle_labels=shuffle)


def _rows(tensor: torch.Tensor) -> list[bytes]:
    """Each sample's label as bytes (NaN pixels compare equal to themselves this way)."""
    return [row.numpy().tobytes() for row in tensor]


def _donors(original: torch.Tensor, shuffled: torch.Tensor) -> list[int]:
    """For each sample of `shuffled`, the sample of `original` whose label it now carries."""
    before = _rows(original)
    return [before.index(row) for row in _rows(shuffled)]


def test_shuffled_labels_keep_clips_masks_and_multiset_but_change_the_pairing(shards_dir: Path) -> None:
    plain = MixedBatches([_synthetic_stream(shards_dir, False)], 0, 5, GEOMETRY, seed=0)
    shuffled = MixedBatches([_synthetic_stream(shards_dir, True)], 0, 5, GEOMETRY, seed=0)
    independent = False
    for a, b in zip(plain, shuffled, strict=True):
        a, b = a["synthetic"], b["synthetic"]
        assert torch.equal(a["video"], b["video"]) and torch.equal(a["mask"], b["mask"])
        assert torch.equal(a["source"], b["source"])
        donors = {}
        for task in SYNTHETIC_TASKS:
            assert a["mask"][:, TASK_BIT[task]].all()  # procedural clips carry every scene label
            for key in TASK_LABEL_KEYS[task]:
                assert sorted(_rows(a[key])) == sorted(_rows(b[key])), f"{key}: multiset changed"
            donors[task] = _donors(a[TASK_LABEL_KEYS[task][0]], b[TASK_LABEL_KEYS[task][0]])
            assert sorted(donors[task]) == list(range(4))
            assert all(d != i for i, d in enumerate(donors[task])), f"{task}: a clip kept its own label"
        # Box coordinates and classes move together: classes follow the donor of the coordinates.
        assert _rows(b["boxes_cls"]) == [_rows(a["boxes_cls"])[d] for d in donors["boxes"]]
        independent |= len({tuple(d) for d in donors.values()}) > 1
    assert independent, "every task got the same permutation: tasks are not shuffled independently"


def test_shuffle_moves_labels_only_among_samples_that_have_the_task() -> None:
    mask = torch.zeros(5, len(TASKS), dtype=torch.bool)
    mask[[0, 1, 3, 4], TASK_BIT["depth"]] = True  # sample 2 has no depth: a NaN placeholder
    mask[:, TASK_BIT["pose3d"]] = True
    depth = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1).expand(5, 2, 2, 2).clone()
    depth[2] = float("nan")
    pose = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1).expand(5, 2, 25, 3).clone()
    batch = {"video": torch.zeros(5, 2, 4, 4, 3, dtype=torch.uint8), "mask": mask.clone()}
    batch.update({"depth": depth.clone(), "pose3d": pose.clone()})
    out = shuffle_task_labels(batch, np.random.default_rng(0))
    got = out["depth"][:, 0, 0, 0]
    assert torch.isnan(got[2]) and torch.equal(out["mask"], mask)
    moved = got[[0, 1, 3, 4]].long().tolist()
    assert sorted(moved) == [0, 1, 3, 4] and all(v != i for v, i in zip(moved, [0, 1, 3, 4], strict=True))
    assert sorted(out["pose3d"][:, 0, 0, 0].long().tolist()) == [0, 1, 2, 3, 4]
    assert "normal" not in out  # an absent task stays absent


def test_shuffled_labels_are_the_same_whatever_the_worker_count_and_on_resume(shards_dir: Path) -> None:
    stream = _synthetic_stream(shards_dir, True)
    runs = []
    for workers in (0, 2):
        batches = list(make_loader(MixedBatches([stream], 0, 6, GEOMETRY, seed=3), workers))
        runs.append({key: torch.cat([b["synthetic"][key] for b in batches]) for key in ("depth", "boxes")})
    for key in runs[0]:
        assert _rows(runs[0][key]) == _rows(runs[1][key]), f"{key} depends on the worker count"
    resumed = next(iter(MixedBatches([stream], 4, 6, GEOMETRY, seed=3)))["synthetic"]  # a run resumed at 4
    assert _rows(resumed["depth"]) == _rows(runs[0]["depth"])[16:20]
    assert _rows(resumed["boxes"]) == _rows(runs[0]["boxes"])[16:20]


# ----------------------------------------------------------------------------- the synthetic fraction


def test_fraction_subset_is_about_the_fraction_nested_and_order_free() -> None:
    ids = np.array([f"clip_{i:04d}" for i in range(400)], dtype=object)
    kept = {f: set(ids[fraction_subset(ids, f)]) for f in (0.1, 0.25, 0.5, 1.0)}
    assert len(kept[0.5]) == 200 and len(kept[0.25]) == 100 and kept[1.0] == set(ids)
    assert kept[0.1] <= kept[0.25] <= kept[0.5] <= kept[1.0]
    assert not kept[0.5] >= {f"clip_{i:04d}" for i in range(200)}  # not simply the first half
    shuffled = ids[_rng(1).permutation(len(ids))]
    assert set(shuffled[fraction_subset(shuffled, 0.25)]) == kept[0.25]  # chosen by id, not position
    assert len(fraction_subset(ids[:3], 0.01)) == 1  # never an empty source
    with pytest.raises(ValueError):
        fraction_subset(ids, 0.0)


def test_video_subset_keeps_every_view_of_the_kept_videos() -> None:
    group = np.array([f"v{i // 3}" for i in range(30)], dtype=object)  # 10 videos x 3 views
    views = np.arange(30).reshape(10, 3)
    half = video_subset(views, group, 0.5)
    assert half.shape == (5, 3)
    assert all(len({group[r] for r in row}) == 1 for row in half)
    assert set(group[half[:, 0]]) == set(group[views[fraction_subset(group[views[:, 0]], 0.5), 0]])


def test_synthetic_fraction_shortens_the_synthetic_epoch_only(shards_dir: Path) -> None:
    def streams(*extra: str) -> dict[str, StreamSpec]:
        cfg = parse_config(train_args(shards_dir, Path("unused"), *extra))
        sources, weights, _ = open_streams(cfg, CPU)
        return {s.role: s for s in make_streams(cfg, CPU, sources, weights)}

    full, half = streams(), streams("--synthetic-fraction", "0.5")
    assert full["synthetic"].plan.epoch_length == 20 and half["synthetic"].plan.epoch_length == 10
    assert half["synthetic"].batches_per_epoch == 2 and half["real"].plan.epoch_length == 20
    table = half["synthetic"].tables[0]
    read = {table.group[r] for epoch in range(3) for r in half["synthetic"].plan.global_order(epoch)[1]}
    assert read == set(table.group[fraction_subset(table.group, 0.5)])  # only the kept videos, all of them
    quarter = streams("--synthetic-fraction", "0.25")
    kept = quarter["synthetic"].plan.epoch_rows(0, 0)
    assert len(kept) == 5 and set(table.group[kept]) <= read  # nested inside the half


# ----------------------------------------------------------------------------- configuration


def test_ablation_switches_are_validated() -> None:
    make_config({"synthetic": ("procedural",), "synthetic_only": True})  # no --real needed for stage 1
    refused: list[dict[str, Any]] = [
        {"synthetic": ("procedural",)},  # --real is still needed without --synthetic-only
        {"synthetic": ("procedural",), "synthetic_only": True, "mode": "plain"},
        {"real": ("procedural",), "synthetic_only": True},  # no synthetic stream to train on
        {"real": ("procedural",), "synthetic": ("procedural",), "synthetic_fraction": 0.0},
        {"real": ("procedural",), "synthetic": ("procedural",), "synthetic_fraction": 1.5},
        {"real": ("procedural",), "shuffle_synthetic_labels": True},  # no synthetic stream to shuffle
        {"real": ("procedural",), "synthetic": ("procedural",), "mode": "vpt", "synthetic_fraction": 0.5},
    ]
    for values in refused:
        with pytest.raises(ValueError, match="^--"):
            make_config(values)


# ----------------------------------------------------------------------------- init from a checkpoint


def _model(mode: str, seed: int, classes: int) -> pvit.PViT:
    torch.manual_seed(seed)
    return pvit.build_model("tiny", mode, num_classes=classes, num_seg_classes=4, num_box_classes=3)


def test_init_from_loads_the_backbone_only(tmp_path: Path) -> None:
    stage1 = _model("pvit", 0, 1)
    path = tmp_path / "step_00000002.pt"
    torch.save({"model": stage1.state_dict(), "step": 2}, path)
    fresh, stage2 = _model("pvit", 1, 7), _model("pvit", 1, 7)
    count = init_backbone(stage2, str(path))
    ours, theirs, new = stage2.state_dict(), stage1.state_dict(), fresh.state_dict()
    backbone = [k for k in ours if is_backbone_key(k)]
    assert count == len(backbone) > 10
    assert all(torch.equal(ours[k], theirs[k]) for k in backbone)
    assert any(not torch.equal(new[k], theirs[k]) for k in backbone)  # it did change something
    others = [k for k in ours if not is_backbone_key(k)]
    assert {"backbone.prompt_tokens", "backbone.head.1.weight"} <= set(others)
    assert any(k.startswith("heads.") for k in others)
    assert all(torch.equal(ours[k], new[k]) for k in others)  # action head, task heads, prompts: fresh
    plain = _model("plain", 1, 7)
    init_backbone(plain, str(path))  # stage 2 of the paper's baseline: a plain MViTv2 on the real task
    assert all(
        torch.equal(plain.state_dict()[k], theirs[k]) for k in plain.state_dict() if is_backbone_key(k)
    )


def test_init_from_refuses_what_is_not_a_backbone_of_this_model(tmp_path: Path) -> None:
    model = _model("plain", 0, 3)
    heads_only = tmp_path / "heads.pt"
    torch.save({"model": {"heads.depth.w": torch.zeros(1)}}, heads_only)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    other = tmp_path / "other.pt"
    state = model.state_dict()
    state["backbone.conv_proj.bias"] = torch.zeros(99)
    torch.save({"model": state}, other)
    for path, why in ((heads_only, "no backbone weights"), (garbage, "not a readable"), (other, "differs")):
        with pytest.raises(ValueError, match=why):
            init_backbone(model, str(path))
    with pytest.raises(ValueError, match="^--init-from .*no such checkpoint file"):
        main(["--real", "procedural", "--init-from", str(tmp_path / "missing.pt"), "--out", str(tmp_path)])


# ----------------------------------------------------------------------------- pretrain, then fine-tune


def test_synthetic_only_has_one_stream_and_counts_epochs_over_it(shards_dir: Path, tmp_path: Path) -> None:
    args = ["--synthetic-only", "--real", "", "--epochs", "2", "--synthetic-fraction", "0.5"]
    run = prepare(parse_config(train_args(shards_dir, tmp_path, *args)), CPU)
    assert [s.role for s in run.streams] == ["synthetic"] and run.sources["real"] == []
    assert run.total_steps == 2 * 2  # 2 epochs x (10 of 20 videos / 4 per batch) batches
    assert run.model.cfg.has_heads


def test_pretrain_on_synthetic_only_then_finetune_the_backbone(shards_dir: Path, tmp_path: Path) -> None:
    stage1 = main(
        train_args(shards_dir, tmp_path / "stage1", "--synthetic-only", "--real", "", "--steps", "1")
    )
    assert stage1["eval"] and all(key.startswith("synthetic/procedural/") for key in stage1["eval"])
    assert "synthetic/procedural/depth_absrel" in stage1["eval"]  # the task metrics, no action metric
    rows = [json.loads(line) for line in (tmp_path / "stage1" / "metrics.jsonl").read_text().splitlines()]
    trained = [row for row in rows if row["kind"] == "train"][-1]
    assert "depth" in trained and "action" not in trained  # no action loss
    checkpoint = tmp_path / "stage1" / "checkpoints" / "step_00000001.pt"
    pretrained = torch.load(checkpoint, weights_only=True)["model"]

    stage2 = train_args(shards_dir, tmp_path / "stage2", "--mode", "plain", "--steps", "1")
    fresh = prepare(parse_config(stage2), CPU)
    run = prepare(parse_config([*stage2, "--init-from", str(checkpoint)]), CPU)
    init_backbone(run.model, str(checkpoint))  # as main() does after prepare()
    weights, new = run.model.state_dict(), fresh.model.state_dict()
    assert all(torch.equal(weights[k], pretrained[k]) for k in weights if is_backbone_key(k))
    assert torch.equal(weights["backbone.head.1.weight"], new["backbone.head.1.weight"])  # fresh head
    assert run.start_step == 0 and not run.optimizer.state  # not a resume: no optimiser state, step 0
    out = main([*stage2, "--init-from", str(checkpoint)])
    assert out["steps"] == 1 and 0.0 <= out["eval"]["real/procedural/top1"] <= 100.0
