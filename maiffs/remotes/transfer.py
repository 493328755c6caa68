"""Push and pull snapshots between a store and a remote, sending only what the other side lacks.

Snapshots are Merkle trees, so "what the other side lacks" is found by walking from the root
and stopping at every object the other side has: its whole subtree is there too, because an
object only becomes visible after everything it refers to (upload.py orders the packs; the
snapshot's ref is written last). That also makes a push resumable: run again after an
interruption, it skips what arrived and sends the rest. Everything received is verified
against its id.

A pull runs in two steps so that a mounted store's daemon never waits on the network: `stage`
copies what the store lacks from the remote into a staging remote beside the store (a directory,
kept if interrupted, so the next pull resumes), and `pull` then brings the snapshots from there
into the store in one transaction.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass

from maiffs.errors import CorruptChunk, FsError, StoreError
from maiffs.progress import Progress
from maiffs.remotes.base import Remote
from maiffs.remotes.packs import CHUNK, OBJECT
from maiffs.snapshots.manager import Snapshots, name_key
from maiffs.snapshots.objects import TreeObject
from maiffs.store.chunks import REF_RECORD
from maiffs.store.env import Txn


@dataclass
class TransferStats:
    snapshots: int = 0
    objects: int = 0
    chunks: int = 0
    bytes: int = 0
    packs: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"snapshots": self.snapshots, "objects": self.objects, "chunks": self.chunks,
                "bytes": self.bytes, "packs": self.packs}


def push(snapshots: Snapshots, remote: Remote, names: list[str] | None = None,
         progress: Progress | None = None,
         placed_here: Callable[[bytes], bool] | None = None) -> TransferStats:
    """Send the named snapshots (default: all) with the objects and chunks the remote lacks
    (with placed_here, only the chunks it accepts: placement.py)."""
    infos = [snapshots.get(n) for n in names] if names else snapshots.list()
    stats = TransferStats()
    with snapshots.store.read() as txn:
        plan = _lacking(txn, snapshots, remote, [info.root for info in infos], placed_here)
        if progress is not None:
            progress.start(sum(size for _kind, _oid, size in plan), len(plan))
        with remote.uploader(progress.advance if progress is not None else None) as up:
            for kind, oid, _size in plan:
                if kind == CHUNK:
                    raw_len, encoded = snapshots.ns.chunks.encoded(txn, oid)
                    up.add_chunk(oid, raw_len, encoded)
                    stats.chunks += 1
                else:
                    encoded = bytes(txn.get("objects", oid) or b"")
                    up.add_object(oid, encoded)
                    stats.objects += 1
                stats.bytes += len(encoded)
        stats.packs = up.packs
    for info in infos:
        remote.set_ref(info.name, info.root, info.created_ns)
        stats.snapshots += 1
    return stats


def _lacking(txn: Txn, snapshots: Snapshots, remote: Remote, roots: list[bytes],
             placed_here: Callable[[bytes], bool] | None) -> list[tuple[bytes, bytes, int]]:
    """(kind, id, stored size) of what the remote lacks of the trees at roots, every object
    after what it refers to."""
    plan: list[tuple[bytes, bytes, int]] = []
    seen: set[bytes] = set()
    stack: list[tuple[bytes, bool]] = [(root, False) for root in reversed(roots)]
    while stack:
        oid, children_done = stack.pop()
        if children_done:
            plan.append((OBJECT, oid, len(txn.get("objects", oid) or b"")))
            continue
        if oid in seen or remote.has(OBJECT, oid):
            continue
        seen.add(oid)
        obj = snapshots.object(txn, oid)
        for _off, cid, _length in obj.extents:
            if cid not in seen and (placed_here is None or placed_here(cid)) \
                    and not remote.has(CHUNK, cid):
                ref = txn.get("chunkrefs", cid)
                plan.append((CHUNK, cid, REF_RECORD.unpack(ref)[2] if ref is not None else 0))
            seen.add(cid)
        stack.append((oid, True))
        stack.extend((child, False) for _name, child in obj.entries)
    return plan


def stage(snapshots: Snapshots, remote: Remote, staging: Remote, names: list[str],
          progress: Progress | None = None) -> TransferStats:
    """Copy into staging the named snapshots' refs and what neither the store nor staging has."""
    refs = {name: remote.get_ref(name) for name in names}
    stats = TransferStats()
    with snapshots.store.read() as txn:
        in_store = _here_in(txn, snapshots)
        objects, chunks = _remote_lacking(remote, [root for root, _t in refs.values()],
                                          lambda kind, oid: staging.has(kind, oid) or in_store(kind, oid))
    places = [where[0] for cid in chunks if (where := remote.catalog().where(CHUNK, cid))]
    stats.packs = len({entry.pack for entry in places})  # those it reads chunks from
    if progress is not None:
        progress.start(sum(e.length for e in places) + sum(len(e) for e in objects.values()),
                       len(chunks) + len(objects))
    with staging.uploader() as up:
        for cid, found in remote.fetch_chunks(chunks):
            if isinstance(found, CorruptChunk):
                raise StoreError(f"remote {remote.where}: {found.detail}; nothing was taken "
                                 f"(`maiffs verify --remote` finds and repairs such damage)")
            if not isinstance(found, tuple):
                raise found
            up.add_chunk(cid, *found)
            stats.chunks += 1
            stats.bytes += len(found[1])
            if progress is not None:
                progress.advance(len(found[1]), 1)
        for oid, encoded in objects.items():  # children before parents
            up.add_object(oid, encoded)
            stats.objects += 1
            stats.bytes += len(encoded)
            if progress is not None:
                progress.advance(len(encoded), 1)
    for name, (root, created_ns) in refs.items():
        staging.set_ref(name, root, created_ns)
        stats.snapshots += 1
    return stats


def _remote_lacking(remote: Remote, roots: list[bytes], here: Callable[[bytes, bytes], bool]
                    ) -> tuple[dict[bytes, bytes], list[bytes]]:
    """The objects (id -> encoding, children first) and chunks of the remote trees at roots
    that are not here."""
    objects: dict[bytes, bytes] = {}
    chunks: list[bytes] = []
    seen: set[bytes] = set()
    stack: list[tuple[bytes, bytes | None]] = [(root, None) for root in roots]
    while stack:
        oid, encoded = stack.pop()
        if encoded is not None:
            objects[oid] = encoded
            continue
        if oid in seen or here(OBJECT, oid):
            continue
        seen.add(oid)
        encoded = remote.get_object(oid)
        obj = TreeObject.decode(encoded)
        for _off, cid, _length in obj.extents:
            if cid not in seen and not here(CHUNK, cid):
                chunks.append(cid)
            seen.add(cid)
        stack.append((oid, encoded))
        stack.extend((child, None) for _name, child in obj.entries)
    return objects, chunks


def pull(snapshots: Snapshots, remote: Remote, names: list[str] | None = None) -> TransferStats:
    """Bring the named snapshots (default: all the remote has) into the store, in one
    transaction; a snapshot already here with the same root is skipped, with another root it
    is refused (EEXIST). Meant for a staging remote on local disk (see `stage`)."""
    wanted = names or remote.refs()
    refs = {name: remote.get_ref(name) for name in wanted}
    stats = TransferStats()

    def txn_fn(txn: Txn) -> None:
        for name, (root, created_ns) in refs.items():
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
    fetched, chunks = _remote_lacking(remote, [root], _here_in(txn, snapshots))
    for cid, found in remote.fetch_chunks(chunks):
        if not isinstance(found, tuple):
            raise FsError(errno.EIO, str(found))
        snapshots.ns.chunks.adopt(txn, cid, *found)  # fetch_chunks checked it
        stats.chunks += 1
        stats.bytes += len(found[1])
    stats.objects += len(fetched)
    stats.bytes += sum(len(encoded) for encoded in fetched.values())
    _adopt_objects(txn, snapshots, fetched, root)


def _here_in(txn: Txn, snapshots: Snapshots) -> Callable[[bytes, bytes], bool]:
    def here(kind: bytes, oid: bytes) -> bool:
        if kind == OBJECT:
            return snapshots.objects.refcount(txn, oid) > 0
        return txn.get("chunkrefs", oid) is not None
    return here


def _adopt_objects(txn: Txn, snapshots: Snapshots, fetched: dict[bytes, bytes], root: bytes) -> None:
    """Store the fetched objects of root's tree (children first, root last if fetched),
    leaving one reference to root for the snapshot record that follows."""
    objects = snapshots.objects
    order = list(fetched)
    for oid in order:
        objects.put(txn, TreeObject.decode(fetched[oid]))  # one reference of ours, one to each child
    for oid in order[:-1]:
        objects.decref(txn, oid)  # parents hold theirs now
    if not order:  # the root was here already
        objects.incref(txn, root)


@dataclass
class TreeOnly:
    """A remote snapshot's tree objects and the sizes of the chunks this store lacks."""

    name: str
    root: bytes
    created_ns: int
    objects: dict[bytes, bytes]
    chunks: dict[bytes, int]  # id -> raw length


def fetch_tree(snapshots: Snapshots, remote: Remote, name: str) -> TreeOnly:
    """What recording a remote snapshot without its data needs (network only: run it in a
    thread; record_tree then takes a moment in a write transaction)."""
    root, created_ns = remote.get_ref(name)
    with snapshots.store.read() as txn:
        objects, chunks = _remote_lacking(remote, [root], _here_in(txn, snapshots))
    sizes = {}
    for cid in chunks:
        places = remote.catalog().where(CHUNK, cid)
        if not places:
            raise StoreError(f"remote {remote.where} has no chunk {cid.hex()} of snapshot {name!r}")
        sizes[cid] = places[0].raw_len
    return TreeOnly(name, root, created_ns, objects, sizes)


def record_tree(snapshots: Snapshots, tree: TreeOnly) -> None:
    """Record a snapshot fetched by fetch_tree: its chunks are known here but not held (a read
    fetches each from the remote the first time)."""
    def txn_fn(txn: Txn) -> None:
        if txn.get("snapshots", name_key(tree.name)) is not None:
            return
        for cid, raw_len in tree.chunks.items():
            snapshots.ns.chunks.record_absent(txn, cid, raw_len)
        _adopt_objects(txn, snapshots, tree.objects, tree.root)
        snapshots.record(txn, tree.name, tree.root, tree.created_ns)

    snapshots.store.write(txn_fn)
    snapshots.changed()
