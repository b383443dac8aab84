"""Encoding samples into tar members, writing shards atomically, and reading members back.

Same inputs and config give byte-identical shards: members are encoded here (not by
webdataset's default encoders), JSON is written with sorted keys, and every tar header carries
the same fixed mtime. A shard is written under a temporary name and renamed into place, so a
reader never sees a partial tar.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import re
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.schema import DENSE_MEMBERS, META_JSON, VIDEO_NPY, frame_member
from pipeline.storage import LocalStore, Store

TAR_MTIME = 1_600_000_000  # fixed header mtime: shard bytes must not depend on when they were built


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # the first bytes of every zstd frame (RFC 8878); .npy starts \x93NUMPY
ZSTD_LEVEL = 3  # zstd's default: most of the size win for a fraction of the time of the higher levels


@functools.cache
def _zstd() -> tuple[Any, Any]:
    """This process's zstd compressor and decompressor (made once; imported only where labels are zstd)."""
    import zstandard

    return zstandard.ZstdCompressor(level=ZSTD_LEVEL), zstandard.ZstdDecompressor()


def encode_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


# The header numpy writes for plain arrays; anything else (structured dtypes) goes through np.load.
_NPY_HEADER = re.compile(
    rb"'descr':\s*'([^']+)',\s*'fortran_order':\s*(True|False),\s*'shape':\s*\(([\d,\s]*)\)"
)


def encode_label(array: np.ndarray, label_codec: str) -> bytes:
    """A label member: `.npy` bytes, zstd-compressed with `--label-codec zstd` (the same array back)."""
    data = encode_npy(array)
    return _zstd()[0].compress(data) if label_codec == "zstd" else data


def decode_npy(data: bytes | memoryview, copy: bool = True) -> np.ndarray:
    """An array from `.npy` bytes: a copy, or (`copy=False`) a view of `data` itself.

    Parses the header with a regex instead of np.load's `ast.literal_eval`: 3-5x faster than np.load
    on a BytesIO, which matters for the many small label members. A view of a writable buffer (the
    trainer's spans) is writable and costs nothing, which matters for the clip. A zstd frame (a label
    of a `--label-codec zstd` build) is decompressed first, into a writable buffer of its own.
    """
    if bytes(data[:4]) == ZSTD_MAGIC:
        data = np.frombuffer(_zstd()[1].decompress(data), dtype=np.uint8).copy().data
    if data[:6] != b"\x93NUMPY" or data[6] not in (1, 2, 3):
        raise ValueError("not an .npy payload")
    length_bytes = 2 if data[6] == 1 else 4
    start = 8 + length_bytes
    end = start + int.from_bytes(data[8:start], "little")
    header = _NPY_HEADER.search(data[start:end])
    if header is None:
        return np.load(io.BytesIO(data), allow_pickle=False)
    dtype = np.dtype(header.group(1).decode())
    shape = tuple(int(dim) for dim in header.group(3).split(b",") if dim.strip())
    count = math.prod(shape)
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=end)
    array = flat.reshape(shape, order="F" if header.group(2) == b"True" else "C")
    return array.copy() if copy else array


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_json(value: dict) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True)
class Codecs:
    """How a sample's members are encoded (the build's `--codec`, `--jpeg-quality`, `--label-codec`)."""

    video: str = "npy"  # npy | jpeg
    jpeg_quality: int = 90
    labels: str = "raw"  # raw | zstd: dense label maps (DENSE_MEMBERS); the small ones stay raw


def encode_members(
    meta: dict, video: np.ndarray, labels: dict[str, np.ndarray], codecs: Codecs
) -> dict[str, bytes]:
    """All members of one sample, by member name (without the key)."""
    members = {META_JSON: encode_json(meta)}
    if codecs.video == "npy":
        members[VIDEO_NPY] = encode_npy(video)
    else:
        for t, frame in enumerate(video):
            members[frame_member(t)] = encode_jpeg(frame, codecs.jpeg_quality)
    for name in sorted(labels):
        codec = codecs.labels if name in DENSE_MEMBERS else "raw"
        members[name] = encode_label(labels[name], codec)
    return members


def decode_video(members: Mapping[str, bytes | memoryview]) -> np.ndarray:
    """The clip `[T,H,W,3]` uint8 of a sample, whichever codec wrote it (npy: a view of its member)."""
    if VIDEO_NPY in members:
        return decode_npy(members[VIDEO_NPY], copy=False)
    frames = sorted(name for name in members if name.startswith("video.") and name.endswith(".jpg"))
    if not frames:
        raise ValueError("sample has no video member")
    return np.stack([np.asarray(Image.open(io.BytesIO(members[name])).convert("RGB")) for name in frames])


@dataclass(frozen=True)
class ShardEntry:
    """Where one sample sits in its shard: the first header's offset and the span to its end."""

    key: str
    offset: int
    size: int


def write_shard(path: Path, samples: Iterable[tuple[str, dict[str, bytes]]]) -> list[ShardEntry]:
    """Write `(key, members)` pairs to the tar `path` atomically; return each sample's byte span."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_shard_to(LocalStore(path.parent), path.name, samples).entries


@dataclass(frozen=True)
class WrittenShard:
    """A shard as written: each sample's byte span, and the tar's size and sha256."""

    entries: list[ShardEntry]
    bytes: int
    sha256: str


def write_shard_to(folder: Store, name: str, samples: Iterable[tuple[str, dict[str, bytes]]]) -> WrittenShard:
    """Write `(key, members)` pairs as the tar `name` of `folder`, whole or not at all (`Store.write_file`:
    a local temporary file, then a rename or one upload); its spans, size and sha256 come from that file."""
    # Imported here: webdataset imports torch whenever torch is installed, and readers, `verify` and
    # the CLI should not pay for that.
    import webdataset as wds

    written: list[WrittenShard] = []

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as stream:
            writer = wds.TarWriter(stream, encoder=False, mtime=TAR_MTIME)
            for key, members in samples:
                writer.write({"__key__": key, **members})
            writer.close()
        written.append(WrittenShard(index_shard(tmp), tmp.stat().st_size, file_sha256(tmp)))

    folder.write_file(name, write)
    return written[0]


def index_shard(path: Path) -> list[ShardEntry]:
    """Scan a tar's headers (no data read) and return the byte span of each sample, in order."""
    spans: dict[str, list[int]] = {}
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            key = member.name.split(".", 1)[0]
            end = member.offset_data + -(-member.size // 512) * 512
            if key in spans:
                spans[key][1] = end
            else:
                spans[key] = [member.offset, end]
    return [ShardEntry(key, start, end - start) for key, (start, end) in spans.items()]


class SpanError(ValueError):
    """A byte span that is not the tar members of one sample; the message says what is wrong."""


def _octal(field: memoryview) -> int:
    text = bytes(field).split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def span_members(data: bytearray | bytes | memoryview) -> dict[str, memoryview]:
    """The members of the one sample that `data` (its byte span in a shard) holds, as zero-copy views.

    Our shards hold plain ustar headers only (`write_shard`), so a header is parsed in place: name,
    size, type and checksum; about 10x faster than `tarfile` on a span, which the loader reads per
    sample. Anything else (an extended header, a bad checksum, a second key) is a `SpanError`.
    """
    return _keyed_span_members(data)[1]


def _keyed_span_members(data: bytearray | bytes | memoryview) -> tuple[str, dict[str, memoryview]]:
    """`span_members`, with the one key every member name of the span carries."""
    view = memoryview(data)
    members: dict[str, memoryview] = {}
    key, pos = None, 0
    while pos + 512 <= len(view) and view[pos] != 0:
        header = view[pos : pos + 512]
        stored = _octal(header[148:156])
        if stored != sum(header[:148]) + 256 + sum(header[156:]):  # the checksum field counts as spaces
            raise SpanError(f"tar header at span byte {pos}: bad checksum")
        if header[156] not in (0, ord("0")):
            raise SpanError(f"tar header at span byte {pos}: type {chr(header[156])!r} is not a plain file")
        name = bytes(header[:100]).split(b"\0", 1)[0].decode()
        prefix = bytes(header[345:500]).split(b"\0", 1)[0].decode()
        member_key, _, member = (f"{prefix}/{name}" if prefix else name).partition(".")
        if key is not None and member_key != key:
            raise SpanError(f"span holds two samples ({key}, {member_key})")
        key, size, start = member_key, _octal(header[124:136]), pos + 512
        if start + size > len(view):
            raise SpanError(f"member {name} ends after the span (truncated tar)")
        members[member] = view[start : start + size]
        pos = start + -(-size // 512) * 512
    if key is None:
        raise SpanError("no sample there")
    return key, members


def span_problem(offset: object, size: object, tar_bytes: int) -> str | None:
    """Why `offset`/`size` (manifest values) cannot be a sample's span in a tar of `tar_bytes`, or None.

    Checked before reading, so a size of 1e12 is one line, not a MemoryError: a span lies inside its tar.
    """
    whole = (int, np.integer)
    if not isinstance(offset, whole) or not isinstance(size, whole) or offset < 0 or size < 512:
        return f"offset {offset!r}, size {size!r} is not a byte span in a tar"
    if offset % 512:
        return f"offset {offset} is not on a 512-byte tar block"
    if offset + size > tar_bytes:
        return f"the span [{offset}, {offset + size}) ends after the tar's {tar_bytes} bytes"
    return None


def read_sample_span(
    handle: io.BufferedIOBase, offset: int, size: int, key: str | None = None, tar_bytes: int | None = None
) -> dict[str, memoryview]:
    """The members of the sample at byte `offset` of the open tar `handle`, checked against its manifest row.

    `SpanError` (one line) unless the span lies inside the tar (`tar_bytes`, default the file's size: one
    seek), is read whole, splits into one sample's members (`span_members`) and, given `key`, their names
    carry that key. The members are views of one writable buffer, left uninitialised before the read
    (zeroing megabytes costs ~0.3 ms a clip), so a decoded clip can be a view of it.
    """
    if tar_bytes is None:
        tar_bytes = handle.seek(0, os.SEEK_END)
    problem = span_problem(offset, size, tar_bytes)
    if problem:
        raise SpanError(problem)
    handle.seek(offset)
    data = np.empty(size, dtype=np.uint8).data
    got = handle.readinto(data)
    return span_sample(data[:got], offset, size, key)


def span_sample(
    data: bytearray | memoryview, offset: int, size: int, key: str | None = None
) -> dict[str, memoryview]:
    """The members of the sample whose span (`size` bytes at byte `offset` of its tar) `data` holds, as
    views of `data`; `SpanError` unless it is whole, splits into one sample's members and (given `key`)
    their names carry that key."""
    if len(data) != size:
        raise SpanError(
            f"the span at byte {offset} ends after {len(data)} of its {size} bytes (truncated tar)"
        )
    try:
        held, members = _keyed_span_members(data)
    except SpanError as error:
        raise SpanError(f"the span at byte {offset}: {error}") from None
    if key is not None and held != key:
        raise SpanError(f"the tar holds {held} at byte {offset}, not {key}")
    return members


def member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """A regular-file member's data (`extractfile` gives None only for links and directories)."""
    handle = tar.extractfile(member)
    if handle is None:
        raise tarfile.ReadError(f"{member.name}: not a regular file")
    return handle.read()


def read_shard(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield `(key, {member name: bytes})` for every sample of a shard, in order."""
    key, members = None, {}
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            member_key, _, name = member.name.partition(".")
            if member_key != key and key is not None:
                yield key, members
                members = {}
            key = member_key
            members[name] = member_bytes(tar, member)
    if key is not None:
        yield key, members


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
