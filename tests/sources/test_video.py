"""The ffmpeg filter-graph decoder: frame selection, geometry, rotation, odd sizes, VFR, padding, errors,
colour exactness against ffmpeg's own RGB, and container frame counts."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from real_fixtures import add_rotation, colour_block_frames, corrupt, encode, index_frames, read_index

from pipeline import video
from pipeline.geometry import Framing, stored_geometry
from pipeline.video import VideoError, decode, decode_window, ffmpeg_exe, frame_count, probe, sample_clip


@pytest.fixture(scope="module")
def clip30(tmp_path_factory):
    return encode(tmp_path_factory.mktemp("video") / "c30.mp4", index_frames(40, 48, 64), 30)


def indices_of(clip):
    return [read_index(frame) for frame in clip.frames]


def test_sample_clip_picks_frames_by_decoded_index_and_keeps_the_whole_frame(clip30):
    clip = sample_clip(clip30, 24, lambda n: [0, 7, 7, 39])
    assert clip.decoded == 40 and clip.padded == 0
    assert clip.indices == indices_of(clip) == [0, 7, 7, 39]
    assert clip.frames.shape == (4, 24, 32, 3) and clip.frames.dtype == np.uint8  # 48x64 at short side 24
    assert clip.orig_hw == (48, 64) and clip.info.fps == pytest.approx(30.0)
    assert sample_clip(clip30, 24, lambda n: [0], crop="centre").frames.shape == (1, 24, 24, 3)


def test_centre_square_matches_the_engine_geometry(tmp_path):
    frames = np.zeros((2, 40, 80, 3), np.uint8)
    frames[:, :, 20:60] = 255  # only the centre square (x in [20, 60)) is white
    clip = sample_clip(encode(tmp_path / "sq.mp4", frames, 10), 16, lambda n: [0], crop="centre")
    assert clip.frames[0, :, 1:-1].min() > 200  # every kept column came from the white square


def test_a_16_9_video_keeps_its_width_and_its_edges(tmp_path):
    frames = np.full((2, 36, 64, 3), 255, np.uint8)
    frames[:, :, :8] = 0  # a dark band at the left edge, outside any centre square
    clip = sample_clip(encode(tmp_path / "wide.mp4", frames, 10), 18, lambda n: [0])
    assert clip.frames.shape == (1, 18, 32, 3)
    assert clip.frames[0, :, :3].max() < 60 and clip.frames[0, :, 5:].min() > 200


def test_a_frame_wider_than_max_aspect_keeps_exactly_the_engines_window(tmp_path):
    # Grey stripes: with flat chroma, 4:2:0 chroma siting cannot differ between the two crops.
    stripes = ((np.arange(640) * 37) % 256).astype(np.uint8)
    frames = np.broadcast_to(stripes[None, None, :, None], (2, 200, 640, 3)).copy()
    path = encode(tmp_path / "pano.mp4", frames, 10)
    whole = decode(path, 640, 200)  # unscaled
    clip = sample_clip(path, 200, lambda n: [0], crop="none", max_aspect=2.0)
    geometry = stored_geometry(200, 640, Framing(200, "none", 2.0))
    top, left, height, width = geometry.crop_box
    assert clip.frames.shape[1:3] == geometry.hw == (200, 400) and (top, left) == (0, 120)
    difference = np.abs(clip.frames[0].astype(int) - whole[0, :, left : left + width])
    assert difference.max() <= 2


def test_indices_past_the_end_repeat_the_last_frame_and_are_counted(clip30):
    clip = sample_clip(clip30, 16, lambda n: range(38, 44))
    assert clip.indices == [38, 39, 39, 39, 39, 39] and clip.padded == 4
    assert indices_of(clip) == clip.indices


def test_decode_window_seeks_to_grid_frames(clip30):
    clip = decode_window(clip30, [25, 30, 30, 33], Framing(16), rate=30)
    assert clip.indices == indices_of(clip) == [25, 30, 30, 33] and clip.padded == 0
    past = decode_window(clip30, [36, 39, 45, 50], Framing(16), rate=30)
    assert past.indices == [36, 39, 39, 39] and past.padded == 2


def test_decode_window_resamples_other_rates_to_the_grid(tmp_path):
    path = encode(tmp_path / "c25.mp4", index_frames(60, 48, 64), 25)
    grid = [0, 6, 12, 30, 42]
    clip = decode_window(path, grid, Framing(16), rate=30)
    # grid slot i shows the 25 fps frame nearest to i/30 s (what `ffmpeg -r 30` extraction stores)
    assert indices_of(clip) == [round(i * 25 / 30) for i in grid]


def test_decode_window_honours_a_start_time_offset(clip30):
    clip = decode_window(
        clip30, [0, 3], Framing(16), rate=30, start_time=0.5
    )  # index 0 is t=0.5 s = frame 15
    assert indices_of(clip) == [15, 18]


def test_rotation_metadata_is_applied_and_orig_hw_is_the_displayed_size(clip30):
    rotated = add_rotation(clip30, 90)
    assert probe(rotated).rotation in (90, 270)
    clip = sample_clip(rotated, 16, lambda n: [5])
    assert clip.orig_hw == (64, 48)
    assert indices_of(clip) != [5]  # the index code is now left/right instead of top/bottom
    frame = clip.frames[0]
    assert 5 in (read_index(np.rot90(frame, k=1)), read_index(np.rot90(frame, k=-1)))  # pixels were turned


def test_odd_frame_sizes_decode(tmp_path):
    path = encode(tmp_path / "odd.webm", index_frames(9, 61, 97), 12, "vp9")
    clip = sample_clip(path, 33, lambda n: range(n))
    assert clip.frames.shape == (9, 33, 52, 3) and clip.orig_hw == (61, 97)  # 33 * 97 / 61 = 52.5-
    assert clip.frames.shape[1:3] == stored_geometry(61, 97, Framing(33)).hw
    assert indices_of(clip) == list(range(9))


def test_variable_frame_rate_counts_frames_not_time(tmp_path):
    vf = "setpts='N/30/TB+if(gt(N,10),0.5/TB,0)+if(gt(N,20),0.7/TB,0)'"
    path = encode(tmp_path / "vfr.mp4", index_frames(30, 48, 64), 30, vf=vf)
    clip = sample_clip(path, 16, lambda n: range(n))
    assert clip.decoded == 30 and indices_of(clip) == list(range(30))  # no duplicated or dropped frames


def test_damaged_and_empty_files_raise_one_line_errors(tmp_path):
    damaged = corrupt(encode(tmp_path / "bad.webm", index_frames(30, 72, 96), 12, "vp9"))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 50)
    for path, reason in (
        (damaged, "cannot decode"),
        (empty, "empty file"),
        (junk, "cannot decode"),
        (tmp_path / "gone.mp4", "no such file"),
    ):
        with pytest.raises(VideoError, match=reason) as caught:
            sample_clip(path, 16, lambda n: [0])
        assert "\n" not in str(caught.value)


def test_plain_decode_still_scales_every_frame(clip30):
    frames = decode(clip30, 32, 24)
    assert frames.shape == (40, 24, 32, 3)


def ffmpeg_rgb(path, size: int) -> np.ndarray:
    """ffmpeg's own answer: the same centre square and scale, RGB by `-pix_fmt rgb24`, every frame."""
    side = "min(iw\\,ih)"
    vf = f"crop={side}:{side},scale={size}:{size}:flags=bilinear"
    cmd = [
        ffmpeg_exe(),
        "-v",
        "error",
        "-i",
        str(path),
        "-vf",
        vf,
        "-pix_fmt",
        "rgb24",
        "-f",
        "rawvideo",
        "-",
    ]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, size, size, 3)


@pytest.mark.parametrize(
    ("codec", "suffix", "size"), [("h264", "mp4", 40), ("vp9", "webm", 224), ("h264", "mp4", 33)]
)
def test_colours_match_ffmpegs_own_rgb_conversion(tmp_path, codec, suffix, size):
    path = encode(tmp_path / f"colour.{suffix}", colour_block_frames(6, 72, 96), 12, codec)
    reference = ffmpeg_rgb(path, size)
    assert reference.min() == 0 and reference.max() == 255  # the fixture really is saturated
    clip = sample_clip(path, size, lambda n: [1, 4, 5], crop="centre")
    difference = np.abs(clip.frames.astype(int) - reference[[1, 4, 5]])
    assert difference.max() <= 2  # the contract; measured: 0 (the same swscale step as the reference)


@pytest.mark.parametrize(("codec", "suffix"), [("h264", "mp4"), ("vp9", "webm"), ("h264", "mkv")])
def test_container_frame_count_is_the_decoded_count(tmp_path, codec, suffix):
    path = encode(tmp_path / f"n.{suffix}", index_frames(23, 48, 64), 12, codec)
    assert frame_count(path) == 23 == sample_clip(path, 16, lambda n: [0]).decoded


def test_a_wrong_container_count_never_changes_the_frames_chosen(tmp_path, clip30, monkeypatch):
    def rule(n):  # like the adapters: refuses a start past the end
        if n < 30:
            raise ValueError("start past the end")
        return [30, n // 2, n - 1, n + 2]

    exact = sample_clip(clip30, 16, rule)
    assert exact.decoded == 40 and exact.indices == indices_of(exact) == [30, 20, 39, 39]
    for claim in (None, 12, 39, 41, 400):
        monkeypatch.setattr(video, "frame_count", lambda path, claim=claim: claim)
        clip = sample_clip(clip30, 16, rule)
        assert (clip.indices, clip.padded, clip.decoded) == (exact.indices, exact.padded, exact.decoded)
        np.testing.assert_array_equal(clip.frames, exact.frames)
    monkeypatch.setattr(video, "frame_count", lambda path: 40)  # a right count: the refusal stands
    with pytest.raises(ValueError, match="past the end"):
        sample_clip(clip30, 16, lambda n: rule(n - 20))


def test_an_edit_list_that_hides_frames_is_caught_by_the_decoders_count(tmp_path, clip30):
    cut = tmp_path / "cut.mp4"  # a stream copy from 0.5 s: all 40 samples stored, the first 15 hidden
    cmd = [ffmpeg_exe(), "-v", "error", "-ss", "0.5", "-i", str(clip30), "-c", "copy", str(cut)]
    subprocess.run(cmd, check=True)
    assert frame_count(cut) == 40
    clip = sample_clip(cut, 16, lambda n: [0, n - 1])
    assert clip.decoded == 25 and indices_of(clip) == [15, 39]


def test_containers_without_a_readable_count_fall_back_to_ffmpeg(tmp_path):
    path = encode(tmp_path / "a.avi", index_frames(21, 48, 64), 12)
    assert frame_count(path) is None
    clip = sample_clip(path, 16, lambda n: [n // 2, n - 1])
    assert clip.decoded == 21 and indices_of(clip) == [10, 20]


def test_selection_joins_runs_of_frames():
    assert video._selection([0, 1, 2, 5, 7, 8]) == "between(n,0,2)+eq(n,5)+between(n,7,8)"
