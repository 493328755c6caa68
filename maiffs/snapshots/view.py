"""`.snapshots/`: every snapshot as a read-only directory, served through the VirtualTree interface.

`mkdir .snapshots/NAME` takes a snapshot and `rmdir .snapshots/NAME` deletes one (CephFS's
convention). Inside a snapshot an inode number is (snapshot number + 1) << 40 | the live inode
number it had when taken: numbers never collide with live ones (all below 2**40) or with
another snapshot's, hard links inside a snapshot keep sharing one, and the same file keeps its
number across remounts, as `find`, `du`, `tar` and `rsync -H` expect.
"""

from __future__ import annotations

import errno
import os
import stat
from bisect import bisect_right
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace

from maiffs.errors import FsError
from maiffs.namespace import ROOT_INO, Inode
from maiffs.namespace.namespace import ID_XATTR
from maiffs.namespace.virtual import FACE_BASE, VIRTUAL_BASE, VirtualTree, daemon_owned, directory_inode
from maiffs.snapshots.manager import SnapshotInfo, Snapshots
from maiffs.snapshots.objects import TreeObject
from maiffs.store.chunks import ChunkStore
from maiffs.store.env import Txn

SNAPSHOTS_NAME = b".snapshots"
SNAPDIR_INO = VIRTUAL_BASE + 1
_SHIFT = 40
_LOW = (1 << _SHIFT) - 1
#: readdir offsets 1 and 2 are "." and ".."; entry i gets FIRST_OFFSET + i.
FIRST_OFFSET = 3


def snapshot_ino(number: int, live_ino: int) -> int:
    return ((number + 1) << _SHIFT) | live_ino


def read_object(txn: Txn, chunks: ChunkStore, obj: TreeObject, off: int, size: int) -> bytes:
    """size bytes at off of a file object's content (holes read as zeros)."""
    end = min(off + size, obj.inode.size)
    if off >= end:
        return b""
    out = bytearray(end - off)
    first = max(0, bisect_right(obj.extents, off, key=lambda e: e[0]) - 1)
    for ext_off, cid, length in obj.extents[first:]:
        if ext_off >= end:
            break
        lo, hi = max(off, ext_off), min(end, ext_off + length)
        if lo < hi:
            data = chunks.get(txn, cid)
            out[lo - off:hi - off] = memoryview(data)[lo - ext_off:hi - ext_off]
    return bytes(out)


def object_xattr(obj: TreeObject, name: bytes) -> bytes:
    if name == ID_XATTR and obj.is_file:
        return obj.content_id.hex().encode()
    value = dict(obj.xattrs).get(name)
    if value is None:
        raise FsError(errno.ENODATA)
    return value


class SnapshotTree(VirtualTree):
    """The `.snapshots` directory and everything below it."""

    def __init__(self, snapshots: Snapshots, take: Callable[[str], Awaitable[SnapshotInfo]],
                 drop: Callable[[str], Awaitable[None]]) -> None:
        super().__init__()
        self.snapshots = snapshots
        self.store = snapshots.store
        self.take = take
        self.drop = drop
        self.nodes: dict[int, tuple[bytes, int]] = {}  # inode -> (object id, parent inode)

    def owns(self, ino: int) -> bool:
        return ino == SNAPDIR_INO or 2 << _SHIFT <= ino < FACE_BASE

    def root_names(self) -> dict[bytes, int]:
        return {SNAPSHOTS_NAME: SNAPDIR_INO}

    # -- inode numbers -----------------------------------------------------------------------------
    def _snapshot_of(self, ino: int) -> SnapshotInfo:
        info = self.snapshots.by_number((ino >> _SHIFT) - 1)
        if info is None:
            raise FsError(errno.ESTALE, "that snapshot was deleted")
        return info

    def _node(self, ino: int) -> tuple[bytes, int]:
        info = self._snapshot_of(ino)
        if ino & _LOW == ROOT_INO:
            return info.root, SNAPDIR_INO
        node = self.nodes.get(ino)
        if node is None:
            raise FsError(errno.ESTALE)
        return node

    def _object(self, txn: Txn, ino: int) -> TreeObject:
        return self.snapshots.object(txn, self._node(ino)[0])

    def _enter(self, number: int, oid: bytes, obj: TreeObject, parent: int) -> Inode:
        ino = snapshot_ino(number, obj.inode.ino)
        self.nodes.setdefault(ino, (oid, parent))
        return replace(obj.inode, ino=ino)

    def unused(self, ino: int) -> None:
        self.nodes.pop(ino, None)

    # -- reading -------------------------------------------------------------------------------------
    def _snapdir(self) -> Inode:
        root = self.snapshots.ns.getattr(ROOT_INO)
        # mkdir/rmdir here take and delete whole-store snapshots: the daemon's user's to do
        return daemon_owned(directory_inode(SNAPDIR_INO, root, nlink=2 + len(self.snapshots.list())))

    def getattr(self, ino: int) -> Inode:
        if ino == SNAPDIR_INO:
            return self._snapdir()
        with self.store.read() as txn:
            return replace(self._object(txn, ino).inode, ino=ino)

    def lookup(self, parent: int, name: bytes) -> Inode:
        if parent == SNAPDIR_INO:
            if name == b".":
                return self._snapdir()
            if name == b"..":
                return self.snapshots.ns.getattr(ROOT_INO)
            info = self.snapshots.get(os.fsdecode(name))
            return self.getattr(snapshot_ino(info.number, ROOT_INO))
        number = (parent >> _SHIFT) - 1
        with self.store.read() as txn:
            obj = self._object(txn, parent)
            if not obj.is_dir:
                raise FsError(errno.ENOTDIR)
            if name == b".":
                return replace(obj.inode, ino=parent)
            if name == b"..":
                return self.getattr(self._node(parent)[1])
            oid = obj.entry(name)
            if oid is None:
                raise FsError(errno.ENOENT)
            return self._enter(number, oid, self.snapshots.object(txn, oid), parent)

    def readdir(self, ino: int, start: int) -> Iterator[tuple[bytes, Inode, int]]:
        if ino == SNAPDIR_INO:
            yield from self._readdir_snapshots(start)
            return
        number = (ino >> _SHIFT) - 1
        with self.store.read() as txn:
            obj = self._object(txn, ino)
            if start < 1:
                yield b".", replace(obj.inode, ino=ino), 1
            if start < 2:
                yield b"..", self.getattr(self._node(ino)[1]), 2
            for i in range(max(0, start - FIRST_OFFSET), len(obj.entries)):
                name, oid = obj.entries[i]
                yield name, self._enter(number, oid, self.snapshots.object(txn, oid), ino), i + FIRST_OFFSET + 1

    def _readdir_snapshots(self, start: int) -> Iterator[tuple[bytes, Inode, int]]:
        infos = self.snapshots.list()
        if start < 1:
            yield b".", self._snapdir(), 1
        if start < 2:
            yield b"..", self.snapshots.ns.getattr(ROOT_INO), 2
        for info in infos:  # offsets follow snapshot numbers: stable while others come and go
            if info.number + FIRST_OFFSET > start:
                yield (os.fsencode(info.name), self.getattr(snapshot_ino(info.number, ROOT_INO)),
                       info.number + FIRST_OFFSET)

    def read(self, ino: int, handle: object, off: int, size: int) -> bytes:
        with self.store.read() as txn:
            obj = self._object(txn, ino)
            if obj.is_dir:
                raise FsError(errno.EISDIR)
            return read_object(txn, self.snapshots.ns.chunks, obj, off, size)

    def readlink(self, ino: int) -> bytes:
        with self.store.read() as txn:
            obj = self._object(txn, ino)
        if not stat.S_ISLNK(obj.inode.mode):
            raise FsError(errno.EINVAL)
        return obj.target

    def getxattr(self, ino: int, name: bytes) -> bytes:
        if ino == SNAPDIR_INO:
            raise FsError(errno.ENODATA)
        with self.store.read() as txn:
            return object_xattr(self._object(txn, ino), name)

    def listxattr(self, ino: int) -> list[bytes]:
        if ino == SNAPDIR_INO:
            return []
        with self.store.read() as txn:
            return [name for name, _value in self._object(txn, ino).xattrs]

    # -- taking and deleting ---------------------------------------------------------------------------
    async def mkdir(self, parent: int, name: bytes) -> Inode:
        if parent != SNAPDIR_INO:
            raise FsError(errno.EROFS)
        info = await self.take(os.fsdecode(name))
        return self.getattr(snapshot_ino(info.number, ROOT_INO))

    async def rmdir(self, parent: int, name: bytes) -> None:
        if parent != SNAPDIR_INO:
            raise FsError(errno.EROFS)
        await self.drop(os.fsdecode(name))
