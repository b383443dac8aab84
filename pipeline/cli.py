"""`pvit-pipeline`: build, inspect and verify shards.

    pvit-pipeline build --source procedural --out shards/
    pvit-pipeline build --source hypersim --root /data/hypersim --out shards/ --size 112 --workers 8
    pvit-pipeline sources
    pvit-pipeline info shards/procedural
    pvit-pipeline verify shards/procedural
    pvit-pipeline show shards/procedural --split val --count 2
    pvit-pipeline bench

A user mistake (unknown source, missing --root, bad flag value, not a build directory) is one
line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from pipeline.config import BuildConfig, config_flag, field_comments, parse_options
from pipeline.fileio import first_line
from pipeline.manifest import QUARANTINE, BuildDirError, read_build
from pipeline.parallel import CONNECT_TIMEOUT, ClusterUnreachable
from pipeline.storage import StorageError, Store, open_store, parse_storage_options

if TYPE_CHECKING:
    from pipeline.build import BuildReport

PROG = "pvit-pipeline"
USAGE_ERROR = 2
MESSAGE_LIMIT = 1000  # characters of a one-line error: long paths must not cut off its advice
SOURCE_DIR_HELP = "a built source: <out>/<source>, a directory or a URL (s3://bucket/prefix/<source>)"


class UsageError(Exception):
    """A mistake in the command line or its inputs: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not argparse's usage block
        raise UsageError(f"{message} (see {self.prog} --help)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="PViT data engine: raw datasets -> WebDataset shards")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_build(commands.add_parser("build", help="build or update the shards of one source"))
    sources = commands.add_parser("sources", help="list the source adapters; with NAME, that one's options")
    sources.add_argument("name", nargs="?", help="an adapter: its splits, tasks and every --option it reads")
    info = commands.add_parser("info", help="counts per split and task, config, quarantine")
    info.add_argument("dir", help=SOURCE_DIR_HELP)
    _add_storage_options(info)
    verify = commands.add_parser(
        "verify", help="re-hash shards, check every sample against schema and manifest"
    )
    verify.add_argument("dir", help=SOURCE_DIR_HELP)
    _add_storage_options(verify)
    show = commands.add_parser("show", help="PNG contact sheet of samples with every label drawn")
    show.add_argument("dir", help=SOURCE_DIR_HELP)
    _add_storage_options(show)
    show.add_argument("--key", help="the sample to draw (a manifest key)")
    show.add_argument("--split", help="draw samples of this split (default: any)")
    show.add_argument("--count", type=_positive_int, default=1, help="samples, spread over the split")
    show.add_argument("--out", type=Path, help="PNG path (default: <dir>.show.png next to the directory)")
    bench = commands.add_parser("bench", help="procedural build throughput and shard read throughput")
    bench.add_argument("--num-samples", type=_positive_int, default=48)
    bench.add_argument("--workers", type=_positive_int, default=0)
    bench.add_argument("--work-dir", type=Path, help="where to build (default: a temporary directory)")
    return parser


def _add_storage_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--storage-option",
        dest="storage_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an fsspec filesystem option for a URL (endpoint_url=..., anon=true; repeatable); "
        "credentials come from the environment as usual (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...)",
    )


def _store(args: argparse.Namespace, location: str) -> Store:
    """The store `location` names, with the command's --storage-option values."""
    return open_store(location, parse_storage_options(args.storage_options))


def _add_build(build: argparse.ArgumentParser) -> None:
    """`build`'s flags: what and where, then one per `BuildConfig` field, then how the build runs."""
    build.add_argument("--source", required=True, help="adapter name (see `pvit-pipeline sources`)")
    build.add_argument("--root", type=Path, help="the raw dataset's directory, in its released layout")
    build.add_argument(
        "--out", default="shards", help="output directory or URL, e.g. s3://bucket/prefix (default: shards/)"
    )
    build.add_argument("--split", action="append", help="split to build (repeatable; default: all)")
    _add_config_flags(build)
    build.add_argument(
        "--workers",
        type=_positive_int,
        default=os.cpu_count() or 1,
        help="local Ray workers (default: one per CPU); 0 = serial, in-process",
    )
    build.add_argument("--ray-address", help="join a running Ray cluster (e.g. auto)")
    build.add_argument(
        "--ray-timeout",
        type=float,
        default=CONNECT_TIMEOUT,
        help=f"seconds to wait for --ray-address to answer before giving up (default {CONNECT_TIMEOUT:g})",
    )
    build.add_argument(
        "--verify", action="store_true", help="re-hash existing shards; rebuild any whose bytes changed"
    )
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_storage_options(build)


def _add_config_flags(build: argparse.ArgumentParser) -> None:
    """One flag per `BuildConfig` field, its type, default and help (the field's comment) from the field."""
    hints = typing.get_type_hints(BuildConfig)
    comments = field_comments(BuildConfig)
    for f in dataclasses.fields(BuildConfig):
        default = f.default
        shown = "" if default in (None, ()) else f" (default {default})"
        help_text = (comments.get(f.name, "") + shown).replace("%", "%%")  # argparse %-formats help
        if f.name == "options":
            build.add_argument(
                config_flag(f.name),
                dest=f.name,
                action="append",
                default=[],
                metavar="NAME=VALUE",
                help=help_text,
            )
            continue
        kind = int if int in typing.get_args(hints[f.name]) else hints[f.name]
        parse = _positive_int if kind is int else kind
        build.add_argument(config_flag(f.name), dest=f.name, type=parse, default=default, help=help_text)


def config_from_args(args: argparse.Namespace) -> BuildConfig:
    """The `BuildConfig` the `build` flags give; `ValueError` (one line) for a bad value."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(BuildConfig)}
    return BuildConfig(**{**values, "options": parse_options(values["options"])})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
        return {
            "build": cmd_build,
            "sources": cmd_sources,
            "info": cmd_info,
            "verify": cmd_verify,
            "show": cmd_show,
            "bench": cmd_bench,
        }[args.command](args)
    except (UsageError, BuildDirError, StorageError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def cmd_build(args: argparse.Namespace) -> int:
    from pipeline.build import BuildRequest, build_source
    from pipeline.sources import SourceError

    try:
        request = BuildRequest(
            args.source,
            args.out,
            config_from_args(args),
            root=args.root,
            splits=args.split or (),
            workers=args.workers,
            ray_address=args.ray_address,
            ray_timeout=args.ray_timeout,
            progress=not args.quiet,
            verify=args.verify,
            storage_options=parse_storage_options(args.storage_options),
        )
        report = build_source(request)
    except (ValueError, SourceError, ClusterUnreachable) as error:
        raise UsageError(first_line(error, limit=MESSAGE_LIMIT)) from None
    print(summarise(report))
    return 0


def summarise(report: BuildReport) -> str:
    """The end-of-build summary: what was done, how fast, and where the quarantine is."""
    where = report.out_dir
    if report.up_to_date:
        return (
            f"{report.source}: up to date, nothing to do "
            f"({report.samples} samples in {where}, config {report.config_hash})"
        )
    lines = []
    if report.config_changed:
        lines.append(
            f"{report.source}: config changed -> regenerated; removed {report.shards_removed} old shard(s)"
        )
    rate = report.samples / report.seconds if report.seconds else 0.0
    lines.append(
        f"{report.source}: {report.samples} samples in {report.units_total} shard(s) at {where} "
        f"(built {report.units_built}, reused {report.units_reused}; "
        f"{report.seconds:.1f}s, {rate:.1f} clips/s overall; config {report.config_hash})"
    )
    if report.quarantined:
        split, item_id, reason = report.quarantined[0]
        listing = open_store(where).where(QUARANTINE)
        lines.append(
            f"{len(report.quarantined)} input(s) quarantined, listed in {listing} "
            f"(e.g. {split}/{item_id}: {reason})"
        )
    else:
        lines.append("0 inputs quarantined")
    return "\n".join(lines)


def cmd_sources(args: argparse.Namespace) -> int:
    from pipeline.sources import SourceError, get_source, source_names

    if args.name:
        try:
            adapter = get_source(args.name)
        except SourceError as error:
            raise UsageError(str(error)) from None
        print(f"{args.name}: {adapter.description}")
        print(f"  tasks: {', '.join(adapter.tasks)}; splits: {', '.join(adapter.splits)}")
        print(f"  --root: {'required' if adapter.needs_root else 'not needed'}")
        print("  options (--option NAME=VALUE):" if adapter.options else "  options: none")
        for option in adapter.options:
            print(f"    {option.describe()}")
        return 0
    for name in source_names():
        adapter = get_source(name)
        root = "" if adapter.needs_root else " (no --root needed)"
        print(f"{name:<16} {','.join(adapter.tasks):<40} {adapter.description}{root}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    folder = _store(args, args.dir)
    build = read_build(folder)
    malformed = _info_fields_problem(build)
    if malformed:
        raise UsageError(f"{folder.where('build.json')}: {malformed}; rebuild the source")
    counts = build["counts"]
    print(
        f"{build['source']} at {args.dir}: {counts['samples']} samples, {len(build['shards'])} shards, "
        f"{sum(s['bytes'] for s in build['shards']) / 1e6:.1f} MB, config {build['config_hash']}"
    )
    config = {k: v for k, v in build["config"].items() if k not in ("format",)}
    print("config: " + ", ".join(f"{k}={v}" for k, v in config.items()))
    for split, split_counts in sorted(counts["splits"].items()):
        tasks = ", ".join(f"{task} {n}" for task, n in split_counts["tasks"].items())
        quarantined = split_counts["quarantined"]
        print(f"  {split}: {split_counts['samples']} samples ({tasks}); {quarantined} quarantined")
    if counts["quarantined"]:
        print(f"quarantined: {counts['quarantined']} (reasons in {folder.where(QUARANTINE)})")
    problems = _shard_file_problems(folder, build["shards"])
    for problem in problems:
        print(f"problem: {problem}")
    if problems:
        print(
            f"{len(problems)} shard(s) damaged; run `{PROG} verify {args.dir}` for a full check",
            file=sys.stderr,
        )
    return 1 if problems else 0


def _info_fields_problem(build: dict) -> str | None:
    """What `info` needs from build.json beyond what every reader checks (`read_build`), or None."""
    for shard in build["shards"]:
        if not isinstance(shard["bytes"], int):
            return f"'bytes' of shard {shard['name']!r} is not a whole number"
    splits = build["counts"]["splits"]
    if not isinstance(splits, dict):
        return "'counts' 'splits' is not an object"
    for split, split_counts in splits.items():
        if not isinstance(split_counts, dict) or not isinstance(split_counts.get("tasks"), dict):
            return f"the counts of split {split!r} lack their 'tasks'"
        if any(name not in split_counts for name in ("samples", "quarantined")):
            return f"the counts of split {split!r} lack 'samples' or 'quarantined'"
    return None


def _shard_file_problems(folder: Store, shards: list[dict]) -> list[str]:
    """Shards missing, or not the size build.json records: what one listing shows, without reading a byte."""
    sizes = folder.listing()
    problems = []
    for shard in shards:
        size = sizes.get(shard["name"])
        if size is None:
            problems.append(f"{shard['name']} missing")
        elif size != shard["bytes"]:
            problems.append(f"{shard['name']} is {size} bytes, build.json says {shard['bytes']} (changed)")
    return problems


def cmd_verify(args: argparse.Namespace) -> int:
    from pipeline.reader import stray_files, verify

    folder = _store(args, args.dir)
    problems = verify(folder)
    for problem in problems:
        print(problem)
    build = read_build(folder)
    for name in stray_files(folder):
        print(f"note: stray file {name} (not part of the build; readers ignore it)")
    if problems:
        print(f"FAILED: {len(problems)} problem(s) in {args.dir}", file=sys.stderr)
        return 1
    print(f"OK: {len(build['shards'])} shards, {build['counts']['samples']} samples verified in {args.dir}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from pipeline.show import ShowError, show

    try:
        print(show(_store(args, args.dir), key=args.key, split=args.split, count=args.count, out=args.out))
    except ShowError as error:
        raise UsageError(str(error)) from None
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from pipeline.bench import run_bench

    print(run_bench(args.num_samples, args.workers, args.work_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
