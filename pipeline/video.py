"""Video decoding through ffmpeg (ffmpeg-python), one ffmpeg process per video.

The ffmpeg binary comes from PATH or, when absent, from the `imageio-ffmpeg` wheel. That wheel
ships no `ffprobe`, so stream properties are read from `ffmpeg -i`'s own stream report; the
decoders below read it from the stderr of the decoding process itself (no separate probe).

Two ways to cut a clip. Both keep the wanted frames with `select` *before* any spatial work, then
do the spatial work inside the ffmpeg filter graph (the kept window, scale to short side `size`
and conversion to RGB in one swscale step), so only kept frames are scaled and converted, the pipe
carries only kept frames, and the colours are exactly ffmpeg's own `-pix_fmt rgb24` conversion:

- `sample_clip`: frames picked by decoded index from the video's length in frames (what "frame n"
  means for variable frame rate files too), for short clips (SSv2, Diving48, folders). The length
  is read up front from the container (`frame_count`: the MP4 sample table, or the WebM/Matroska
  blocks), and checked against the number of frames the same ffmpeg process reports it decoded;
  in the rare case they differ (an edit list that hides frames, an exotic file) the clip is cut
  again from the decoder's count, so the frames chosen are always those of the exact count.
- `decode_window`: frame indices on a fixed rate grid (`start_time + index / rate` seconds) inside a
  long video (Ego4D canonical videos, AVA movies). Seeks close to the first index, resamples to the
  grid with the `fps` filter (so a 25 fps or variable-rate file still maps index -> time like a
  `-r 30` extraction) and keeps only the wanted grid slots with `select`.

Both pad a clip that runs past the end of the video by repeating the last decoded frame and say how
many frames they padded. ffmpeg applies rotation metadata (autorotate); `orig_hw` is the displayed
(rotated) size, the frame every annotation of a rotated video refers to.
"""

from __future__ import annotations

import mmap
import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import IO

import ffmpeg
import numpy as np

from pipeline.geometry import Framing, stored_geometry


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

    frames: np.ndarray  # uint8 [T, H, W, 3], short side `size`
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
# ffmpeg's end-of-run input statistics (verbose level): what the demuxer read and the decoder made
_DECODED = re.compile(r"Input stream #\d+:\d+ \(video\): .*?(\d+) frames decoded")
_PACKETS = re.compile(r"Input stream #\d+:\d+ \(video\): (\d+) packets read")

# Input options for every decode: no audio, subtitle or data streams are demuxed or decoded.
_VIDEO_ONLY = {"an": None, "sn": None, "dn": None}
SEEK_LEAD = 3  # decode_window seeks this many grid slots before the first wanted frame
# Threads per ffmpeg process (decoder and filter graph). The engine runs one ffmpeg per video and
# one video per worker, so single-threaded processes keep every core busy without the thread
# hand-offs that cost ffmpeg ~5-10% more CPU per clip here; 0 means ffmpeg's own choice (one per
# core), which is faster for a lone process decoding a long, large video.
THREADS_ENV = "PVIT_FFMPEG_THREADS"


def _threads() -> str:
    value = os.environ.get(THREADS_ENV, "1")
    if not value.isdigit():
        raise VideoError(f"{THREADS_ENV} must be a non-negative integer, got {value!r}")
    return value


def _input(path: Path | str, **options: str) -> ffmpeg.nodes.FilterableStream:
    """The first video stream of `path` as a filter-graph input (video only, `_threads()` threads)."""
    return ffmpeg.input(str(path), threads=_threads(), **_VIDEO_ONLY, **options).video


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


# --- frame count from the container ------------------------------------------------------------


class _Malformed(Exception):
    """A container structure that does not parse; the frame count is then left to the decoder."""


def frame_count(path: Path | str) -> int | None:
    """Frames of the first video stream as the container states them, without decoding; None if unknown.

    MP4/MOV: the sample count of the first video track's sample table (`stsz`/`stz2`). WebM and
    Matroska keep no count, so the blocks (and laced frames) of the first video track are counted.
    For ordinary files this is the number of frames ffmpeg decodes, but it is a claim, not a fact
    (an edit list can hide samples, a codec can store frames it never shows): callers check it.
    """
    try:
        with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data[:4] == b"\x1a\x45\xdf\xa3":
                return _matroska_frame_count(data)
            if data[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide"):
                return _mp4_frame_count(data)
    except (OSError, ValueError, IndexError, struct.error, _Malformed):
        pass  # unreadable, empty or damaged: the decoder will say what is wrong
    return None


def _boxes(data: mmap.mmap, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """`(type, payload start, payload end)` of each ISO-BMFF box laid out in `data[start:end]`."""
    while start + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, start)
        header = 8
        if size == 1:  # 64-bit size follows the type
            size, header = struct.unpack_from(">Q", data, start + 8)[0], 16
        elif size == 0:  # the box runs to the end of its parent
            size = end - start
        if size < header or start + size > end:
            raise _Malformed(kind)
        yield kind, start + header, start + size
        start += size


def _child(data: mmap.mmap, span: tuple[int, int] | None, *path: bytes) -> tuple[int, int] | None:
    """Payload span of the first box reached by following the box types `path` from `span`."""
    for kind in path:
        if span is None:
            return None
        span = next(((s, e) for k, s, e in _boxes(data, *span) if k == kind), None)
    return span


def _mp4_frame_count(data: mmap.mmap) -> int | None:
    moov = _child(data, (0, len(data)), b"moov")
    if moov is None or _child(data, moov, b"mvex") is not None:
        return None  # no index yet, or a fragmented file whose samples live in `moof` boxes
    for kind, start, end in _boxes(data, *moov):
        if kind != b"trak":
            continue
        handler = _child(data, (start, end), b"mdia", b"hdlr")
        if handler is None or data[handler[0] + 8 : handler[0] + 12] != b"vide":
            continue  # audio, timecode, hint... tracks
        stbl = _child(data, (start, end), b"mdia", b"minf", b"stbl")
        sizes = _child(data, stbl, b"stsz") or _child(data, stbl, b"stz2")
        if sizes is None:
            return None
        # stsz: version+flags, sample_size, sample_count; stz2: version+flags, field size, count
        count = struct.unpack_from(">I", data, sizes[0] + 8)[0]
        return count or None
    return None


_SEGMENT, _CLUSTER, _BLOCK_GROUP, _TRACKS = 0x18538067, 0x1F43B675, 0xA0, 0x1654AE6B
_SIMPLE_BLOCK, _BLOCK, _TRACK_ENTRY, _TRACK_NUMBER, _TRACK_TYPE = 0xA3, 0xA1, 0xAE, 0xD7, 0x83
# Masters whose children are walked in place rather than skipped (so unknown sizes are fine too).
_WALK_INTO = {_SEGMENT, _CLUSTER, _BLOCK_GROUP}


def _ebml_id(data: mmap.mmap, pos: int) -> tuple[int, int]:
    """Element ID at `pos` (length marker kept, as IDs are written) and the position after it."""
    length = 9 - data[pos].bit_length()
    if not 1 <= length <= 4:
        raise _Malformed(pos)
    return int.from_bytes(data[pos : pos + length], "big"), pos + length


def _ebml_size(data: mmap.mmap, pos: int) -> tuple[int | None, int]:
    """Variable-length integer at `pos` (None for the all-ones "unknown size") and the position after."""
    length = 9 - data[pos].bit_length()
    if not 1 <= length <= 8:
        raise _Malformed(pos)
    mask = (1 << (7 * length)) - 1
    value = int.from_bytes(data[pos : pos + length], "big") & mask
    return (None if value == mask else value), pos + length


def _elements(data: mmap.mmap, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """`(id, payload start, payload end)` of the EBML elements in `data[start:end]`, walking into
    Segment, Cluster and BlockGroup instead of over them."""
    pos = start
    while pos < end:
        ident, pos = _ebml_id(data, pos)
        size, pos = _ebml_size(data, pos)
        if ident in _WALK_INTO:
            continue
        if size is None or pos + size > end:
            raise _Malformed(ident)  # a leaf of unknown size, or a truncated file
        yield ident, pos, pos + size
        pos += size


def _matroska_video_track(data: mmap.mmap, start: int, end: int) -> int | None:
    """Track number of the first video TrackEntry in the Tracks element `data[start:end]`."""
    for ident, entry_start, entry_end in _elements(data, start, end):
        if ident != _TRACK_ENTRY:
            continue
        fields = {i: int.from_bytes(data[s:e], "big") for i, s, e in _elements(data, entry_start, entry_end)}
        if fields.get(_TRACK_TYPE) == 1:
            return fields.get(_TRACK_NUMBER)
    return None


def _matroska_frame_count(data: mmap.mmap) -> int | None:
    video: int | None = None
    counts: dict[int, int] = {}
    for ident, start, end in _elements(data, 0, len(data)):
        if ident == _TRACKS and video is None:
            video = _matroska_video_track(data, start, end)
        elif ident in (_SIMPLE_BLOCK, _BLOCK):
            track, pos = _ebml_size(data, start)
            laced = data[pos + 2] & 0x06  # flags after the track and a 16-bit timecode
            if track is not None:  # None: an all-ones track number, which no track has
                counts[track] = counts.get(track, 0) + (data[pos + 3] + 1 if laced else 1)
    return counts.get(video) if video is not None else None


# --- running ffmpeg ------------------------------------------------------------------------------


def decode(path: Path | str, width: int, height: int) -> np.ndarray:
    """Every frame of `path` as uint8 `[N, height, width, 3]`, scaled to `width x height`."""
    stream = _input(path).filter("scale", width, height)
    frames, _ = _run(path, stream, width * height * 3)
    if frames.size % (width * height * 3):
        raise VideoError(f"{path}: truncated frame in ffmpeg output")
    return frames.reshape(-1, height, width, 3)


def _last_line(text: str) -> str:
    """The most telling line of a failed ffmpeg run: its first error line, else its last line."""
    lines = [_PREFIX.sub("", line).strip() for line in text.strip().splitlines() if line.strip()]
    lines = [line.removeprefix("[error] ").removeprefix("[fatal] ") for line in lines]
    errors = [line for line in lines if "error" in line.lower() or "invalid" in line.lower()]
    return (errors or lines or ["ffmpeg failed"])[0]


def _check_file(path: Path | str) -> None:
    if not Path(path).is_file():
        raise VideoError(f"{path}: no such file")
    if Path(path).stat().st_size == 0:
        raise VideoError(f"{path}: empty file")


def _failure(report: str) -> str:
    """Why a `level+verbose` ffmpeg run failed: its first error-level line (verbose statistics such
    as "0 decode errors" would fool `_last_line`), else `_last_line`."""
    for line in report.splitlines():
        found = _ERROR_LINE.search(line)
        if found:
            return found.group(1).strip()
    return _last_line(report)


def _check_report(path: Path | str, report: str) -> None:
    """Raise for an error ffmpeg logged without failing (a damaged WebM cluster ends the stream early
    with exit status 0)."""
    for line in report.splitlines():
        damaged = _ERROR_LINE.search(line)
        if damaged:
            raise VideoError(f"{path}: cannot decode ({damaged.group(1).strip()})")


_FLAGS = ("-hide_banner", "-nostdin", "-nostats", "-xerror")


def _read_into(stream: IO[bytes], buffer: np.ndarray) -> int:
    """Fill `buffer` from `stream` until it is full or the stream ends; return the bytes read."""
    view, filled = buffer.data, 0
    while filled < len(buffer):
        got = stream.readinto(view[filled:])  # type: ignore[attr-defined]  # Popen's stdout is a BufferedReader
        if not got:
            break
        filled += got
    return filled


def _execute(path: Path | str, args: list[str], expected: int) -> tuple[np.ndarray, str]:
    """Run ffmpeg `args`; return its stdout as uint8 and its stderr.

    stdout is read straight into a numpy buffer sized for the `expected` bytes (grown if more come),
    which saves joining the pipe's chunks and copying them again; stderr goes to a temporary file,
    so neither pipe can fill up and stall ffmpeg while the other is read.
    """
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        assert process.stdout is not None
        with process.stdout:
            buffer = np.empty(expected, np.uint8)
            filled = _read_into(process.stdout, buffer)
            more = process.stdout.read() if filled == expected else b""
        code = process.wait()
        log.seek(0)
        report = log.read().decode(errors="replace")
    if code != 0:
        raise VideoError(f"{path}: cannot decode ({_failure(report)})")
    _check_report(path, report)
    if more:
        return np.concatenate([buffer, np.frombuffer(more, np.uint8)]), report
    return buffer[:filled], report


def _run(
    path: Path | str,
    stream: ffmpeg.nodes.FilterableStream,
    buffer_bytes: int,
    max_frames: int | None = None,
    allow_empty: bool = False,
) -> tuple[np.ndarray, str]:
    """Run one ffmpeg process for `stream`; return its raw RGB output (flat uint8) and its stderr.

    `buffer_bytes` is the size of the expected output when known, else an estimate that only sizes
    the read buffer (the caller shapes the frames, e.g. from the source size in the report).
    `max_frames` stops ffmpeg after that many output frames.

    `-xerror` turns a decode error (a corrupt or truncated file) into a failure instead of a silently
    shorter clip; `fps_mode passthrough` stops ffmpeg from duplicating or dropping frames to make a
    variable-rate input constant-rate. Verbose logging adds the end-of-run count of decoded frames.
    `level+` tags every stderr line with its level, so errors logged without failing are found.
    """
    _check_file(path)
    output_args: dict = {"format": "rawvideo", "pix_fmt": "rgb24", "fps_mode": "passthrough"}
    if max_frames is not None:
        output_args["frames:v"] = max_frames
    threads = _threads()
    flags = (
        *_FLAGS,
        "-filter_threads",
        threads,
        "-filter_complex_threads",
        threads,
        "-loglevel",
        "level+verbose",
    )
    command = stream.output("pipe:", **output_args).global_args(*flags)
    frames, report = _execute(path, command.compile(cmd=ffmpeg_exe()), buffer_bytes)
    if frames.size == 0 and not allow_empty:
        raise VideoError(f"{path}: decoded no frames")
    return frames, report


def _packet_count(path: Path | str) -> int:
    """Packets of the first video stream, from a demux-only ffmpeg pass (no decoding): the frame
    count of a container `frame_count` cannot read, to be checked against the decoder like it."""
    _check_file(path)
    command = [ffmpeg_exe(), *_FLAGS, "-loglevel", "level+verbose", "-an", "-sn", "-dn", "-i", str(path)]
    command += ["-map", "0:v:0", "-c", "copy", "-f", "null", "-"]
    result = subprocess.run(command, capture_output=True, text=True, errors="replace")
    if result.returncode != 0:
        raise VideoError(f"{path}: cannot decode ({_failure(result.stderr)})")
    _check_report(path, result.stderr)
    found = _PACKETS.search(result.stderr)
    return int(found.group(1)) if found else 0


def _decoded(path: Path | str, report: str) -> int:
    found = _DECODED.search(report)
    if found is None:
        raise VideoError(f"{path}: ffmpeg did not report how many frames it decoded")
    return int(found.group(1))


def _framing(stream: ffmpeg.nodes.FilterableStream, framing: Framing):
    """The kept window of the (rotated) frame, scaled to short side `size` and converted to RGB.

    The integer rules are those of `pipeline.geometry.stored_geometry`, so boxes mapped through its
    window line up with these pixels: the window is truncated to whole pixels and centred with
    `trunc((iw-ow)/2)` (`exact=1`: no rounding of the offset to the chroma grid), and the scale
    filter's `-1` side is `av_rescale`, i.e. rounded half up. Scaling and RGB conversion are one
    swscale step, exactly what `ffmpeg -vf crop=...,scale=...:flags=bilinear -pix_fmt rgb24` makes.
    """
    size, aspect = framing.size, framing.max_aspect
    if framing.crop == "centre":
        width = height = "min(iw,ih)"
    else:
        width, height = f"min(iw,trunc(ih*{aspect!r}))", f"min(ih,trunc(iw*{aspect!r}))"
    return (
        stream.filter("crop", width, height, "trunc((iw-ow)/2)", "trunc((ih-oh)/2)", exact=1)
        .filter("scale", f"if(gte(iw,ih),-1,{size})", f"if(gte(iw,ih),{size},-1)", flags="bilinear")
        .filter("format", "rgb24")
    )


def _shape_frames(path: Path | str, flat: np.ndarray, report: str, framing: Framing | None) -> np.ndarray:
    """ffmpeg's flat RGB output as `[N, H, W, 3]`, with `H, W` from the source size in its report."""
    height, width = _info(path, report).display_hw
    out_h, out_w = (height, width) if framing is None else stored_geometry(height, width, framing).hw
    frame_bytes = out_h * out_w * 3
    if flat.size % frame_bytes:
        raise VideoError(f"{path}: ffmpeg's output is not a whole number of {out_w}x{out_h} frames")
    return flat.reshape(-1, out_h, out_w, 3)


def _selection(indices: Sequence[int]) -> str:
    """A `select` expression true for the sorted, distinct frame numbers `indices`: runs of
    consecutive numbers become one `between` term, so even "every frame" stays short."""
    terms, start = [], 0
    for k in range(1, len(indices) + 1):
        if k == len(indices) or indices[k] != indices[k - 1] + 1:
            first, last = indices[start], indices[k - 1]
            terms.append(f"eq(n,{first})" if first == last else f"between(n,{first},{last})")
            start = k
    return "+".join(terms)


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
    if picks == list(range(len(frames))):
        return frames, used, padded  # every decoded frame once, in order: no copy needed
    return frames[picks], used, padded


# --- cutting clips -------------------------------------------------------------------------------


def _wanted(path: Path | str, pick: Callable[[int], Sequence[int]], count: int) -> list[int]:
    wanted = [int(i) for i in pick(count)]
    if not wanted:
        raise VideoError(f"{path}: no frames requested")
    if min(wanted) < 0:
        raise VideoError(f"{path}: negative frame index requested")
    return wanted


def _estimate(framing: Framing | None) -> int:
    """Bytes of one output frame at the widest the framing allows (sizes the read buffer only)."""
    if framing is None:
        return 640 * 480 * 3
    size = framing.size
    return size * int(size * (1.0 if framing.crop == "centre" else framing.max_aspect) + 1) * 3


def _cut(
    path: Path | str, framing: Framing | None, wanted: list[int], claimed: int
) -> tuple[np.ndarray, list[int], str, int]:
    """Decode every frame of `path`, keeping frames `wanted` (those that exist) in one process.

    Returns the kept frames (sorted, distinct), their indices, ffmpeg's report and how many frames
    the decoder produced. The whole file is decoded even after the last kept frame: the count is
    what proves that the indices were chosen from the right length.
    """
    unique = sorted(set(wanted))
    source = _input(path)
    selected = source.filter("select", _selection(unique))
    stream = selected.filter("format", "rgb24") if framing is None else _framing(selected, framing)
    expected = sum(index < claimed for index in unique)
    flat, report = _run(path, stream, _estimate(framing) * expected, allow_empty=True)
    decoded = _decoded(path, report)
    frames = _shape_frames(path, flat, report, framing) if flat.size else flat.reshape(0, 1, 1, 3)
    kept = [index for index in unique if index < decoded]
    if len(frames) != len(kept):
        raise VideoError(f"{path}: kept {len(frames)} frames, expected {len(kept)} of {decoded}")
    return frames, kept, report, decoded


def sample_clip(
    path: Path | str,
    size: int | None,
    pick: Callable[[int], Sequence[int]],
    crop: str = "none",
    max_aspect: float = 2.0,
) -> Clip:
    """Frames `pick(num_frames)` of `path`, where frame n is the n-th decoded frame, at short side
    `size` (the framing of `pipeline.geometry.stored_geometry`: `crop`, `max_aspect`); `size=None`
    keeps the displayed frame as it is (the synthetic sources, whose label maps are pixel-aligned with
    it: the engine then frames video and labels alike).

    `pick` gets the number of frames and returns the source indices wanted; indices past the end
    repeat the last frame (`Clip.padded` counts them). `pick` may be called more than once (with
    the container's count, then with the decoder's if that differs), so it must be a pure function
    of the count: its answer for the true count is what the clip holds.
    """
    _check_file(path)
    framing = None if size is None else Framing(size, crop, max_aspect)
    claimed = frame_count(path)
    if claimed is None:
        claimed = _packet_count(path)
    try:
        wanted: list[int] | None = _wanted(path, pick, claimed)
    except Exception:
        # The claimed count is unchecked, and a wrong one must not make `pick` refuse the video
        # ("start frame past the end"): decode for the true count, and ask `pick` again below.
        wanted = None
    frames, kept, report, decoded = _cut(path, framing, wanted or [0], claimed)
    if decoded == 0:
        raise VideoError(f"{path}: decoded no frames")
    if wanted is None or decoded != claimed:  # choose from the decoder's count (re-raises if `pick` must)
        wanted = _wanted(path, pick, decoded)
        frames, kept, report, again = _cut(path, framing, wanted, decoded)
        if again != decoded:
            raise VideoError(f"{path}: decoded {decoded} frames, then {again}")
    chosen, used, padded = _pad(frames, wanted, kept)
    return Clip(np.ascontiguousarray(chosen), used, padded, _info(path, report), decoded)


def decode_window(
    path: Path | str, indices: Sequence[int], framing: Framing, rate: float, start_time: float = 0.0
) -> Clip:
    """Frames `indices` of the grid `time = start_time + index / rate` seconds, framed by `framing`
    (as `sample_clip` frames).

    The process seeks to a grid point `SEEK_LEAD` slots before the first wanted index (input seeking is
    keyframe-fast and frame-accurate), resamples to the grid with the `fps` filter, keeps the wanted
    slots with `select` before any scaling, and stops after the last one.
    """
    wanted = [int(i) for i in indices]
    if not wanted or min(wanted) < 0:
        raise VideoError(f"{path}: frame indices must be non-negative and not empty")
    unique = sorted(set(wanted))
    base = max(0, unique[0] - SEEK_LEAD)
    seek = start_time + base / rate
    source = _input(path, ss=f"{seek:.6f}") if seek > 0 else _input(path)
    # start_time=0 anchors the grid at the seek point even when the first kept frame is a little
    # late (a source rate that is not a multiple of `rate`); the slot before it repeats that frame.
    grid = source.filter("fps", fps=rate, start_time=0, round="near")
    chosen = _selection([index - base for index in unique])
    stream = _framing(grid.filter("select", chosen), framing)
    flat, report = _run(path, stream, _estimate(framing) * len(unique), max_frames=len(unique))
    frames = _shape_frames(path, flat, report, framing)
    frames, used, padded = _pad(frames, wanted, unique[: len(frames)])
    return Clip(np.ascontiguousarray(frames), used, padded, _info(path, report), len(set(used)))


# --- frames at the stored size (synthetic sources) -----------------------------------------------
