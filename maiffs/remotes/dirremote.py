"""A directory remote (local disk, or a shared filesystem such as NFS).

Every file is written to a temporary name in its directory and renamed into place, so a reader
(another machine, a resumed push) sees a whole file or none; files never change afterwards, so
no lock is needed (none is trusted over NFS) and several stores can push to one remote at once.
No LMDB on the remote.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from maiffs.remotes.base import DEFAULT_VOLUME, Remote, RemoteAbsent


class DirRemote(Remote):
    """The remote at path (created on first push)."""

    def __init__(self, path: str, cache_dir: str | None = None, volume: str = DEFAULT_VOLUME) -> None:
        super().__init__(str(path), cache_dir, volume)
        self.path = Path(path)

    def _put(self, key: str, data: bytes) -> None:
        path = self.path / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)

    def _get(self, key: str) -> bytes | None:
        try:
            return (self.path / key).read_bytes()
        except FileNotFoundError:
            return None

    def _get_range(self, key: str, offset: int, length: int) -> bytes | None:
        try:
            with open(self.path / key, "rb") as f:
                f.seek(offset)
                return f.read(length)
        except FileNotFoundError:
            return None

    def _names(self, folder: str) -> list[str]:
        if not self.path.is_dir():
            raise RemoteAbsent(f"remote {self.path} does not exist")
        directory = self.path / folder
        return [p.name for p in directory.iterdir() if not p.name.startswith(".")] if directory.is_dir() else []
