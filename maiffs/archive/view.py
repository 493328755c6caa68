"""`X.zip#/`: any stored zip file browsed as a read-only directory (the AVFS convention).

The name `X.zip#` is in no directory listing; looking it up in the directory holding `X.zip`
enters the archive. The central directory is parsed once per version of the file (its inode,
size and mtime) and kept in a small cache; members are read at random offsets without reading
the rest of the archive. Each parsed version gets a view number of its own, so inode numbers
(ZIP_BASE | view << 32 | entry) of a changed zip never reach the kernel's caches of the old one.

Errors: a file that is not a readable zip makes `X.zip#` ENOENT (EIO when its name ends in
`.zip`, where a zip was meant); a member that cannot be read gives EIO on open; hidden members
(zipread's policy) do not exist in the view.
"""

from __future__ import annotations

import errno
import logging
import stat
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from maiffs.archive.zipmember import MemberReader, open_member
from maiffs.archive.zipread import BadMember, BadZip, Directory, Entry, Member, ZipIndex
from maiffs.errors import FsError
from maiffs.namespace import Inode, Namespace
from maiffs.namespace.virtual import ZIP_BASE, VirtualTree

log = logging.getLogger(__name__)

SUFFIX = b"#"
_VIEW_SHIFT = 32
_ENTRY_MASK = (1 << _VIEW_SHIFT) - 1
#: Parsed archives kept; each holds its central directory in memory.
CACHED_VIEWS = 8


@dataclass
class ZipView:
    """One version of one zip file, entered from directory parent."""

    number: int
    parent: int
    zip_ino: int
    version: tuple[int, int, int]  # inode, size, mtime
    index: ZipIndex
    attrs: Inode  # the zip file's attributes when parsed
    paths: list[bytes] = field(default_factory=lambda: [b""])  # entry number -> path
    numbers: dict[bytes, int] = field(default_factory=lambda: {b"": 0})

    def ino(self, path: bytes) -> int:
        number = self.numbers.get(path)
        if number is None:
            number = self.numbers[path] = len(self.paths)
            self.paths.append(path)
        return ZIP_BASE | self.number << _VIEW_SHIFT | number


class ZipTree(VirtualTree):
    """Every `X.zip#` view of the mount."""

    def __init__(self, ns: Namespace) -> None:
        super().__init__()
        self.ns = ns
        self.views: OrderedDict[int, ZipView] = OrderedDict()
        self.by_version: dict[tuple[int, int, int], int] = {}
        self.next_view = 1

    def owns(self, ino: int) -> bool:
        return ino >= ZIP_BASE

    def root_names(self) -> dict[bytes, int]:
        return {}

    # -- entering --------------------------------------------------------------------------------
    def enter(self, parent: int, name: bytes) -> Inode | None:
        if not name.endswith(SUFFIX) or len(name) == len(SUFFIX):
            return None
        try:
            zip_file = self.ns.lookup(parent, name[:-len(SUFFIX)])
        except FsError:
            return None
        if not stat.S_ISREG(zip_file.mode):
            return None
        view = self._view(parent, zip_file, name)
        return self._attrs(view, b"", view.index.entry(b""))

    def _view(self, parent: int, zip_file: Inode, name: bytes) -> ZipView:
        version = (zip_file.ino, zip_file.size, zip_file.mtime_ns)
        number = self.by_version.get(version)
        if number is not None and number in self.views:
            self.views.move_to_end(number)
            return self.views[number]
        try:
            index = ZipIndex.parse(lambda off, size: self.ns.read(zip_file.ino, off, size),
                                   zip_file.size)
        except BadZip as exc:
            log.info("%s is not a readable zip: %s", name[:-len(SUFFIX)].decode(errors="replace"), exc)
            raise FsError(errno.EIO if name.endswith(b".zip#") else errno.ENOENT, str(exc)) from None
        view = ZipView(self.next_view, parent, zip_file.ino, version, index, zip_file)
        self.next_view += 1
        if view.number > _ENTRY_MASK:
            raise FsError(errno.ENOSPC, "too many zip versions entered in this mount")
        self.views[view.number] = view
        self.by_version[version] = view.number
        while len(self.views) > CACHED_VIEWS:
            _number, old = self.views.popitem(last=False)
            self.by_version.pop(old.version, None)
        return view

    # -- inode numbers ------------------------------------------------------------------------------
    def _find(self, ino: int) -> tuple[ZipView, bytes, Entry]:
        view = self.views.get((ino - ZIP_BASE) >> _VIEW_SHIFT)
        number = ino & _ENTRY_MASK
        if view is None or number >= len(view.paths):
            raise FsError(errno.ESTALE, "that zip view is gone (the zip changed or was evicted)")
        path = view.paths[number]
        entry = view.index.entry(path)
        if entry is None:
            raise FsError(errno.ESTALE)
        return view, path, entry

    def _attrs(self, view: ZipView, path: bytes, entry: Entry | None) -> Inode:
        z = view.attrs
        if isinstance(entry, Member) and not entry.is_dir:
            mode, nlink, size = stat.S_IFREG | entry.mode, 1, entry.size
            mtime = entry.mtime_ns
        else:
            own = entry.mode if isinstance(entry, Directory) else 0o755
            if not path:  # the archive's root: the zip file's permissions, r giving x too
                own = (z.mode & 0o444) | (z.mode & 0o444) >> 2
            mode, nlink, size = stat.S_IFDIR | own, 2, 0
            mtime = entry.mtime_ns if isinstance(entry, Directory) and entry.mtime_ns else z.mtime_ns
        return Inode(view.ino(path), mode, z.uid, z.gid, nlink, size=size,
                     allocated=entry.compressed_size if isinstance(entry, Member) else 0,
                     atime_ns=mtime, mtime_ns=mtime, ctime_ns=z.ctime_ns, birth_ns=z.birth_ns)

    # -- reading ------------------------------------------------------------------------------------
    def getattr(self, ino: int) -> Inode:
        view, path, entry = self._find(ino)
        return self._attrs(view, path, entry)

    def lookup(self, parent: int, name: bytes) -> Inode:
        view, path, entry = self._find(parent)
        if not isinstance(entry, Directory):
            raise FsError(errno.ENOTDIR)
        if name == b".":
            return self._attrs(view, path, entry)
        if name == b"..":
            if not path:
                return self.ns.getattr(view.parent)
            up = path.rpartition(b"/")[0]
            return self._attrs(view, up, view.index.entry(up))
        child = view.index.lookup(path, name)
        if child is None:
            raise FsError(errno.ENOENT)
        return self._attrs(view, _join(path, name), child)

    def readdir(self, ino: int, start: int) -> Iterator[tuple[bytes, Inode, int]]:
        view, path, entry = self._find(ino)
        if not isinstance(entry, Directory):
            raise FsError(errno.ENOTDIR)
        entries = [(b".", self._attrs(view, path, entry)), (b"..", self.lookup(ino, b".."))]
        listing = view.index.listdir(path)
        for i in range(start, len(listing) + 2):
            if i < 2:
                name, attrs = entries[i]
            else:
                name, child = listing[i - 2]
                attrs = self._attrs(view, _join(path, name), child)
            yield name, attrs, i + 1

    def open(self, ino: int, flags: int) -> object:
        super().open(ino, flags)
        view, path, entry = self._find(ino)
        assert isinstance(entry, Member)
        try:
            return open_member(lambda off, size: self.ns.read(view.zip_ino, off, size), entry)
        except BadMember as exc:
            log.warning("zip member %s: %s", path.decode(errors="replace"), exc)
            raise FsError(errno.EIO, str(exc)) from None

    def read(self, ino: int, handle: object, off: int, size: int) -> bytes:
        assert isinstance(handle, MemberReader)
        try:
            return handle.read(off, size)
        except BadMember as exc:
            log.warning("zip member %s: %s", handle.member.name.decode(errors="replace"), exc)
            raise FsError(errno.EIO, str(exc)) from None


def _join(path: bytes, name: bytes) -> bytes:
    return path + b"/" + name if path else name
