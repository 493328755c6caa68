"""A directory remote (local disk, or a shared filesystem such as NFS).

Every file is written to a temporary name in its directory and renamed into place, so a reader
(another machine, a resumed push) sees a whole file or none; files never change afterwards, so
no lock is needed (none is trusted over NFS) and several stores can push to one remote at once.
No LMDB on the remote. The one value created only if absent (a volume's lease) is a temp file
hard-linked to its name: link() is atomic on NFS too, unlike O_EXCL on old clients.
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
        self._make_root()
        path = self.path / key
        os.rename(written_beside(path, data), path)

    def _put_new(self, key: str, data: bytes) -> bool:
        self._make_root()
        return create_new(self.path / key, data)

    def _make_root(self) -> None:
        """A remote maiffs creates is private (0700, whatever the umask): it holds every file's
        content whatever that file's mode. A directory that exists keeps its mode, so a team
        shares a remote by making its directory with the group's rights first."""
        if not self.path.is_dir():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.path.mkdir(mode=0o700)
            except FileExistsError:
                return  # another pusher made it first
            os.chmod(self.path, 0o700)

    def _delete(self, key: str) -> None:
        try:
            (self.path / key).unlink()
        except FileNotFoundError:
            pass

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


def written_beside(path: Path, data: bytes, mode: int = 0o666) -> Path:
    """data in a new durable temp file in path's directory (made if need be), to move into
    place; mode as for open(2) (the umask applies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def create_new(path: Path, data: bytes, mode: int = 0o666) -> bool:
    """Make path hold data if it does not exist yet, atomically (also on NFS); False if it did.
    An NFS link whose reply was lost can report EEXIST after it succeeded, so the temp file's
    link count decides, as open(2) advises."""
    tmp = written_beside(path, data, mode)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        return os.stat(tmp).st_nlink == 2
    finally:
        tmp.unlink()
