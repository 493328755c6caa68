"""The remote layout, once: what push, pull, verify and self-heal need of a remote, written over
four storage primitives that each kind of remote (directory, S3 bucket) provides.

Keys: `chunks/AB/ID` (a chunk as stored: a tag, its raw length, its encoded bytes),
`objects/AB/ID` (a tree object's encoding), `refs/snapshots/NAME` (JSON: root id, time).
Objects never change once written, and a write is all-or-nothing, which is all the push
protocol needs (transfer.py).
"""

from __future__ import annotations

import json
import struct

from maiffs.errors import StoreError

CHUNK_MAGIC = b"MCK1"
_RAW_LEN = struct.Struct(">Q")
REFS = "refs/snapshots"


def _key(kind: str, oid: bytes) -> str:
    name = oid.hex()
    return f"{kind}/{name[:2]}/{name}"


class Remote:
    """A remote, given put/get/exists/list of whole values by key."""

    #: where the remote is, for messages (never with credentials)
    where: str = ""

    # -- the primitives each kind provides ---------------------------------------------------------
    def _put(self, key: str, data: bytes) -> None:
        """Store data under key, all or nothing."""
        raise NotImplementedError

    def _get(self, key: str) -> bytes | None:
        """The value under key, or None if there is none."""
        raise NotImplementedError

    def _exists(self, key: str) -> bool:
        raise NotImplementedError

    def _names(self, folder: str) -> list[str]:
        """The names of the values directly in folder; StoreError if the remote does not exist."""
        raise NotImplementedError

    # -- the layout -----------------------------------------------------------------------------
    def _need(self, key: str, what: str) -> bytes:
        data = self._get(key)
        if data is None:
            raise StoreError(f"remote {self.where} has no {what}")
        return data

    def has(self, kind: str, oid: bytes) -> bool:
        return self._exists(_key(kind, oid))

    def put_object(self, oid: bytes, encoded: bytes) -> None:
        self._put(_key("objects", oid), encoded)

    def get_object(self, oid: bytes) -> bytes:
        return self._need(_key("objects", oid), f"object {oid.hex()}")

    def put_chunk(self, cid: bytes, raw_len: int, encoded: bytes) -> None:
        self._put(_key("chunks", cid), CHUNK_MAGIC + _RAW_LEN.pack(raw_len) + encoded)

    def get_chunk(self, cid: bytes) -> tuple[int, bytes]:
        """(raw length, encoded bytes) of a chunk, as the local store keeps them."""
        data = self._need(_key("chunks", cid), f"chunk {cid.hex()}")
        head = len(CHUNK_MAGIC) + _RAW_LEN.size
        if not data.startswith(CHUNK_MAGIC) or len(data) < head:
            raise StoreError(f"remote {self.where}: chunk {cid.hex()} is not a chunk file")
        return _RAW_LEN.unpack_from(data, len(CHUNK_MAGIC))[0], data[head:]

    def set_ref(self, name: str, root: bytes, created_ns: int) -> None:
        """Point snapshot name at root: written last, once everything it needs is there."""
        self._put(f"{REFS}/{name}", json.dumps({"root": root.hex(), "created_ns": created_ns}).encode())

    def get_ref(self, name: str) -> tuple[bytes, int]:
        try:
            ref = json.loads(self._need(f"{REFS}/{name}", f"snapshot {name!r}"))
            return bytes.fromhex(ref["root"]), int(ref["created_ns"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"remote {self.where}: snapshot ref {name!r} is malformed ({exc})") from None

    def refs(self) -> list[str]:
        return sorted(self._names(REFS))
