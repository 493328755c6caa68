"""pyfuse3.Operations over a Namespace: one async method per request, nothing clever.

The invariant that keeps this simple (S3QL's): all namespace and store work runs on the trio
thread, and synchronous code between two `await`s needs no locks. The only awaits are the
chunking/compression of dirty data on worker threads and durable syncs; a per-inode trio.Lock
orders the flushes of one file against each other and against truncation.

Every handler goes through `_errors`: a FsError becomes its errno, anything unexpected is
logged and answered with EIO, so no exception can escape and kill the mount.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyfuse3
import trio

from maiffs.errors import CorruptChunk, FsError, StoreError
from maiffs.fuse.attrs import ATTR_TIMEOUT, entry_attributes
from maiffs.namespace import ROOT_INO, Namespace
from maiffs.namespace.virtual import VIRTUAL_BASE, VirtualTree

log = logging.getLogger(__name__)

#: Start chunking a file's dirty data in the background once this much has piled up.
FLUSH_AT = 8 << 20
#: Make writers wait for the flush beyond this much unflushed data per file. It keeps every
#: dirty buffer (this, one more write and a held-back last chunk) below glibc's largest mmap
#: threshold (maiffs/malloc.py: 32 MiB): a bigger buffer is mapped afresh as it grows, and
#: faulting and zeroing its pages made each 1 MiB append cost 10-20 times its copy. With
#: 32/96 MiB here, `dd` of 1 GiB of log text took 4.1-4.2 s; with 8/24, 2.9-3.0 s.
BACKPRESSURE_AT = 24 << 20
#: Flushes of at most this much data are cut and compressed on the trio thread: hashing and
#: compressing 64 KiB takes ~25 µs, less than handing the job to a worker thread and back
#: (a small file's flush at close took ~70 µs of the trio thread that way, plus the wake-ups).
INLINE_FLUSH = 64 << 10


#: SetattrFields flag -> Namespace.setattr keyword -> EntryAttributes field
_SETATTR_FIELDS = (
    ("update_mode", "mode", "st_mode"),
    ("update_uid", "uid", "st_uid"),
    ("update_gid", "gid", "st_gid"),
    ("update_atime", "atime_ns", "st_atime_ns"),
    ("update_mtime", "mtime_ns", "st_mtime_ns"),
    ("update_ctime", "ctime_ns", "st_ctime_ns"),
)


def _errors(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(fn)
    async def wrapper(*args: Any) -> Any:
        if log.isEnabledFor(logging.DEBUG):  # --debug: one line per request, never data
            log.debug("%s(%s)", fn.__name__,
                      ", ".join(repr(a) for a in args[1:3] if isinstance(a, (int, bytes))))
        try:
            return await fn(*args)
        except pyfuse3.FUSEError:
            raise
        except FsError as exc:
            if exc.errno == errno.EIO:
                log.error("%s: %s", fn.__name__, exc)
            raise pyfuse3.FUSEError(exc.errno) from None
        except StoreError as exc:  # e.g. CorruptRecord: EIO for this request only
            asked = tuple(arg for arg in args[1:3] if isinstance(arg, (int, bytes)))
            log.error("%s%r: %s", fn.__name__, asked, exc)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except Exception:
            log.exception("unexpected error in %s%r", fn.__name__, args[1:3])
            raise pyfuse3.FUSEError(errno.EIO) from None
    return wrapper


class Operations(pyfuse3.Operations):
    """The FUSE face of a Namespace and of the virtual trees beside it (snapshots, .maiffs).

    A request for an inode number at or above VIRTUAL_BASE goes to the tree owning it; the
    live root has hidden names leading into them. Virtual trees are read-only unless they
    accept a request themselves (mkdir/rmdir in .snapshots, writes to the control file).
    """

    supports_dot_lookup = True
    enable_writeback_cache = False
    #: the kernel checks POSIX ACLs; the namespace keeps them in step with mode
    enable_acl = True

    def __init__(self, ns: Namespace, trees: Sequence[VirtualTree] = (), workers: int = 2) -> None:
        super().__init__()
        self.ns = ns
        self.trees = list(trees)
        self.hidden = {name: (tree, ino) for tree in self.trees
                       for name, ino in tree.root_names().items()}
        self.virtual_handles: dict[int, tuple[VirtualTree, int, object]] = {}
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="maiffs-chunk")
        self.handles: dict[int, int] = {}
        #: handles opened read-only: their close has nothing of theirs to commit
        self.readers: set[int] = set()
        self.next_fh = 1
        self.locks: dict[int, trio.Lock] = {}
        self.deferred: dict[int, FsError] = {}
        self.nursery: trio.Nursery | None = None
        #: set once the kernel's INIT is answered (what it settles, such as the mount's
        #: read-ahead, can be changed from then on)
        self.initialized = trio.Event()

    # -- helpers ---------------------------------------------------------------------------
    def _lock(self, ino: int) -> trio.Lock:
        lock = self.locks.get(ino)
        if lock is None:
            lock = self.locks[ino] = trio.Lock()
        return lock

    def init(self) -> None:
        """pyfuse3 calls this while it answers INIT: waiters run after the answer is sent."""
        self.initialized.set()

    def _tree(self, ino: int) -> VirtualTree | None:
        """The virtual tree owning ino, or None for a live inode."""
        if ino < VIRTUAL_BASE:
            return None
        for tree in self.trees:
            if tree.owns(ino):
                return tree
        raise FsError(errno.ESTALE, f"no tree owns inode {ino}")

    def _remember(self, ino: int) -> None:
        tree = self._tree(ino)
        if tree is None:
            self.ns.remember(ino)
        else:
            tree.remember(ino)

    def _entry(self, inode: Any, timeout: float | None = None) -> pyfuse3.EntryAttributes:
        self._remember(inode.ino)
        return self._attributes(inode, timeout)

    def _attributes(self, inode: Any, timeout: float | None = None) -> pyfuse3.EntryAttributes:
        """inode's attributes, kept by the kernel for timeout (default: as its tree allows)."""
        if timeout is None:
            tree = self._tree(inode.ino)
            timeout = 0.0 if tree is not None and tree.uncached else ATTR_TIMEOUT
        return entry_attributes(inode, timeout)

    def _refuse_virtual(self, parent: int, name: bytes | None = None,
                        reserved: int = errno.EEXIST) -> None:
        """Refuse changes inside virtual trees, and changes to the live root's hidden names
        (with reserved: EEXIST for making one, EBUSY for removing or renaming one)."""
        if self._tree(parent) is not None:
            raise FsError(errno.EROFS)
        if parent == ROOT_INO and name in self.hidden:
            raise FsError(reserved, f"{name!r} belongs to maiffs")

    async def _flush_locked(self, ino: int, final: bool) -> None:
        job = self.ns.begin_flush(ino, final)
        if job is None:
            return
        try:
            if job.nbytes <= INLINE_FLUSH:
                prepared = self.ns.prepare_flush(job)
            else:
                prepared = await trio.to_thread.run_sync(self.ns.prepare_flush, job, self.pool.map)
        except BaseException:
            self.ns.abort_flush(job)
            raise
        self.ns.finish_flush(job, prepared)

    async def flush_file(self, ino: int, final: bool = True) -> None:
        """Chunk and commit a file's dirty data; raise an error a background flush left behind.

        With nothing to commit and no flush under way the lock is not taken: every close
        sends flush and then release, and the second has nothing left to do. A free lock is
        taken without `async with`, whose two scheduler checkpoints cost more than the
        inline flush of a small file."""
        lock = self.locks.get(ino)
        if lock is not None and lock.locked():
            async with lock:
                await self._flush_locked(ino, final)
        elif self.ns.has_unflushed(ino):
            lock = self._lock(ino)
            lock.acquire_nowait()
            try:
                await self._flush_locked(ino, final)
            finally:
                lock.release()
        self._raise_deferred(ino)

    def _raise_deferred(self, ino: int) -> None:
        exc = self.deferred.pop(ino, None)
        if exc is not None:
            raise exc

    async def _background_flush(self, ino: int) -> None:
        try:
            async with self._lock(ino):
                await self._flush_locked(ino, final=False)
        except FsError as exc:
            log.warning("background flush of inode %d failed: %s", ino, exc)
            self.deferred[ino] = exc
        except Exception:
            log.exception("background flush of inode %d failed", ino)
            self.deferred[ino] = FsError(errno.EIO)

    async def flush_all(self, idle_ns: int | None = None) -> None:
        """Commit every file's dirty data.

        With idle_ns, files written to within the last idle_ns keep their last chunk back
        (they are still being written); the others are flushed completely.
        """
        cutoff = time.time_ns() - idle_ns if idle_ns is not None else None
        for ino, state in list(self.ns.files.items()):
            if not state.has_unflushed():
                continue
            final = cutoff is None or (state.mtime_ns or 0) < cutoff
            try:
                async with self._lock(ino):
                    await self._flush_locked(ino, final)
            except FsError as exc:
                log.warning("flush of inode %d failed: %s", ino, exc)
                self.deferred[ino] = exc

    # -- lookups and attributes ---------------------------------------------------------------
    @_errors
    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        tree = self._tree(parent_inode)
        if tree is not None:
            return self._entry(tree.lookup(parent_inode, name))
        if parent_inode == ROOT_INO and name in self.hidden:
            tree, ino = self.hidden[name]
            return self._entry(tree.getattr(ino))
        try:
            return self._entry(self.ns.lookup(parent_inode, name))
        except FsError as exc:
            if exc.errno != errno.ENOENT:
                raise
            for tree in self.trees:  # a name no directory lists, such as X.zip#: the kernel
                entered = tree.enter(parent_inode, name)  # asks again each time, so the name
                if entered is not None:  # follows the zip (or archive directory) behind it
                    return self._entry(entered, timeout=0.0)
            raise

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            try:
                tree = self._tree(ino)
                if tree is None:
                    self.ns.forget(ino, count)
                else:
                    tree.forget(ino, count)
            except Exception:
                log.exception("forget(%d) failed", ino)

    @_errors
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext | None = None) -> pyfuse3.EntryAttributes:
        tree = self._tree(inode)
        return self._attributes((tree or self.ns).getattr(inode))

    @_errors
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if self._tree(inode) is not None:
            raise FsError(errno.EROFS)
        changes = {name: getattr(attr, source) for flag, name, source in _SETATTR_FIELDS
                   if getattr(fields, flag)}
        if fields.update_size:
            async with self._lock(inode):
                await self._flush_locked(inode, final=True)
                result = self.ns.setattr(inode, size=attr.st_size, **changes)
        else:
            result = self.ns.setattr(inode, **changes)
        return entry_attributes(result)

    @_errors
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return (self._tree(inode) or self.ns).readlink(inode)

    # -- creating and removing ----------------------------------------------------------------
    @_errors
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._refuse_virtual(parent_inode, name)
        return self._entry(self.ns.create(parent_inode, name, mode, ctx.uid, ctx.gid, ctx.umask,
                                          rdev=rdev))

    @_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        tree = self._tree(parent_inode)
        if tree is not None:
            return self._entry(await tree.mkdir(parent_inode, name))
        self._refuse_virtual(parent_inode, name)
        mode = stat.S_IFDIR | (mode & 0o7777)
        return self._entry(self.ns.create(parent_inode, name, mode, ctx.uid, ctx.gid, ctx.umask))

    @_errors
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._refuse_virtual(parent_inode, name)
        return self._entry(self.ns.create(parent_inode, name, stat.S_IFLNK | 0o777, ctx.uid,
                                          ctx.gid, target=target))

    @_errors
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._refuse_virtual(new_parent_inode, new_name)
        if self._tree(inode) is not None:
            raise FsError(errno.EXDEV, "snapshots cannot be hard-linked into the live tree")
        return self._entry(self.ns.link(inode, new_parent_inode, new_name))

    @_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._refuse_virtual(parent_inode)
        try:
            self.ns.unlink(parent_inode, name)
        except FsError as exc:
            if exc.errno != errno.ENOENT:
                raise
            self._forget_names(parent_inode, exc, (tree.unlink_beside(parent_inode, name)
                                                   for tree in self.trees))

    @_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        tree = self._tree(parent_inode)
        if tree is not None:
            await tree.rmdir(parent_inode, name)
            return
        self._refuse_virtual(parent_inode, name, errno.EBUSY)
        self.ns.rmdir(parent_inode, name)

    @_errors
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        for parent, name in ((parent_inode_old, name_old), (parent_inode_new, name_new)):
            self._refuse_virtual(parent, name, errno.EBUSY)
        try:
            self.ns.rename(parent_inode_old, name_old, parent_inode_new, name_new,
                           noreplace=bool(flags & pyfuse3.RENAME_NOREPLACE),
                           exchange=bool(flags & pyfuse3.RENAME_EXCHANGE))
        except FsError as exc:
            if exc.errno != errno.ENOENT or flags & pyfuse3.RENAME_EXCHANGE:
                raise
            self._forget_names(parent_inode_old, exc, (
                tree.rename_beside(parent_inode_old, name_old, parent_inode_new, name_new)
                for tree in self.trees))

    @staticmethod
    def _forget_names(parent: int, missing: FsError, changed: Iterable[bytes | None]) -> None:
        """A virtual tree acted on a name the live directory lacks: drop the kernel's entry
        for the live name that changed with it; re-raise missing if no tree acted."""
        name = next((n for n in changed if n is not None), None)
        if name is None:
            raise missing
        pyfuse3.invalidate_entry_async(parent, name, ignore_enoent=True)

    # -- files ---------------------------------------------------------------------------------
    def _new_handle(self, ino: int) -> pyfuse3.FileInfo:
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = ino
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    def _new_virtual_handle(self, tree: VirtualTree, ino: int, flags: int) -> pyfuse3.FileInfo:
        state = tree.open(ino, flags)
        fh = self.next_fh
        self.next_fh += 1
        self.virtual_handles[fh] = (tree, ino, state)
        direct = tree.direct_io(ino)
        return pyfuse3.FileInfo(fh=fh, direct_io=direct, keep_cache=not direct)

    @_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        tree = self._tree(inode)
        if tree is not None:
            return self._new_virtual_handle(tree, inode, flags)
        if flags & os.O_TRUNC:
            async with self._lock(inode):
                await self._flush_locked(inode, final=True)
                self.ns.open(inode, truncate=True)
        else:
            self.ns.open(inode)
        info = self._new_handle(inode)
        if flags & os.O_ACCMODE == os.O_RDONLY:
            self.readers.add(info.fh)
        return info

    @_errors
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        self._refuse_virtual(parent_inode, name)
        inode = self.ns.create(parent_inode, name, mode, ctx.uid, ctx.gid, ctx.umask, opened=True)
        return self._new_handle(inode.ino), self._entry(inode)

    @_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        virtual = self.virtual_handles.get(fh)
        if virtual is not None:
            tree, ino, state = virtual
            return tree.read(ino, state, off, size)
        try:
            return self.ns.read_view(self.handles[fh], off, size)
        except CorruptChunk as exc:  # the log names the file, not only the chunk
            log.error("read of %s at offset %d: %s", self.ns.path_of(self.handles[fh]), off, exc)
            raise pyfuse3.FUSEError(errno.EIO) from None

    @_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        virtual = self.virtual_handles.get(fh)
        if virtual is not None:
            tree, ino, state = virtual
            return await tree.write(ino, state, off, buf)
        ino = self.handles[fh]
        self._raise_deferred(ino)
        written = self.ns.write(ino, off, buf)
        pending = self.ns.pending_bytes(ino)
        if pending >= BACKPRESSURE_AT:
            await self.flush_file(ino, final=False)
        elif pending >= FLUSH_AT and not self._lock(ino).locked() and self.nursery is not None:
            self.nursery.start_soon(self._background_flush, ino)
        return written

    @_errors
    async def flush(self, fh: int) -> None:
        """close(): commit what was written, and report a failure to commit to the writer.
        A reader's close commits nothing: another program's unwritable data (a full disk)
        must not fail a `cat` of the file with ENOSPC."""
        if fh not in self.virtual_handles and fh not in self.readers:
            await self.flush_file(self.handles[fh])

    @_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        if fh in self.virtual_handles:
            return
        await self.flush_file(self.handles[fh])
        await trio.to_thread.run_sync(self.ns.store.sync)

    @_errors
    async def release(self, fh: int) -> None:
        if self.virtual_handles.pop(fh, None) is not None:
            return
        ino = self.handles.pop(fh)
        self.readers.discard(fh)
        try:
            await self.flush_file(ino)
        finally:
            try:
                self.ns.release(ino)
            finally:  # also when its last commit failed: the file's state is gone either way
                if ino not in self.ns.files:
                    self.locks.pop(ino, None)
                    self.deferred.pop(ino, None)

    # -- directories -----------------------------------------------------------------------------
    @_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if not stat.S_ISDIR((self._tree(inode) or self.ns).getattr(inode).mode):
            raise FsError(errno.ENOTDIR)
        return inode

    @_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        tree = self._tree(fh)
        for name, inode, next_id in (tree or self.ns).readdir(fh, start_id):
            if tree is None and name not in (b".", b".."):
                shown = self._listed(fh, name, inode)
                if shown is None:
                    continue
                name, inode = shown
            if not pyfuse3.readdir_reply(token, name, entry_attributes(inode), next_id):
                return
            if name not in (b".", b".."):
                self._remember(inode.ino)

    def _listed(self, parent: int, name: bytes, inode: Any) -> tuple[bytes, Any] | None:
        """How a live entry shows in its directory's listing (a virtual tree may rename or
        hide it: an archive directory X.zip# shows as its zip face X.zip)."""
        shown: tuple[bytes, Any] | None = (name, inode)
        for tree in self.trees:
            shown = tree.listed(parent, name, inode)
            if shown is None or shown[0] != name:
                return shown
        return shown

    async def releasedir(self, fh: int) -> None:
        return None

    @_errors
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        if self._tree(fh) is None:
            await trio.to_thread.run_sync(self.ns.store.sync)

    @_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        info = self.ns.statfs()
        out = pyfuse3.StatvfsData()
        out.f_bsize = out.f_frsize = 4096
        out.f_blocks = info["total_bytes"] // 4096
        out.f_bfree = out.f_bavail = info["free_bytes"] // 4096
        out.f_files = info["inodes"] + (1 << 32)
        out.f_ffree = out.f_favail = 1 << 32
        out.f_namemax = info["name_max"]
        return out

    # -- xattrs ------------------------------------------------------------------------------------
    @_errors
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        return (self._tree(inode) or self.ns).getxattr(inode, name)

    @_errors
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._refuse_virtual(inode)
        self.ns.setxattr(inode, name, value)

    @_errors
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return (self._tree(inode) or self.ns).listxattr(inode)

    @_errors
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._refuse_virtual(inode)
        self.ns.removexattr(inode, name)

    # -- lifetime ----------------------------------------------------------------------------------
    async def shutdown(self) -> None:
        """After unmount: commit everything still buffered and make it durable."""
        await self.flush_all()
        self.ns.write_back_healed()
        self.ns.store.sync()
        self.pool.shutdown(wait=True)
        self.ns.chunks.stop_decoding()
