"""Trees served beside the live namespace: snapshot views and the `.maiffs/` control tree.

design.md §2 asks for one small read-only tree interface that each such view provides, so that
the FUSE adapter serves any of them the same way (as borg's vfs.py does for its archives).
Live inode numbers stay below VIRTUAL_BASE; each virtual tree owns a range above it and enters
the live tree through hidden names in its root (`root_names`), which readdir does not list.

Everything here is read-only (EROFS) unless a tree says otherwise: `.snapshots/` accepts mkdir
and rmdir, and the control file accepts writes.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import replace

from maiffs.errors import FsError
from maiffs.namespace.records import Inode

#: Live inode numbers are below this; the numbers from here up belong to virtual trees:
#: [VIRTUAL_BASE, 2 * VIRTUAL_BASE) `.snapshots` and `.maiffs`, then snapshots' contents up to
#: FACE_BASE, then the zip faces of archive directories up to ZIP_BASE, then zip views.
VIRTUAL_BASE = 1 << 40
FACE_BASE = 1 << 61
ZIP_BASE = 1 << 62
#: Flags of open() that would change a file.
WRITE_FLAGS = 0o1 | 0o2 | 0o1000 | 0o2000  # O_WRONLY, O_RDWR, O_TRUNC, O_APPEND


def directory_inode(ino: int, template: Inode, nlink: int = 2) -> Inode:
    """Attributes of a synthetic directory: owner and times of template (the live root)."""
    return Inode(ino, stat.S_IFDIR | 0o755, template.uid, template.gid, nlink,
                 atime_ns=template.atime_ns, mtime_ns=template.mtime_ns,
                 ctime_ns=template.ctime_ns, birth_ns=template.birth_ns)


def daemon_owned(inode: Inode) -> Inode:
    """inode as owned by the user the daemon runs as (who mounted the store), not by the
    owner of the mount's root: what the daemon does on request through `.maiffs/control`
    and in `.snapshots/` (take, delete and restore snapshots, pull from a path, list names
    in every directory) acts with its rights on the whole store, so the kernel must let only
    that user, and root, ask for it."""
    return replace(inode, uid=os.getuid(), gid=os.getgid())


class VirtualTree:
    """A tree of inodes the adapter serves as it serves the namespace; read-only by default."""

    #: its inodes' attributes change with no request to them (a zip face follows its archive
    #: directory), so the kernel must not keep them
    uncached = False

    def __init__(self) -> None:
        self.refs: dict[int, int] = {}  # inode -> references the kernel holds

    def owns(self, ino: int) -> bool:
        raise NotImplementedError

    def root_names(self) -> dict[bytes, int]:
        """Hidden names in the live root that lead into this tree, with their inode numbers."""
        raise NotImplementedError

    def enter(self, parent: int, name: bytes) -> Inode | None:
        """The root of this tree if name in live directory parent leads into it (asked only
        for names the live directory does not have), else None."""
        return None

    def listed(self, parent: int, name: bytes, inode: Inode) -> tuple[bytes, Inode] | None:
        """How live entry name of directory parent shows in its listing: unchanged, renamed
        (another face of it), or hidden (None)."""
        return name, inode

    def unlink_beside(self, parent: int, name: bytes) -> bytes | None:
        """Remove name from live directory parent where it is a face of this tree's; return
        the live name that went with it (for the kernel's caches), or None if not ours."""
        return None

    def rename_beside(self, parent: int, name: bytes, new_parent: int,
                      new_name: bytes) -> bytes | None:
        """Rename a face of this tree's in a live directory; return the live name that moved
        with it, or None if not ours."""
        return None

    def lookup(self, parent: int, name: bytes) -> Inode:
        raise NotImplementedError

    def getattr(self, ino: int) -> Inode:
        raise NotImplementedError

    def readdir(self, ino: int, start: int) -> Iterator[tuple[bytes, Inode, int]]:
        raise NotImplementedError

    def remember(self, ino: int) -> None:
        """The kernel holds one more reference to ino (from lookup, mkdir or readdirplus)."""
        self.refs[ino] = self.refs.get(ino, 0) + 1

    def forget(self, ino: int, count: int) -> None:
        """The kernel dropped count references to ino; at none, the tree may free its state."""
        left = self.refs.get(ino, 0) - count
        if left > 0:
            self.refs[ino] = left
            return
        self.refs.pop(ino, None)
        self.unused(ino)

    def unused(self, ino: int) -> None:
        """The kernel holds no reference to ino any more (it will look it up again if needed)."""

    def readlink(self, ino: int) -> bytes:
        raise FsError(errno.EINVAL)

    def open(self, ino: int, flags: int) -> object:
        """A handle for ino (passed back to read and write); EROFS for opening to write."""
        if flags & WRITE_FLAGS:
            raise FsError(errno.EROFS)
        if stat.S_ISDIR(self.getattr(ino).mode):
            raise FsError(errno.EISDIR)
        return None

    def read(self, ino: int, handle: object, off: int, size: int) -> bytes:
        raise FsError(errno.EISDIR)

    async def write(self, ino: int, handle: object, off: int, data: bytes) -> int:
        raise FsError(errno.EROFS)

    def direct_io(self, ino: int) -> bool:
        """True for files whose content is made per request (the kernel must not cache it)."""
        return False

    def getxattr(self, ino: int, name: bytes) -> bytes:
        raise FsError(errno.ENODATA)

    def listxattr(self, ino: int) -> list[bytes]:
        return []

    async def mkdir(self, parent: int, name: bytes) -> Inode:
        raise FsError(errno.EROFS)

    async def rmdir(self, parent: int, name: bytes) -> None:
        raise FsError(errno.EROFS)
