"""Issue 21's pipeline cases, kept as tests: `show`, `verify` and `info` on damaged builds are one line per
problem and never a traceback (the CLI contract, through real subprocesses), and the AVA proposal pickles
are read by an unpickler that runs nothing they name."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import BuildConfig
from pipeline.manifest import read_build, read_manifest, write_build, write_manifest
from pipeline.safe_pickle import PickleRejected, load_numpy_pickle
from pipeline.sources import SourceError, get_source
from pipeline.sources.ava import read_proposals
from tests.sources.real_fixtures import AVA_VIDEOS, make_ava

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr[-2000:]


def one_line_exit_2(result: subprocess.CompletedProcess) -> str:
    """The one stderr line of a refused command (exit 2, nothing on stdout)."""
    assert_no_traceback(result)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and result.stdout == "", result.stderr
    return result.stderr


@pytest.fixture
def source_dir(tmp_path: Path, procedural_build: Path) -> Path:
    """A private copy of the session's tiny procedural build."""
    copy = tmp_path / "shards" / "procedural"
    shutil.copytree(procedural_build, copy)
    return copy


# ----------------------------------------------------------------------------- damaging a build


def first_row(source_dir: Path) -> dict:
    """The manifest row of the sample `show` draws by default (the first one)."""
    return read_manifest(source_dir).to_pylist()[0]


def edit_rows(source_dir: Path, edit: Callable[[list[dict]], None]) -> None:
    rows = read_manifest(source_dir).to_pylist()
    edit(rows)
    write_manifest(source_dir, rows)


def rewrite_header(source_dir: Path, change: Callable[[bytearray], None], fix_checksum: bool) -> None:
    """Apply `change` to the first tar header of the first sample's shard, re-signing it if asked."""
    shard = source_dir / first_row(source_dir)["shard"]
    data = bytearray(shard.read_bytes())
    header = bytearray(data[:512])
    change(header)
    if fix_checksum:
        header[148:156] = b" " * 8
        header[148:156] = f"{sum(header):06o}\0 ".encode()
    data[:512] = header
    shard.write_bytes(bytes(data))


def flip_a_name_byte(header: bytearray) -> None:
    header[3] ^= 0x01


def bad_header_checksum(source_dir: Path) -> None:
    rewrite_header(source_dir, flip_a_name_byte, fix_checksum=False)


def make_symlink(header: bytearray) -> None:
    header[156] = ord("2")  # SYMTYPE
    header[157:165] = b"/etc/pas"


def truncate_first_shard(source_dir: Path) -> None:
    shard = source_dir / first_row(source_dir)["shard"]
    shard.write_bytes(shard.read_bytes()[:1000])


def set_first(column: str, value: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(source_dir: Path) -> None:
        def edit(rows: list[dict]) -> None:
            rows[0][column] = value(rows[0])

        edit_rows(source_dir, edit)

    return damage


def swap_first_two(source_dir: Path) -> None:
    def edit(rows: list[dict]) -> None:
        for column in ("offset", "size"):
            rows[0][column], rows[1][column] = rows[1][column], rows[0][column]

    edit_rows(source_dir, edit)


# damage -> (what it does, what show's one line says)
DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "bad header checksum": (bad_header_checksum, "bad checksum"),
    "truncated tar": (truncate_first_shard, "ends after the tar"),
    "missing tar": (lambda d: (d / first_row(d)["shard"]).unlink(), "missing"),
    "shifted offset": (set_first("offset", lambda row: row["offset"] + 512), "cannot be read"),
    "symlink member": (lambda d: rewrite_header(d, make_symlink, fix_checksum=True), "not a plain file"),
    "size 1e12": (set_first("size", lambda row: 10**12), "ends after the tar"),
    "swapped offsets": (swap_first_two, "the tar holds procedural-train-000001"),
    "null shard in an ok row": (set_first("shard", lambda row: None), "missing"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_show_verify_and_info_on_a_damaged_build_never_trace_back(source_dir: Path, damage: str) -> None:
    make_damage, says = DAMAGES[damage]
    key = first_row(source_dir)["key"]
    make_damage(source_dir)
    line = one_line_exit_2(run_cli("show", source_dir, "--out", source_dir.parent / "sheet.png"))
    assert says in line and "Traceback" not in line
    assert not (source_dir.parent / "sheet.png").exists()

    verified = run_cli("verify", source_dir)
    assert_no_traceback(verified)
    assert verified.returncode == 1 and verified.stderr.startswith("FAILED:")
    assert verified.stderr.count("\n") == 1 and key in verified.stdout

    info = run_cli("info", source_dir)
    assert_no_traceback(info)
    assert info.returncode in (0, 1)
    if damage in ("missing tar", "truncated tar"):  # info sees what a stat shows, and says to verify
        assert info.returncode == 1 and first_row(source_dir)["shard"] in info.stdout


def test_show_of_a_quarantined_key_prints_its_reason(source_dir: Path) -> None:
    def quarantine(rows: list[dict]) -> None:
        rows[0].update(status="quarantined", reason="frame 3: truncated JPEG", shard=None, offset=None)

    key = first_row(source_dir)["key"]
    edit_rows(source_dir, quarantine)
    line = one_line_exit_2(run_cli("show", source_dir, "--key", key))
    assert f"{key} was quarantined at build time: frame 3: truncated JPEG" in line


@pytest.mark.parametrize("under", ["a file", "a file's child"])
def test_show_out_under_a_file_is_one_line_before_any_work(source_dir: Path, under: str) -> None:
    blocker = source_dir.parent / "blocker"
    blocker.write_text("a file, not a directory")
    out = blocker / "sheet.png" if under == "a file" else blocker / "deeper" / "sheet.png"
    line = one_line_exit_2(run_cli("show", source_dir, "--out", out))
    assert f"--out: {blocker} is a file, not a directory" in line


def test_show_out_that_is_a_directory_is_one_line(source_dir: Path) -> None:
    line = one_line_exit_2(run_cli("show", source_dir, "--out", source_dir))
    assert "--out" in line and "is a directory" in line


@pytest.mark.parametrize(
    "damage, says",
    [
        ("shard bytes not a number", "'bytes' of shard"),
        ("split counts without tasks", "counts"),
        ("config not a dict", "'config' is not a dict"),
    ],
)
def test_info_on_a_malformed_build_json_is_one_line(source_dir: Path, damage: str, says: str) -> None:
    build = read_build(source_dir)
    if damage == "shard bytes not a number":
        build["shards"][0]["bytes"] = "big"
    elif damage == "split counts without tasks":
        del build["counts"]["splits"]["train"]["tasks"]
    else:
        build["config"] = ["not", "a", "dict"]
    (source_dir / "build.json").write_text(json.dumps(build))
    assert says in one_line_exit_2(run_cli("info", source_dir))


def test_info_of_an_intact_build_reports_no_problem(source_dir: Path) -> None:
    write_build(source_dir, read_build(source_dir))  # unchanged, re-written
    info = run_cli("info", source_dir)
    assert info.returncode == 0 and "problem" not in info.stdout, info.stdout


# ----------------------------------------------------------------------------- AVA proposal pickles


class RunsACommand:
    """A pickle payload: unpickling it calls `os.system`, which would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def proposals(score_column: bool = True) -> dict[str, np.ndarray]:
    """Proposals as mmaction2 releases them: `"<video_id>,%04d"` -> float64 `[N, 5]` (or `[N, 4]`)."""
    boxes = np.array([[0.3, 0.0, 0.7, 1.0, 0.95], [0.25, 0.0, 0.3, 0.5, 0.5]])
    return {
        f"{AVA_VIDEOS[1]},0902": boxes if score_column else boxes[:, :4],
        f"{AVA_VIDEOS[1]},0903": boxes[:0],
    }


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("score_column", [True, False])
def test_a_real_format_proposals_pickle_loads(tmp_path: Path, protocol: int, score_column: bool) -> None:
    path = tmp_path / "ava_dense_proposals_val.FAIR.recall_93.9.pkl"
    path.write_bytes(pickle.dumps(proposals(score_column), protocol=protocol))
    loaded = load_numpy_pickle(path)
    assert isinstance(loaded, dict) and loaded.keys() == proposals().keys()
    for key, boxes in proposals(score_column).items():
        assert loaded[key].dtype == np.float64 and np.array_equal(loaded[key], boxes)


def test_a_pickle_written_by_numpy_1_loads(tmp_path: Path) -> None:
    """numpy 1 names its helpers `numpy.core.*` (numpy 2: `numpy._core.*`); the released files predate 2."""
    path = tmp_path / "p.pkl"
    written = pickle.dumps(proposals(), protocol=2)  # GLOBAL opcodes: the module path is plain text
    assert b"numpy._core.multiarray" in written
    path.write_bytes(written.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    loaded = load_numpy_pickle(path)
    assert all(np.array_equal(loaded[key], boxes) for key, boxes in proposals().items())


def test_numpy_scalars_and_float32_arrays_load(tmp_path: Path) -> None:
    path = tmp_path / "p.pkl"
    value = {"v,0902": np.zeros((1, 5), np.float32), "score": np.float64(0.5), "n": np.int64(3)}
    path.write_bytes(pickle.dumps(value, protocol=2))
    loaded = load_numpy_pickle(path)
    assert loaded["score"] == 0.5 and loaded["n"] == 3 and loaded["v,0902"].dtype == np.float32


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_a_pickle_payload_is_refused_and_nothing_runs(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"v,0902": RunsACommand(marker)}, protocol=protocol))
    with pytest.raises(PickleRejected) as refused:
        load_numpy_pickle(path)
    assert str(refused.value).count("\n") == 0 and str(path) in str(refused.value)
    assert f"{os.system.__module__}.system" in str(refused.value)
    assert not marker.exists()


def test_an_ava_build_with_a_payload_in_its_proposals_is_refused_in_one_line(tmp_path: Path) -> None:
    root = tmp_path / "ava"
    make_ava(root, frames_per_video=100)
    marker = tmp_path / "ran"
    evil = root / "annotations" / "evil.pkl"
    evil.write_bytes(pickle.dumps({f"{AVA_VIDEOS[1]},0902": RunsACommand(marker)}, protocol=4))
    result = run_cli(
        "build", "--source", "ava", "--root", root, "--out", tmp_path / "shards", "--frames", "4",
        "--size", "32", "--sampling-rate", "2", "--workers", "0", "--quiet", "--option", "proposals=evil.pkl",
    )  # fmt: skip
    line = one_line_exit_2(result)
    assert str(evil) in line and "refused" in line
    assert not marker.exists()
    assert not list((tmp_path / "shards").rglob("*.tar"))  # refused while listing, before any sample


def test_an_ava_build_reads_a_proposals_pickle(tmp_path: Path) -> None:
    root = tmp_path / "ava"
    make_ava(root, frames_per_video=100)
    (root / "annotations" / "p.pkl").write_bytes(pickle.dumps(proposals(), protocol=2))
    config = BuildConfig(
        frames=4, size=32, label_stride=4, sampling_rate=2, options=(("proposals", "p.pkl"),)
    )
    adapter = get_source("ava")(root, config)
    item = next(iter(adapter.items("val")))
    kept = adapter.load(item).extra["ava_proposals"]
    assert len(kept) == 1 and kept[0][4] == pytest.approx(0.95)  # the 0.5 box is under the 0.9 threshold


@pytest.mark.parametrize(
    "content, says",
    [
        (b"not a pickle at all", "not a readable pickle"),
        (pickle.dumps(["a", "list"]), "not a dict"),
        (pickle.dumps({"no-second": np.zeros((1, 5))}), "'no-second'"),
    ],
    ids=["not a pickle", "a list", "a key without its second"],
)
def test_a_malformed_proposals_pickle_is_a_source_error(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / "p.pkl"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=says) as error:
        read_proposals(path, 0.9)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
