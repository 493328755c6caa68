"""Build the tree objects of the live namespace, reusing every object whose inode did not change.

`objcache` maps each clean inode to its object; `dirty` (kept by the namespace, closed upwards)
lists the inodes changed since. Bringing the cache up to date drops the objects of dirty inodes
and builds new ones for those still in the tree, so the work is proportional to what changed,
not to the size of the tree. The result is the live tree's root object, which a snapshot
references and a diff compares.
"""

from __future__ import annotations

import errno
import stat

import blake3

from maiffs.errors import FsError
from maiffs.namespace.records import (ROOT_INO, Inode, decode_dirent, decode_extent, ino_key,
                                      key_ino)
from maiffs.snapshots.objects import Objects, TreeObject
from maiffs.store.chunks import ChunkStore
from maiffs.store.env import Txn

_ZERO_BLOCK = bytes(1 << 20)


def update_tree(txn: Txn, objects: Objects) -> bytes:
    """Bring objcache up to date and return the id of the live root's object."""
    stale = _take_stale(txn)
    root = _build(txn, objects, ROOT_INO, stale)
    for oid in stale.values():  # after the build, so objects it reused are still there
        objects.decref(txn, oid)
    txn.clear("dirty")
    return root


def drop_stale(txn: Txn, objects: Objects) -> None:
    """Release the cached objects of changed inodes (they no longer describe them)."""
    for oid in _take_stale(txn).values():
        objects.decref(txn, oid)


def _take_stale(txn: Txn) -> dict[int, bytes]:
    """Remove the objcache entries of dirty inodes; return them (their references are the
    caller's to drop)."""
    stale = {}
    for key, _value in list(txn.prefix_items("dirty", b"")):
        cached = txn.get("objcache", key)
        if cached is not None:
            stale[key_ino(key)] = bytes(cached)
            txn.delete("objcache", key)
    return stale


def _build(txn: Txn, objects: Objects, top: int, previous: dict[int, bytes]) -> bytes:
    """The object of inode top, building (post-order, without recursion) whatever is not cached.

    previous holds the last objects of changed inodes: a file whose extents did not change
    (only its attributes did, e.g. atime) keeps its content id without reading its data."""
    done: dict[int, bytes] = {}
    stack: list[tuple[int, bool]] = [(top, False)]
    while stack:
        ino, expanded = stack.pop()
        if ino in done:
            continue
        cached = txn.get("objcache", ino_key(ino))
        if cached is not None:
            done[ino] = bytes(cached)
            continue
        inode = _load(txn, ino)
        if stat.S_ISDIR(inode.mode) and not expanded:
            stack.append((ino, True))
            stack.extend((child, False) for _name, child in _entries(txn, ino) if child not in done)
            continue
        old = previous.get(ino)
        obj = _object(txn, objects.chunks, inode, done,
                      objects.get(txn, old) if old and stat.S_ISREG(inode.mode) else None)
        oid = objects.put(txn, obj)  # the reference objcache holds
        txn.put("objcache", ino_key(ino), oid)
        done[ino] = oid
    return done[top]


def _load(txn: Txn, ino: int) -> Inode:
    raw = txn.get("inodes", ino_key(ino))
    if raw is None:
        raise FsError(errno.EIO, f"inode {ino} is named in a directory but missing")
    return Inode.decode(ino, bytes(raw))


def _entries(txn: Txn, ino: int) -> list[tuple[bytes, int]]:
    return [(bytes(key[8:]), decode_dirent(value)[0])
            for key, value in txn.prefix_items("dirents", ino_key(ino))]


def _object(txn: Txn, chunks: ChunkStore, inode: Inode, built: dict[int, bytes],
            previous: TreeObject | None) -> TreeObject:
    obj = TreeObject(inode, xattrs=[(bytes(key[8:]), bytes(value)) for key, value in
                                    txn.prefix_items("xattrs", ino_key(inode.ino))])
    if stat.S_ISDIR(inode.mode):
        obj.entries = [(name, built[child]) for name, child in _entries(txn, inode.ino)]
    elif stat.S_ISREG(inode.mode):
        obj.extents = [(key_ino(key, 8), *decode_extent(value))
                       for key, value in txn.prefix_items("extents", ino_key(inode.ino))]
        if (previous is not None and previous.is_file and previous.extents == obj.extents
                and previous.inode.size == inode.size):
            obj.content_id = previous.content_id
        else:
            obj.content_id = content_id(txn, chunks, obj.extents, inode.size)
    elif stat.S_ISLNK(inode.mode):
        obj.target = bytes(txn.get("symlinks", ino_key(inode.ino)) or b"")
    return obj


def content_id(txn: Txn, chunks: ChunkStore, extents: list[tuple[int, bytes, int]],
               size: int) -> bytes:
    """BLAKE3-256 of a file's bytes (holes as zeros): the id `user.maiffs.id` shows."""
    hasher = blake3.blake3()
    pos = 0
    for off, cid, length in extents + [(size, b"", 0)]:
        _hash_zeros(hasher, off - pos)
        if length:
            hasher.update(chunks.get(txn, cid))
        pos = off + length
    return hasher.digest()


def _hash_zeros(hasher: blake3.blake3, count: int) -> None:
    while count > 0:
        step = min(count, len(_ZERO_BLOCK))
        hasher.update(memoryview(_ZERO_BLOCK)[:step])
        count -= step
