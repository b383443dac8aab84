"""Packaging contracts: import isolation and the task-name mirror."""

from __future__ import annotations

import subprocess
import sys

import pvit
import pytest


def test_import_pulls_in_no_project_or_data_deps() -> None:
    code = (
        "import sys, pvit\n"
        "bad = [m for m in ('pipeline', 'train', 'webdataset', 'ray', 'scipy') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing pvit imported {out.stdout.strip()}"


def test_task_names() -> None:
    assert pvit.TASKS == ("action", "depth", "normal", "segm", "pose3d", "boxes", "oscc", "pnr", "ava")
    assert pvit.TASKS[1:6] == pvit.SYNTHETIC_TASKS
    assert pvit.TASKS[6:] == pvit.DOWNSTREAM_TASKS


def test_task_names_mirror_pipeline_schema() -> None:
    schema = pytest.importorskip("pipeline.schema")
    assert tuple(schema.TASKS[: len(pvit.TASKS)]) == pvit.TASKS
