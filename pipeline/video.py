"""Video decoding through ffmpeg (ffmpeg-python), one ffmpeg process per video.

The ffmpeg binary comes from PATH or, when absent, from the `imageio-ffmpeg` wheel. That wheel
ships no `ffprobe`, so stream properties are read from `ffmpeg -i`'s own stream report; the
decoders below read it from the stderr of the decoding process itself, so a clip costs exactly one
ffmpeg process (no separate probe).

Two ways to cut a clip, both doing the spatial work inside the ffmpeg filter graph (centre square,
then scale to `size x size`, then RGB), so the pipe carries only small frames:

- `sample_clip`: decode every frame, then pick frames by index in numpy. The frame count is the
  number of frames the decoder produced, which is what "frame n" means for variable frame rate
  files too. For short clips whose length is unknown up front (SSv2, Diving48, folders).
- `decode_window`: frame indices on a fixed rate grid (`start_time + index / rate` seconds) inside a
  long video (Ego4D canonical videos, AVA movies). Seeks close to the first index, resamples to the
  grid with the `fps` filter (so a 25 fps or variable-rate file still maps index -> time like a
  `-r 30` extraction) and keeps only the wanted grid slots with `select`.

Both pad a clip that runs past the end of the video by repeating the last decoded frame and say how
many frames they padded. ffmpeg applies rotation metadata (autorotate); `orig_hw` is the displayed
(rotated) size, the frame every annotation of a rotated video refers to.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import ffmpeg
import numpy as np


class VideoError(Exception):
    """A video cannot be probed or decoded; the message is one line naming the file."""


@cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary to run."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class VideoInfo:
    width: int  # as stored, before any rotation
    height: int
    fps: float
    rotation: int = 0  # degrees of the display matrix (0, 90, 180, 270), applied when decoding
    duration: float = 0.0  # seconds, from the container header (0 when unknown)

    @property
    def display_hw(self) -> tuple[int, int]:
        """(height, width) of the frames as displayed, i.e. after rotation."""
        if self.rotation % 180 == 90:
            return self.width, self.height
        return self.height, self.width


@dataclass(frozen=True)
class Clip:
    """Frames cut from one video, with where each came from."""

    frames: np.ndarray  # uint8 [T, size, size, 3]
    indices: list[int]  # source frame number of each output frame (after clamping to the video)
    padded: int  # trailing frames that repeat the last decoded frame because the video ended
    info: VideoInfo
    decoded: int  # frames the decoder produced (sample_clip: the video's length in frames)

    @property
    def orig_hw(self) -> tuple[int, int]:
        return self.info.display_hw


_STREAM = re.compile(r"Stream #\d+:\d+.*?: Video: .*?(\d{2,5})x(\d{2,5})")
_FPS = re.compile(r"([\d.]+)(k?) (?:fps|tbr)")
_ROTATION = re.compile(r"rotation of (-?[\d.]+) degrees")
_DURATION = re.compile(r"Duration: (\d+):(\d{2}):(\d{2}(?:\.\d+)?)")
_PREFIX = re.compile(r"^(\[[^\]]*\] )+")
_LEVEL = re.compile(r"^(\[[^\]]*\] )*\[(?:info|verbose|debug|trace)\] ")
_ERROR_LINE = re.compile(r"\[(?:error|fatal|panic)\] (.*)")


def parse_stream_report(report: str) -> VideoInfo | None:
    """The first input video stream described in ffmpeg's stderr, or None when there is none."""
    info = None
    duration = 0.0
    for line in report.splitlines():
        line = _LEVEL.sub("", line)
        if line.startswith(("Output #", "Stream mapping")):
            break  # what follows describes the output, not the source
        found = _DURATION.search(line)
        if found and info is None:
            hours, minutes, seconds = found.groups()
            duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        stream = _STREAM.search(line)
        if stream and info is None:
            fps = _FPS.search(line)
            rate = float(fps.group(1)) * (1000 if fps and fps.group(2) else 1) if fps else 0.0
            info = VideoInfo(int(stream.group(1)), int(stream.group(2)), rate, 0, duration)
            continue
        rotation = _ROTATION.search(line)
        if rotation and info is not None and info.rotation == 0:
            degrees = int(round(float(rotation.group(1)))) % 360
            info = VideoInfo(info.width, info.height, info.fps, degrees, info.duration)
    return info


def probe(path: Path | str) -> VideoInfo:
    """Width, height and frame rate of the first video stream of `path`."""
    if not Path(path).is_file():
        raise VideoError(f"{path}: no such file")
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    info = parse_stream_report(result.stderr)
    if info is None:
        last = result.stderr.strip().splitlines()[-1:] or ["no output"]
        raise VideoError(f"{path}: no video stream ({last[0]})")
    return info


def decode(path: Path | str, width: int, height: int) -> np.ndarray:
    """Every frame of `path` as uint8 `[N, height, width, 3]`, scaled to `width x height`."""
    stream = ffmpeg.input(str(path)).video.filter("scale", width, height)
    frames, _ = _run(path, stream, width, height, max_frames=None)
    return frames


def _last_line(text: str) -> str:
    """The most telling line of a failed ffmpeg run: its first error line, else its last line."""
    lines = [_PREFIX.sub("", line).strip() for line in text.strip().splitlines() if line.strip()]
    lines = [line.removeprefix("[error] ").removeprefix("[fatal] ") for line in lines]
    errors = [line for line in lines if "error" in line.lower() or "invalid" in line.lower()]
    return (errors or lines or ["ffmpeg failed"])[0]


def _run(
    path: Path | str,
    stream: ffmpeg.nodes.FilterableStream,
    width: int,
    height: int,
    max_frames: int | None,
    pix_fmt: str = "rgb24",
) -> tuple[np.ndarray, str]:
    """Run one ffmpeg process for `stream`; return its frames `[N,height,width,3]` and its stderr.

    `-xerror` turns a decode error (a corrupt or truncated file) into a failure instead of a silently
    shorter clip; `fps_mode passthrough` stops ffmpeg from duplicating or dropping frames to make a
    variable-rate input constant-rate.
    """
    if not Path(path).is_file():
        raise VideoError(f"{path}: no such file")
    if Path(path).stat().st_size == 0:
        raise VideoError(f"{path}: empty file")
    output_args: dict = {"format": "rawvideo", "pix_fmt": pix_fmt, "fps_mode": "passthrough"}
    if max_frames is not None:
        output_args["frames:v"] = max_frames
    # level+info tags every stderr line with its level, so an error the demuxer logs without
    # failing (a damaged WebM cluster ends the stream early with exit status 0) is still caught.
    flags = ("-hide_banner", "-nostats", "-loglevel", "level+info", "-xerror")
    command = stream.output("pipe:", **output_args).global_args(*flags)
    try:
        out, err = command.run(cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as error:
        raise VideoError(
            f"{path}: cannot decode ({_last_line(error.stderr.decode(errors='replace'))})"
        ) from None
    report = err.decode(errors="replace")
    for line in report.splitlines():
        damaged = _ERROR_LINE.search(line)
        if damaged:
            raise VideoError(f"{path}: cannot decode ({damaged.group(1).strip()})")
    frames = np.frombuffer(out, dtype=np.uint8)
    frame_bytes = width * height * 3 // (2 if pix_fmt == "yuv420p" else 1)
    if frames.size == 0:
        raise VideoError(f"{path}: decoded no frames")
    if frames.size % frame_bytes:
        raise VideoError(f"{path}: truncated frame in ffmpeg output")
    if pix_fmt == "yuv420p":
        return frames.reshape(-1, frame_bytes), report
    return frames.reshape(-1, height, width, 3), report


def _square(stream: ffmpeg.nodes.FilterableStream, size: int) -> ffmpeg.nodes.FilterableStream:
    """Centre square of the (rotated) frame, scaled to `size x size` and converted to RGB by swscale.

    Cropping before scaling is the engine's geometry (`pipeline.geometry.centre_square`), so boxes
    mapped with `centre_square` + `crop_boxes` line up with these pixels, and only the kept pixels
    are scaled.
    """
    side = "min(iw,ih)"
    return (
        stream.filter("crop", side, side)
        .filter("scale", size, size, flags="bilinear")
        .filter("format", "rgb24")
    )


def _info(path: Path | str, report: str) -> VideoInfo:
    info = parse_stream_report(report)
    if info is None:
        raise VideoError(f"{path}: no video stream in ffmpeg's report")
    return info


def _pad(
    frames: np.ndarray, wanted: Sequence[int], available: Sequence[int]
) -> tuple[np.ndarray, list[int], int]:
    """Pick `wanted` source indices out of decoded frames whose indices are `available` (sorted).

    An index past the last decoded frame takes the last frame instead (and counts as padded).
    """
    position = {index: k for k, index in enumerate(available)}
    last = len(available) - 1
    picks, used, padded = [], [], 0
    for index in wanted:
        k = position.get(index)
        if k is None:
            if index < available[-1]:
                raise VideoError(f"frame {index} was not decoded")
            k, padded = last, padded + 1
        picks.append(k)
        used.append(int(available[k]))
    return frames[picks], used, padded


def _lut(scale: float, offset: int) -> np.ndarray:
    return np.round((np.arange(256) - offset) * scale * 32).astype(np.int16)


# BT.601 limited range (swscale's default for YUV -> RGB), fixed point with 5 fractional bits so
# every intermediate fits int16: R = Y' + 1.596 V', G = Y' - 0.392 U' - 0.813 V', B = Y' + 2.017 U'.
_LUT_Y, _LUT_RV, _LUT_GU = _lut(1.164, 16), _lut(1.596, 128), _lut(-0.392, 128)
_LUT_GV, _LUT_BU = _lut(-0.813, 128), _lut(2.017, 128)


def yuv420_to_rgb(planes: np.ndarray, size: int) -> np.ndarray:
    """Packed yuv420p frames `[N, 1.5*size*size]` -> uint8 RGB `[N,size,size,3]`.

    Chroma terms are computed at chroma resolution and broadcast over each 2x2 block, which is
    several times faster than upsampling U and V first.
    """
    count, half, area = len(planes), size // 2, size * size
    luma = _LUT_Y[planes[:, :area].reshape(count, half, 2, half, 2)]
    u = planes[:, area : area + half * half].reshape(count, half, 1, half, 1)
    v = planes[:, area + half * half :].reshape(count, half, 1, half, 1)
    out = np.empty((count, half, 2, half, 2, 3), np.uint8)
    for channel, chroma in enumerate((_LUT_RV[v], _LUT_GU[u] + _LUT_GV[v], _LUT_BU[u])):
        mixed = luma + chroma
        mixed += 16  # round to nearest on the shift below
        mixed >>= 5
        np.clip(mixed, 0, 255, out=mixed)
        out[..., channel] = mixed
    return out.reshape(count, size, size, 3)


def sample_clip(path: Path | str, size: int, pick: Callable[[int], Sequence[int]]) -> Clip:
    """Decode every frame of `path` at `size x size`, then keep frames `pick(num_frames)`.

    `pick` gets the number of decoded frames and returns the source indices wanted; indices past
    the end repeat the last frame (`Clip.padded` counts them). Every frame crosses the pipe, so for
    an even `size` they cross as yuv420p (half the bytes of RGB, and no RGB conversion of frames
    that are thrown away); only the kept frames are converted to RGB, in numpy.
    """
    source = ffmpeg.input(str(path)).video
    if size % 2:
        frames, report = _run(path, _square(source, size), size, size, max_frames=None)
    else:
        side = "min(iw,ih)"
        stream = source.filter("crop", side, side).filter("scale", size, size, flags="bilinear")
        planes, report = _run(path, stream.filter("format", "yuv420p"), size, size, None, "yuv420p")
        frames = planes
    wanted = [int(i) for i in pick(len(frames))]
    if any(i < 0 for i in wanted):
        raise VideoError(f"{path}: negative frame index requested")
    chosen, used, padded = _pad(frames, wanted, range(len(frames)))
    if size % 2 == 0:
        chosen = yuv420_to_rgb(chosen, size)
    return Clip(np.ascontiguousarray(chosen), used, padded, _info(path, report), len(frames))


def decode_window(
    path: Path | str, indices: Sequence[int], size: int, rate: float, start_time: float = 0.0, lead: int = 3
) -> Clip:
    """Frames `indices` of the grid `time = start_time + index / rate` seconds, at `size x size`.

    The process seeks to a grid point `lead` slots before the first wanted index (input seeking is
    keyframe-fast and frame-accurate), resamples to the grid with the `fps` filter, keeps the wanted
    slots with `select` before any scaling, and stops after the last one.
    """
    wanted = [int(i) for i in indices]
    if not wanted or min(wanted) < 0:
        raise VideoError(f"{path}: frame indices must be non-negative and not empty")
    unique = sorted(set(wanted))
    base = max(0, unique[0] - lead)
    seek = start_time + base / rate
    source = ffmpeg.input(str(path), ss=f"{seek:.6f}") if seek > 0 else ffmpeg.input(str(path))
    # start_time=0 anchors the grid at the seek point even when the first kept frame is a little
    # late (a source rate that is not a multiple of `rate`); the slot before it repeats that frame.
    grid = source.video.filter("fps", fps=rate, start_time=0, round="near")
    chosen = "+".join(f"eq(n,{index - base})" for index in unique)
    stream = _square(grid.filter("select", chosen), size)
    frames, report = _run(path, stream, size, size, max_frames=len(unique))
    frames, used, padded = _pad(frames, wanted, unique[: len(frames)])
    return Clip(np.ascontiguousarray(frames), used, padded, _info(path, report), len(set(used)))
