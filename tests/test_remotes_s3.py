"""S3 remotes against a real Ceph RADOS Gateway started for this module on 127.0.0.1 (no mock)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

import rgw
from conftest import maiffs, mount_session


@pytest.fixture(scope="module")
def gateway() -> Iterator[rgw.Gateway]:
    gw = rgw.start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def s3_env(gateway: rgw.Gateway, monkeypatch: pytest.MonkeyPatch) -> str:
    """Credentials in the environment (of the CLI and of the daemons it starts); the URL."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", rgw.ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", rgw.SECRET_KEY)
    return gateway.endpoint


def session(base: Path):
    base.mkdir()
    return mount_session(base)


def fill(root: Path) -> None:
    (root / "d").mkdir()
    for i in range(40):
        (root / "d" / f"f{i}").write_bytes(os.urandom(1000 + i * 3000))
    (root / "big").write_bytes(os.urandom(3 << 20))
    os.symlink("d/f1", root / "link")


def test_push_and_clone_through_a_real_s3_gateway(tmp_path, s3_env):
    with session(tmp_path / "a") as a:
        fill(a.path)
        os.mkdir(a.path / ".snapshots" / "v1")
        maiffs("remote", "add", a.store, "s3", "s3://maiffs-test/one", "--endpoint", s3_env)
        assert "pushed 1 snapshots" in maiffs("push", a.store, "s3").stdout
        assert "0 objects and 0 chunks sent" in maiffs("push", a.store, "s3").stdout
        (a.path / "d" / "f3").write_bytes(b"changed")
        os.mkdir(a.path / ".snapshots" / "v2")
        maiffs("push", a.path, "s3")
        url = f"s3://maiffs-test/one?endpoint={s3_env}"
        maiffs("clone", url, tmp_path / "b-store")
        (tmp_path / "b").mkdir()
        maiffs("mount", tmp_path / "b-store", tmp_path / "b")
        try:
            done = subprocess.run(["diff", "-r", "--no-dereference", a.path, tmp_path / "b"],
                                  capture_output=True, text=True)
            assert done.returncode == 0, done.stdout[-2000:]
            assert sorted(os.listdir(tmp_path / "b" / ".snapshots")) == ["v1", "v2"]
        finally:
            maiffs("umount", tmp_path / "b")
        assert rgw.SECRET_KEY not in (a.store / "remotes.json").read_text()
    assert maiffs("fsck", tmp_path / "b-store", check=False).returncode == 0


def test_verify_repairs_a_deleted_s3_object(tmp_path, s3_env, gateway):
    with session(tmp_path / "a") as a:
        fill(a.path)
        os.mkdir(a.path / ".snapshots" / "s")
        maiffs("remote", "add", a.store, "s3", "s3://maiffs-test/two", "--endpoint", s3_env)
        maiffs("push", a.store, "s3")
        s3 = boto3.client("s3", endpoint_url=gateway.endpoint, region_name="us-east-1")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="maiffs-test", Prefix="two/chunks/")["Contents"]]
        s3.delete_object(Bucket="maiffs-test", Key=keys[0])
        found = maiffs("verify", a.store, "--remote", "s3", check=False)
        assert found.returncode == 1 and "is missing (NOT repaired)" in found.stdout
        maiffs("verify", a.store, "--remote", "s3", "--repair")
        assert maiffs("verify", a.store, "--remote", "s3").returncode == 0


def test_wrong_credentials_are_one_clear_error(tmp_path, s3_env, monkeypatch):
    with session(tmp_path / "a") as a:
        (a.path / "f").write_text("x")
        os.mkdir(a.path / ".snapshots" / "s")
        maiffs("remote", "add", a.store, "s3", "s3://maiffs-test/three", "--endpoint", s3_env)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        done = maiffs("push", a.store, "s3", check=False)
        assert done.returncode == 1
        assert done.stderr.startswith("maiffs: remote s3://maiffs-test/three:")
        assert len(done.stderr.strip().splitlines()) == 1
        assert "not-the-secret" not in done.stderr + done.stdout
