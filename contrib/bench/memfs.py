"""The ceiling: a minimal in-memory pyfuse3 filesystem, measured in the same run as maiffs.

design.md §7 states maiffs's targets as ratios to "the in-memory pyfuse3 ceiling", so this file
is that ceiling: the cheapest filesystem pyfuse3 can serve (a dict of inodes, file data in
bytearrays, no locking, no persistence). It gives the kernel the same hints as maiffs
(`maiffs/fuse/attrs.py`, `maiffs/fuse/operations.py`) so that the two differ only in the work
behind each request: keep_cache=True, attr/entry timeout 1.0 s, st_blksize 128 KiB, attributes
returned from readdir (pyfuse3 always answers READDIRPLUS), no writeback cache.

One deliberate extra beyond the bare minimum: getxattr answers ENODATA and listxattr an empty
list, as maiffs does for a file without xattrs. Without them pyfuse3 answers ENOSYS, the kernel
stops asking, and `ls -l` (which reads security.selinux of every entry) would be one round trip
per entry cheaper on the ceiling than on any filesystem that supports xattrs.

Run as a script: `python memfs.py MOUNTPOINT`. It prints "ready" on stdout once mounted, serves
until unmounted (`fusermount3 -u`) or sent SIGTERM/SIGINT, and always unmounts on the way out.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import sys
import time
from dataclasses import dataclass, field

import pyfuse3
import trio

#: Same kernel cache hints as maiffs (maiffs/fuse/attrs.py).
BLOCK_SIZE = 128 << 10
TIMEOUT = 1.0
DIR_SIZE = 4096


@dataclass
class Node:
    """One inode. Directory entries live in `children`; file data in `data`."""

    ino: int
    mode: int
    uid: int
    gid: int
    parent: int
    nlink: int = 1
    data: bytearray = field(default_factory=bytearray)
    children: dict[bytes, int] = field(default_factory=dict)
    atime_ns: int = field(default_factory=time.time_ns)
    mtime_ns: int = 0
    ctime_ns: int = 0
    lookups: int = 0
    opens: int = 0

    def __post_init__(self) -> None:
        self.mtime_ns = self.ctime_ns = self.atime_ns

    def touch(self) -> None:
        self.mtime_ns = self.ctime_ns = time.time_ns()

    def attributes(self) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = self.ino
        attr.generation = 0
        attr.entry_timeout = attr.attr_timeout = TIMEOUT
        attr.st_mode = self.mode
        attr.st_nlink = self.nlink
        attr.st_uid, attr.st_gid = self.uid, self.gid
        attr.st_rdev = 0
        attr.st_size = DIR_SIZE if stat.S_ISDIR(self.mode) else len(self.data)
        attr.st_blksize = BLOCK_SIZE
        attr.st_blocks = (attr.st_size + 511) // 512
        attr.st_atime_ns, attr.st_mtime_ns = self.atime_ns, self.mtime_ns
        attr.st_ctime_ns = self.ctime_ns
        return attr


def _fail(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)


class MemFs(pyfuse3.Operations):
    """Every request is a dict lookup and a bytearray operation on the trio thread."""

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self) -> None:
        super().__init__()
        root = Node(pyfuse3.ROOT_INODE, stat.S_IFDIR | 0o755, os.getuid(), os.getgid(),
                    parent=pyfuse3.ROOT_INODE, nlink=2)
        self.nodes: dict[int, Node] = {root.ino: root}
        self.next_ino = root.ino + 1
        self.file_handles: dict[int, Node] = {}
        #: Directory handles hold a snapshot of the entries, so readdir is O(1) per entry.
        self.dir_handles: dict[int, list[tuple[bytes, int]]] = {}
        self.next_fh = 1

    # -- helpers ---------------------------------------------------------------------------
    def _node(self, ino: int) -> Node:
        node = self.nodes.get(ino)
        if node is None:
            raise _fail(errno.ENOENT)
        return node

    def _dir(self, ino: int) -> Node:
        node = self._node(ino)
        if not stat.S_ISDIR(node.mode):
            raise _fail(errno.ENOTDIR)
        return node

    def _handle(self) -> int:
        fh = self.next_fh
        self.next_fh += 1
        return fh

    def _new_node(self, parent: Node, name: bytes, mode: int, ctx: pyfuse3.RequestContext) -> Node:
        if name in parent.children:
            raise _fail(errno.EEXIST)
        node = Node(self.next_ino, mode, ctx.uid, ctx.gid, parent=parent.ino,
                    nlink=2 if stat.S_ISDIR(mode) else 1)
        self.next_ino += 1
        self.nodes[node.ino] = node
        parent.children[name] = node.ino
        if stat.S_ISDIR(mode):
            parent.nlink += 1
        parent.touch()
        node.lookups += 1
        return node

    def _maybe_free(self, node: Node) -> None:
        """Drop an unlinked file's data once nobody has it open; drop the inode once forgotten."""
        if node.nlink == 0 and node.opens == 0:
            node.data = bytearray()
            if node.lookups <= 0:
                self.nodes.pop(node.ino, None)

    # -- names and attributes ----------------------------------------------------------------
    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        parent = self._dir(parent_inode)
        if name == b".":
            node = parent
        elif name == b"..":
            node = self._node(parent.parent)
        else:
            ino = parent.children.get(name)
            if ino is None:
                raise _fail(errno.ENOENT)
            node = self.nodes[ino]
        node.lookups += 1
        return node.attributes()

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            node = self.nodes.get(ino)
            if node is not None:
                node.lookups -= count
                self._maybe_free(node)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext | None = None) -> pyfuse3.EntryAttributes:
        return self._node(inode).attributes()

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        if fields.update_size:
            del node.data[attr.st_size:]
            node.data.extend(bytes(attr.st_size - len(node.data)))
            node.touch()
        if fields.update_mode:
            node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(attr.st_mode)
        if fields.update_uid:
            node.uid = attr.st_uid
        if fields.update_gid:
            node.gid = attr.st_gid
        if fields.update_atime:
            node.atime_ns = attr.st_atime_ns
        if fields.update_mtime:
            node.mtime_ns = attr.st_mtime_ns
        node.ctime_ns = time.time_ns()
        return node.attributes()

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        out = pyfuse3.StatvfsData()
        out.f_bsize = out.f_frsize = 4096
        out.f_blocks = out.f_bfree = out.f_bavail = 1 << 30
        out.f_files = out.f_ffree = out.f_favail = 1 << 32
        out.f_namemax = 255
        return out

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        self._node(inode)
        raise _fail(errno.ENODATA)

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        self._node(inode)
        return []

    # -- creating and removing -----------------------------------------------------------------
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        mode = stat.S_IFDIR | (mode & 0o7777 & ~ctx.umask)
        return self._new_node(self._dir(parent_inode), name, mode, ctx).attributes()

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        node = self._new_node(self._dir(parent_inode), name, mode & ~ctx.umask, ctx)
        return self._open_node(node), node.attributes()

    def _unlink(self, parent_inode: int, name: bytes, want_dir: bool) -> None:
        parent = self._dir(parent_inode)
        ino = parent.children.get(name)
        if ino is None:
            raise _fail(errno.ENOENT)
        node = self.nodes[ino]
        if stat.S_ISDIR(node.mode) != want_dir:
            raise _fail(errno.EISDIR if stat.S_ISDIR(node.mode) else errno.ENOTDIR)
        if want_dir:
            if node.children:
                raise _fail(errno.ENOTEMPTY)
            parent.nlink -= 1
            node.nlink = 0
        else:
            node.nlink -= 1
        del parent.children[name]
        parent.touch()
        node.ctime_ns = time.time_ns()
        self._maybe_free(node)

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._unlink(parent_inode, name, want_dir=False)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._unlink(parent_inode, name, want_dir=True)

    # -- file data ---------------------------------------------------------------------------------
    def _open_node(self, node: Node) -> pyfuse3.FileInfo:
        fh = self._handle()
        self.file_handles[fh] = node
        node.opens += 1
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if flags & os.O_TRUNC:
            node.data = bytearray()
            node.touch()
        return self._open_node(node)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return bytes(memoryview(self.file_handles[fh].data)[off:off + size])

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        node = self.file_handles[fh]
        data = node.data
        if off > len(data):
            data.extend(bytes(off - len(data)))
        data[off:off + len(buf)] = buf
        node.touch()
        return len(buf)

    async def flush(self, fh: int) -> None:
        return None

    async def fsync(self, fh: int, datasync: bool) -> None:
        return None

    async def release(self, fh: int) -> None:
        node = self.file_handles.pop(fh)
        node.opens -= 1
        self._maybe_free(node)

    # -- directories ---------------------------------------------------------------------------------
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self._dir(inode)
        fh = self._handle()
        self.dir_handles[fh] = [(b".", node.ino), (b"..", node.parent), *node.children.items()]
        return fh

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        entries = self.dir_handles[fh]
        for index in range(start_id, len(entries)):
            name, ino = entries[index]
            node = self.nodes.get(ino)
            if node is None:  # removed since opendir
                continue
            if not pyfuse3.readdir_reply(token, name, node.attributes(), index + 1):
                return
            if name not in (b".", b".."):
                node.lookups += 1  # READDIRPLUS counts as a lookup of each entry but . and ..

    async def releasedir(self, fh: int) -> None:
        self.dir_handles.pop(fh, None)


async def _serve() -> None:
    """Serve until unmounted; SIGTERM/SIGINT end the session cleanly (then we unmount)."""
    async with trio.open_nursery() as nursery:
        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    pyfuse3.terminate()
                    return
        nursery.start_soon(watch_signals)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: memfs.py MOUNTPOINT", file=sys.stderr)
        return 2
    options = set(pyfuse3.default_options) | {"fsname=memfs", "subtype=memfs"}
    pyfuse3.init(MemFs(), argv[0], options)
    try:
        print("ready", flush=True)
        trio.run(_serve)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
