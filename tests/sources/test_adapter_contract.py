"""The adapter contract: declared and validated options, `Item.problem`, the public registry."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.build import BuildRequest, build_source
from pipeline.cli import main
from pipeline.config import BuildConfig
from pipeline.manifest import read_build
from pipeline.sources import Item, Sample, SourceError, get_source, register, source_names, unregister
from pipeline.sources.procedural import ProceduralSource
from tests.conftest import tiny_config

SOURCES = Path(__file__).resolve().parents[2] / "pipeline" / "sources"
# Literal option names an adapter module reads: self.option("x"), the one way to read an option.
_READS = re.compile(r"""\bself\.option\("(\w+)\"""")
# Any other way to read one: the raw config's string, or a helper that re-states the default.
_OTHER_READS = re.compile(r"""config\.option\(|\b\w+_option\(\w*config|\._option\(""")
TINY = BuildConfig(frames=2, size=16, num_samples=4, samples_per_shard=4)


@pytest.mark.parametrize("name", source_names())
def test_every_option_an_adapter_reads_is_declared(name: str) -> None:
    adapter = get_source(name)
    declared = [option.name for option in adapter.options]
    assert len(declared) == len(set(declared)), "an option is declared twice"
    module = Path(adapter.__module__.replace(".", "/")).name + ".py"
    text = (SOURCES / module).read_text()
    read = set(_READS.findall(text))
    assert read <= set(declared), f"{module} reads undeclared options {sorted(read - set(declared))}"
    assert not _OTHER_READS.findall(text), f"{module} reads an option around Source.option"
    for option in adapter.options:  # a default must pass its own check (and describe() must work)
        assert option.default is None or option.parse(str(option.default)) == option.default
        assert option.name in option.describe()


def test_options_are_normalised_and_kept_as_given_even_at_their_default() -> None:
    diving = get_source("diving48")
    assert diving.resolve_options((("views", "3"),)) == (("views", "3"),)
    assert diving.resolve_options((("views", "03"),)) == (("views", "3"),)
    given = (("views", "2"), ("frame_range", "0"))  # both equal today's defaults
    assert diving.resolve_options(given) == (("frame_range", "0"), ("views", "2"))
    unset, explicit = (BuildConfig(options=diving.resolve_options(o)) for o in ((), (("views", "2"),)))
    assert unset.stable_hash("diving48", "2") == BuildConfig().stable_hash("diving48", "2")
    assert explicit.stable_hash("diving48", "2") != unset.stable_hash("diving48", "2")
    assert diving(None, explicit).option("views") == diving(None, unset).option("views") == 2


def test_a_build_without_options_keeps_its_hash_and_one_given_at_its_default_is_recorded(
    procedural_build: Path, tmp_path: Path
) -> None:
    assert read_build(procedural_build)["config"]["options"] == []
    assert read_build(procedural_build)["config_hash"] == tiny_config().stable_hash(
        "procedural", ProceduralSource.version
    )
    default = repr(ProceduralSource.options[0].default)  # aspect, spelled as the default
    config = tiny_config(num_samples=2, options=(("aspect", default),))
    report = build_source(BuildRequest("procedural", tmp_path, config, splits=["train"]))
    assert read_build(report.out_dir)["config"]["options"] == [["aspect", default]]
    assert report.config_hash != read_build(procedural_build)["config_hash"]


@pytest.mark.parametrize(
    "pair, message",
    [
        (("veiws", "3"), "source diving48 has no option 'veiws' (its options: frame_range, views)"),
        (("views", "two"), "--option views must be an integer, got 'two'"),
        (("views", "0"), "--option views must be at least 1, got '0'"),
        (("frame_range", "yes"), "--option frame_range must be one of 0, 1, got 'yes'"),
    ],
)
def test_unknown_or_bad_options_are_one_line_source_errors(pair: tuple[str, str], message: str) -> None:
    with pytest.raises(SourceError) as error:
        get_source("diving48").resolve_options((pair,))
    assert str(error.value) == message


def test_cli_rejects_a_bad_option_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "shards"
    code = main(["build", "--source", "procedural", "--out", str(out), "--option", "veiws=3", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "source procedural has no option 'veiws' (its options: " in err
    assert not out.exists()  # nothing listed, planned or written


def test_cli_lists_one_adapters_options(capsys: pytest.CaptureFixture) -> None:
    assert main(["sources", "surreact"]) == 0
    text = capsys.readouterr().out
    assert "surreact_depth=planar|radial  (default planar)" in text and "frame_stride=<int>" in text
    assert main(["sources", "no-such-source"]) == 2


class _ProblemSource(ProceduralSource):
    """Procedural, with one input found bad while listing; load() must never see it."""

    name = "problem-test"

    def items(self, split: str) -> Iterator[Item]:
        for k, item in enumerate(super().items(split)):
            yield dataclasses.replace(item, problem="bad annotation row (test)") if k == 1 else item

    def load(self, item: Item) -> Sample:
        assert item.problem is None, "the engine called load() on an item with a problem"
        return super().load(item)


@pytest.fixture
def registered() -> Iterator[str]:
    register("problem-test", _ProblemSource)
    yield "problem-test"
    unregister("problem-test")


def test_item_problem_is_quarantined_without_load(registered: str, tmp_path: Path) -> None:
    report = build_source(BuildRequest(registered, tmp_path, TINY, splits=["train"], workers=0))
    assert len(report.quarantined) == 1
    split, item_id, reason = report.quarantined[0]
    assert split == "train" and reason == "bad annotation row (test)"
    assert report.samples == TINY.num_samples - 1


def test_register_is_public_and_refuses_to_shadow(registered: str) -> None:
    assert get_source(registered) is _ProblemSource and registered in source_names()
    with pytest.raises(ValueError, match="already registered"):
        register(registered, "somewhere.else:Adapter")
    with pytest.raises(ValueError, match="package.module:Class"):
        register("other", "no_colon_here")
    register(registered, "pipeline.sources.procedural:ProceduralSource", replace=True)
    assert get_source(registered) is ProceduralSource
