"""A directory remote: immutable object files and atomically replaced refs, safe on NFS.

Layout: `chunks/AB/ID` (a chunk as stored: raw length + encoded bytes), `objects/AB/ID` (a tree
object's encoding), `refs/snapshots/NAME` (JSON: root object id, creation time). Every file is
written to a temporary name in the same directory and renamed into place, so a reader (another
machine, a resumed push) sees a whole file or none; objects never change once written, so no
lock is needed and two stores can push to one remote at once. No LMDB on the remote.
"""

from __future__ import annotations

import json
import os
import struct
import uuid
from pathlib import Path

from maiffs.errors import StoreError

_RAW_LEN = struct.Struct(">Q")
CHUNK_MAGIC = b"MCK1"


class DirRemote:
    """The remote at path (created on first push)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def _file(self, kind: str, oid: bytes) -> Path:
        name = oid.hex()
        return self.path / kind / name[:2] / name

    def has(self, kind: str, oid: bytes) -> bool:
        return self._file(kind, oid).exists()

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)

    def _read(self, path: Path, what: str) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise StoreError(f"remote {self.path} has no {what}") from None

    # -- objects and chunks ---------------------------------------------------------------------
    def put_object(self, oid: bytes, encoded: bytes) -> None:
        self._write(self._file("objects", oid), encoded)

    def get_object(self, oid: bytes) -> bytes:
        return self._read(self._file("objects", oid), f"object {oid.hex()}")

    def put_chunk(self, cid: bytes, raw_len: int, encoded: bytes) -> None:
        self._write(self._file("chunks", cid), CHUNK_MAGIC + _RAW_LEN.pack(raw_len) + encoded)

    def get_chunk(self, cid: bytes) -> tuple[int, bytes]:
        """(raw length, encoded bytes) of a chunk, as the local store keeps them."""
        data = self._read(self._file("chunks", cid), f"chunk {cid.hex()}")
        if not data.startswith(CHUNK_MAGIC) or len(data) < len(CHUNK_MAGIC) + _RAW_LEN.size:
            raise StoreError(f"remote {self.path}: chunk {cid.hex()} is not a chunk file")
        return _RAW_LEN.unpack_from(data, len(CHUNK_MAGIC))[0], data[len(CHUNK_MAGIC) + _RAW_LEN.size:]

    # -- refs ------------------------------------------------------------------------------------
    def _ref(self, name: str) -> Path:
        return self.path / "refs" / "snapshots" / name

    def set_ref(self, name: str, root: bytes, created_ns: int) -> None:
        """Point snapshot name at root: written last, once everything it needs is there."""
        self._write(self._ref(name), json.dumps({"root": root.hex(), "created_ns": created_ns}).encode())

    def get_ref(self, name: str) -> tuple[bytes, int]:
        try:
            ref = json.loads(self._read(self._ref(name), f"snapshot {name!r}"))
            return bytes.fromhex(ref["root"]), int(ref["created_ns"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"remote {self.path}: snapshot ref {name!r} is malformed ({exc})") from None

    def refs(self) -> list[str]:
        folder = self.path / "refs" / "snapshots"
        if not self.path.is_dir():
            raise StoreError(f"remote {self.path} does not exist")
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []
