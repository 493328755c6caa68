"""Archive directories: `mkdir X.zip#` makes a writable directory whose zip face `X.zip` reads as a
standard zip of its current contents (design.md §5).

The directory is an ordinary live directory (many writers, crash safety and dedup come with the
namespace); the face is a read-only file produced on read by `zipwrite.ZipLayout`: members are
stored (the store already compresses), so every offset follows from names and sizes, and a
member's CRC-32 is computed only when bytes that carry it are read (then cached by the file's
inode, size and mtime). Listings show the face in place of the directory, so `cp -a`, `rsync`
and `ls` see one zip file; `rm X.zip` removes the directory with its members, `mv X.zip Y.zip`
renames it, a move to a name that is not `*.zip` is EXDEV (so `mv` copies the zip and removes
the archive). The face's inode number is FACE_BASE | the directory's inode number.
"""

from __future__ import annotations

import errno
import stat
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from maiffs.archive.zipwrite import ZipEntry, ZipLayout
from maiffs.errors import FsError
from maiffs.namespace import Inode, Namespace
from maiffs.namespace.virtual import FACE_BASE, ZIP_BASE, VirtualTree

DIR_SUFFIX = b".zip#"
FACE_SUFFIX = b".zip"
CRC_CACHE_ITEMS = 200_000
_READ_STEP = 1 << 20


@dataclass
class FaceState:
    """One open zip face: the layout taken at open, and the members' inodes (in its order)."""

    layout: ZipLayout
    inos: list[int]


class ArchiveTree(VirtualTree):
    """The zip faces of every archive directory in the mount."""

    #: a face's size and times follow its directory's members, changed under other names
    uncached = True

    def __init__(self, ns: Namespace) -> None:
        super().__init__()
        self.ns = ns
        #: the last walk of each archive directory, with the namespace's change mark then
        self.layouts: dict[int, tuple[tuple[int, int], ZipLayout, list[int], int]] = {}
        self.crcs: OrderedDict[tuple[int, int, int], int] = OrderedDict()

    def owns(self, ino: int) -> bool:
        return FACE_BASE <= ino < ZIP_BASE

    def root_names(self) -> dict[bytes, int]:
        return {}

    # -- finding faces -------------------------------------------------------------------------
    def _archive_dir(self, parent: int, face_name: bytes) -> Inode | None:
        """The live archive directory behind face_name in parent, if there is one."""
        if not face_name.endswith(FACE_SUFFIX):
            return None
        try:
            inode = self.ns.lookup(parent, face_name + b"#")
        except FsError:
            return None
        return inode if stat.S_ISDIR(inode.mode) else None

    def enter(self, parent: int, name: bytes) -> Inode | None:
        archive = self._archive_dir(parent, name)
        return self._face(archive) if archive is not None else None

    def listed(self, parent: int, name: bytes, inode: Inode) -> tuple[bytes, Inode] | None:
        if not (name.endswith(DIR_SUFFIX) and stat.S_ISDIR(inode.mode)):
            return name, inode
        try:
            self.ns.lookup(parent, name[:-1])
            return None  # a real X.zip is listed on its own; its directory stays unlisted
        except FsError:
            return name[:-1], self._face(inode)

    def unlink_beside(self, parent: int, name: bytes) -> bytes | None:
        if self._archive_dir(parent, name) is None:
            return None
        self.ns.remove_tree(parent, name + b"#")
        return name + b"#"

    def rename_beside(self, parent: int, name: bytes, new_parent: int,
                      new_name: bytes) -> bytes | None:
        if self._archive_dir(parent, name) is None:
            return None
        if not new_name.endswith(FACE_SUFFIX):
            raise FsError(errno.EXDEV, "an archive's zip face can only be renamed to *.zip")
        self.ns.rename(parent, name + b"#", new_parent, new_name + b"#", noreplace=True)
        return name + b"#"

    # -- the face ------------------------------------------------------------------------------------
    def _walk(self, top: Inode) -> tuple[ZipLayout, list[int], int]:
        """The layout of the archive directory top as it is now, its members' inodes, and the
        newest mtime in it."""
        entries: list[ZipEntry] = []
        inos: list[int] = []
        newest = top.mtime_ns
        stack: list[tuple[int, bytes]] = [(top.ino, b"")]
        while stack:
            ino, prefix = stack.pop()
            children = [(n, i) for n, i, _next in self.ns.readdir(ino, 0) if n not in (b".", b"..")]
            for name, inode in reversed(children):  # depth first, names in order
                path = prefix + name
                newest = max(newest, inode.mtime_ns)
                if stat.S_ISDIR(inode.mode):
                    entries.append(ZipEntry(path, 0, inode.mtime_ns, inode.mode & 0o7777, True))
                    inos.append(inode.ino)
                    stack.append((inode.ino, path + b"/"))
                elif stat.S_ISREG(inode.mode):
                    entries.append(ZipEntry(path, inode.size, inode.mtime_ns, inode.mode & 0o7777, False))
                    inos.append(inode.ino)
        return ZipLayout(entries), inos, newest

    def _layout(self, archive: Inode, fresh: bool = False) -> tuple[ZipLayout, list[int], int]:
        """The archive directory's layout, walked again if anything changed since the last walk."""
        mark = self.ns.change_mark()
        cached = self.layouts.get(archive.ino)
        if cached is None or fresh or cached[0] != mark:
            layout, inos, newest = self._walk(archive)
            self.layouts[archive.ino] = (mark, layout, inos, newest)
            return layout, inos, newest
        return cached[1], cached[2], cached[3]

    def _face(self, archive: Inode, fresh: bool = False) -> Inode:
        layout, _inos, newest = self._layout(archive, fresh)
        return Inode(FACE_BASE | archive.ino, stat.S_IFREG | (archive.mode & 0o444), archive.uid,
                     archive.gid, 1, size=layout.total_size, allocated=layout.total_size,
                     atime_ns=newest, mtime_ns=newest,
                     ctime_ns=max(newest, archive.ctime_ns), birth_ns=archive.birth_ns)

    def _archive(self, ino: int) -> Inode:
        try:
            archive = self.ns.getattr(ino - FACE_BASE)
        except FsError:
            raise FsError(errno.ESTALE, "that archive was removed") from None
        if not stat.S_ISDIR(archive.mode):
            raise FsError(errno.ESTALE)
        return archive

    def getattr(self, ino: int) -> Inode:
        return self._face(self._archive(ino))

    def lookup(self, parent: int, name: bytes) -> Inode:
        raise FsError(errno.ENOTDIR)

    def readdir(self, ino: int, start: int) -> Iterator[tuple[bytes, Inode, int]]:
        raise FsError(errno.ENOTDIR)

    def open(self, ino: int, flags: int) -> object:
        super().open(ino, flags)
        layout, inos, _newest = self._layout(self._archive(ino), fresh=True)
        return FaceState(layout, inos)

    def direct_io(self, ino: int) -> bool:
        return True  # the content follows the directory's: never serve it from the page cache

    def read(self, ino: int, handle: object, off: int, size: int) -> bytes:
        assert isinstance(handle, FaceState)
        inos, entries = handle.inos, handle.layout.entries
        return handle.layout.read(off, size,
                                  lambda i, member_off, n: self.ns.read(inos[i], member_off, n),
                                  lambda i: self._crc(inos[i], entries[i].size))

    def _crc(self, ino: int, size: int) -> int:
        """CRC-32 of the first size bytes of a member as the layout serves them (zeros past its
        current end), cached by (inode, size, mtime)."""
        key = (ino, size, self.ns.getattr(ino).mtime_ns)
        crc = self.crcs.get(key)
        if crc is None:
            crc = 0
            for off in range(0, size, _READ_STEP):
                piece = self.ns.read(ino, off, min(_READ_STEP, size - off))
                crc = zlib.crc32(piece.ljust(min(_READ_STEP, size - off), b"\0"), crc)
            self.crcs[key] = crc
            if len(self.crcs) > CRC_CACHE_ITEMS:
                self.crcs.popitem(last=False)
        return crc
