"""A URL that cannot be used is one line and exit code 2, within seconds (issue 24): a missing bucket,
missing credentials, an unreachable endpoint, a bad --storage-option, on the pipeline and the trainer."""

from __future__ import annotations

import socket
import time

import fsspec
import pytest

from pipeline.cli import main
from tests.s3server import S3Server
from train.main import cli as train_cli

LIMIT = 30.0  # seconds: never a hang


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    started = time.monotonic()
    code = main(argv)
    assert time.monotonic() - started < LIMIT
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_a_missing_bucket_is_one_line(s3_server: S3Server, capsys: pytest.CaptureFixture) -> None:
    err = one_line_exit_2(["info", "s3://no-such-bucket-24/procedural"], capsys)
    assert "bucket 'no-such-bucket-24' does not exist" in err
    named = s3_server.new_bucket() + "-bucket"  # a bucket whose name says "bucket", holding no build
    fsspec.filesystem("s3").mkdir(named)
    err = one_line_exit_2(["info", f"s3://{named}/procedural"], capsys)
    assert err.endswith("no build.json (not a build directory, or its build is unfinished)"), err
    err = one_line_exit_2(["build", "--source", "procedural", "--out", "s3://no-such-bucket-24/x"], capsys)
    assert err.startswith("pvit-pipeline: error: --out: ") and "does not exist" in err


def test_missing_credentials_are_one_line(
    bucket: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    fresh = ["--storage-option", "skip_instance_cache=true"]  # not this process's cached filesystem
    err = one_line_exit_2(["verify", f"{bucket}/procedural", *fresh], capsys)
    assert "no credentials" in err and "AWS_ACCESS_KEY_ID" in err


def test_an_unreachable_endpoint_is_one_line(s3_server: S3Server, capsys: pytest.CaptureFixture) -> None:
    endpoint = f"endpoint_url=http://127.0.0.1:{free_port()}"
    err = one_line_exit_2(["show", "s3://any/procedural", "--storage-option", endpoint], capsys)
    assert "cannot reach the storage endpoint" in err
    build = ["build", "--source", "procedural", "--out", "s3://any/x", "--storage-option", endpoint]
    assert "cannot reach the storage endpoint" in one_line_exit_2(build, capsys)


def test_a_bad_storage_option_or_protocol_is_one_line(capsys: pytest.CaptureFixture) -> None:
    assert "expects KEY=VALUE" in one_line_exit_2(["info", "s3://b/p", "--storage-option", "novalue"], capsys)
    assert "unknown storage protocol" in one_line_exit_2(["info", "nosuch://b/p"], capsys)


def test_the_trainer_refuses_an_unreachable_url_in_one_line(
    s3_server: S3Server, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    endpoint = f"endpoint_url=http://127.0.0.1:{free_port()}"
    argv = ["pvit-train", "--shards", "s3://any/prefix", "--real", "procedural", "--storage-option", endpoint,
            "--out", str(tmp_path / "run"), "--device", "cpu"]  # fmt: skip
    monkeypatch.setattr("sys.argv", argv)
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        train_cli()
    assert exit_info.value.code == 2 and time.monotonic() - started < LIMIT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot reach the storage endpoint" in err, err
