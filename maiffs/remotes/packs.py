"""Pack files: many chunks or tree objects in one remote file, so that a push of 100,000 small
files makes a few dozen remote files rather than 100,000 (each remote file costs a PUT, an
inode on NFS, a request on S3).

A pack is `MPK1`, the blobs one after another, then its own index and the index's length, so a
pack describes itself (a lost index can be rebuilt from its pack). Beside each pack, `index/PACKID` holds the same index, checksummed, so
a reader learns where everything is by reading the small index files only. The pack id is the
BLAKE3 of the pack's bytes: packs and their indexes never change once written, and two stores
that happen to write the same pack write the same file.

Index record: kind (b"c" chunk, b"o" tree object), id (32 bytes), offset and length in the pack,
and the chunk's raw length (0 for objects).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import blake3

from maiffs.errors import StoreError

PACK_MAGIC = b"MPK1"
INDEX_MAGIC = b"MIX1"
INDEX_FORMAT = 1
_RECORD = struct.Struct(">c32sQIQ")
_TRAILER = struct.Struct(">I4s")
CHUNK, OBJECT = b"c", b"o"


@dataclass(frozen=True)
class Entry:
    """Where one blob is: in which pack, at which bytes."""

    kind: bytes
    id: bytes
    pack: str
    offset: int
    length: int
    raw_len: int


class PackBuilder:
    """Collects blobs into one pack until it is `target` bytes or more."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.parts: list[bytes] = [PACK_MAGIC]
        self.size = len(PACK_MAGIC)
        self.records: list[tuple[bytes, bytes, int, int, int]] = []

    def add(self, kind: bytes, oid: bytes, data: bytes, raw_len: int = 0) -> None:
        self.records.append((kind, oid, self.size, len(data), raw_len))
        self.parts.append(data)
        self.size += len(data)

    @property
    def full(self) -> bool:
        return self.size >= self.target

    def __len__(self) -> int:
        return len(self.records)

    def finish(self) -> tuple[str, bytes, bytes, list[Entry]]:
        """(pack id, pack bytes, index file bytes, entries) of what was added."""
        body = bytes([INDEX_FORMAT]) + b"".join(_RECORD.pack(*r) for r in self.records)
        pack = b"".join(self.parts) + body + _TRAILER.pack(len(body), PACK_MAGIC)
        pack_id = blake3.blake3(pack).hexdigest()
        index = INDEX_MAGIC + blake3.blake3(body).digest() + body
        entries = [Entry(kind, oid, pack_id, offset, length, raw_len)
                   for kind, oid, offset, length, raw_len in self.records]
        return pack_id, pack, index, entries


def read_index(pack_id: str, data: bytes) -> list[Entry]:
    """The entries of an index file; StoreError if it is damaged (its checksum fails)."""
    head = len(INDEX_MAGIC) + 32
    body = data[head:]
    if not data.startswith(INDEX_MAGIC) or blake3.blake3(body).digest() != data[len(INDEX_MAGIC):head]:
        raise StoreError(f"index of pack {pack_id} is damaged")
    return _entries(pack_id, body)


def _entries(pack_id: str, body: bytes) -> list[Entry]:
    if not body or body[0] != INDEX_FORMAT or (len(body) - 1) % _RECORD.size:
        raise StoreError(f"index of pack {pack_id} has an unknown format")
    return [Entry(kind, oid, pack_id, offset, length, raw_len)
            for kind, oid, offset, length, raw_len in _RECORD.iter_unpack(body[1:])]
