"""Compact, versioned encodings of namespace records (a leading format byte, never pickle)."""

from __future__ import annotations

import stat
import struct
import time
from dataclasses import dataclass

from maiffs.errors import StoreError

INODE_FORMAT = 1
# format, mode, uid, gid, nlink, rdev, size, allocated bytes, parent, atime, mtime, ctime, birth
_INODE = struct.Struct(">BIIIIQQQQqqqq")
_MODE = struct.Struct(">I")  # the mode field of an encoded inode, after its format byte
_U64 = struct.Struct(">Q")
_DIRENT = struct.Struct(">QQ")  # child ino, readdir cookie
_EXTENT = struct.Struct(">32sI")  # chunk id, length

ROOT_INO = 1


def now_ns() -> int:
    return time.time_ns()


@dataclass
class Inode:
    """One inode's metadata; `parent` is kept for directories only (for `..` and rename checks)."""

    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    rdev: int = 0
    size: int = 0
    allocated: int = 0
    parent: int = 0
    atime_ns: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    birth_ns: int = 0

    def encode(self) -> bytes:
        return _INODE.pack(INODE_FORMAT, self.mode, self.uid, self.gid, self.nlink, self.rdev,
                           self.size, self.allocated, self.parent, self.atime_ns, self.mtime_ns,
                           self.ctime_ns, self.birth_ns)

    @classmethod
    def decode(cls, ino: int, raw: bytes) -> "Inode":
        if not raw or raw[0] != INODE_FORMAT or len(raw) != _INODE.size:
            raise StoreError(f"inode {ino}: unknown record format")
        (_fmt, mode, uid, gid, nlink, rdev, size, allocated, parent, atime, mtime, ctime,
         birth) = _INODE.unpack(raw)
        return cls(ino, mode, uid, gid, nlink, rdev, size, allocated, parent, atime, mtime,
                   ctime, birth)


def is_directory_record(raw: bytes) -> bool:
    """Is this encoded inode a directory's? Reads the mode alone: `maiffs stat` asks it of
    every inode, five times faster than decoding each."""
    return stat.S_ISDIR(_MODE.unpack_from(raw, 1)[0])


def ino_key(ino: int) -> bytes:
    return _U64.pack(ino)


def key_ino(key: bytes, at: int = 0) -> int:
    return _U64.unpack_from(key, at)[0]


def dirent_key(parent: int, name: bytes) -> bytes:
    return _U64.pack(parent) + name


def encode_dirent(child: int, cookie: int) -> bytes:
    return _DIRENT.pack(child, cookie)


def decode_dirent(raw: bytes) -> tuple[int, int]:
    return _DIRENT.unpack(raw)


def cookie_key(parent: int, cookie: int) -> bytes:
    return _U64.pack(parent) + _U64.pack(cookie)


def extent_key(ino: int, offset: int) -> bytes:
    return _U64.pack(ino) + _U64.pack(offset)


def encode_extent(cid: bytes, length: int) -> bytes:
    return _EXTENT.pack(cid, length)


def decode_extent(raw: bytes) -> tuple[bytes, int]:
    return _EXTENT.unpack(raw)


def backlink_key(child: int, parent: int, name: bytes) -> bytes:
    return _U64.pack(child) + _U64.pack(parent) + name
