"""`.maiffs/`: the daemon's own directory in every mount (hidden from readdir, like `.snapshots`).

- `stats`: the store's numbers as JSON, made when opened (`cat MNT/.maiffs/stats`).
- `control`: the channel the CLI uses while the store is mounted. A client opens it read-write,
  writes one JSON request ending in a newline, then reads the JSON answer from the same handle;
  each handle is its own session. Mode 0600, owned by the user who mounted: only that user
  (and root) may use it, whoever owns the mount's root (see `daemon_owned`).
- `by-id/ID`: the content with that id (`getfattr -n user.maiffs.id`) as a read-only file,
  as long as a snapshot or an unchanged live file (as of the last snapshot) holds it.
"""

from __future__ import annotations

import errno
import json
import stat
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from maiffs.errors import FsError
from maiffs.namespace import ROOT_INO, Inode
from maiffs.namespace.virtual import VIRTUAL_BASE, VirtualTree, daemon_owned, directory_inode
from maiffs.snapshots.manager import Snapshots
from maiffs.snapshots.objects import TreeObject
from maiffs.snapshots.view import object_xattr, read_object
from maiffs.store.env import Txn

MAIFFS_NAME = b".maiffs"
DIR_INO = VIRTUAL_BASE + 2
STATS_INO = VIRTUAL_BASE + 3
CONTROL_INO = VIRTUAL_BASE + 4
BYID_INO = VIRTUAL_BASE + 5
FIRST_BYID_INO = VIRTUAL_BASE + 1024
LAST_INO = (2 << 40) - 1
#: The most a request may be (a request is a short JSON object).
MAX_REQUEST = 1 << 20

FILES = {b"stats": (STATS_INO, 0o444), b"control": (CONTROL_INO, 0o600)}


@dataclass
class Session:
    """One open handle of the control file: the request as written so far, then the answer."""

    request: bytearray = field(default_factory=bytearray)
    answer: bytes = b""


class ControlTree(VirtualTree):
    """`.maiffs/` and the files in it."""

    def __init__(self, snapshots: Snapshots, stats: Callable[[], dict[str, Any]],
                 run: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> None:
        super().__init__()
        self.snapshots = snapshots
        self.stats = stats
        self.run = run
        self.by_id: dict[bytes, int] = {}      # content id -> inode number (stable per mount)
        self.objects: dict[int, tuple[bytes, TreeObject]] = {}  # inode -> (id, file object)

    def owns(self, ino: int) -> bool:
        return DIR_INO <= ino <= LAST_INO

    def root_names(self) -> dict[bytes, int]:
        return {MAIFFS_NAME: DIR_INO}

    def _root(self) -> Inode:
        return self.snapshots.ns.getattr(ROOT_INO)

    def getattr(self, ino: int) -> Inode:
        root = self._root()
        if ino == DIR_INO:
            return directory_inode(DIR_INO, root, nlink=3)
        if ino == BYID_INO:
            return replace(directory_inode(BYID_INO, root), mode=stat.S_IFDIR | 0o555)
        if ino == CONTROL_INO:
            return daemon_owned(replace(directory_inode(ino, root, nlink=1),
                                        mode=stat.S_IFREG | FILES[b"control"][1]))
        if ino == STATS_INO:
            return replace(directory_inode(ino, root, nlink=1), mode=stat.S_IFREG | FILES[b"stats"][1])
        with self.snapshots.store.read() as txn:
            return replace(self._held(txn, ino).inode, ino=ino, nlink=1)

    def lookup(self, parent: int, name: bytes) -> Inode:
        if name in (b".", b".."):
            up = {DIR_INO: ROOT_INO, BYID_INO: DIR_INO}.get(parent)
            if up is None:
                raise FsError(errno.ENOTDIR)
            target = parent if name == b"." else up
            return self._root() if target == ROOT_INO else self.getattr(target)
        if parent == DIR_INO:
            if name == b"by-id":
                return self.getattr(BYID_INO)
            if name in FILES:
                return self.getattr(FILES[name][0])
            raise FsError(errno.ENOENT)
        if parent == BYID_INO:
            return self.getattr(self._content_ino(name))
        raise FsError(errno.ENOTDIR)

    def _content_ino(self, name: bytes) -> int:
        try:
            content_id = bytes.fromhex(name.decode())
        except ValueError:
            raise FsError(errno.ENOENT) from None
        if len(content_id) != 32:
            raise FsError(errno.ENOENT)
        found = self.snapshots.find_content(content_id)
        if found is None:
            raise FsError(errno.ENOENT)
        ino = self.by_id.get(content_id)
        if ino is None:
            ino = self.by_id[content_id] = FIRST_BYID_INO + len(self.by_id)
            if ino > LAST_INO:
                raise FsError(errno.ENOSPC, "too many content ids opened in this mount")
        self.objects[ino] = found
        return ino

    def _held(self, txn: Txn, ino: int) -> TreeObject:
        """The file object behind a by-id inode, while anything still holds it (ESTALE after)."""
        oid, obj = self.objects.get(ino, (b"", None))
        if obj is None or not self.snapshots.held(txn, oid):
            raise FsError(errno.ESTALE, "no snapshot holds that content any more")
        return obj

    def unused(self, ino: int) -> None:
        self.objects.pop(ino, None)  # its number stays reserved for its content id

    def readdir(self, ino: int, start: int) -> Iterator[tuple[bytes, Inode, int]]:
        if ino == DIR_INO:
            names = [b"by-id", *FILES]
        elif ino == BYID_INO:
            names = []  # content is reached by id, not listed (as /ipfs)
        else:
            raise FsError(errno.ENOTDIR)
        entries = [(b".", self.getattr(ino)), (b"..", self.lookup(ino, b".."))]
        entries += [(name, self.lookup(ino, name)) for name in names]
        for i in range(start, len(entries)):
            yield entries[i][0], entries[i][1], i + 1

    # -- files ----------------------------------------------------------------------------------
    def open(self, ino: int, flags: int) -> object:
        if ino == CONTROL_INO:
            return Session()
        state = super().open(ino, flags)
        if ino == STATS_INO:
            return (json.dumps(self.stats(), indent=2) + "\n").encode()
        return state

    def direct_io(self, ino: int) -> bool:
        return ino in (STATS_INO, CONTROL_INO)

    def read(self, ino: int, handle: object, off: int, size: int) -> bytes:
        if isinstance(handle, Session):
            return handle.answer[off:off + size]
        if isinstance(handle, bytes):
            return handle[off:off + size]
        with self.snapshots.store.read() as txn:
            return read_object(txn, self.snapshots.ns.chunks, self._held(txn, ino), off, size)

    async def write(self, ino: int, handle: object, off: int, data: bytes) -> int:
        if not isinstance(handle, Session):
            raise FsError(errno.EROFS)
        handle.request += data
        if len(handle.request) > MAX_REQUEST:
            raise FsError(errno.E2BIG, "control request too large")
        if handle.request.endswith(b"\n"):
            try:
                request = json.loads(handle.request)
            except ValueError:
                raise FsError(errno.EINVAL, "control request is not JSON") from None
            handle.request.clear()
            if not isinstance(request, dict):
                raise FsError(errno.EINVAL, "control request is not a JSON object")
            handle.answer = json.dumps(await self.run(request)).encode()
        return len(data)

    def getxattr(self, ino: int, name: bytes) -> bytes:
        if ino not in self.objects:
            raise FsError(errno.ENODATA)
        with self.snapshots.store.read() as txn:
            return object_xattr(self._held(txn, ino), name)
