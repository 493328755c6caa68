"""Push and pull snapshots between a store and a remote, sending only what the other side lacks.

Snapshots are Merkle trees, so "what the other side lacks" is found by walking from the root
and stopping at every object the other side has: its whole subtree is there too, because an
object is only ever written after everything it refers to (children and chunks first, the
snapshot's ref last). That also makes a push resumable: run again after an interruption, it
skips what arrived and sends the rest. Everything received is verified against its id.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from maiffs.errors import FsError
from maiffs.remotes.base import Remote
from maiffs.snapshots.manager import Snapshots, name_key
from maiffs.snapshots.objects import TreeObject, object_id
from maiffs.store.env import Txn


@dataclass
class TransferStats:
    snapshots: int = 0
    objects: int = 0
    chunks: int = 0
    bytes: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"snapshots": self.snapshots, "objects": self.objects, "chunks": self.chunks,
                "bytes": self.bytes}


def push(snapshots: Snapshots, remote: Remote, names: list[str] | None = None) -> TransferStats:
    """Send the named snapshots (default: all) with the objects and chunks the remote lacks."""
    infos = [snapshots.get(n) for n in names] if names else snapshots.list()
    stats = TransferStats()
    sent: set[bytes] = set()
    with snapshots.store.read() as txn:
        for info in infos:
            _push_tree(txn, snapshots, remote, info.root, sent, stats)
            remote.set_ref(info.name, info.root, info.created_ns)
            stats.snapshots += 1
    return stats


def _push_tree(txn: Txn, snapshots: Snapshots, remote: Remote, root: bytes, sent: set[bytes],
               stats: TransferStats) -> None:
    stack: list[tuple[bytes, bool]] = [(root, False)]
    while stack:
        oid, children_done = stack.pop()
        if children_done:
            encoded = bytes(txn.get("objects", oid) or b"")
            remote.put_object(oid, encoded)
            stats.objects += 1
            stats.bytes += len(encoded)
            continue
        if oid in sent or remote.has("objects", oid):
            continue
        sent.add(oid)
        obj = snapshots.object(txn, oid)
        for _off, cid, _length in obj.extents:
            if cid not in sent and not remote.has("chunks", cid):
                raw_len, encoded = snapshots.ns.chunks.encoded(txn, cid)
                remote.put_chunk(cid, raw_len, encoded)
                stats.chunks += 1
                stats.bytes += len(encoded)
            sent.add(cid)
        stack.append((oid, True))
        stack.extend((child, False) for _name, child in obj.entries)


def pull(snapshots: Snapshots, remote: Remote, names: list[str] | None = None) -> TransferStats:
    """Bring the named snapshots (default: all the remote has) into the store, in one
    transaction; a snapshot already here with the same root is skipped, with another root it
    is refused (EEXIST)."""
    wanted = names or remote.refs()
    stats = TransferStats()

    def txn_fn(txn: Txn) -> None:
        for name in wanted:
            root, created_ns = remote.get_ref(name)
            existing = txn.get("snapshots", name_key(name))
            if existing is not None:
                if snapshots.get(name).root != root:
                    raise FsError(errno.EEXIST, f"snapshot {name!r} exists here with other content")
                continue
            _pull_tree(txn, snapshots, remote, root, stats)
            snapshots.record(txn, name, root, created_ns)
            stats.snapshots += 1

    snapshots.store.write(txn_fn)
    snapshots.changed()
    snapshots.store.sync()
    return stats


def _pull_tree(txn: Txn, snapshots: Snapshots, remote: Remote, root: bytes,
               stats: TransferStats) -> None:
    """Store root's tree from the remote (what is missing here); returns holding one reference
    to root, which the new snapshot record takes."""
    objects = snapshots.objects
    fetched: dict[bytes, TreeObject] = {}
    order: list[bytes] = []  # children before parents
    stack: list[tuple[bytes, bool]] = [(root, False)]
    while stack:
        oid, children_done = stack.pop()
        if children_done:
            order.append(oid)
            continue
        if oid in fetched or objects.refcount(txn, oid) > 0:
            continue
        encoded = remote.get_object(oid)
        if object_id(encoded) != oid:
            raise FsError(errno.EIO, f"remote object {oid.hex()} does not match its id")
        fetched[oid] = TreeObject.decode(encoded)
        stats.objects += 1
        stats.bytes += len(encoded)
        stack.append((oid, True))
        stack.extend((child, False) for _name, child in fetched[oid].entries)
    for oid in order:
        obj = fetched[oid]
        for _off, cid, _length in obj.extents:
            if txn.get("chunkrefs", cid) is None:
                raw_len, encoded = remote.get_chunk(cid)
                snapshots.ns.chunks.adopt(txn, cid, raw_len, encoded)
                stats.chunks += 1
                stats.bytes += len(encoded)
        objects.put(txn, obj)  # one reference of ours, and one to each child
    for oid in order[:-1]:
        objects.decref(txn, oid)  # parents hold theirs now
    if not order:  # the root was here already
        objects.incref(txn, root)
