"""POSIX semantics over the store, in plain Python (no FUSE types): design.md §2.2.

Every operation that changes the tree is one store transaction, built so that the closure
passed to `Store.write` touches nothing but the transaction; in-memory state (open files,
lookup counts) changes only after the commit. Callers are expected to be single-threaded
(the trio loop): there is no locking here, and none is needed between calls.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Protocol

import blake3

from maiffs.errors import CorruptRecord, FsError
from maiffs.namespace import acl, filedata
from maiffs.namespace.changes import (add_backlink, build_backlinks, mark_changed, path_of,
                                      remove_backlink)
from maiffs.namespace.filedata import PreparedRegion, Region
from maiffs.namespace.openfiles import FileState
from maiffs.namespace.readahead import ReadAhead
from maiffs.namespace.records import (ROOT_INO, Inode, cookie_key, decode_dirent, dirent_key,
                                      encode_dirent, encode_extent, extent_key, ino_key, key_ino,
                                      now_ns)
from maiffs.store.chunker import ChunkParams
from maiffs.store.chunks import ChunkStore
from maiffs.store.env import Store, Txn
from maiffs.store.upgrade import seal_records

log = logging.getLogger(__name__)

NAME_MAX = 255
SYMLINK_MAX = 4095
#: Largest file size, as ext4 with 4 KiB blocks: larger sizes give EFBIG.
MAX_FILE_SIZE = 1 << 44
XATTR_VALUE_MAX = 65536
XATTR_TOTAL_MAX = 1 << 20
ID_XATTR = b"user.maiffs.id"
XATTR_NAMESPACES = (b"user.", b"trusted.", b"security.")
#: readdir offsets 1 and 2 are "." and ".."; entries get cookies from here up.
FIRST_COOKIE = 3
RELATIME_NS = 24 * 3600 * 10**9
#: a read this small, not continuing the previous one, asks its chunks for only the part wanted
SMALL_READ = 64 << 10
#: file versions read without an open whose extents are remembered as checked
UNOPENED_CHECKED = 4096
#: what a directory listing reads: their leaf pages are read ahead when a listing starts
LISTING_DBS = ("dircookies", "dirents", "inodes")
#: marks the readdir offsets of a listing that left out a damaged entry (cookies stay below it)
DAMAGED = 1 << 62


class GraftSource(Protocol):
    """A tree node to copy into the namespace (a snapshot's tree object is one)."""

    inode: Inode  # attributes; equal `ino` within one graft means hard links
    xattrs: list[tuple[bytes, bytes]]
    target: bytes
    extents: list[tuple[int, bytes, int]]


@dataclass
class FlushJob:
    """Dirty data taken from a file for chunking; see Namespace.begin_flush."""

    ino: int
    regions: list[Region]
    final: bool

    @property
    def nbytes(self) -> int:
        """Bytes to cut and compress (dirty data widened to whole stored chunks)."""
        return sum(len(r.data) for r in self.regions)


class Namespace:
    """The filesystem tree of one store."""

    def __init__(self, store: Store, params: ChunkParams = ChunkParams(),
                 level: int = 3, cache_bytes: int = 64 << 20) -> None:
        self.store = store
        self.params = params
        self.level = level
        self.chunks = ChunkStore(cache_bytes)
        self.readahead = ReadAhead(self.chunks, store.read_in_worker)
        self.buffered_writes = 0  # counted for change_mark
        #: versions of files read without an open whose extents were checked (_read)
        self._unopened_checked: OrderedDict[tuple[int, int, int], None] = OrderedDict()
        self.files: dict[int, FileState] = {}
        self.lookups: dict[int, int] = {}
        self.orphans: set[int] = set()  # unlinked, kept while open or known to the kernel
        self._ids: dict[int, tuple[int, int, int, str]] = {}
        if not store.readonly:
            self.store.write(self._upgrade)
            seal_records(self.store)
            self.store.write(self._ensure_root)
            self.purge_orphans()

    def _upgrade(self, txn: Txn) -> None:
        """Bring a format-1 store (no backlinks) to format 2; seal_records goes on to 3."""
        if self.store.format < 2:
            build_backlinks(txn)
            self.store.set_format(txn, 2)

    # -- records ---------------------------------------------------------------------------
    @staticmethod
    def _load(txn: Txn, ino: int) -> Inode:
        raw = txn.get("inodes", ino_key(ino))
        if raw is None:
            raise FsError(errno.ENOENT, f"inode {ino}")
        return Inode.decode(ino, raw)

    @staticmethod
    def _save(txn: Txn, inode: Inode) -> None:
        txn.put("inodes", ino_key(inode.ino), inode.encode())
        mark_changed(txn, inode.ino)

    def _ensure_root(self, txn: Txn) -> None:
        if txn.get("inodes", ino_key(ROOT_INO)) is None:
            t = now_ns()
            self._save(txn, Inode(ROOT_INO, stat.S_IFDIR | 0o755, 0, 0, 2, parent=ROOT_INO,
                                  atime_ns=t, mtime_ns=t, ctime_ns=t, birth_ns=t))
            txn.count(inodes=1)

    def _view(self, inode: Inode) -> Inode:
        """The inode as users see it: stored record plus unflushed writes."""
        state = self.files.get(inode.ino)
        if state is None or not state.has_unflushed() and state.size == inode.size:
            return inode
        return replace(inode, size=state.size, allocated=inode.allocated + state.pending_bytes(),
                       mtime_ns=state.mtime_ns or inode.mtime_ns,
                       ctime_ns=state.ctime_ns or inode.ctime_ns)

    def getattr(self, ino: int) -> Inode:
        with self.store.read() as txn:
            return self._view(self._load(txn, ino))

    def _entry(self, txn: Txn, parent: int, name: bytes) -> int | None:
        raw = txn.get("dirents", dirent_key(parent, name))
        return decode_dirent(raw)[0] if raw else None

    def _dir(self, txn: Txn, ino: int) -> Inode:
        inode = self._load(txn, ino)
        if not stat.S_ISDIR(inode.mode):
            raise FsError(errno.ENOTDIR)
        return inode

    @staticmethod
    def _check_name(name: bytes) -> None:
        if len(name) > NAME_MAX:
            raise FsError(errno.ENAMETOOLONG)
        if not name or b"/" in name or name in (b".", b".."):
            raise FsError(errno.EINVAL, f"bad name {name!r}")

    # -- lookups ------------------------------------------------------------------------
    def lookup(self, parent: int, name: bytes) -> Inode:
        with self.store.read() as txn:
            pdir = self._dir(txn, parent)
            if name == b".":
                return self._view(pdir)
            if name == b"..":
                return self._view(self._load(txn, pdir.parent))
            if len(name) > NAME_MAX:
                raise FsError(errno.ENAMETOOLONG)
            child = self._entry(txn, parent, name)
            if child is None:
                raise FsError(errno.ENOENT)
            return self._view(self._load(txn, child))

    def remember(self, ino: int, count: int = 1) -> None:
        """The kernel now holds count more references to ino (lookup, create, readdirplus)."""
        self.lookups[ino] = self.lookups.get(ino, 0) + count

    def forget(self, ino: int, count: int) -> None:
        """The kernel dropped references; an unlinked inode nobody holds is deleted."""
        left = self.lookups.get(ino, 0) - count
        if left > 0:
            self.lookups[ino] = left
            return
        self.lookups.pop(ino, None)
        self._delete_if_unused(ino)

    # -- creating ---------------------------------------------------------------------
    def create(self, parent: int, name: bytes, mode: int, uid: int, gid: int, umask: int = 0,
               rdev: int = 0, target: bytes | None = None, opened: bool = False) -> Inode:
        """Make a new inode of any type (mode carries S_IFMT) named name in parent.

        The parent's default ACL, if any, takes the place of umask (as on ext4). With opened,
        the new file also counts an open handle, as `open` would (FUSE's create opens what it
        makes), without reading back the inode just written."""
        self._check_name(name)
        if target is not None and len(target) > SYMLINK_MAX:
            raise FsError(errno.ENAMETOOLONG)

        def txn_fn(txn: Txn) -> Inode:
            pdir = self._dir(txn, parent)
            if pdir.nlink == 0:
                raise FsError(errno.ENOENT, "directory was removed")
            if self._entry(txn, parent, name) is not None:
                raise FsError(errno.EEXIST)
            t = now_ns()
            new_gid = gid
            new_mode, access, default = self._inherit_acl(txn, parent, mode, umask, target)
            if pdir.mode & stat.S_ISGID:
                new_gid = pdir.gid
                if stat.S_ISDIR(mode):
                    new_mode |= stat.S_ISGID
            is_dir = stat.S_ISDIR(mode)
            ino = self.store.next_id(txn, b"next_ino", ROOT_INO + 1)
            inode = Inode(ino, new_mode, uid, new_gid, 2 if is_dir else 1, rdev=rdev,
                          parent=parent if is_dir else 0, atime_ns=t, mtime_ns=t, ctime_ns=t,
                          birth_ns=t)
            if target is not None:
                txn.put("symlinks", ino_key(ino), target)
                inode.size = len(target)
            for acl_name, value in ((acl.ACCESS, access), (acl.DEFAULT, default)):
                if value is not None:
                    txn.put("xattrs", ino_key(ino) + acl_name, value)
            self._save(txn, inode)
            self._add_entry(txn, parent, name, ino)
            pdir.mtime_ns = pdir.ctime_ns = t
            if is_dir:
                pdir.nlink += 1
            self._save(txn, pdir)
            txn.count(inodes=1)
            return inode

        inode = self.store.write(txn_fn)
        if opened:
            self._count_open(inode)
        return inode

    @staticmethod
    def _inherit_acl(txn: Txn, parent: int, mode: int, umask: int,
                     target: bytes | None) -> tuple[int, bytes | None, bytes | None]:
        """(mode, access ACL, default ACL) of a new inode in parent."""
        default = None if target is not None else txn.get("xattrs", ino_key(parent) + acl.DEFAULT)
        if default is None:
            return mode & ~umask, None, None
        return acl.inherit(bytes(default), mode)

    def _add_entry(self, txn: Txn, parent: int, name: bytes, ino: int) -> None:
        cookie = self.store.next_id(txn, b"next_cookie", FIRST_COOKIE)
        txn.put("dirents", dirent_key(parent, name), encode_dirent(ino, cookie))
        txn.put("dircookies", cookie_key(parent, cookie), name)
        add_backlink(txn, ino, parent, name)
        mark_changed(txn, parent)

    def _remove_entry(self, txn: Txn, parent: int, name: bytes) -> None:
        raw = txn.get("dirents", dirent_key(parent, name))
        child, cookie = decode_dirent(raw)
        txn.delete("dirents", dirent_key(parent, name))
        txn.delete("dircookies", cookie_key(parent, cookie))
        remove_backlink(txn, child, parent, name)
        mark_changed(txn, parent)

    def link(self, ino: int, parent: int, name: bytes) -> Inode:
        self._check_name(name)

        def txn_fn(txn: Txn) -> Inode:
            inode = self._load(txn, ino)
            if stat.S_ISDIR(inode.mode):
                raise FsError(errno.EPERM, "hard links to directories are not allowed")
            if inode.nlink == 0:
                raise FsError(errno.ENOENT)
            pdir = self._dir(txn, parent)
            if self._entry(txn, parent, name) is not None:
                raise FsError(errno.EEXIST)
            if inode.nlink >= 65000:
                raise FsError(errno.EMLINK)
            t = now_ns()
            self._add_entry(txn, parent, name, ino)
            inode.nlink += 1
            inode.ctime_ns = t
            pdir.mtime_ns = pdir.ctime_ns = t
            self._save(txn, inode)
            self._save(txn, pdir)
            return inode

        return self._view(self.store.write(txn_fn))

    def readlink(self, ino: int) -> bytes:
        with self.store.read() as txn:
            inode = self._load(txn, ino)
            if not stat.S_ISLNK(inode.mode):
                raise FsError(errno.EINVAL)
            target = txn.get("symlinks", ino_key(ino))
            if target is None:  # (written and deleted with the inode)
                raise CorruptRecord("symlinks", ino_key(ino), "missing, though it is a symlink")
            return bytes(target)

    # -- removing -------------------------------------------------------------------------
    def unlink(self, parent: int, name: bytes) -> None:
        self._remove(parent, name, want_dir=False)

    def rmdir(self, parent: int, name: bytes) -> None:
        if name == b".":
            raise FsError(errno.EINVAL)
        if name == b"..":
            raise FsError(errno.ENOTEMPTY)
        self._remove(parent, name, want_dir=True)

    def _remove(self, parent: int, name: bytes, want_dir: bool) -> None:
        def txn_fn(txn: Txn) -> int:
            pdir = self._dir(txn, parent)
            child = self._entry(txn, parent, name)
            if child is None:
                raise FsError(errno.ENOENT)
            inode = self._load(txn, child)
            is_dir = stat.S_ISDIR(inode.mode)
            if want_dir and not is_dir:
                raise FsError(errno.ENOTDIR)
            if not want_dir and is_dir:
                raise FsError(errno.EISDIR)
            if is_dir and not self._is_empty(txn, child):
                raise FsError(errno.ENOTEMPTY)
            t = now_ns()
            self._remove_entry(txn, parent, name)
            orphaned = self._drop_link(txn, inode, pdir, t)
            pdir.mtime_ns = pdir.ctime_ns = t
            self._save(txn, pdir)
            return child if orphaned else None

        self._orphaned(self.store.write(txn_fn))

    def _drop_link(self, txn: Txn, inode: Inode, pdir: Inode, t: int) -> bool:
        """One name of inode (in pdir) is gone: fix link counts; True if that was its last."""
        if stat.S_ISDIR(inode.mode):
            inode.nlink = 0
            pdir.nlink -= 1
        else:
            inode.nlink -= 1
        inode.ctime_ns = t
        self._save(txn, inode)
        if inode.nlink == 0:
            txn.put("orphans", ino_key(inode.ino), b"")
        return inode.nlink == 0

    @staticmethod
    def _is_empty(txn: Txn, ino: int) -> bool:
        return next(txn.prefix_items("dirents", ino_key(ino)), None) is None

    def _orphaned(self, ino: int | None) -> None:
        """ino lost its last name (after commit): delete it now or when its last user goes."""
        if ino is not None:
            self.orphans.add(ino)
            self._delete_if_unused(ino)

    def _delete_if_unused(self, ino: int) -> None:
        """Delete an unlinked inode once no handle and no kernel reference holds it."""
        if ino not in self.orphans or self.lookups.get(ino) or ino in self.files:
            return
        self.store.write(lambda txn: self._delete_inode(txn, ino))
        self.orphans.discard(ino)

    def _delete_inode(self, txn: Txn, ino: int) -> None:
        raw = txn.get("inodes", ino_key(ino))
        if raw is None:
            txn.delete("orphans", ino_key(ino))
            return
        inode = Inode.decode(ino, raw)
        if inode.nlink > 0:
            txn.delete("orphans", ino_key(ino))
            return
        if stat.S_ISREG(inode.mode):
            filedata.delete_extents(txn, self.chunks, ino, 0, 1 << 64)
            txn.count(logical_bytes=-inode.size)
        for key, _value in list(txn.prefix_items("xattrs", ino_key(ino))):
            txn.delete("xattrs", key)
        txn.delete("symlinks", ino_key(ino))
        txn.delete("inodes", ino_key(ino))
        txn.delete("orphans", ino_key(ino))
        txn.put("dirty", ino_key(ino), b"")  # so the next snapshot drops its cached object
        txn.count(inodes=-1)

    def purge_orphans(self) -> int:
        """Delete inodes left unlinked-but-open by a previous run (they can have no users now).
        One whose records are damaged is left for fsck: the mount goes on without it."""
        orphans = []
        with self.store.read() as txn:
            for key, stored in txn.stored_items("orphans"):
                try:
                    txn.unseal("orphans", key, stored)
                    orphans.append(key_ino(key))
                except CorruptRecord as exc:
                    log.error("unlinked inode not deleted: %s", exc)
        for ino in orphans:
            try:
                self.store.write(lambda txn, ino=ino: self._delete_inode(txn, ino))
            except CorruptRecord as exc:
                log.error("unlinked inode %d not deleted: %s", ino, exc)
        return len(orphans)

    # -- grafting whole trees (snapshot restore) ----------------------------------------------
    def graft(self, parent: int, name: bytes | None, source: "GraftSource",
              expand: Callable[[Txn, "GraftSource"], Iterable[tuple[bytes, "GraftSource"]]]
              ) -> list[bytes]:
        """Replace parent/name, whatever is there (recursively), by a copy of the tree source.

        With name None, directory parent itself takes source's attributes and its entries are
        replaced by source's. One transaction: all of it happens or none. Hard links inside
        source (equal `inode.ino`) stay hard links; file data shares the source's chunks.
        Returns the names in parent that changed, for the kernel's caches.
        """
        if name is not None:
            self._check_name(name)

        def txn_fn(txn: Txn) -> tuple[list[int], list[bytes]]:
            t = now_ns()
            self._dir(txn, parent)
            if name is None:
                old = [bytes(key[8:]) for key, _ in txn.prefix_items("dirents", ino_key(parent))]
                doomed = [ino for n in old for ino in self._remove_tree(txn, parent, n, t)]
                self._copy_attrs(txn, self._load(txn, parent), source, t)
                tops = [(parent, n, child) for n, child in expand(txn, source)]
                changed = old + [n for _p, n, _c in tops]
            else:
                doomed = (self._remove_tree(txn, parent, name, t)
                          if self._entry(txn, parent, name) is not None else [])
                tops, changed = [(parent, name, source)], [name]
            self._grow_tree(txn, tops, expand, t)
            if name is not None:  # otherwise parent took the source's times
                pdir = self._load(txn, parent)
                pdir.mtime_ns = pdir.ctime_ns = t
                self._save(txn, pdir)
            return doomed, changed

        doomed, changed = self.store.write(txn_fn)
        for ino in doomed:
            self._orphaned(ino)
        return changed

    def remove_tree(self, parent: int, name: bytes) -> None:
        """rm -rf parent/name in one transaction (open files stay readable until closed)."""
        def txn_fn(txn: Txn) -> list[int]:
            self._dir(txn, parent)
            if self._entry(txn, parent, name) is None:
                raise FsError(errno.ENOENT)
            return self._remove_tree(txn, parent, name, now_ns())

        for ino in self.store.write(txn_fn):
            self._orphaned(ino)

    def _remove_tree(self, txn: Txn, parent: int, name: bytes, t: int) -> list[int]:
        """Remove parent/name and everything below it; return the inodes that lost their last name."""
        doomed = []
        stack = [(parent, name, False)]
        while stack:
            pino, pname, expanded = stack.pop()
            child = self._entry(txn, pino, pname)
            inode = self._load(txn, child)
            if stat.S_ISDIR(inode.mode) and not expanded:
                stack.append((pino, pname, True))
                stack.extend((child, bytes(key[8:]), False)
                             for key, _ in list(txn.prefix_items("dirents", ino_key(child))))
                continue
            pdir = self._load(txn, pino)
            self._remove_entry(txn, pino, pname)
            if self._drop_link(txn, inode, pdir, t):
                doomed.append(child)
            pdir.mtime_ns = pdir.ctime_ns = t
            self._save(txn, pdir)
        return doomed

    def _grow_tree(self, txn: Txn, tops: list[tuple[int, bytes, "GraftSource"]],
                   expand: Callable[[Txn, "GraftSource"], Iterable[tuple[bytes, "GraftSource"]]],
                   t: int) -> None:
        """Create copies of the source trees in tops, each (directory, name, source)."""
        made: dict[int, int] = {}  # source inode number -> new inode (hard links)
        stack = list(reversed(tops))
        while stack:
            parent, name, src = stack.pop()
            pdir = self._load(txn, parent)
            is_dir = stat.S_ISDIR(src.inode.mode)
            if not is_dir and src.inode.ino in made:
                inode = self._load(txn, made[src.inode.ino])
                inode.nlink += 1
            else:
                inode = self._copy_inode(txn, src, parent, t)
                made[src.inode.ino] = inode.ino
            self._add_entry(txn, parent, name, inode.ino)
            self._save(txn, inode)
            if is_dir:
                pdir.nlink += 1
                self._save(txn, pdir)
                stack.extend((inode.ino, n, child) for n, child in reversed(list(expand(txn, src))))

    def _copy_inode(self, txn: Txn, src: "GraftSource", parent: int, t: int) -> Inode:
        """A new inode with src's attributes, xattrs, target and data (sharing its chunks)."""
        s = src.inode
        is_dir = stat.S_ISDIR(s.mode)
        ino = self.store.next_id(txn, b"next_ino", ROOT_INO + 1)
        inode = Inode(ino, s.mode, s.uid, s.gid, 2 if is_dir else 1, rdev=s.rdev, size=s.size,
                      parent=parent if is_dir else 0, atime_ns=s.atime_ns, mtime_ns=s.mtime_ns,
                      ctime_ns=t, birth_ns=t)
        for name, value in src.xattrs:
            txn.put("xattrs", ino_key(ino) + name, value)
        if stat.S_ISLNK(s.mode):
            txn.put("symlinks", ino_key(ino), src.target)
        for off, cid, length in src.extents:
            self.chunks.incref(txn, cid)
            txn.put("extents", extent_key(ino, off), encode_extent(cid, length))
            inode.allocated += length
        if stat.S_ISREG(s.mode):
            txn.count(logical_bytes=s.size, referenced_bytes=inode.allocated)
        txn.count(inodes=1)
        return inode

    def _copy_attrs(self, txn: Txn, inode: Inode, src: "GraftSource", t: int) -> None:
        """Give a directory src's mode, owner, times and xattrs (restoring it in place)."""
        for key, _ in list(txn.prefix_items("xattrs", ino_key(inode.ino))):
            txn.delete("xattrs", key)
        for name, value in src.xattrs:
            txn.put("xattrs", ino_key(inode.ino) + name, value)
        s = src.inode
        inode.mode, inode.uid, inode.gid = s.mode, s.uid, s.gid
        inode.atime_ns, inode.mtime_ns, inode.ctime_ns = s.atime_ns, s.mtime_ns, t
        self._save(txn, inode)

    # -- rename ---------------------------------------------------------------------------
    def rename(self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes,
               noreplace: bool = False, exchange: bool = False) -> None:
        self._check_name(new_name)

        def txn_fn(txn: Txn) -> int | None:
            t = now_ns()
            src_dir = self._dir(txn, old_parent)
            # one object when both are the same directory, so no change to it is lost
            dst_dir = src_dir if new_parent == old_parent else self._dir(txn, new_parent)
            src_ino = self._entry(txn, old_parent, old_name)
            if src_ino is None:
                raise FsError(errno.ENOENT)
            dst_ino = self._entry(txn, new_parent, new_name)
            if dst_ino is not None and noreplace:
                raise FsError(errno.EEXIST)
            if dst_ino is None and exchange:
                raise FsError(errno.ENOENT)
            src = self._load(txn, src_ino)
            dst = self._load(txn, dst_ino) if dst_ino is not None else None
            if stat.S_ISDIR(src.mode) and old_parent != new_parent:
                self._refuse_into_own_subtree(txn, src_ino, new_parent)
            if exchange and dst is not None and stat.S_ISDIR(dst.mode) and old_parent != new_parent:
                self._refuse_into_own_subtree(txn, dst_ino, old_parent)
            if src_ino == dst_ino:
                return None
            if exchange:
                self._exchange(txn, src_dir, old_name, src, dst_dir, new_name, dst, t)
                return None
            doomed = None
            if dst is not None:
                if stat.S_ISDIR(src.mode) and not stat.S_ISDIR(dst.mode):
                    raise FsError(errno.ENOTDIR)
                if not stat.S_ISDIR(src.mode) and stat.S_ISDIR(dst.mode):
                    raise FsError(errno.EISDIR)
                if stat.S_ISDIR(dst.mode) and not self._is_empty(txn, dst_ino):
                    raise FsError(errno.ENOTEMPTY)
                self._remove_entry(txn, new_parent, new_name)
                if self._drop_link(txn, dst, dst_dir, t):
                    doomed = dst_ino
            self._remove_entry(txn, old_parent, old_name)
            self._add_entry(txn, new_parent, new_name, src_ino)
            if stat.S_ISDIR(src.mode) and old_parent != new_parent:
                src.parent = new_parent
                src_dir.nlink -= 1
                dst_dir.nlink += 1
            src.ctime_ns = t
            self._save(txn, src)
            self._touch_dirs(txn, src_dir, dst_dir, t)
            return doomed

        self._orphaned(self.store.write(txn_fn))

    def _exchange(self, txn: Txn, src_dir: Inode, old_name: bytes, src: Inode, dst_dir: Inode,
                  new_name: bytes, dst: Inode, t: int) -> None:
        self._remove_entry(txn, src_dir.ino, old_name)
        self._remove_entry(txn, dst_dir.ino, new_name)
        self._add_entry(txn, src_dir.ino, old_name, dst.ino)
        self._add_entry(txn, dst_dir.ino, new_name, src.ino)
        if src_dir.ino != dst_dir.ino:
            for moved, into, out_of in ((src, dst_dir, src_dir), (dst, src_dir, dst_dir)):
                if stat.S_ISDIR(moved.mode):
                    moved.parent = into.ino
                    into.nlink += 1
                    out_of.nlink -= 1
        src.ctime_ns = dst.ctime_ns = t
        self._save(txn, src)
        self._save(txn, dst)
        self._touch_dirs(txn, src_dir, dst_dir, t)

    def _touch_dirs(self, txn: Txn, a: Inode, b: Inode, t: int) -> None:
        a.mtime_ns = a.ctime_ns = t
        if a.ino == b.ino:
            self._save(txn, a)
            return
        b.mtime_ns = b.ctime_ns = t
        self._save(txn, a)
        self._save(txn, b)

    def _refuse_into_own_subtree(self, txn: Txn, moved: int, target_parent: int) -> None:
        """EINVAL when a directory would be moved into itself or below itself."""
        ino = target_parent
        while True:
            if ino == moved:
                raise FsError(errno.EINVAL, "cannot move a directory into its own subtree")
            if ino == ROOT_INO:
                return
            ino = self._load(txn, ino).parent

    # -- readdir -------------------------------------------------------------------------
    def readdir(self, ino: int, start: int) -> Iterator[tuple[bytes, Inode, int]]:
        """Yield (name, attributes, offset of the next entry) from offset start on.

        Offsets are per-entry cookies that never change, so a listing interrupted while
        entries are added or removed resumes without skipping or repeating survivors.
        An entry whose records are damaged is left out (and logged) and the listing goes on;
        the offsets from there on carry DAMAGED, so that once every other entry is listed the
        listing ends in EIO (raised by the next call, which has nothing left to yield).
        """
        damaged, start = start & DAMAGED, start & ~DAMAGED
        yielded = False
        if start < 1:
            self.store.read_tree_ahead(LISTING_DBS)
        with self.store.read(scattered=LISTING_DBS) as txn:
            dirnode = self._dir(txn, ino)
            if start < 1:
                yielded = True
                yield b".", self._view(dirnode), 1 | damaged
            if start < 2:
                try:
                    parent = self._view(self._load(txn, dirnode.parent))
                    yielded = True
                    yield b"..", parent, 2 | damaged
                except CorruptRecord as exc:
                    damaged = _left_out(ino, "'..'", exc)
            prefix = ino_key(ino)
            first = struct.pack(">Q", max(start, FIRST_COOKIE))
            for key, stored in txn.stored_items("dircookies", prefix, first):
                name = b""
                cookie = key_ino(key, 8)
                try:
                    name = bytes(txn.unseal("dircookies", key, stored))
                    if cookie < start:  # listed before: a damaged key near it put the
                        continue        # B-tree out of order
                    child = self._entry(txn, ino, name)
                    if child is None:  # (they are written and deleted together)
                        raise CorruptRecord("dirents", dirent_key(ino, name),
                                            "missing, though its readdir cookie names it")
                    inode = self._view(self._load(txn, child))
                except CorruptRecord as exc:
                    entry = repr(os.fsdecode(name)) if name else f"at cookie {cookie}"
                    damaged = _left_out(ino, entry, exc)
                    continue
                yielded = True
                yield name, inode, (cookie + 1) | damaged
        if damaged and not yielded:
            raise FsError(errno.EIO, f"the listing of inode {ino} left out damaged entries")

    # -- attributes -----------------------------------------------------------------------
    def setattr(self, ino: int, mode: int | None = None, uid: int | None = None,
                gid: int | None = None, size: int | None = None, atime_ns: int | None = None,
                mtime_ns: int | None = None, ctime_ns: int | None = None,
                touch: bool = False) -> Inode:
        """Change attributes; touch makes a truncation update mtime even at the same size
        (open with O_TRUNC does that on Linux)."""
        state = self.files.get(ino)
        if size is not None:
            if size > MAX_FILE_SIZE:
                raise FsError(errno.EFBIG)
            if size < 0:
                raise FsError(errno.EINVAL)
            if state is not None and state.has_unflushed():
                self.flush(ino)

        def txn_fn(txn: Txn) -> Inode:
            inode = self._load(txn, ino)
            t = now_ns()
            if size is not None:
                if stat.S_ISDIR(inode.mode):
                    raise FsError(errno.EISDIR)
                if not stat.S_ISREG(inode.mode):
                    raise FsError(errno.EINVAL)
                if size < inode.size:
                    inode.allocated += filedata.truncate_extents(txn, self.chunks, ino, size,
                                                                 self.level)
                if size != inode.size or touch:  # as ext4: times move when the size does
                    inode.mtime_ns = t
                txn.count(logical_bytes=size - inode.size)
                inode.size = size
                self._ids.pop(ino, None)
            if mode is not None:
                inode.mode = stat.S_IFMT(inode.mode) | (mode & 0o7777)
                self._chmod_acl(txn, inode)
            if uid is not None:
                inode.uid = uid
            if gid is not None:
                inode.gid = gid
            if atime_ns is not None:
                inode.atime_ns = atime_ns
            if mtime_ns is not None:
                inode.mtime_ns = mtime_ns
            inode.ctime_ns = ctime_ns if ctime_ns is not None else t
            self._save(txn, inode)
            return inode

        inode = self.store.write(txn_fn)
        if state is not None:
            if size is not None:
                state.size = size
            if mtime_ns is not None:
                # set explicitly (cp -a and tar do it before close): the later flush of writes
                # buffered before it must not put the write time back
                state.mtime_ns = state.ctime_ns = None
        return self._view(inode)

    # -- xattrs ---------------------------------------------------------------------------
    def getxattr(self, ino: int, name: bytes) -> bytes:
        if name == ID_XATTR:
            return self.content_id(ino).encode()
        with self.store.read() as txn:
            self._load(txn, ino)
            value = txn.get("xattrs", ino_key(ino) + name)
        if value is None:
            raise FsError(errno.ENODATA)
        return bytes(value)

    def listxattr(self, ino: int) -> list[bytes]:
        with self.store.read() as txn:
            self._load(txn, ino)
            return [bytes(k[8:]) for k, _ in txn.prefix_items("xattrs", ino_key(ino))]

    def setxattr(self, ino: int, name: bytes, value: bytes, create: bool = False,
                 replace_only: bool = False) -> None:
        if name == ID_XATTR:
            raise FsError(errno.EPERM, f"{ID_XATTR.decode()} is computed from the content")
        if not name.startswith(XATTR_NAMESPACES) and name not in acl.NAMES:
            raise FsError(errno.EOPNOTSUPP)
        if len(name) > 255:
            raise FsError(errno.ERANGE)
        if len(value) > XATTR_VALUE_MAX:
            raise FsError(errno.E2BIG)

        def txn_fn(txn: Txn) -> None:
            inode = self._load(txn, ino)
            key = ino_key(ino) + name
            old = txn.get("xattrs", key)
            if create and old is not None:
                raise FsError(errno.EEXIST)
            if replace_only and old is None:
                raise FsError(errno.ENODATA)
            total = sum(len(k) - 8 + len(v) for k, v in txn.prefix_items("xattrs", ino_key(ino)))
            if total - (len(name) + len(old) if old is not None else 0) + len(name) + len(value) > XATTR_TOTAL_MAX:
                raise FsError(errno.ENOSPC, "too many extended attributes on one inode")
            if name in acl.NAMES and not self._apply_acl(inode, name, value):
                txn.delete("xattrs", key)
            else:
                txn.put("xattrs", key, value)
            inode.ctime_ns = now_ns()
            self._save(txn, inode)

        self.store.write(txn_fn)

    @staticmethod
    def _chmod_acl(txn: Txn, inode: Inode) -> None:
        """chmod rewrites the base entries of an access ACL, as posix_acl_chmod."""
        key = ino_key(inode.ino) + acl.ACCESS
        value = txn.get("xattrs", key)
        if value is not None:
            txn.put("xattrs", key, acl.encode(acl.chmod(acl.parse(bytes(value)), inode.mode)))

    @staticmethod
    def _apply_acl(inode: Inode, name: bytes, value: bytes) -> bool:
        """Validate an ACL being set and carry an access ACL into mode; False when it says no
        more than mode and so is not stored (as ext4)."""
        entries = acl.parse(value)
        if name == acl.DEFAULT:
            if not stat.S_ISDIR(inode.mode):
                raise FsError(errno.EACCES, "only directories have a default ACL")
            return True
        inode.mode = (inode.mode & ~0o777) | acl.mode_bits(entries)
        return not acl.is_minimal(entries)

    def removexattr(self, ino: int, name: bytes) -> None:
        def txn_fn(txn: Txn) -> None:
            inode = self._load(txn, ino)
            if not txn.delete("xattrs", ino_key(ino) + name):
                raise FsError(errno.ENODATA)
            inode.ctime_ns = now_ns()
            self._save(txn, inode)

        self.store.write(txn_fn)

    # -- regular files ----------------------------------------------------------------------
    def open(self, ino: int, truncate: bool = False) -> Inode:
        """Count an open handle (regular files keep a FileState while open)."""
        inode = self.getattr(ino)
        self._count_open(inode)
        if truncate and stat.S_ISREG(inode.mode):
            try:
                inode = self.setattr(ino, size=0, touch=True)
            except FsError:
                self.release(ino)
                raise
        return inode

    def _count_open(self, inode: Inode) -> None:
        if stat.S_ISREG(inode.mode):
            state = self.files.get(inode.ino)
            if state is None:
                state = self.files[inode.ino] = FileState(size=inode.size)
            state.opens += 1

    def has_unflushed(self, ino: int) -> bool:
        """Whether ino has writes (or times) not yet committed, or a flush under way."""
        state = self.files.get(ino)
        return state is not None and state.has_unflushed()

    def release(self, ino: int) -> None:
        """One handle closed; with the last one the file's state is flushed and dropped."""
        state = self.files.get(ino)
        if state is None:
            return
        state.opens -= 1
        if state.opens > 0:
            return
        try:
            if state.has_unflushed():
                self.flush(ino)
        finally:
            del self.files[ino]
            self._delete_if_unused(ino)

    def path_of(self, ino: int) -> str:
        """A path of ino inside the mount, for messages."""
        with self.store.read() as txn:
            return os.fsdecode(path_of(txn, ino))

    def read(self, ino: int, off: int, size: int) -> bytes:
        return bytes(self.read_view(ino, off, size))

    def read_view(self, ino: int, off: int, size: int) -> bytes | memoryview:
        """read(), where a range inside one cached chunk comes as a view of it, not a copy
        (for the FUSE reply, which copies it into the kernel anyway)."""
        data, inode = self._read(ino, off, size)
        self._touch_atime(inode)
        return data

    def _read(self, ino: int, off: int, size: int) -> tuple[bytes | memoryview, Inode]:
        state = self.files.get(ino)
        with self.store.read(buffers=True) as txn:  # values are views: nothing copied twice
            inode = self._load(txn, ino)
            file_size = state.size if state is not None else inode.size
            if off >= file_size or size <= 0:
                return b"", inode
            size = min(size, file_size - off)
            self._check_extents_once(txn, inode, state)
            sequential = self.readahead.note_read(txn, ino, off, off + size)
            piecewise = not sequential and size <= SMALL_READ
            pieces = filedata.stored_pieces(txn, self.chunks, ino, off, size, piecewise)
            unflushed = state is not None and state.has_unflushed()
            if len(pieces) == 1 and not piecewise and not unflushed:
                return pieces[0], inode  # a view of a cached chunk, valid after txn
            buf = bytearray().join(pieces)  # (piecewise ones may be views of the map)
        if unflushed:
            state.overlay(off, buf)
        return buf, inode

    def _check_extents_once(self, txn: Txn, inode: Inode, state: FileState | None) -> None:
        """_check_extents at the first read of each open, or of each version of a file read
        without one (zip views read the zip and archive faces their members so, in many
        small reads: a check at each would walk every extent of the file each time)."""
        if state is not None:
            if not state.extents_checked:
                _check_extents(txn, inode)
                state.extents_checked = True
            return
        version = (inode.ino, inode.allocated, inode.mtime_ns)
        if version in self._unopened_checked:
            return
        _check_extents(txn, inode)
        self._unopened_checked[version] = None
        if len(self._unopened_checked) > UNOPENED_CHECKED:
            self._unopened_checked.popitem(last=False)

    def _touch_atime(self, inode: Inode) -> None:
        """relatime, as Linux mounts by default: atime moves when it is older than m/ctime or a day."""
        t = now_ns()
        if (inode.atime_ns > inode.mtime_ns and inode.atime_ns > inode.ctime_ns
                and t - inode.atime_ns < RELATIME_NS) or self.store.readonly:
            return

        def txn_fn(txn: Txn) -> None:
            current = self._load(txn, inode.ino)
            current.atime_ns = t
            # not a change for snapshots: reading a tree must not make the next snapshot
            # rebuild it (a snapshot keeps the atime its file's object was built with)
            txn.put("inodes", ino_key(inode.ino), current.encode())

        self.store.write(txn_fn)

    def write(self, ino: int, off: int, data: bytes) -> int:
        """Buffer a write; the caller flushes when `pending_bytes` grows large."""
        if off + len(data) > MAX_FILE_SIZE:
            raise FsError(errno.EFBIG)
        state = self.files.get(ino)
        if state is None:
            raise FsError(errno.EBADF, "write to a file that is not open")
        state.dirty.write(off, data)
        state.size = max(state.size, off + len(data))
        state.mtime_ns = state.ctime_ns = now_ns()
        self._ids.pop(ino, None)
        self.buffered_writes += 1
        return len(data)

    def change_mark(self) -> tuple[int, int]:
        """Moves whenever the tree may have changed (a commit, a buffered write): a view
        derived from the tree (a zip face) is current while the mark it was made at is."""
        return self.store.commits, self.buffered_writes

    def pending_bytes(self, ino: int) -> int:
        state = self.files.get(ino)
        return state.pending_bytes() if state is not None else 0

    def begin_flush(self, ino: int, final: bool = True) -> FlushJob | None:
        """Take a file's dirty data for chunking; None when there is nothing to do.

        Until finish_flush (or abort_flush), reads still see the taken data. A non-final flush
        keeps the last chunk of data at the end of the file back, so that a file written in
        pieces is cut exactly as it would have been if written in one go.
        """
        state = self.files.get(ino)
        if state is None or state.flushing or not state.has_unflushed():
            return None
        segments = state.dirty.take()
        state.in_flight = segments
        state.flushing = True
        try:
            with self.store.read() as txn:
                regions = filedata.plan_regions(txn, self.chunks, ino, segments,
                                                self.params.min_size,
                                                None if final else state.size)
        except BaseException:
            self.abort_flush(FlushJob(ino, [], final))
            raise
        return FlushJob(ino, regions, final)

    def prepare_flush(self, job: FlushJob, mapper: Callable = map) -> list[PreparedRegion]:
        """Cut and compress a job's regions. Pure: run it on a worker thread."""
        return [filedata.prepare_region(r, self.params, self.level, mapper) for r in job.regions]

    def finish_flush(self, job: FlushJob, prepared: list[PreparedRegion]) -> None:
        """Commit prepared chunks and the file's new size and times in one transaction."""
        state = self.files[job.ino]
        tails = [(p.end, p.tail) for p in prepared if p.tail]
        complete = not tails and not state.dirty

        def txn_fn(txn: Txn) -> None:
            inode = self._load(txn, job.ino)
            for p in prepared:
                inode.allocated += filedata.replace_region(txn, self.chunks, job.ino, p.start,
                                                           p.end, p.pieces)
            written_end = max((p.end for p in prepared), default=0)
            new_size = state.size if complete else max(inode.size, written_end)
            txn.count(logical_bytes=new_size - inode.size)
            inode.size = new_size
            if state.mtime_ns is not None:
                inode.mtime_ns = state.mtime_ns
                # a chmod or xattr change after the write may have moved ctime further
                inode.ctime_ns = max(inode.ctime_ns, state.ctime_ns or state.mtime_ns)
            self._save(txn, inode)

        try:
            self.store.write(txn_fn, expected_bytes=sum(p.end - p.start for p in prepared))
        except BaseException:
            self.abort_flush(job)
            raise
        state.in_flight = []
        state.flushing = False
        self._put_back(state, tails)
        if complete:
            state.mtime_ns = state.ctime_ns = None

    def abort_flush(self, job: FlushJob) -> None:
        """Give taken data back to the dirty set (under anything written since)."""
        state = self.files[job.ino]
        taken, state.in_flight = state.in_flight, []
        state.flushing = False
        self._put_back(state, taken)

    @staticmethod
    def _put_back(state: FileState, ranges: Iterable[tuple[int, bytes | bytearray]]) -> None:
        ranges = list(ranges)
        if not ranges:
            return
        newer = state.dirty.take()
        for off, data in ranges + newer:
            state.dirty.write(off, data)

    def flush(self, ino: int) -> None:
        """Chunk and commit all of a file's dirty data now (synchronously)."""
        job = self.begin_flush(ino, final=True)
        if job is not None:
            self.finish_flush(job, self.prepare_flush(job))

    def content_id(self, ino: int) -> str:
        """BLAKE3-256 of the file's bytes, hex: equal content always gives an equal id."""
        inode = self.getattr(ino)
        if not stat.S_ISREG(inode.mode):
            raise FsError(errno.ENODATA)
        cached = self._ids.get(ino)
        if cached and cached[:3] == (inode.size, inode.mtime_ns, inode.ctime_ns):
            return cached[3]
        hasher = blake3.blake3()
        step = 4 << 20
        for off in range(0, inode.size, step):
            hasher.update(self._read(ino, off, step)[0])
        digest = hasher.hexdigest()
        self._ids[ino] = (inode.size, inode.mtime_ns, inode.ctime_ns, digest)
        return digest

    # -- the filesystem -------------------------------------------------------------------
    def statfs(self) -> dict[str, int]:
        total, free, _used = self.store.disk_usage()
        counters = self.store.stats()
        return {"total_bytes": total, "free_bytes": free, "inodes": counters["inodes"],
                "name_max": NAME_MAX}

    def write_back_healed(self) -> int:
        """Store the chunks that reads fetched from elsewhere: good copies of damaged ones
        (their count is returned) and evicted ones read again."""
        if not self.chunks.healed and not self.chunks.filled:
            return 0
        done = self.store.write(self.chunks.write_back)
        self.chunks.healed.clear()
        self.chunks.filled.clear()
        return done

    def flush_all(self) -> None:
        for ino in list(self.files):
            self.flush(ino)


def _left_out(ino: int, entry: str, exc: CorruptRecord) -> int:
    """Log an entry a listing leaves out because its records are damaged; DAMAGED."""
    log.error("the listing of directory inode %d leaves out entry %s: %s", ino, entry, exc)
    return DAMAGED


def _check_extents(txn: Txn, inode: Inode) -> None:
    """A file's extents add up to its allocated bytes (every change keeps them so): if they do
    not, an extent record was lost to a damaged key, and its bytes would read as zeros.
    Checked at the first read of each open (the rest of the open keeps them so)."""
    held = sum(length for _off, _cid, length in filedata.iter_extents(txn, inode.ino, 0, 1 << 63))
    if held != inode.allocated:
        raise CorruptRecord("extents", ino_key(inode.ino),
                            f"missing: they hold {held} bytes, the inode says {inode.allocated}")
