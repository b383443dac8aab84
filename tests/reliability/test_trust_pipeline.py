"""Issue 21's pipeline cases, kept as tests: `show`, `verify` and `info` on damaged builds are one line per
problem and never a traceback (the CLI contract, through real subprocesses), and the AVA proposal pickles
are read by an unpickler that runs nothing they name."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.manifest import read_build, read_manifest, write_build, write_manifest

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
    write_manifest(source_dir / "manifest.parquet", rows)


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
