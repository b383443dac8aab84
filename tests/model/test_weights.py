"""Pretrained weights by name through torchvision's weights API and the torch hub cache, or by path."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import pvit
import pytest
import torch
import torch.hub
from torchvision.models.video import MViT_V2_S_Weights, mvit_v2_s

EXPECTED_FILE = "mvit_v2_s-ae3be167.pth"  # the file name in MViT_V2_S_Weights.KINETICS400_V1.url


@pytest.fixture(scope="module")
def tv_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return mvit_v2_s().state_dict()


@pytest.fixture
def hub_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TORCH_HOME; any download attempt fails at once as it would offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # a set_dir() elsewhere would override TORCH_HOME

    def offline(url: str, dst: str, *args: object, **kwargs: object) -> None:
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path


def test_hub_cache_path_is_torchvision_file_name_under_torch_home(hub_home: Path) -> None:
    assert MViT_V2_S_Weights.KINETICS400_V1.url.endswith("/" + EXPECTED_FILE)
    expected = hub_home / "hub" / "checkpoints" / EXPECTED_FILE
    assert pvit.hub_cache_path(pvit.PRETRAINED_WEIGHTS["k400"]) == expected


def test_k400_by_name_loads_the_cached_torchvision_state_dict(
    hub_home: Path, tv_state: dict[str, torch.Tensor]
) -> None:
    cached = hub_home / "hub" / "checkpoints" / EXPECTED_FILE
    cached.parent.mkdir(parents=True)
    torch.save(tv_state, cached)
    model = pvit.build_model("mvit_v2_s", "pvit", num_classes=7, num_seg_classes=3, num_box_classes=2)
    report = pvit.load_pretrained(model, "k400")
    assert report.dropped_keys == ["head.1.bias", "head.1.weight"]
    loaded = model.backbone.state_dict()
    for key in ("conv_proj.weight", "blocks.7.attn.rel_pos_h", "pos_encoding.class_token", "norm.weight"):
        assert torch.equal(loaded[key], tv_state[key]), key
    assert model.backbone.head[1].out_features == 7


def test_offline_and_not_cached_is_one_line_naming_file_and_url(hub_home: Path) -> None:
    model = pvit.build_model("tiny", "plain", num_classes=4)
    with pytest.raises(ValueError) as info:
        pvit.load_pretrained(model, "k400")
    message = str(info.value)
    assert "\n" not in message
    assert str(hub_home / "hub" / "checkpoints" / EXPECTED_FILE) in message
    assert MViT_V2_S_Weights.KINETICS400_V1.url in message


def test_unknown_name_lists_the_known_names(hub_home: Path) -> None:
    model = pvit.build_model("tiny", "plain", num_classes=4)
    with pytest.raises(ValueError, match=r"'k700'.*k400") as info:
        pvit.load_pretrained(model, "k700")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="unknown pretrained weights 'k700'; known names: k400"):
        pvit.named_state_dict("k700")


def test_a_path_still_works_and_a_missing_one_is_one_line(
    tmp_path: Path, tv_state: dict[str, torch.Tensor]
) -> None:
    path = tmp_path / "weights.pth"
    torch.save(tv_state, path)
    model = pvit.build_model("mvit_v2_s", "plain", num_classes=400)
    report = pvit.load_pretrained(model, path)
    assert report.new_keys == ["backbone.head.1.bias", "backbone.head.1.weight"]
    assert torch.equal(model.backbone.state_dict()["conv_proj.weight"], tv_state["conv_proj.weight"])
    with pytest.raises(ValueError, match="no such file"):
        pvit.load_pretrained(model, tmp_path / "missing.pth")
