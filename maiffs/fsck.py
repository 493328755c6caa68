"""`maiffs fsck`: check every invariant of a store and repair what can be repaired (design.md §1).

How it works, and why so: the store is read in one read transaction (one consistent snapshot)
into an in-memory model of its records; chunk data is not kept, each chunk is read and verified
once. The checks run over that model in dependency order (records before the tree, the tree
before link counts, extents before refcounts, everything before the counters). Each check
reports what is wrong as a `Finding` and fixes the model the way --repair would, recording the
fix in a plan of puts and deletes. Without --repair the plan is dropped, so a check and a repair
report the same findings; with --repair the plan is written in one write transaction (all or
nothing), and a second pass checks the result.

Derived values (link counts, `allocated`, chunk refcounts, the store counters) are compared
with what the records *as found* imply, then set to what the *repaired* records imply: one
broken record is reported once, not again as a wrong refcount and a wrong counter.

Snapshots (store format 2) add a second, content-addressed tree beside the live one: tree
objects (`objects`, named by their hash) with refcounts (`objrefs`), snapshot records naming a
root object, `objcache` (a clean live inode's object; one reference) and `byid` (file objects by
content). File objects hold chunk references too, so a chunk's refcount counts live extents
plus the extents of every stored file object, and a chunk only a snapshot holds is live data.
The derived records (`backlinks`, `byid`, both kinds of refcount) are recomputed from the
repaired model like the counters. A damaged tree (a missing or corrupt object, a file object
over a missing or corrupt chunk) is repaired by a Merkle rewrite: the damaged file object loses
the bad extents (they read as zeros), a directory object loses entries whose object is gone,
and every ancestor up to the snapshot roots is re-encoded under its new id. `objcache` entries
must describe their inode as it is; any doubt is settled by marking the inode (and every
directory above it) changed in `dirty`, which only makes the next snapshot rebuild it.

The model takes memory in proportion to the number of records (as e2fsck's does).
"""

from __future__ import annotations

import itertools
import os
import stat
import struct
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, cast

from maiffs.errors import CorruptChunk, StoreError
from maiffs.namespace.filedata import is_zero
from maiffs.namespace.namespace import FIRST_COOKIE, NAME_MAX
from maiffs.namespace.records import (ROOT_INO, Inode, backlink_key, cookie_key, decode_dirent,
                                      decode_extent, dirent_key, encode_dirent, encode_extent,
                                      extent_key, ino_key, key_ino, now_ns)
from maiffs.options import MountOptions
from maiffs.snapshots.builder import content_id
from maiffs.snapshots.manager import SNAPSHOT_FORMAT
from maiffs.snapshots.objects import (OID_SIZE, TreeObject, byid_key, decode_refcount,
                                      encode_refcount, object_id)
from maiffs.store.chunks import (REF_RECORD, ID_SIZE, ChunkStore, PreparedChunk, decode_chunk,
                                 prepare_chunk)
from maiffs.store.env import STAT_FIELDS, STATS_RECORD, Store, Txn
from maiffs.store.lock import StoreLock

#: Level for the one kind of chunk fsck writes: the head of a chunk cut at the end of its file.
LEVEL = MountOptions().compression
FILE_TYPES = (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK,
              stat.S_IFIFO, stat.S_IFSOCK)
#: What a record parser raises on a malformed record.
MALFORMED = (ValueError, struct.error, StoreError)
ALLOCATOR_FIRST = {b"next_ino": ROOT_INO + 1, b"next_cookie": FIRST_COOKIE, b"next_snapshot": 1}
#: A snapshot record: format, number, created (ns), root object id (as manager.py writes it).
SNAPSHOT_RECORD = struct.Struct(">BQq32s")
#: directory ino -> [(name, child ino)], and child ino -> [(directory ino, name)]
Children = dict[int, list[tuple[bytes, int]]]
Names = dict[int, list[tuple[int, bytes]]]


@dataclass(frozen=True)
class Finding:
    """One broken invariant: what is concerned, what is wrong, and what --repair does about it.

    category is one of: record, allocator, chunk, data, extent, refcount, allocated, directory,
    dirent, cookie, unreachable, nlink, orphan, symlink, xattr, backlink, object, snapshot,
    objcache, byid, counter. lost is the byte range [start, end) of the file at path that reads
    as zeros after the repair (for a snapshot's file, path is /.snapshots/NAME/...).
    """

    category: str
    subject: str
    message: str
    fix: str
    path: str | None = None
    lost: tuple[int, int] | None = None

    def line(self, repaired: bool) -> str:
        where = f" ({self.path})" if self.path else ""
        done = "repaired" if repaired else "repair"
        return f"{self.category}: {self.subject}{where}: {self.message} ({done}: {self.fix})"


@dataclass
class Report:
    """The outcome of one fsck run; `remaining` is what a second pass still found after repair."""

    store: str
    repair: bool
    findings: list[Finding]
    remaining: list[Finding]
    inodes: int
    chunks: int

    @property
    def ok(self) -> bool:
        """Exit status 0: the store was clean, or everything found was repaired."""
        return not (self.remaining if self.repair else self.findings)

    def lines(self) -> list[str]:
        """One line per finding, then the summary."""
        out = [f.line(self.repair) for f in self.findings]
        out += [f"not repaired: {f.line(False)}" for f in self.remaining]
        return [*out, self.summary()]

    def summary(self) -> str:
        found = len(self.findings)
        if not found:
            return f"fsck: {self.store} is clean ({self.inodes} inodes, {self.chunks} chunks)"
        if not self.repair:
            return (f"fsck: {_count(found, 'problem')} found "
                    f"(run `maiffs fsck {self.store} --repair`)")
        if self.remaining:
            return f"fsck: {_count(found, 'problem')} found, {len(self.remaining)} could not be repaired"
        lost = {f.path or f.subject for f in self.findings if f.lost}
        tail = f"; data lost in {_count(len(lost), 'file')} (see the `data` lines)" if lost else ""
        return f"fsck: {_count(found, 'problem')} found and repaired{tail}"

    def as_dict(self) -> dict[str, Any]:
        return {"store": self.store, "repair": self.repair, "ok": self.ok,
                "problems": len(self.findings), "unrepaired": len(self.remaining),
                "inodes": self.inodes, "chunks": self.chunks,
                "findings": [asdict(f) for f in self.findings],
                "remaining": [asdict(f) for f in self.remaining],
                "summary": self.summary()}


def fsck(store_path: str, repair: bool = False) -> Report:
    """Check a store no daemon has mounted (StoreError if one has); with repair, fix it."""
    store = Store.open(store_path, readonly=not repair)
    lock = None
    try:
        lock = StoreLock(store_path, "fsck --repair" if repair else "fsck")
        return _check_and_repair(store, repair)
    finally:
        store.close()
        if lock is not None:
            lock.release()


def _check_and_repair(store: Store, repair: bool) -> Report:
    with store.read() as txn:
        checker = _Checker(_load(txn), txn, verify_chunks=True, store_format=store.format)
        findings = checker.run()
    model = checker.model
    remaining: list[Finding] = []
    if repair and findings:
        store.write(model.apply, expected_bytes=sum(len(v or b"") for v in model.plan.values()))
        with store.read() as txn:  # chunk data was verified above and only deleted since
            remaining = _Checker(_load(txn), txn, verify_chunks=False,
                                 store_format=store.format).run()
    return Report(store.path, repair, findings, remaining, len(model.inodes), len(checker.good))


# -- the model ---------------------------------------------------------------------------------
@dataclass
class _Snap:
    """One snapshot record."""

    number: int
    created_ns: int
    root: bytes

    def encode(self) -> bytes:
        return SNAPSHOT_RECORD.pack(SNAPSHOT_FORMAT, self.number, self.created_ns, self.root)


@dataclass
class _Model:
    """The store's records as found, changed into the repaired ones; each change is also in plan."""

    inodes: dict[int, Inode] = field(default_factory=dict)
    dirents: dict[tuple[int, bytes], tuple[int, int]] = field(default_factory=dict)
    cookies: dict[tuple[int, int], bytes] = field(default_factory=dict)
    extents: dict[int, dict[int, tuple[bytes, int]]] = field(default_factory=dict)
    symlinks: dict[int, bytes] = field(default_factory=dict)
    xattrs: dict[int, list[bytes]] = field(default_factory=dict)
    orphans: set[int] = field(default_factory=set)
    #: As found (never changed): chunkrefs records and the ids in "chunks".
    refs: dict[bytes, tuple[int, int, int]] = field(default_factory=dict)
    chunk_ids: set[bytes] = field(default_factory=set)
    stats: dict[str, int] | None = None
    next_ids: dict[bytes, int] = field(default_factory=dict)
    bad: list[tuple[str, bytes, str]] = field(default_factory=list)
    plan: dict[tuple[str, bytes], bytes | None] = field(default_factory=dict)
    dirty: set[int] = field(default_factory=set)
    #: Inodes whose names fsck changed: their link counts are corrected without a finding.
    relinked: set[int] = field(default_factory=set)
    #: Inodes whose state (as a tree object would hold it) fsck changed: marked in `dirty`.
    touched: set[int] = field(default_factory=set)
    # snapshots (store format 2; all empty on a format 1 store), changed into the repaired ones
    backlinks: set[tuple[int, int, bytes]] = field(default_factory=set)  # (child, parent, name)
    marked: set[int] = field(default_factory=set)  # the `dirty` database
    objects: dict[bytes, TreeObject] = field(default_factory=dict)  # the sound ones
    bad_objects: dict[bytes, str] = field(default_factory=dict)  # oid -> why it is unusable
    objrefs: dict[bytes, int] = field(default_factory=dict)
    objcache: dict[int, bytes] = field(default_factory=dict)
    snapshots: dict[bytes, _Snap] = field(default_factory=dict)
    byid: set[bytes] = field(default_factory=set)

    # record parsers (each raises one of MALFORMED on a malformed record)
    def parse_inode(self, key: bytes, value: bytes) -> None:
        ino = _ino(key)
        inode = Inode.decode(ino, value)
        if stat.S_IFMT(inode.mode) not in FILE_TYPES:
            raise ValueError(f"unknown file type {stat.S_IFMT(inode.mode):o}")
        self.inodes[ino] = inode

    def parse_dirent(self, key: bytes, value: bytes) -> None:
        name = key[8:]
        if not name or len(name) > NAME_MAX or b"/" in name or name in (b".", b".."):
            raise ValueError(f"bad name {name!r}")
        self.dirents[(key_ino(key), name)] = decode_dirent(value)

    def parse_cookie(self, key: bytes, value: bytes) -> None:
        if len(key) != 16 or not value:
            raise ValueError("not a parent + cookie -> name record")
        self.cookies[(key_ino(key), key_ino(key, 8))] = value

    def parse_extent(self, key: bytes, value: bytes) -> None:
        if len(key) != 16:
            raise ValueError("key is not inode + offset")
        cid, length = decode_extent(value)
        if length == 0:
            raise ValueError("empty extent")
        self.extents.setdefault(key_ino(key), {})[key_ino(key, 8)] = (cid, length)

    def parse_symlink(self, key: bytes, value: bytes) -> None:
        self.symlinks[_ino(key)] = value

    def parse_xattr(self, key: bytes, value: bytes) -> None:
        if len(key) <= 8:
            raise ValueError("key has no name")
        self.xattrs.setdefault(key_ino(key), []).append(key)

    def parse_orphan(self, key: bytes, value: bytes) -> None:
        self.orphans.add(_ino(key))

    def parse_ref(self, key: bytes, value: bytes) -> None:
        if len(key) != ID_SIZE:
            raise ValueError("key is not a chunk id")
        self.refs[key] = REF_RECORD.unpack(value)

    def parse_backlink(self, key: bytes, value: bytes) -> None:
        if len(key) <= 16:
            raise ValueError("key is not child + parent + name")
        self.backlinks.add((key_ino(key), key_ino(key, 8), bytes(key[16:])))

    def parse_dirty(self, key: bytes, value: bytes) -> None:
        self.marked.add(_ino(key))

    def parse_object(self, key: bytes, value: bytes) -> None:
        if len(key) != OID_SIZE:
            raise ValueError("key is not an object id")
        if object_id(value) != key:
            self.bad_objects[key] = "does not match its id (its hash)"
            return
        try:
            self.objects[key] = TreeObject.decode(value)
        except MALFORMED as exc:
            self.bad_objects[key] = f"does not decode ({exc})"

    def parse_objref(self, key: bytes, value: bytes) -> None:
        if len(key) != OID_SIZE or len(value) != 8:
            raise ValueError("not an object id -> refcount record")
        self.objrefs[key] = decode_refcount(value)

    def parse_objcache(self, key: bytes, value: bytes) -> None:
        if len(value) != OID_SIZE:
            raise ValueError("value is not an object id")
        self.objcache[_ino(key)] = bytes(value)

    def parse_snapshot(self, key: bytes, value: bytes) -> None:
        fmt, number, created, root = SNAPSHOT_RECORD.unpack(value)
        if fmt != SNAPSHOT_FORMAT:
            raise ValueError(f"unknown format {fmt}")
        if not key or len(key) > NAME_MAX or b"/" in key or key in (b".", b".."):
            raise ValueError(f"bad name {key!r}")
        self.snapshots[bytes(key)] = _Snap(number, created, root)

    def parse_byid(self, key: bytes, value: bytes) -> None:
        if len(key) != ID_SIZE + OID_SIZE:
            raise ValueError("key is not content id + object id")
        self.byid.add(bytes(key))

    # changes
    def put(self, db: str, key: bytes, value: bytes) -> None:
        self.plan[(db, key)] = value

    def delete(self, db: str, key: bytes) -> None:
        self.plan[(db, key)] = None

    def changed(self, inode: Inode) -> None:
        self.inodes[inode.ino] = inode
        self.dirty.add(inode.ino)
        self.touched.add(inode.ino)

    def new_dir(self, ino: int, parent: int, perm: int, uid: int, gid: int) -> None:
        t = now_ns()
        self.changed(Inode(ino, stat.S_IFDIR | perm, uid, gid, 2, parent=parent, atime_ns=t,
                           mtime_ns=t, ctime_ns=t, birth_ns=t))
        self.relinked.add(ino)

    def drop_inode(self, ino: int) -> None:
        """Delete an inode with its names and everything kept under its number."""
        self.inodes.pop(ino, None)
        self.dirty.discard(ino)
        self.touched.add(ino)
        self.delete("inodes", ino_key(ino))
        for parent, name in [k for k, (child, _c) in self.dirents.items() if child == ino]:
            self.remove_dirent(parent, name)
        for off in list(self.extents.get(ino, ())):
            self.drop_extent(ino, off)
        for key in self.xattrs.pop(ino, []):
            self.delete("xattrs", key)
        if self.symlinks.pop(ino, None) is not None:
            self.delete("symlinks", ino_key(ino))
        self.unorphan(ino)

    def remove_dirent(self, parent: int, name: bytes) -> None:
        child, cookie = self.dirents.pop((parent, name))
        self.delete("dirents", dirent_key(parent, name))
        self.touched.add(parent)
        if self.cookies.get((parent, cookie)) == name:
            del self.cookies[(parent, cookie)]
            self.delete("dircookies", cookie_key(parent, cookie))
        self._relinked(parent, child)

    def add_dirent(self, parent: int, name: bytes, child: int) -> None:
        self.set_cookie(parent, name, child)
        self.touched.add(parent)
        self._relinked(parent, child)

    def set_cookie(self, parent: int, name: bytes, child: int) -> None:
        """(Re)write an entry with a fresh readdir cookie and its dircookies record."""
        cookie = self.allocate(b"next_cookie")
        self.dirents[(parent, name)] = (child, cookie)
        self.put("dirents", dirent_key(parent, name), encode_dirent(child, cookie))
        self.cookies[(parent, cookie)] = name
        self.put("dircookies", cookie_key(parent, cookie), name)

    def _relinked(self, parent: int, child: int) -> None:
        self.relinked.add(child)
        inode = self.inodes.get(child)
        if inode is not None and stat.S_ISDIR(inode.mode):
            self.relinked.add(parent)

    def free_name(self, parent: int, base: bytes) -> bytes:
        """base, or base.1, base.2, ...: the first name not taken in parent."""
        name, n = base, 0
        while (parent, name) in self.dirents:
            n += 1
            name = b"%s.%d" % (base, n)
        return name

    def allocate(self, name: bytes) -> int:
        value = self.next_ids[name]
        self.set_next(name, value + 1)
        return value

    def set_next(self, name: bytes, value: int) -> None:
        self.next_ids[name] = value
        self.put("meta", name, struct.pack(">Q", value))

    def drop_extent(self, ino: int, off: int) -> None:
        del self.extents[ino][off]
        self.delete("extents", extent_key(ino, off))
        self.touched.add(ino)

    def put_extent(self, ino: int, off: int, cid: bytes, length: int) -> None:
        self.extents.setdefault(ino, {})[off] = (cid, length)
        self.touched.add(ino)
        self.put("extents", extent_key(ino, off), encode_extent(cid, length))

    def delete_chunk(self, cid: bytes) -> None:
        self.delete("chunks", cid)
        self.delete("chunkrefs", cid)

    def orphan(self, ino: int) -> None:
        self.orphans.add(ino)
        self.put("orphans", ino_key(ino), b"")

    def unorphan(self, ino: int) -> None:
        if ino in self.orphans:
            self.orphans.discard(ino)
            self.delete("orphans", ino_key(ino))

    def apply(self, txn: Txn) -> None:
        """Write the plan (the inodes last, as they are now), in the caller's write transaction."""
        for (db, key), value in self.plan.items():
            if value is None:
                txn.delete(db, key)
            else:
                txn.put(db, key, value)
        for ino in self.dirty:
            txn.put("inodes", ino_key(ino), self.inodes[ino].encode())


def _ino(key: bytes) -> int:
    if len(key) != 8:
        raise ValueError("key is not an inode number")
    return key_ino(key)


def _load(txn: Txn) -> _Model:
    """Read every record but chunk data; malformed ones go to model.bad."""
    m = _Model()
    parsers: dict[str, Callable[[bytes, bytes], None]] = {
        "inodes": m.parse_inode, "dirents": m.parse_dirent, "dircookies": m.parse_cookie,
        "extents": m.parse_extent, "symlinks": m.parse_symlink, "xattrs": m.parse_xattr,
        "orphans": m.parse_orphan, "chunkrefs": m.parse_ref,
        "backlinks": m.parse_backlink, "dirty": m.parse_dirty, "objects": m.parse_object,
        "objrefs": m.parse_objref, "objcache": m.parse_objcache, "snapshots": m.parse_snapshot,
        "byid": m.parse_byid,
    }  # a database an older store does not have reads as empty
    for db, parse in parsers.items():
        for key, value in txn.prefix_items(db, b""):
            try:
                parse(key, value)
            except MALFORMED as exc:
                m.bad.append((db, key, str(exc) or type(exc).__name__))
    for cid in map(bytes, txn.cursor("chunks").iternext(keys=True, values=False)):
        if len(cid) == ID_SIZE:
            m.chunk_ids.add(cid)
        else:
            m.bad.append(("chunks", cid, "key is not a chunk id"))
    _load_meta(txn, m)
    return m


def _load_meta(txn: Txn, m: _Model) -> None:
    """The counters (missing means all zero, as Store.stats reads them) and the id allocators."""
    raw = txn.get("meta", b"stats")
    if raw is None or len(raw) == STATS_RECORD.size:
        m.stats = dict(zip(STAT_FIELDS, STATS_RECORD.unpack(raw or bytes(STATS_RECORD.size)),
                           strict=True))
    else:
        m.bad.append(("meta", b"stats", f"{len(raw)} bytes, not {STATS_RECORD.size}"))
    for name, first in ALLOCATOR_FIRST.items():
        raw = txn.get("meta", name)
        if raw is not None and len(raw) != 8:
            m.bad.append(("meta", name, "not a 64-bit number"))
            raw = None
        m.next_ids[name] = struct.unpack(">Q", raw)[0] if raw else first


def _children(m: _Model) -> Children:
    out: Children = {}
    for (parent, name), (child, _cookie) in m.dirents.items():
        out.setdefault(parent, []).append((name, child))
    return out


def _names(m: _Model) -> Names:
    out: Names = {}
    for (parent, name), (child, _cookie) in m.dirents.items():
        out.setdefault(child, []).append((parent, name))
    return out


def _walk(m: _Model, children: Children, start: int, base: str) -> dict[int, str]:
    """Everything reachable from directory start by entries, with a path (the first name found)."""
    paths = {start: base}
    queue = deque([start])
    while queue:
        parent = queue.popleft()
        for name, child in children.get(parent, ()):
            if child in paths:
                continue
            paths[child] = _join(paths[parent], name)
            inode = m.inodes.get(child)
            if inode is not None and stat.S_ISDIR(inode.mode):
                queue.append(child)
    return paths


def _totals(m: _Model, chunks: dict[bytes, tuple[int, int]]) -> dict[str, int]:
    """The store counters implied by the model's inodes and extents and the given chunks."""
    return {
        "chunks": len(chunks),
        "chunk_raw_bytes": sum(raw for raw, _stored in chunks.values()),
        "chunk_stored_bytes": sum(stored for _raw, stored in chunks.values()),
        "referenced_bytes": sum(length for exts in m.extents.values() for _c, length in exts.values()),
        "inodes": len(m.inodes),
        "logical_bytes": sum(i.size for i in m.inodes.values() if stat.S_ISREG(i.mode)),
    }


def _reachable_objects(m: _Model, roots: Iterable[bytes]) -> set[bytes]:
    """Every object reachable from roots (all present in m.objects)."""
    seen: set[bytes] = set()
    pending = list(roots)
    while pending:
        oid = pending.pop()
        if oid not in seen:
            seen.add(oid)
            pending.extend(child for _n, child in m.objects[oid].entries if child not in seen)
    return seen


class _ChunkReader:
    """Chunk data for `content_id`, from the chunks this fsck verified (not their records)."""

    def __init__(self, checker: "_Checker") -> None:
        self.checker = checker

    def get(self, txn: Txn, cid: bytes) -> bytes:
        return decode_chunk(cid, self.checker._encoded(cid), self.checker.good[cid][0])


def _join(base: str, name: bytes) -> str:
    return base.rstrip("/") + "/" + name.decode(errors="backslashreplace")


def _show(name: bytes) -> str:
    return repr(name.decode(errors="backslashreplace"))


def _show_key(key: bytes) -> str:
    """A key as text when it is (meta's are), else in hex."""
    return key.decode() if key.isascii() and key.decode().isprintable() else key.hex()


def _count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def _describe(inode: Inode) -> str:
    return f"file of {inode.size} bytes" if stat.S_ISREG(inode.mode) else _kind(inode)


def _kind(inode: Inode) -> str:
    return {stat.S_IFREG: "file", stat.S_IFDIR: "directory",
            stat.S_IFLNK: "symlink"}.get(stat.S_IFMT(inode.mode), "special file")


# -- the checks ----------------------------------------------------------------------------------
class _Checker:
    """Runs the checks in dependency order over one model (see the module docstring)."""

    def __init__(self, model: _Model, txn: Txn, verify_chunks: bool, store_format: int) -> None:
        self.model = model
        self.txn = txn
        self.verify_chunks = verify_chunks
        self.store_format = store_format
        self.findings: list[Finding] = []
        self.paths = _walk(model, _children(model), ROOT_INO, "/")
        self.found_totals = _totals(model, {c: (r[1], r[2]) for c, r in model.refs.items()})
        self.found_totals["inodes"] += sum(1 for db, _k, _w in model.bad if db == "inodes")
        # the snapshot side as found (the model's own copies change into the repaired ones)
        self.found_links = {(c, p, n) for (p, n), (c, _k) in model.dirents.items()}
        self.found_tree = dict(model.objects)
        self.found_cache = dict(model.objcache)
        self.found_roots = [snap.root for snap in model.snapshots.values()]
        self.found_refs = Counter(cid for exts in model.extents.values() for cid, _l in exts.values())
        self.found_refs.update(cid for obj in self.found_tree.values()
                               for _o, cid, _l in obj.extents)
        #: Some object (or objcache or snapshot record) is missing or corrupt: the references it
        #: held are unseen, so a refcount above what is seen is explained by it (reported once).
        held = itertools.chain(self.found_roots, self.found_cache.values(),
                               (c for obj in self.found_tree.values() for _n, c in obj.entries))
        self.unseen_holders = (bool(model.bad_objects)
                               or any(db in ("objcache", "snapshots") for db, _k, _w in model.bad)
                               or any(o not in self.found_tree for o in held))
        self.good: dict[bytes, tuple[int, int]] = {}  # usable chunk -> (raw, stored length)
        self.broken: dict[bytes, str] = {}  # chunk id -> why its data is unusable
        self.lost_found: tuple[int, str] | None = None
        #: object id -> its id after the Merkle rewrite (itself if sound; None if it is lost)
        self.fixed: dict[bytes, bytes | None] = {}
        #: object id -> its own damage: (entry name or None, what, fix, lost bytes)
        self.harm: dict[bytes, list[tuple[bytes | None, str, str, tuple[int, int] | None]]] = {}
        self.kept: set[bytes] = set()  # the objects the repaired store keeps
        self.bad_objrefs = {key for db, key, _why in model.bad if db == "objrefs"}
        self.walked: set[int] = set()  # inodes marked changed with everything above them
        self._final_names: Names | None = None

    def run(self) -> list[Finding]:
        for check in (self._records, self._allocators, self._chunks, self._root, self._symlinks,
                      self._dirents, self._cookies, self._dir_names, self._reachable,
                      self._nlinks, self._orphans, self._xattrs, self._extents, self._backlinks,
                      self._trees, self._objcache, self._objrefs, self._byid,
                      self._refcounts, self._counters):
            check()
        return self.findings

    def _report(self, category: str, subject: str, message: str, fix: str,
                ino: int | None = None, lost: tuple[int, int] | None = None,
                path: str | None = None) -> None:
        """Add a finding; its path is given, or that of ino as found (if reachable then)."""
        path = path or (self.paths.get(ino) if ino is not None else None)
        self.findings.append(Finding(category, subject, message, fix, path, lost))

    # records and allocators
    def _records(self) -> None:
        """A record that does not decode is removed; an inode goes with all that hangs off it."""
        for db, key, why in self.model.bad:
            if db == "inodes" and len(key) == 8:
                ino = key_ino(key)
                self._report("record", f"inode {ino}", f"inode record does not decode ({why})",
                             "removed with its names, data and attributes", ino)
                self.model.drop_inode(ino)
            else:
                lost = "; the snapshot is lost" if db == "snapshots" else ""
                self._report("record", f"{db} {_show_key(key)}", f"record does not decode ({why})",
                             "removed" + lost)
                self.model.delete(db, key)
                if db == "objcache" and len(key) == 8:  # its inode is rebuilt by the next snapshot
                    self.model.touched.add(key_ino(key))

    def _allocators(self) -> None:
        """New inode numbers and cookies must lie above all in use, or they would collide."""
        m = self.model
        cookies = itertools.chain((k for _p, k in m.cookies), (k for _c, k in m.dirents.values()))
        in_use = {b"next_ino": max(m.inodes, default=ROOT_INO),
                  b"next_cookie": max(cookies, default=FIRST_COOKIE - 1),
                  b"next_snapshot": max((s.number for s in m.snapshots.values()), default=0)}
        for name, top in in_use.items():
            if m.next_ids[name] <= top:
                self._report("allocator", f"meta {name.decode()}",
                             f"next value {m.next_ids[name]} is not above {top}, which is in use",
                             f"set to {top + 1}")
                m.set_next(name, top + 1)
        self._snapshot_numbers()

    def _snapshot_numbers(self) -> None:
        """Snapshot numbers are unique (a snapshot's inode numbers are made from its number)."""
        m = self.model
        first: dict[int, bytes] = {}
        for name, snap in sorted(m.snapshots.items(), key=lambda i: (i[1].created_ns, i[0])):
            other = first.setdefault(snap.number, name)
            if other != name:
                number = m.allocate(b"next_snapshot")
                self._report("snapshot", f"snapshot {_show(name)}",
                             f"has number {snap.number}, as snapshot {_show(other)} has",
                             f"renumbered {number}")
                snap.number = number
                m.put("snapshots", name, snap.encode())

    # chunks
    def _chunks(self) -> None:
        """Every chunk must decode to bytes matching its id; one that is missing is as bad."""
        lengths = {cid: n for obj in self.found_tree.values() for _o, cid, n in obj.extents}
        lengths.update((cid, n) for exts in self.model.extents.values() for cid, n in exts.values())
        for cid in sorted(self.model.chunk_ids):
            self._chunk(cid, lengths.get(cid))
        for cid in sorted(set(self.model.refs) - self.model.chunk_ids):
            self._broken(cid, "is missing from the store")

    def _chunk(self, cid: bytes, extent_len: int | None) -> None:
        ref = self.model.refs.get(cid)
        lengths = [n for n in (ref[1] if ref else None, extent_len) if n is not None]
        if not lengths:
            self._report("chunk", f"chunk {cid.hex()}", "has no reference record and no user",
                         "deleted")
            self.model.delete_chunk(cid)
            return
        encoded = self._encoded(cid)
        try:
            raw_len = self._verified_length(cid, encoded, lengths)
        except CorruptChunk as exc:
            self._broken(cid, exc.detail.removeprefix(f"chunk {cid.hex()} "))
            return
        self.good[cid] = (raw_len, len(encoded))
        if ref is None:
            self._report("chunk", f"chunk {cid.hex()}", "has no reference record",
                         "rebuilt from the extents that use it")
        elif ref[1:] != self.good[cid]:
            self._report("chunk", f"chunk {cid.hex()}",
                         f"reference record says {ref[1]} raw and {ref[2]} stored bytes, the "
                         f"chunk has {raw_len} and {len(encoded)}", "corrected")

    def _verified_length(self, cid: bytes, encoded: bytes, lengths: list[int]) -> int:
        """The raw length with which the chunk decodes: its record's, else its extents' (so a
        damaged reference record does not condemn good data)."""
        if not self.verify_chunks:
            return lengths[0]
        errors: list[CorruptChunk] = []
        for raw_len in dict.fromkeys(lengths):
            try:
                decode_chunk(cid, encoded, raw_len)
                return raw_len
            except CorruptChunk as exc:
                errors.append(exc)
        raise errors[0]

    def _encoded(self, cid: bytes) -> bytes:
        encoded = self.txn.get("chunks", cid)
        assert encoded is not None, "listed as present in this same read transaction"
        return encoded

    def _broken(self, cid: bytes, why: str) -> None:
        self.broken[cid] = why
        self._report("chunk", f"chunk {cid.hex()}", why,
                     "deleted; the extents (and snapshot extents) that use it are dropped")
        self.model.delete_chunk(cid)

    # the tree
    def _root(self) -> None:
        """/ must be a directory that is its own parent (a never-mounted store has no / yet)."""
        m = self.model
        root = m.inodes.get(ROOT_INO)
        if root is None and not m.inodes and not m.dirents:
            return
        if root is None or not stat.S_ISDIR(root.mode):
            what = "is missing" if root is None else "is not a directory"
            self._report("directory", f"inode {ROOT_INO}", f"the root directory {what}",
                         "replaced by an empty directory", ROOT_INO)
            m.new_dir(ROOT_INO, ROOT_INO, 0o755, 0, 0)
        elif root.parent != ROOT_INO:
            self._report("directory", f"inode {ROOT_INO}",
                         f"the root's parent pointer is {root.parent}", "set to itself", ROOT_INO)
            root.parent = ROOT_INO
            m.changed(root)

    def _symlinks(self) -> None:
        """A symlink needs its target record, and a target record needs its symlink."""
        m = self.model
        for ino, inode in sorted(m.inodes.items()):
            if not stat.S_ISLNK(inode.mode):
                continue
            target = m.symlinks.get(ino)
            if target is None:
                self._report("symlink", f"inode {ino}", "symlink has no target", "removed", ino)
                m.drop_inode(ino)
            elif inode.size != len(target):
                self._report("symlink", f"inode {ino}",
                             f"size {inode.size} is not its target's length {len(target)}",
                             "size corrected", ino)
                inode.size = len(target)
                m.changed(inode)
        for ino in sorted(m.symlinks):
            if ino not in m.inodes or not stat.S_ISLNK(m.inodes[ino].mode):
                self._report("symlink", f"inode {ino}", "symlink target without a symlink inode",
                             "removed")
                del m.symlinks[ino]
                m.delete("symlinks", ino_key(ino))

    def _dirents(self) -> None:
        """An entry must be in an existing directory and name an existing inode other than /."""
        for (parent, name), (child, _cookie) in sorted(self.model.dirents.items()):
            why = self._dirent_problem(parent, child)
            if why is not None:
                path = _join(self.paths[parent], name) if parent in self.paths else None
                self._report("dirent", f"inode {parent}", f"entry {_show(name)} {why}", "removed",
                             path=path)
                self.model.remove_dirent(parent, name)

    def _dirent_problem(self, parent: int, child: int) -> str | None:
        pdir = self.model.inodes.get(parent)
        if pdir is None or not stat.S_ISDIR(pdir.mode):
            return f"is in inode {parent}, which is {'missing' if pdir is None else 'not a directory'}"
        if child not in self.model.inodes:
            return f"names inode {child}, which does not exist"
        if child == ROOT_INO:
            return "names the root directory"
        return None

    def _cookies(self) -> None:
        """Entries and readdir cookies pair up one to one (an entry without one is invisible)."""
        m = self.model
        paired = {(p, k) for (p, name), (_c, k) in m.dirents.items() if m.cookies.get((p, k)) == name}
        for (parent, cookie), name in sorted(m.cookies.items()):
            if (parent, cookie) not in paired:
                self._report("cookie", f"inode {parent}",
                             f"readdir cookie {cookie} names {_show(name)}, which has no entry "
                             f"with that cookie", "removed", parent)
                del m.cookies[(parent, cookie)]
                m.delete("dircookies", cookie_key(parent, cookie))
        for (parent, name), (child, cookie) in sorted(m.dirents.items()):
            if (parent, cookie) not in paired:
                self._report("cookie", f"inode {parent}",
                             f"entry {_show(name)} has no readdir cookie, so readdir skips it",
                             "given a new cookie", child)
                m.set_cookie(parent, name, child)

    def _dir_names(self) -> None:
        """A directory has one name, in the directory its parent pointer names."""
        m = self.model
        names = _names(m)
        for ino, inode in sorted(m.inodes.items()):
            own = names.get(ino, [])
            if not stat.S_ISDIR(inode.mode) or not own:
                continue
            keep = next((n for n in own if n[0] == inode.parent), own[0])
            for parent, name in own:
                if (parent, name) != keep:
                    self._report("directory", f"inode {ino}",
                                 f"directory has a second name {_show(name)} in inode {parent}",
                                 "second name removed", ino)
                    m.remove_dirent(parent, name)
            if keep[0] != inode.parent:
                self._report("directory", f"inode {ino}",
                             f"parent pointer is {inode.parent} but its entry is in {keep[0]}",
                             f"set to {keep[0]}", ino)
                inode.parent = keep[0]
                m.changed(inode)

    def _reachable(self) -> None:
        """Every inode but the unlinked ones is reachable from /; the others go to /lost+found."""
        m = self.model
        if ROOT_INO not in m.inodes:
            return
        names, children = _names(m), _children(m)
        reached = set(_walk(m, children, ROOT_INO, "/"))
        pending = [ino for ino in sorted(m.inodes)
                   if ino not in reached and not self._unlinked(ino, names, children)]
        while pending:
            top = self._pick_top(pending, names)
            self._relink(top, names)
            reached.update(_walk(m, children, top, ""))
            pending = [ino for ino in pending if ino not in reached]

    def _unlinked(self, ino: int, names: Names, children: Children) -> bool:
        """Unlinked on purpose (still open when it lost its last name): nlink 0, nameless, empty."""
        return self.model.inodes[ino].nlink == 0 and not names.get(ino) and not children.get(ino)

    def _pick_top(self, pending: list[int], names: Names) -> int:
        """Relink nameless inodes first, then directories (breaking cycles), so names survive."""
        dirs = (i for i in pending if stat.S_ISDIR(self.model.inodes[i].mode))
        return next((i for i in pending if not names.get(i)), next(dirs, pending[0]))

    def _relink(self, ino: int, names: Names) -> None:
        m = self.model
        inode = m.inodes[ino]
        home, home_path = self._lost_and_found()
        name = m.free_name(home, b"#%d" % ino)
        self._report("unreachable", f"inode {ino}", f"{_describe(inode)} is not reachable from /",
                     f"linked as {_join(home_path, name)}")
        if stat.S_ISDIR(inode.mode):  # a directory has one name: the new one
            for parent, old in names.get(ino, []):
                if (parent, old) in m.dirents:
                    m.remove_dirent(parent, old)
            inode.parent = home
            m.changed(inode)
        m.add_dirent(home, name, ino)
        m.unorphan(ino)

    def _lost_and_found(self) -> tuple[int, str]:
        """/lost+found, made (mode 0700, owned like /) the first time something goes there."""
        if self.lost_found is None:
            m = self.model
            name = b"lost+found"
            entry = m.dirents.get((ROOT_INO, name))
            if entry is None or not stat.S_ISDIR(m.inodes[entry[0]].mode):
                name = m.free_name(ROOT_INO, name)
                root, ino = m.inodes[ROOT_INO], m.allocate(b"next_ino")
                m.new_dir(ino, ROOT_INO, 0o700, root.uid, root.gid)
                m.add_dirent(ROOT_INO, name, ino)
            self.lost_found = (m.dirents[(ROOT_INO, name)][0], _join("/", name))
        return self.lost_found

    def _nlinks(self) -> None:
        """A file's link count is its number of names; a directory's is 2 + its subdirectories."""
        m = self.model
        names, children = _names(m), _children(m)
        for ino, inode in sorted(m.inodes.items()):
            want, why = self._wanted_nlink(inode, names, children)
            if inode.nlink == want:
                continue
            if ino not in m.relinked:
                self._report("nlink", f"inode {ino}", f"link count is {inode.nlink} but {why}",
                             f"set to {want}", ino)
            inode.nlink = want
            m.changed(inode)

    def _wanted_nlink(self, inode: Inode, names: Names, children: Children) -> tuple[int, str]:
        if not stat.S_ISDIR(inode.mode):
            n = len(names.get(inode.ino, ()))
            return n, f"{_count(n, 'entry names', 'entries name')} it"
        if inode.ino != ROOT_INO and not names.get(inode.ino):
            return 0, "the directory has no name"
        subdirs = sum(1 for _n, c in children.get(inode.ino, ())
                      if stat.S_ISDIR(self.model.inodes[c].mode))
        return 2 + subdirs, f"the directory has {_count(subdirs, 'subdirectory', 'subdirectories')}"

    def _orphans(self) -> None:
        """orphans lists exactly the unlinked inodes (the next mount deletes them)."""
        m = self.model
        for ino in sorted(m.orphans):
            if ino not in m.inodes or m.inodes[ino].nlink > 0:
                why = ("does not exist" if ino not in m.inodes
                       else f"has {_count(m.inodes[ino].nlink, 'link')}")
                self._report("orphan", f"inode {ino}", f"is listed as unlinked but {why}",
                             "removed from orphans", ino)
                m.unorphan(ino)
        for ino, inode in sorted(m.inodes.items()):
            if inode.nlink == 0 and ino not in m.orphans:
                self._report("orphan", f"inode {ino}",
                             "is unlinked but not listed in orphans, so its space is never freed",
                             "listed; the next mount deletes it", ino)
                m.orphan(ino)

    def _xattrs(self) -> None:
        """Extended attributes of an inode that is gone are leftovers (and count against nothing)."""
        m = self.model
        for ino in sorted(set(m.xattrs) - set(m.inodes)):
            self._report("xattr", f"inode {ino}",
                         f"{_count(len(m.xattrs[ino]), 'extended attribute')} of a missing inode",
                         "removed")
            for key in m.xattrs.pop(ino):
                m.delete("xattrs", key)

    # file data
    def _extents(self) -> None:
        """Extents belong to regular files (other inodes' are dropped), then per file checks."""
        m = self.model
        for ino in sorted(m.extents):
            inode = m.inodes.get(ino)
            if m.extents[ino] and (inode is None or not stat.S_ISREG(inode.mode)):
                what = "does not exist" if inode is None else f"is a {_kind(inode)}"
                self._report("extent", f"inode {ino}",
                             f"{_count(len(m.extents[ino]), 'extent')} of an inode that {what}",
                             "dropped", ino)
                for off in list(m.extents[ino]):
                    m.drop_extent(ino, off)
        for inode in sorted(m.inodes.values(), key=lambda i: i.ino):
            if stat.S_ISREG(inode.mode):
                self._file_extents(inode)

    def _file_extents(self, inode: Inode) -> None:
        """Over usable chunks of the same length, in order without overlap, within the size."""
        extents = self.model.extents.setdefault(inode.ino, {})
        found = sum(length for _cid, length in extents.values())
        end = 0  # where the last extent kept ends
        for off, (cid, length) in sorted(extents.items()):
            why = self._extent_problem(inode, off, cid, length, end)
            if why is not None:
                self._drop_extent(inode, off, length, end, why)
            elif off + length > inode.size:
                self._cut_extent(inode, off, cid, length)
                end = inode.size
            else:
                end = off + length
        if inode.allocated != found:
            self._report("allocated", f"inode {inode.ino}",
                         f"allocated is {inode.allocated} bytes but its extents hold {found}",
                         "corrected", inode.ino)
        final = sum(length for _cid, length in extents.values())
        if inode.allocated != final:
            inode.allocated = final
            self.model.changed(inode)

    def _extent_problem(self, inode: Inode, off: int, cid: bytes, length: int,
                        end: int) -> str | None:
        problem = self._chunk_problem(cid, length)
        if problem is not None:
            return problem
        if off < end:
            return "the extent overlaps the one before it"
        if off >= inode.size:
            return f"the extent lies beyond the end of the file ({inode.size} bytes)"
        return None

    def _drop_extent(self, inode: Inode, off: int, length: int, end: int, why: str) -> None:
        lo, hi = max(off, end), min(off + length, inode.size)
        lost = (lo, hi) if lo < hi else None
        fix = f"extent dropped; bytes {lo}-{hi - 1} read as zeros" if lost else "extent dropped"
        self._report("data", f"inode {inode.ino}", f"bytes {off}-{off + length - 1}: {why}", fix,
                     inode.ino, lost)
        self.model.drop_extent(inode.ino, off)

    def _cut_extent(self, inode: Inode, off: int, cid: bytes, length: int) -> None:
        """An extent reaching past the end of its file is cut there, as truncate does."""
        self._report("extent", f"inode {inode.ino}",
                     f"extent at bytes {off}-{off + length - 1} reaches past the end of the "
                     f"file ({inode.size} bytes)", f"cut at byte {inode.size}", inode.ino)
        head = decode_chunk(cid, self._encoded(cid), length)[:inode.size - off]
        self.model.drop_extent(inode.ino, off)
        if not is_zero(memoryview(head)):
            chunk = prepare_chunk(head, LEVEL)
            self._add_chunk(chunk)
            self.model.put_extent(inode.ino, off, chunk.id, chunk.raw_len)

    def _add_chunk(self, chunk: PreparedChunk) -> None:
        if chunk.id not in self.good:
            self.good[chunk.id] = (chunk.raw_len, len(chunk.encoded))
            self.model.put("chunks", chunk.id, chunk.encoded)

    # backlinks and snapshots
    def _backlinks(self) -> None:
        """backlinks holds exactly one (child, parent, name) per directory entry; it follows the
        entries fsck changed silently (format 1 stores get theirs when first mounted)."""
        if self.store_format < 2:
            return
        m = self.model
        final = {(c, p, n) for (p, n), (c, _k) in m.dirents.items()}
        for child, parent, name in sorted(m.backlinks - self.found_links - final):
            self._report("backlink", f"inode {child}",
                         f"backlink names entry {_show(name)} in inode {parent}, which does not "
                         f"exist", "removed", child)
        for child, parent, name in sorted((self.found_links - m.backlinks) & final):
            self._report("backlink", f"inode {child}",
                         f"its entry {_show(name)} in inode {parent} has no backlink", "added",
                         child)
        for link in final - m.backlinks:
            m.put("backlinks", backlink_key(*link), b"")
        for link in m.backlinks - final:
            m.delete("backlinks", backlink_key(*link))
        m.backlinks = final

    def _trees(self) -> None:
        """Objects must be sound and hold only sound data; damaged trees get a Merkle rewrite."""
        m = self.model
        for oid, why in sorted(m.bad_objects.items()):
            self._report("object", f"object {oid.hex()}", why,
                         "deleted; the trees that use it are repaired")
            m.delete("objects", oid)
        for oid in itertools.chain((snap.root for snap in m.snapshots.values()),
                                   m.objcache.values()):
            self._fix(oid)
        for name in sorted(m.snapshots):
            self._repair_snapshot(name)
        for ino, oid in sorted(m.objcache.items()):
            if self.fixed[oid] == oid:
                continue
            if oid not in m.objects or oid in self.harm:  # else damage below it: said elsewhere
                why = (self._missing(oid) if oid not in m.objects
                       else "holds damaged data: " + self.harm[oid][0][1])
                self._report("objcache", f"inode {ino}", f"cached object {oid.hex()} {why}",
                             "cache entry removed; the inode is marked changed", ino)
            del m.objcache[ino]
            m.delete("objcache", ino_key(ino))
            self._mark(ino)

    def _missing(self, oid: bytes) -> str:
        return self.model.bad_objects.get(oid, "is missing from the store")

    def _fix(self, top: bytes) -> None:
        """Fill self.fixed for top and everything below it (post-order, without recursion)."""
        m = self.model
        stack = [(top, False)]
        while stack:
            oid, expanded = stack.pop()
            if oid in self.fixed:
                continue
            obj = m.objects.get(oid)
            if obj is None:
                self.fixed[oid] = None
            elif obj.is_dir and not expanded:
                stack.append((oid, True))
                stack.extend((child, False) for _n, child in obj.entries if child not in self.fixed)
            else:
                self.fixed[oid] = self._rewrite(oid, obj)

    def _rewrite(self, oid: bytes, obj: TreeObject) -> bytes:
        """The id of obj without its damage: itself, or a new object put in its place."""
        m = self.model
        harm: list[tuple[bytes | None, str, str, tuple[int, int] | None]] = []
        new = obj
        if obj.is_file:
            kept, dropped = [], 0
            for off, cid, length in obj.extents:
                why = self._chunk_problem(cid, length)
                if why is None:
                    kept.append((off, cid, length))
                    continue
                lo, hi = off, min(off + length, obj.inode.size)
                lost = (lo, hi) if lo < hi else None
                fix = (f"extent dropped; bytes {lo}-{hi - 1} read as zeros" if lost
                       else "extent dropped")
                harm.append((None, f"bytes {off}-{off + length - 1}: {why}", fix, lost))
                dropped += length
            if harm:
                reader = cast(ChunkStore, _ChunkReader(self))
                new = TreeObject(replace(obj.inode, allocated=max(0, obj.inode.allocated - dropped)),
                                 list(obj.xattrs), obj.target,
                                 content_id(self.txn, reader, kept, obj.inode.size), kept)
        elif obj.is_dir:
            entries, changed = [], False
            for name, child in obj.entries:
                fixed = self.fixed[child]
                if fixed is None:
                    harm.append((name, f"its object {child.hex()} {self._missing(child)}",
                                 "entry removed from the snapshot", None))
                    changed = True
                else:
                    entries.append((name, fixed))
                    changed |= fixed != child
            if changed:
                new = TreeObject(obj.inode, list(obj.xattrs), entries=entries)
        if harm:
            self.harm[oid] = harm
        if new is obj:
            return oid
        encoded = new.encode()
        nid = object_id(encoded)
        if nid not in m.objects:
            m.objects[nid] = new
            m.put("objects", nid, encoded)
        self.fixed[nid] = nid
        return nid

    def _chunk_problem(self, cid: bytes, length: int) -> str | None:
        if cid in self.broken:
            return f"chunk {cid.hex()} {self.broken[cid]}"
        if cid not in self.good:
            return f"chunk {cid.hex()} is missing from the store"
        if length != self.good[cid][0]:
            return f"extent length {length} is not its chunk's length {self.good[cid][0]}"
        return None

    def _repair_snapshot(self, name: bytes) -> None:
        """Point a snapshot at its rewritten root, naming every damaged path; one whose root is
        lost is deleted."""
        m = self.model
        snap = m.snapshots[name]
        base = "/.snapshots/" + os.fsdecode(name)
        subject = f"snapshot {_show(name)}"
        new = self.fixed[snap.root]
        if new is None or not m.objects[new].is_dir:
            why = (f"its root object {snap.root.hex()} {self._missing(snap.root)}" if new is None
                   else f"its root object {snap.root.hex()} is not a directory")
            self._report("snapshot", subject, why, "snapshot deleted: the snapshot is lost",
                         path=base)
            del m.snapshots[name]
            m.delete("snapshots", name)
            return
        if new == snap.root:
            return
        seen: set[bytes] = set()
        stack = [(snap.root, base)]
        while stack:
            oid, path = stack.pop()
            if oid in seen:
                continue
            seen.add(oid)
            for entry, what, fix, lost in self.harm.get(oid, ()):
                category = "data" if entry is None else "snapshot"  # lost bytes, or an entry
                self._report(category, subject, what, fix, lost=lost,
                             path=_join(path, entry) if entry is not None else path)
            obj = m.objects.get(oid)
            for entry_name, child in sorted(obj.entries if obj else (), reverse=True):
                if child in m.objects and self.fixed.get(child) != child:
                    stack.append((child, _join(path, entry_name)))
        snap.root = new
        m.put("snapshots", name, snap.encode())

    def _names_final(self) -> Names:
        """Who names each inode, once the entries are repaired (they are, before the objects)."""
        if self._final_names is None:
            self._final_names = _names(self.model)
        return self._final_names

    def _mark(self, ino: int) -> None:
        """Mark ino and every directory above it changed: the next snapshot rebuilds them."""
        m = self.model
        names = self._names_final()
        pending = [ino]
        while pending:
            current = pending.pop()
            if current in self.walked:
                continue
            self.walked.add(current)
            if current not in m.inodes and current not in m.objcache:
                continue
            if current not in m.marked:
                m.marked.add(current)
                m.put("dirty", ino_key(current), b"")
            pending.extend(parent for parent, _name in names.get(current, ()))

    def _objcache(self) -> None:
        """An objcache entry belongs to an inode that exists (or is marked changed: the next
        snapshot releases it), and one of a clean inode describes that inode as it is."""
        m = self.model
        if not m.objcache:
            return
        for ino in sorted(m.touched):  # fsck changed them: rebuilt without a finding
            self._mark(ino)
        children = _children(m)
        wrong = []
        for ino, oid in sorted(m.objcache.items()):
            inode = m.inodes.get(ino)
            if inode is None:
                if ino not in m.marked:
                    self._report("objcache", f"inode {ino}",
                                 f"cached object {oid.hex()} is of an inode that no longer exists "
                                 f"and is not marked changed", "cache entry removed")
                    del m.objcache[ino]
                    m.delete("objcache", ino_key(ino))
            elif ino not in m.marked:
                why = self._cache_mismatch(inode, m.objects[oid], children)
                if why is not None:
                    wrong.append((ino, oid, why))
        for ino, oid, why in wrong:
            self._report("objcache", f"inode {ino}", f"cached object {oid.hex()} {why}",
                         "inode marked changed with the directories above it; the next "
                         "snapshot rebuilds them", ino)
            self._mark(ino)

    def _cache_mismatch(self, inode: Inode, obj: TreeObject, children: Children) -> str | None:
        """How a clean inode's cached object differs from the inode (from records in the model)."""
        m, o = self.model, obj.inode
        for attr, label, show in (("ino", "inode number", str), ("mode", "mode", oct),
                                  ("uid", "owner", str), ("gid", "group", str),
                                  ("size", "size", str), ("mtime_ns", "mtime", str)):
            have, want = getattr(o, attr), getattr(inode, attr)
            if have != want:
                return f"has {label} {show(have)} but the inode has {show(want)}"
        if sorted(n for n, _v in obj.xattrs) != sorted(k[8:] for k in m.xattrs.get(inode.ino, ())):
            return "has other extended attributes than the inode"
        if stat.S_ISDIR(inode.mode):
            want_entries, have_entries = dict(children.get(inode.ino, ())), dict(obj.entries)
            if want_entries.keys() != have_entries.keys():
                return "has other entry names than the directory"
            for name, child in sorted(want_entries.items()):
                if child in m.marked:
                    return f"has entry {_show(name)}, whose inode {child} is marked changed"
                if m.objcache.get(child) != have_entries[name]:
                    return (f"has entry {_show(name)}, which is not the cached object of "
                            f"inode {child}")
        elif stat.S_ISREG(inode.mode):
            extents = [(off, cid, n)
                       for off, (cid, n) in sorted(m.extents.get(inode.ino, {}).items())]
            if extents != obj.extents:
                return "has other extents than the file"
        elif stat.S_ISLNK(inode.mode) and obj.target != m.symlinks.get(inode.ino, b""):
            return "has another target than the symlink"
        return None

    def _objrefs(self) -> None:
        """An object's refcount is the snapshots rooted at it, plus the objcache entries naming
        it, plus the entries naming it in directory objects; objects nothing holds are deleted."""
        m = self.model
        found = Counter(self.found_roots)
        found.update(self.found_cache.values())
        found.update(child for obj in self.found_tree.values() for _n, child in obj.entries)
        roots = [snap.root for snap in m.snapshots.values()] + list(m.objcache.values())
        self.kept = _reachable_objects(m, roots)
        final = Counter(roots)
        final.update(child for oid in self.kept for _n, child in m.objects[oid].entries)
        for oid in sorted(set(m.objrefs) | set(self.found_tree) | self.kept):
            stored = m.objrefs.get(oid)
            shown = "missing" if stored is None else stored
            if oid in self.kept:
                want = final[oid]
                unseen = self.unseen_holders and (stored or 0) > found[oid]
                said = stored is None and oid in self.bad_objrefs  # as a record that is removed
                if (oid in self.found_tree and stored not in (found[oid], want)
                        and not unseen and not said):
                    self._report("refcount", f"object {oid.hex()}",
                                 f"refcount is {shown} but "
                                 f"{_count(found[oid], 'reference holds', 'references hold')} it",
                                 f"set to {want}")
                if stored != want:
                    m.put("objrefs", oid, encode_refcount(want))
                continue
            if oid in self.found_tree and found[oid] == 0:
                self._report("object", f"object {oid.hex()}",
                             f"nothing references it (refcount {shown})", "deleted")
            elif oid not in self.found_tree and oid not in m.bad_objects and found[oid] == 0:
                self._report("refcount", f"object {oid.hex()}",
                             "refcount record of an object that does not exist", "removed")
            if m.objects.pop(oid, None) is not None:
                m.delete("objects", oid)
            if stored is not None:
                m.delete("objrefs", oid)

    def _byid(self) -> None:
        """byid lists each file object under its content id, and nothing else."""
        m = self.model
        found = {byid_key(o.content_id, oid) for oid, o in self.found_tree.items() if o.is_file}
        final = {byid_key(m.objects[oid].content_id, oid) for oid in self.kept
                 if m.objects[oid].is_file}
        for key in sorted(m.byid - found - final):
            self._report("byid", f"object {key[32:].hex()}",
                         f"is listed under content id {key[:32].hex()} but is no file object "
                         f"with that content", "removed")
        for key in sorted((found - m.byid) & final):
            self._report("byid", f"object {key[32:].hex()}",
                         "file object is not listed under its content id", "added")
        for key in final - m.byid:
            m.put("byid", key, b"")
        for key in m.byid - final:
            m.delete("byid", key)
        m.byid = final

    def _refcounts(self) -> None:
        """A chunk's refcount is the number of extents using it, live ones and those of stored
        file objects (one per extent per object); a chunk nothing uses is deleted."""
        m = self.model
        users = Counter(cid for exts in m.extents.values() for cid, _l in exts.values())
        users.update(cid for oid in self.kept for _o, cid, _l in m.objects[oid].extents)
        for cid in sorted(self.good):
            if cid in self.model.chunk_ids:
                self._check_refcount(cid, users[cid])
            self._write_ref(cid, users[cid])
        self.good = {cid: lens for cid, lens in self.good.items() if users[cid]}

    def _check_refcount(self, cid: bytes, users: int) -> None:
        found, ref = self.found_refs[cid], self.model.refs.get(cid)
        if found == 0:
            self._report("chunk", f"chunk {cid.hex()}",
                         f"no extent or snapshot uses it (refcount {ref[0] if ref else 'missing'})",
                         "deleted" if users == 0 else "kept: a repaired file uses it")
        elif ref is not None and ref[0] != found and not (self.unseen_holders and ref[0] > found):
            self._report("refcount", f"chunk {cid.hex()}",
                         f"refcount is {ref[0]} but {_count(found, 'extent uses', 'extents use')} it",
                         f"set to {users}")

    def _write_ref(self, cid: bytes, users: int) -> None:
        if users == 0:
            self.model.delete_chunk(cid)
            return
        record = (users, *self.good[cid])
        if self.model.refs.get(cid) != record:
            self.model.put("chunkrefs", cid, REF_RECORD.pack(*record))

    def _counters(self) -> None:
        """The store counters (`maiffs stat`) equal what the records imply.

        A counter that disagrees with the records as found but already has the repaired
        records' value is not reported: the broken record it follows from is.
        """
        stored = self.model.stats
        final = _totals(self.model, self.good)
        for name in STAT_FIELDS:
            if stored is not None and self.found_totals[name] != stored[name] != final[name]:
                self._report("counter", f"counter {name}",
                             f"is {stored[name]} but the records say {self.found_totals[name]}",
                             f"set to {final[name]}")
        if stored != final:
            self.model.put("meta", b"stats", STATS_RECORD.pack(*(final[f] for f in STAT_FIELDS)))
