"""Which inodes changed since their tree objects were last built (for cheap snapshots).

A snapshot is a Merkle tree of objects, one per inode (design.md §3). To take the next one in
time proportional to what changed, every change marks its inode *dirty*, and with it every
directory above it: the dirty set is closed upwards, so an inode that is not dirty has the
same object as when it was last built, and so has its whole subtree. Marking stops at the
first directory already dirty, so a burst of changes in one place costs one walk to the root.

The walk upwards needs every directory that names an inode, hard links included: the
`backlinks` database (child, parent, name), kept by every change of a directory entry.
"""

from __future__ import annotations

from collections.abc import Iterator

from maiffs.namespace.records import ROOT_INO, backlink_key, ino_key, key_ino
from maiffs.store.env import Txn


def mark_changed(txn: Txn, ino: int) -> None:
    """ino changed: it and every directory above it need their objects built again."""
    pending = [ino]
    while pending:
        current = pending.pop()
        if txn.put("dirty", ino_key(current), b"", overwrite=False):
            pending.extend(parents(txn, current))


def parents(txn: Txn, ino: int) -> Iterator[int]:
    """The directories that have an entry for ino (one per hard link)."""
    for key, _value in txn.prefix_items("backlinks", ino_key(ino)):
        yield key_ino(key, 8)


def path_of(txn: Txn, ino: int) -> bytes:
    """One path of ino from the root (via its first link at each level), for messages;
    b"?/name" where the chain breaks (an unlinked file still open)."""
    names: list[bytes] = []
    while ino != ROOT_INO and len(names) < 4096:
        link = next(iter(txn.prefix_items("backlinks", ino_key(ino))), None)
        if link is None:
            names.append(b"?")
            break
        names.append(bytes(link[0][16:]))
        ino = key_ino(link[0], 8)
    return b"/" + b"/".join(reversed(names))


def add_backlink(txn: Txn, child: int, parent: int, name: bytes) -> None:
    txn.put("backlinks", backlink_key(child, parent, name), b"")


def remove_backlink(txn: Txn, child: int, parent: int, name: bytes) -> None:
    txn.delete("backlinks", backlink_key(child, parent, name))


def build_backlinks(txn: Txn) -> int:
    """Fill backlinks from the directory entries (upgrading a format-1 store); returns the count."""
    count = 0
    for key, value in txn.prefix_items("dirents", b""):
        add_backlink(txn, key_ino(value), key_ino(key), bytes(key[8:]))
        count += 1
    return count
