"""A build to S3 killed in the middle of an upload resumes with nothing lost or duplicated (issue 24)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from pipeline.build import BuildRequest, build_source
from pipeline.manifest import read_build, read_manifest
from pipeline.reader import verify
from tests.conftest import tiny_config
from tests.pipeline.test_resume import ARGS
from tests.s3server import S3Server
from tests.storage.test_storage_build import objects, without_timings


def build_command(out: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "build", "--out", out, *ARGS]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_build_killed_mid_upload_resumes_without_duplicates_or_losses(
    bucket: str, s3_server: S3Server
) -> None:
    out = f"{bucket}/killed"
    # The fifth shard's PUT is held at the server; the build is killed while that upload is in flight.
    s3_server.hold(lambda request: request.method == "PUT" and request.path.endswith("train-000004.tar"))
    killed = subprocess.Popen(build_command(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              start_new_session=True)  # fmt: skip
    try:
        assert s3_server.held.wait(timeout=120), "the build never uploaded train-000004.tar"
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
    finally:
        s3_server.release()
    assert killed.returncode == -signal.SIGKILL
    held = objects(f"{out}/procedural")
    # The held PUT may still land (its body had reached the server) or not; never in part, never with a part.
    assert "build.json" not in held and ".parts/train-000004.tar.json" not in held
    assert sum(name.startswith(".parts/") for name in held) >= 4

    resumed = subprocess.run(build_command(out), capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    assert "reused" in resumed.stdout and "reused 0" not in resumed.stdout

    config = tiny_config(size=48, label_stride=4, num_samples=60, samples_per_shard=3)
    build_source(BuildRequest("procedural", f"{bucket}/clean", config, workers=0))
    killed_objects, clean_objects = objects(f"{out}/procedural"), objects(f"{bucket}/clean/procedural")
    assert sorted(killed_objects) == sorted(clean_objects)
    for name, data in clean_objects.items():
        if name != "build.json":
            assert killed_objects[name] == data, name
    if "train-000004.tar" in held:
        assert held["train-000004.tar"] == clean_objects["train-000004.tar"], "an object is whole or absent"
    assert without_timings(killed_objects["build.json"]) == without_timings(clean_objects["build.json"])
    keys = read_manifest(f"{out}/procedural").column("key").to_pylist()
    assert len(keys) == len(set(keys)) == read_build(f"{out}/procedural")["counts"]["samples"] == 75
    assert verify(f"{out}/procedural") == []
