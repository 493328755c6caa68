"""Tree objects: the immutable, hash-named state of one inode, the nodes of a snapshot's Merkle tree.

A file object holds a file's metadata, xattrs, content id and extents (chunk ids); a directory
object holds its metadata, xattrs and its entries as (name, child object id). An object is
named by BLAKE3-256 of its encoding, so equal state is stored once and two trees can be
compared without descending into equal subtrees.

References are counted in `objrefs`: each directory object holds one reference to each entry's
object, each snapshot one to its root, and each `objcache` entry one to the object of a live
inode. A file object holds one chunk reference per extent. When the last reference goes, the
object goes, and with it its references to children and chunks (`Objects.decref`).
"""

from __future__ import annotations

import errno
import stat
import struct
from bisect import bisect_left
from collections import OrderedDict
from dataclasses import dataclass, field

import blake3

from maiffs.errors import FsError, StoreError
from maiffs.namespace.records import Inode
from maiffs.store.chunks import ChunkStore
from maiffs.store.env import Txn

OBJECT_FORMAT = 1
# format, original ino, mode, uid, gid, nlink, rdev, size, allocated, atime, mtime, ctime, birth
_HEAD = struct.Struct(">BQIIIIQQQqqqq")
_COUNT = struct.Struct(">I")
_XATTR = struct.Struct(">HI")
_EXTENT = struct.Struct(">Q32sI")
_ENTRY = struct.Struct(">H32s")
_REFS = struct.Struct(">Q")
OID_SIZE = 32


@dataclass
class TreeObject:
    """One inode's state as of a snapshot; inode.ino is the live inode number it was taken from."""

    inode: Inode
    xattrs: list[tuple[bytes, bytes]] = field(default_factory=list)
    target: bytes = b""                                          # symlinks
    content_id: bytes = bytes(32)                                # regular files
    extents: list[tuple[int, bytes, int]] = field(default_factory=list)  # (offset, chunk, length)
    entries: list[tuple[bytes, bytes]] = field(default_factory=list)     # directories: (name, oid)

    def entry(self, name: bytes) -> bytes | None:
        """The object id of a directory entry (entries are sorted by name: binary search)."""
        i = bisect_left(self.entries, name, key=lambda entry: entry[0])
        return self.entries[i][1] if i < len(self.entries) and self.entries[i][0] == name else None

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.inode.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.inode.mode)

    def encode(self) -> bytes:
        i = self.inode
        parts = [_HEAD.pack(OBJECT_FORMAT, i.ino, i.mode, i.uid, i.gid, i.nlink, i.rdev, i.size,
                            i.allocated, i.atime_ns, i.mtime_ns, i.ctime_ns, i.birth_ns),
                 _COUNT.pack(len(self.xattrs))]
        for name, value in self.xattrs:
            parts += [_XATTR.pack(len(name), len(value)), name, value]
        if self.is_file:
            parts += [self.content_id, _COUNT.pack(len(self.extents))]
            parts += [_EXTENT.pack(off, cid, length) for off, cid, length in self.extents]
        elif self.is_dir:
            parts.append(_COUNT.pack(len(self.entries)))
            for name, oid in self.entries:
                parts += [_ENTRY.pack(len(name), oid), name]
        elif stat.S_ISLNK(i.mode):
            parts.append(self.target)
        return b"".join(parts)

    @classmethod
    def decode(cls, raw: bytes) -> "TreeObject":
        try:
            return cls._decode(memoryview(raw))
        except (struct.error, ValueError) as exc:
            raise StoreError(f"malformed tree object ({exc})") from exc

    @classmethod
    def _decode(cls, raw: memoryview) -> "TreeObject":
        head = _HEAD.unpack_from(raw, 0)
        if head[0] != OBJECT_FORMAT:
            raise StoreError(f"tree object of unknown format {head[0]}")
        (_fmt, ino, mode, uid, gid, nlink, rdev, size, allocated, atime, mtime, ctime,
         birth) = head
        obj = cls(Inode(ino, mode, uid, gid, nlink, rdev=rdev, size=size, allocated=allocated,
                        atime_ns=atime, mtime_ns=mtime, ctime_ns=ctime, birth_ns=birth))
        pos = _HEAD.size
        (count,), pos = _COUNT.unpack_from(raw, pos), pos + _COUNT.size
        for _ in range(count):
            nlen, vlen = _XATTR.unpack_from(raw, pos)
            pos += _XATTR.size
            obj.xattrs.append((bytes(raw[pos:pos + nlen]), bytes(raw[pos + nlen:pos + nlen + vlen])))
            pos += nlen + vlen
        if obj.is_file:
            obj.content_id = bytes(raw[pos:pos + 32])
            (count,), pos = _COUNT.unpack_from(raw, pos + 32), pos + 32 + _COUNT.size
            obj.extents = [(off, bytes(cid), length) for off, cid, length in
                           _EXTENT.iter_unpack(raw[pos:pos + count * _EXTENT.size])]
        elif obj.is_dir:
            (count,), pos = _COUNT.unpack_from(raw, pos), pos + _COUNT.size
            for _ in range(count):
                nlen, oid = _ENTRY.unpack_from(raw, pos)
                pos += _ENTRY.size
                obj.entries.append((bytes(raw[pos:pos + nlen]), bytes(oid)))
                pos += nlen
        elif stat.S_ISLNK(obj.inode.mode):
            obj.target = bytes(raw[pos:])
        return obj


def object_id(encoded: bytes) -> bytes:
    return blake3.blake3(encoded).digest()


def byid_key(content_id: bytes, oid: bytes) -> bytes:
    return content_id + oid


#: Python objects of a decoded tree object beyond its encoded size (measured with tracemalloc
#: over 100,000 file objects: ~600 bytes each); the cache bound counts it, or a cache of
#: small objects holds ten times the memory its bound says.
DECODED_OVERHEAD = 640


class Objects:
    """Reference-counted tree objects inside the store's transactions, with a decode cache
    bounded by the memory of what it holds (a directory object can be megabytes)."""

    def __init__(self, chunks: ChunkStore, cache_bytes: int = 16 << 20) -> None:
        self.chunks = chunks
        self.cache: OrderedDict[bytes, tuple[TreeObject, int]] = OrderedDict()
        self.cache_bytes = cache_bytes
        self.cached_bytes = 0

    def get(self, txn: Txn, oid: bytes) -> TreeObject:
        hit = self.cache.get(oid)
        if hit is not None:
            self.cache.move_to_end(oid)
            return hit[0]
        raw = txn.get("objects", oid)
        if raw is None:
            raise FsError(errno.EIO, f"tree object {oid.hex()} is missing from the store")
        obj = TreeObject.decode(bytes(raw))
        cost = len(raw) + DECODED_OVERHEAD
        self.cache[oid] = (obj, cost)
        self.cached_bytes += cost
        while self.cached_bytes > self.cache_bytes and len(self.cache) > 1:
            self.cached_bytes -= self.cache.popitem(last=False)[1][1]
        return obj

    def _uncache(self, oid: bytes) -> None:
        hit = self.cache.pop(oid, None)
        if hit is not None:
            self.cached_bytes -= hit[1]

    def put(self, txn: Txn, obj: TreeObject) -> bytes:
        """Store obj (or find it stored) and return its id, holding one new reference to it."""
        encoded = obj.encode()
        oid = object_id(encoded)
        refs = txn.get("objrefs", oid)
        if refs is not None:
            txn.put("objrefs", oid, _REFS.pack(_REFS.unpack(refs)[0] + 1))
            return oid
        txn.put("objects", oid, encoded)
        txn.put("objrefs", oid, _REFS.pack(1))
        for _name, child in obj.entries:
            self.incref(txn, child)
        for _off, cid, _length in obj.extents:
            self.chunks.incref(txn, cid)
        if obj.is_file:
            txn.put("byid", byid_key(obj.content_id, oid), b"")
        return oid

    def incref(self, txn: Txn, oid: bytes) -> None:
        refs = txn.get("objrefs", oid)
        if refs is None:
            raise FsError(errno.EIO, f"tree object {oid.hex()} has no reference count")
        txn.put("objrefs", oid, _REFS.pack(_REFS.unpack(refs)[0] + 1))

    def decref(self, txn: Txn, oid: bytes) -> None:
        """Drop one reference; objects whose last reference goes are deleted, recursively."""
        pending = [oid]
        while pending:
            current = pending.pop()
            refs = txn.get("objrefs", current)
            if refs is None:
                raise FsError(errno.EIO, f"tree object {current.hex()} has no reference count")
            count = _REFS.unpack(refs)[0]
            if count > 1:
                txn.put("objrefs", current, _REFS.pack(count - 1))
                continue
            obj = self.get(txn, current)
            txn.delete("objrefs", current)
            txn.delete("objects", current)
            self._uncache(current)
            for _off, cid, _length in obj.extents:
                self.chunks.decref(txn, cid)
            if obj.is_file:
                txn.delete("byid", byid_key(obj.content_id, current))
            pending.extend(child for _name, child in obj.entries)

    @staticmethod
    def refcount(txn: Txn, oid: bytes) -> int:
        refs = txn.get("objrefs", oid)
        return _REFS.unpack(refs)[0] if refs else 0

    def find_content(self, txn: Txn, content_id: bytes) -> bytes | None:
        """Some file object holding exactly this content, if any snapshot or live file has one."""
        for key, _value in txn.prefix_items("byid", content_id):
            return bytes(key[32:])
        return None


def encode_refcount(count: int) -> bytes:
    """The objrefs value for count references (for fsck's repairs)."""
    return _REFS.pack(count)


def decode_refcount(raw: bytes) -> int:
    return _REFS.unpack(raw)[0]
