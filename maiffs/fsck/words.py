"""How findings name things: paths, entry names, counts and kinds of inode."""

from __future__ import annotations

import stat

from maiffs.namespace.records import Inode


def join(base: str, name: bytes) -> str:
    """The path of entry name in the directory at path base."""
    return base.rstrip("/") + "/" + name.decode(errors="backslashreplace")


def show(name: bytes) -> str:
    """An entry or snapshot name, quoted (undecodable bytes escaped)."""
    return repr(name.decode(errors="backslashreplace"))


def count(n: int, noun: str, plural: str | None = None) -> str:
    """n and the noun: 1 file, 2 files (or the plural given)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def describe(inode: Inode) -> str:
    """What an inode is, with a file's size."""
    return f"file of {inode.size} bytes" if stat.S_ISREG(inode.mode) else kind(inode)


def kind(inode: Inode) -> str:
    return {stat.S_IFREG: "file", stat.S_IFDIR: "directory",
            stat.S_IFLNK: "symlink"}.get(stat.S_IFMT(inode.mode), "special file")
