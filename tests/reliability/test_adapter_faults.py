"""Bad raw inputs from the fault campaign (issue 12): annotation paths that climb out of --root, an SSv2
template that is not a string, Diving48 frame ranges that make no sense. Each is quarantined with a reason
that says what is wrong, at listing time, without reading any video."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import BuildConfig
from pipeline.sources import Quarantine, get_source
from tests.sources.real_fixtures import DIVING48_VOCAB, ssv2_entry, ssv2_label_map, write_json


def load_reasons(source: str, root: Path, **options: str) -> dict[str, str]:
    """item id -> the Quarantine reason its load raises (every train item here must be quarantined)."""
    adapter = get_source(source)(root, BuildConfig(frames=4, size=32, options=tuple(sorted(options.items()))))
    reasons = {}
    for item in adapter.items("train"):
        with pytest.raises(Quarantine) as info:
            adapter.load(item)
        reasons[item.id] = str(info.value)
    return reasons


def test_ssv2_id_that_climbs_out_of_the_root_is_quarantined(tmp_path: Path) -> None:
    root = tmp_path / "ssv2"
    write_json(root / "labels.json", ssv2_label_map())
    template = next(iter(ssv2_label_map()))
    write_json(root / "train.json", [ssv2_entry("../../escape", template)])
    (tmp_path / "escape.webm").write_bytes(b"not for us")
    reasons = load_reasons("ssv2", root)
    assert "leaves --root" in reasons["../../escape"]


def test_ssv2_template_that_is_not_a_string_is_quarantined(tmp_path: Path) -> None:
    root = tmp_path / "ssv2"
    write_json(root / "labels.json", ssv2_label_map())
    write_json(root / "train.json", [{"id": "7", "template": 42}])
    assert load_reasons("ssv2", root)["7"] == "template is a int, not a string (in train.json)"


@pytest.mark.parametrize("path", ["../escape.mp4", "/etc/escape.mp4", "walk/../../escape.mp4"])
def test_videofolder_csv_path_outside_the_root_is_quarantined(tmp_path: Path, path: str) -> None:
    root = tmp_path / "videos"
    root.mkdir()
    (root / "train.csv").write_text(f"path,label\n{path},walk\n")
    (tmp_path / "escape.mp4").write_bytes(b"not for us")
    (reason,) = load_reasons("videofolder", root).values()
    assert "leaves --root" in reason


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (
            {"start_frame": 30, "end_frame": 10},
            "end_frame 10 is before start_frame 30 (in Diving48_V2_train.json)",
        ),
        ({"start_frame": "x", "end_frame": 10}, "not whole numbers (in Diving48_V2_train.json)"),
    ],
)
def test_diving48_bad_frame_ranges_say_what_is_wrong_and_where(
    tmp_path: Path, row: dict, reason: str
) -> None:
    write_json(tmp_path / "Diving48_vocab.json", DIVING48_VOCAB)
    write_json(tmp_path / "Diving48_V2_train.json", [{"vid_name": "clip", "label": 0, **row}])
    assert reason in load_reasons("diving48", tmp_path, frame_range="1")["clip"]
