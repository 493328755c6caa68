"""The two kinds of remote the replication tests run against, behind one small interface: a
directory on local disk and a bucket on a real Ceph RADOS Gateway (started once per test run,
only if an S3 test runs). Tests add the remote, then look at and damage what is stored there.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

import rgw
from conftest import maiffs

_serial = itertools.count()


class DirSpot:
    """A directory remote under the test's tmp_path."""

    kind = "dir"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def add(self, store: Path, name: str, volume: str | None = None) -> None:
        maiffs("remote", "add", store, name, f"{self.root}#{volume}" if volume else self.root)

    def keys(self, folder: str = "") -> list[str]:
        base = self.root / folder
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*")
                      if p.is_file() and not p.name.startswith(".")) if base.is_dir() else []

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def write(self, key: str, data: bytes) -> None:
        (self.root / key).write_bytes(data)

    def delete(self, key: str) -> None:
        (self.root / key).unlink()


class S3Spot:
    """A prefix of its own in the gateway's test bucket."""

    kind = "s3"
    bucket = "maiffs-test"

    def __init__(self, gateway: rgw.Gateway) -> None:
        self.endpoint = gateway.endpoint
        self.prefix = f"t{os.getpid()}-{next(_serial)}"
        self.url = f"s3://{self.bucket}/{self.prefix}?endpoint={self.endpoint}"
        self.client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                                   aws_access_key_id=rgw.ACCESS_KEY,
                                   aws_secret_access_key=rgw.SECRET_KEY)
        if self.bucket not in [b["Name"] for b in self.client.list_buckets()["Buckets"]]:
            self.client.create_bucket(Bucket=self.bucket)

    def add(self, store: Path, name: str, volume: str | None = None) -> None:
        maiffs("remote", "add", store, name, f"s3://{self.bucket}/{self.prefix}"
               + (f"#{volume}" if volume else ""), "--endpoint", self.endpoint)

    def keys(self, folder: str = "") -> list[str]:
        start = f"{self.prefix}/{folder}"
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                           Prefix=start):
            keys += [o["Key"][len(self.prefix) + 1:] for o in page.get("Contents", [])]
        return sorted(keys)

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}")["Body"].read()

    def write(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}", Body=data)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}")


Spot = DirSpot | S3Spot


def flip_byte(spot: Spot, key: str, at: int) -> None:
    data = bytearray(spot.read(key))
    data[at] ^= 0xFF
    spot.write(key, bytes(data))


@pytest.fixture(scope="session")
def gateway() -> Iterator[rgw.Gateway]:
    """One gateway for the whole run, started by the first test that needs it."""
    gw = rgw.start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def s3_env(gateway: rgw.Gateway, monkeypatch: pytest.MonkeyPatch) -> str:
    """Credentials in the environment (of the CLI and of the daemons it starts); the endpoint."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", rgw.ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", rgw.SECRET_KEY)
    return gateway.endpoint


@pytest.fixture(params=["dir", "s3"])
def spot(request: pytest.FixtureRequest, tmp_path: Path) -> Spot:
    """Each test that takes it runs twice: against a directory remote and against S3."""
    if request.param == "dir":
        return DirSpot(tmp_path / "remote")
    request.getfixturevalue("s3_env")
    return S3Spot(request.getfixturevalue("gateway"))
