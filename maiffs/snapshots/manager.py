"""Snapshots of a store: create, delete, list, diff, log and restore (design.md §4).

A snapshot is a name, a creation time, a number (for its inode numbers) and one reference to
the root object of the tree as it was. Taking one brings the live tree's objects up to date
(builder.py: work proportional to what changed) and references the root; deleting one drops
that reference, which frees every object and chunk nothing else holds. Each is one store
transaction, so a crash leaves the old state or the new one, never half a snapshot.

Callers flush buffered writes first (the daemon does), so a snapshot holds everything written.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from maiffs.errors import FsError
from maiffs.namespace import NAME_MAX, ROOT_INO, Namespace
from maiffs.namespace.records import now_ns
from maiffs.snapshots.builder import drop_stale, update_tree
from maiffs.snapshots.objects import Objects, TreeObject
from maiffs.store.env import Txn

SNAPSHOT_FORMAT = 1
_RECORD = struct.Struct(">BQq32s")  # format, number, created (ns), root object id


@dataclass(frozen=True)
class SnapshotInfo:
    name: str
    number: int
    created_ns: int
    root: bytes

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "number": self.number, "created_ns": self.created_ns,
                "root": self.root.hex()}


def name_key(name: str) -> bytes:
    """A snapshot name as stored, refusing what could not be a directory name."""
    key = os.fsencode(name)
    if len(key) > NAME_MAX:
        raise FsError(errno.ENAMETOOLONG, f"snapshot name longer than {NAME_MAX} bytes")
    if not key or b"/" in key or key in (b".", b".."):
        raise FsError(errno.EINVAL, f"bad snapshot name {name!r}")
    return key


def split_path(path: str) -> list[bytes]:
    """'a/b/c' or '/a/b/c' -> [b'a', b'b', b'c'] (the tree's root is [])."""
    return [part for part in os.fsencode(path).split(b"/") if part and part != b"."]


def _decode_record(name: bytes, raw: bytes) -> SnapshotInfo:
    fmt, number, created, root = _RECORD.unpack(raw)
    if fmt != SNAPSHOT_FORMAT:
        raise FsError(errno.EIO, f"snapshot {os.fsdecode(name)!r} has unknown format {fmt}")
    return SnapshotInfo(os.fsdecode(name), number, created, root)


class Snapshots:
    """The snapshots of one open namespace."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.store = ns.store
        self.objects = Objects(ns.chunks)
        self._by_number: dict[int, SnapshotInfo] | None = None
        #: called after a snapshot was taken / deleted (replication, the kernel's caches)
        self.created_hooks: list[Callable[[SnapshotInfo], None]] = []
        self.deleted_hooks: list[Callable[[str], None]] = []

    # -- records ---------------------------------------------------------------------------
    def list(self) -> list[SnapshotInfo]:
        """Every snapshot, oldest first."""
        with self.store.read() as txn:
            infos = [_decode_record(bytes(k), bytes(v)) for k, v in txn.prefix_items("snapshots", b"")]
        return sorted(infos, key=lambda info: info.number)

    def get(self, name: str) -> SnapshotInfo:
        with self.store.read() as txn:
            raw = txn.get("snapshots", name_key(name))
        if raw is None:
            raise FsError(errno.ENOENT, f"no snapshot named {name!r}")
        return _decode_record(name_key(name), bytes(raw))

    def by_number(self, number: int) -> SnapshotInfo | None:
        if self._by_number is None:
            self._by_number = {info.number: info for info in self.list()}
        return self._by_number.get(number)

    def create(self, name: str) -> SnapshotInfo:
        """Snapshot the live tree as it is committed now (flush buffered writes first)."""
        key = name_key(name)

        def txn_fn(txn: Txn) -> SnapshotInfo:
            if txn.get("snapshots", key) is not None:
                raise FsError(errno.EEXIST, f"a snapshot named {name!r} exists")
            root = update_tree(txn, self.objects)
            self.objects.incref(txn, root)
            return self.record(txn, name, root, now_ns())

        info = self.store.write(txn_fn)
        self._by_number = None
        self.store.sync()
        for hook in self.created_hooks:
            hook(info)
        return info

    def record(self, txn: Txn, name: str, root: bytes, created_ns: int) -> SnapshotInfo:
        """Write the record of a new snapshot whose root reference the caller already holds."""
        info = SnapshotInfo(name, self.store.next_id(txn, b"next_snapshot", 1), created_ns, root)
        txn.put("snapshots", name_key(name), _RECORD.pack(SNAPSHOT_FORMAT, info.number,
                                                          info.created_ns, info.root))
        return info

    def changed(self) -> None:
        """Snapshots were added or removed in a transaction of the caller's: forget cached lists."""
        self._by_number = None

    def delete(self, name: str) -> None:
        """Delete a snapshot, freeing every object and chunk that nothing else holds."""
        key = name_key(name)

        def txn_fn(txn: Txn) -> None:
            raw = txn.get("snapshots", key)
            if raw is None:
                raise FsError(errno.ENOENT, f"no snapshot named {name!r}")
            drop_stale(txn, self.objects)  # so objects of since-changed files can go too
            self.objects.decref(txn, _decode_record(key, bytes(raw)).root)
            txn.delete("snapshots", key)

        self.store.write(txn_fn)
        self._by_number = None
        self.store.sync()
        for hook in self.deleted_hooks:
            hook(name)

    def live_root(self) -> bytes:
        """The root object of the live tree (built as a snapshot would, without recording one)."""
        return self.store.write(lambda txn: update_tree(txn, self.objects))

    # -- reading trees ---------------------------------------------------------------------------
    def object(self, txn: Txn, oid: bytes) -> TreeObject:
        return self.objects.get(txn, oid)

    def resolve(self, txn: Txn, root: bytes, path: str) -> TreeObject:
        """The object at path below root (no symlinks followed); ENOENT/ENOTDIR as a lookup."""
        obj = self.objects.get(txn, root)
        for part in split_path(path):
            if not obj.is_dir:
                raise FsError(errno.ENOTDIR, f"{path}: not a directory")
            child = obj.entry(part)
            if child is None:
                raise FsError(errno.ENOENT, f"{path}: no such file or directory")
            obj = self.objects.get(txn, child)
        return obj

    def children(self, txn: Txn, obj: TreeObject) -> Iterator[tuple[bytes, TreeObject]]:
        for name, oid in obj.entries:
            yield name, self.objects.get(txn, oid)

    def find_content(self, content_id: bytes) -> tuple[bytes, TreeObject] | None:
        """(id, object) of a file object with exactly this content, held by a snapshot or a
        clean live file."""
        with self.store.read() as txn:
            oid = self.objects.find_content(txn, content_id)
            return (oid, self.objects.get(txn, oid)) if oid is not None else None

    def held(self, txn: Txn, oid: bytes) -> bool:
        """Is the object still stored (something references it)?"""
        return self.objects.refcount(txn, oid) > 0

    # -- diff, log, restore -----------------------------------------------------------------------
    def diff(self, a: str, b: str | None) -> list[tuple[str, str]]:
        """(A|D|M, path) for every path added, removed or modified from snapshot a to b.

        b None is the live tree. Equal subtrees (equal object ids) are skipped unvisited."""
        root_b = self.get(b).root if b is not None else self.live_root()
        root_a = self.get(a).root
        out: list[tuple[str, str]] = []
        with self.store.read() as txn:
            self._diff_dirs(txn, self.objects.get(txn, root_a), self.objects.get(txn, root_b), b"", out)
        return sorted(out, key=lambda row: row[1])

    def _diff_dirs(self, txn: Txn, a: TreeObject, b: TreeObject, base: bytes,
                   out: list[tuple[str, str]]) -> None:
        stack = [(a, b, base)]
        while stack:
            da, db, prefix = stack.pop()
            ea, eb = dict(da.entries), dict(db.entries)
            for name in sorted(ea.keys() | eb.keys()):
                path = prefix + b"/" + name if prefix else name
                oa, ob = ea.get(name), eb.get(name)
                if oa == ob:
                    continue
                xa = self.objects.get(txn, oa) if oa else None
                xb = self.objects.get(txn, ob) if ob else None
                if xa is None or xb is None or stat.S_IFMT(xa.inode.mode) != stat.S_IFMT(xb.inode.mode):
                    for mark, obj in (("D", xa), ("A", xb)):
                        if obj is not None:
                            out.extend((mark, os.fsdecode(p)) for p in self._walk(txn, obj, path))
                    continue
                if _changed(xa, xb):
                    out.append(("M", os.fsdecode(path)))
                if xa.is_dir:
                    stack.append((xa, xb, path))

    def _walk(self, txn: Txn, obj: TreeObject, path: bytes) -> Iterator[bytes]:
        """path and every path below it."""
        stack = [(obj, path)]
        while stack:
            current, p = stack.pop()
            yield p
            stack.extend((child, p + b"/" + name) for name, child in self.children(txn, current))

    def log(self, path: str) -> list[dict[str, object]]:
        """The versions of path in every snapshot holding it, newest first."""
        rows = []
        with self.store.read() as txn:
            for info in reversed(self.list()):
                try:
                    obj = self.resolve(txn, info.root, path)
                except FsError:
                    continue
                rows.append({"snapshot": info.name, "snapshot_created_ns": info.created_ns,
                             "type": _kind(obj), "mtime_ns": obj.inode.mtime_ns,
                             "size": obj.inode.size,
                             "id": obj.content_id.hex() if obj.is_file else None})
        return rows

    def restore(self, name: str, path: str) -> tuple[int, list[bytes]]:
        """Put path (a file, a subtree, or '' for everything) back as it was in snapshot name.

        One transaction; nothing outside path is touched. Returns the live directory and the
        names in it that changed (for the kernel's caches)."""
        info = self.get(name)
        parts = split_path(path)
        with self.store.read() as txn:
            source = self.resolve(txn, info.root, path)
        parent = self._live_dir(parts[:-1])
        if not parts:
            if not source.is_dir:
                raise FsError(errno.EIO, f"snapshot {name!r} has no root directory")
            return ROOT_INO, self.ns.graft(ROOT_INO, None, source, self.children)
        return parent, self.ns.graft(parent, parts[-1], source, self.children)

    def _live_dir(self, parts: Iterable[bytes]) -> int:
        ino = ROOT_INO
        for part in parts:
            inode = self.ns.lookup(ino, part)
            if not stat.S_ISDIR(inode.mode):
                raise FsError(errno.ENOTDIR, f"{os.fsdecode(part)} is not a directory in the live tree")
            ino = inode.ino
        return ino


def _changed(a: TreeObject, b: TreeObject) -> bool:
    """Do two objects of one type differ in what diff reports (not atime, ctime or link count;
    for directories not their entries either, which are compared one by one)?"""
    ia, ib = a.inode, b.inode
    same = ((ia.mode, ia.uid, ia.gid, ia.rdev) == (ib.mode, ib.uid, ib.gid, ib.rdev)
            and a.xattrs == b.xattrs)
    if a.is_dir:
        return not same
    return not (same and ia.size == ib.size and ia.mtime_ns == ib.mtime_ns
                and a.content_id == b.content_id and a.target == b.target)


def _kind(obj: TreeObject) -> str:
    return {stat.S_IFREG: "file", stat.S_IFDIR: "directory", stat.S_IFLNK: "symlink"}.get(
        stat.S_IFMT(obj.inode.mode), "special")
