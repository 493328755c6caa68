"""An S3 remote (Ceph RGW, MinIO, AWS S3): the directory remote's layout as keys in a bucket.

`s3://BUCKET/PREFIX?endpoint=URL[#VOLUME]`: keys PREFIX/packs/AB/ID, PREFIX/index/ID and
PREFIX/volumes/VOLUME/refs/NAME, as in a directory remote; a chunk is read with a ranged GET. A
PUT is atomic in S3 (a reader sees the whole object or none), which is all the push protocol
needs. A volume's lease is created with a conditional PUT (If-None-Match: *), which AWS S3,
MinIO and Ceph RGW 16.2 honour (measured: a second create gets 412). Credentials come from the
environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or boto3's usual 0600 files; they are
never part of the URL, printed or logged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import boto3
import botocore.exceptions

from maiffs.errors import StoreError
from maiffs.remotes.base import DEFAULT_VOLUME, Remote, RemoteAbsent

_MISSING = ("404", "NoSuchKey", "NotFound")
T = TypeVar("T")


class S3Remote(Remote):
    """The remote at s3://bucket/prefix on endpoint."""

    def __init__(self, bucket: str, prefix: str, endpoint: str | None,
                 cache_dir: str | None = None, volume: str = DEFAULT_VOLUME) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        super().__init__(f"s3://{bucket}/{self.prefix}", cache_dir, volume)
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        self.bucket_checked = False
        self.bucket_lock = threading.Lock()

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, exc: Exception) -> StoreError:
        return StoreError(f"remote {self.where}: {exc}")

    @staticmethod
    def _missing(exc: botocore.exceptions.ClientError) -> bool:
        return exc.response.get("Error", {}).get("Code") in _MISSING

    def _put(self, key: str, data: bytes) -> None:
        self._put_if(key, data)

    def _put_new(self, key: str, data: bytes) -> bool:
        return self._put_if(key, data, IfNoneMatch="*")

    def _put_if(self, key: str, data: bytes, **condition: str) -> bool:
        """One PUT; False if S3 refused it for its condition, StoreError for other failures."""
        try:
            if not self.bucket_checked:
                self._ensure_bucket()
            self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data, **condition)
        except botocore.exceptions.ClientError as exc:
            if condition and exc.response.get("Error", {}).get("Code") == "PreconditionFailed":
                return False
            raise self._fail(exc) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise self._fail(exc) from None
        return True

    def _delete(self, key: str) -> None:
        self._unless_missing(lambda: self.client.delete_object(Bucket=self.bucket, Key=self._full(key)),
                             None)

    def _ensure_bucket(self) -> None:
        with self.bucket_lock:  # uploads run in several threads
            if self.bucket_checked:
                return
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except botocore.exceptions.ClientError as exc:
                if not self._missing(exc):
                    raise
                self.client.create_bucket(Bucket=self.bucket)
            self.bucket_checked = True

    def _unless_missing(self, call: Callable[[], T], missing: T) -> T:
        """call(), or missing when S3 says there is no such key; other failures: StoreError."""
        try:
            return call()
        except botocore.exceptions.ClientError as exc:
            if self._missing(exc):
                return missing
            raise self._fail(exc) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise self._fail(exc) from None

    def _get(self, key: str) -> bytes | None:
        return self._unless_missing(lambda: self.client.get_object(
            Bucket=self.bucket, Key=self._full(key))["Body"].read(), None)

    def _get_range(self, key: str, offset: int, length: int) -> bytes | None:
        def ranged() -> bytes:
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self._full(key),
                                              Range=f"bytes={offset}-{offset + length - 1}")["Body"].read()
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                    return b""  # a value shorter than its index says: damaged
                raise
        return self._unless_missing(ranged, None)

    def _names(self, folder: str) -> list[str]:
        prefix = self._full(folder) + "/"
        names: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                          Prefix=prefix)
            for page in pages:
                names += [item["Key"][len(prefix):] for item in page.get("Contents", [])
                          if "/" not in item["Key"][len(prefix):]]
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchBucket", "404"):
                raise RemoteAbsent(f"remote {self.where} does not exist") from None
            raise self._fail(exc) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise self._fail(exc) from None
        return names
