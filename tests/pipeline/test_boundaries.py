"""architecture.md §1: the data engine never imports torch, and works where torch is not installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ENGINE_MODULES = ["pipeline.cli", "pipeline.build", "pipeline.reader", "pipeline.bench", "pipeline.parallel"]

# Make `import torch` fail, as on a machine without it; then build, read and verify.
WITHOUT_TORCH = """
import sys, importlib, importlib.abc
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'torchvision', 'pvit', 'train'):
            raise ModuleNotFoundError(f'No module named {name!r} (blocked by the test)')
sys.meta_path.insert(0, NoTorch())
for name in MODULES:
    importlib.import_module(name)
from pipeline.sources import get_source, source_names
for name in source_names():
    get_source(name)
from pipeline.cli import main
assert main(['build', '--source', 'procedural', '--out', OUT, '--frames', '2', '--size', '16',
             '--label-stride', '4', '--num-samples', '4', '--workers', '0', '--quiet']) == 0
assert main(['verify', OUT + '/procedural']) == 0
"""


def test_pipeline_builds_and_verifies_without_torch(tmp_path: Path) -> None:
    code = f"MODULES = {ENGINE_MODULES!r}\nOUT = {str(tmp_path)!r}\n" + WITHOUT_TORCH
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_reading_shards_does_not_load_torch() -> None:
    code = (
        "import sys\nimport pipeline.reader, pipeline.cli, pipeline.manifest, pipeline.schema\n"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
