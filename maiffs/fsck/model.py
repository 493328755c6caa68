"""The in-memory model fsck checks: every record of the store but chunk data, parsed, then
changed by the checks into the repaired records, each change also kept in a plan of puts and
deletes (written in one transaction by --repair, dropped otherwise); and the views of the model
several checks need (who names what, paths, the counters, the objects a set of roots reaches)."""

from __future__ import annotations

import itertools
import stat
import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from maiffs.errors import CorruptRecord, StoreError
from maiffs.fsck.words import join
from maiffs.namespace.namespace import FIRST_COOKIE, NAME_MAX
from maiffs.namespace.records import (ROOT_INO, Inode, cookie_key, decode_dirent, decode_extent,
                                      dirent_key, encode_dirent, encode_extent, extent_key,
                                      ino_key, key_ino, now_ns)
from maiffs.snapshots.manager import SNAPSHOT_FORMAT
from maiffs.snapshots.objects import OID_SIZE, TreeObject, decode_refcount, object_id
from maiffs.store.chunks import REF_RECORD, ID_SIZE
from maiffs.store.env import HEADER_KEYS, STAT_FIELDS, STATS_RECORD, Txn

FILE_TYPES = (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK,
              stat.S_IFIFO, stat.S_IFSOCK)
#: What a record parser raises on a malformed record.
MALFORMED = (ValueError, struct.error, StoreError)
#: Why a record is bad when it fails its seal's check (damaged on disk).
FAILS_CHECK = "fails its checksum"
ALLOCATOR_FIRST = {b"next_ino": ROOT_INO + 1, b"next_cookie": FIRST_COOKIE, b"next_snapshot": 1}
#: A snapshot record: format, number, created (ns), root object id (as manager.py writes it).
SNAPSHOT_RECORD = struct.Struct(">BQq32s")
#: directory ino -> [(name, child ino)], and child ino -> [(directory ino, name)]
Children = dict[int, list[tuple[bytes, int]]]
Names = dict[int, list[tuple[int, bytes]]]
#: chunk id -> (raw length, stored length)
ChunkLengths = dict[bytes, tuple[int, int]]


@dataclass
class Snap:
    """One snapshot record."""

    number: int
    created_ns: int
    root: bytes

    def encode(self) -> bytes:
        return SNAPSHOT_RECORD.pack(SNAPSHOT_FORMAT, self.number, self.created_ns, self.root)


@dataclass
class Model:
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
    snapshots: dict[bytes, Snap] = field(default_factory=dict)
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
        self.snapshots[bytes(key)] = Snap(number, created, root)

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
        damaged: dict[str, set[bytes]] = {}
        for db, key, why in itertools.chain(self.bad, (("objects", oid, why) for oid, why
                                                       in self.bad_objects.items())):
            if why == FAILS_CHECK:
                damaged.setdefault(db, set()).add(key)
        for db, keys in damaged.items():
            _delete_damaged(txn, db, keys)
        for (db, key), value in self.plan.items():
            if value is not None:
                txn.put(db, key, value)
            elif key not in damaged.get(db, ()):
                txn.delete(db, key)
        for ino in self.dirty:
            txn.put("inodes", ino_key(ino), self.inodes[ino].encode())


def _delete_damaged(txn: Txn, db: str, keys: set[bytes]) -> None:
    """Delete db's records under keys that fail their check, by walking the database: a
    damaged key can sit out of order in the B-tree, even beside a sound record with the same
    key, where a search goes astray."""
    cur = txn.cursor(db)
    more = cur.first()
    while more:
        if cur.key() in keys and not _passes(txn, db, cur.key(), cur.value()):
            cur.delete()  # (moves to the next record)
            more = cur.key() != b""
        else:
            more = cur.next()


def _passes(txn: Txn, db: str, key: bytes, stored: bytes) -> bool:
    try:
        txn.unseal(db, key, stored)
    except CorruptRecord:
        return False
    return True


def _ino(key: bytes) -> int:
    """The inode number a key is (ValueError if it is not 8 bytes)."""
    if len(key) != 8:
        raise ValueError("key is not an inode number")
    return key_ino(key)


def load(txn: Txn) -> Model:
    """Read every record but chunk data; damaged and malformed ones go to model.bad."""
    m = Model()
    parsers: dict[str, Callable[[bytes, bytes], None]] = {
        "inodes": m.parse_inode, "dirents": m.parse_dirent, "dircookies": m.parse_cookie,
        "extents": m.parse_extent, "symlinks": m.parse_symlink, "xattrs": m.parse_xattr,
        "orphans": m.parse_orphan, "chunkrefs": m.parse_ref,
        "backlinks": m.parse_backlink, "dirty": m.parse_dirty, "objects": m.parse_object,
        "objrefs": m.parse_objref, "objcache": m.parse_objcache, "snapshots": m.parse_snapshot,
        "byid": m.parse_byid,
    }  # a database an older store does not have reads as empty
    for db, parse in parsers.items():
        for key, value in _sound_records(txn, m, db):
            try:
                parse(key, value)
            except MALFORMED as exc:
                m.bad.append((db, key, f"does not decode ({str(exc) or type(exc).__name__})"))
    for cid in map(bytes, txn.cursor("chunks").iternext(keys=True, values=False)):
        if len(cid) == ID_SIZE:
            m.chunk_ids.add(cid)
        else:
            m.bad.append(("chunks", cid, "key is not a chunk id"))
    _load_meta(m, dict(_sound_records(txn, m, "meta")))
    return m


def _sound_records(txn: Txn, m: Model, db: str) -> Iterator[tuple[bytes, bytes]]:
    """db's records that pass their check (the others go to m.bad, or m.bad_objects); meta's
    without the records the store reads itself at open."""
    for key, stored in txn.stored_items(db):
        if db == "meta" and key in HEADER_KEYS:
            continue
        try:
            yield key, txn.unseal(db, key, stored)
        except CorruptRecord:
            if db == "objects":  # the tree checks repair the trees that use it
                m.bad_objects[key] = FAILS_CHECK
            else:
                m.bad.append((db, key, FAILS_CHECK))


def _load_meta(m: Model, meta: dict[bytes, bytes]) -> None:
    """The counters (missing means all zero, as Store.stats reads them) and the id allocators."""
    raw = meta.get(b"stats")
    if raw is None or len(raw) == STATS_RECORD.size:
        m.stats = dict(zip(STAT_FIELDS, STATS_RECORD.unpack(raw or bytes(STATS_RECORD.size)),
                           strict=True))
    else:
        m.bad.append(("meta", b"stats", f"does not decode ({len(raw)} bytes, not {STATS_RECORD.size})"))
    for name, first in ALLOCATOR_FIRST.items():
        raw = meta.get(name)
        if raw is not None and len(raw) != 8:
            m.bad.append(("meta", name, "does not decode (not a 64-bit number)"))
            raw = None
        m.next_ids[name] = struct.unpack(">Q", raw)[0] if raw else first


def children_of(m: Model) -> Children:
    """Each directory's entries: (name, child ino)."""
    out: Children = {}
    for (parent, name), (child, _cookie) in m.dirents.items():
        out.setdefault(parent, []).append((name, child))
    return out


def names_of(m: Model) -> Names:
    """Each inode's names: (directory ino, name)."""
    out: Names = {}
    for (parent, name), (child, _cookie) in m.dirents.items():
        out.setdefault(child, []).append((parent, name))
    return out


def walk(m: Model, children: Children, start: int, base: str) -> dict[int, str]:
    """Everything reachable from directory start by entries, with a path (the first name found)."""
    paths = {start: base}
    queue = deque([start])
    while queue:
        parent = queue.popleft()
        for name, child in children.get(parent, ()):
            if child in paths:
                continue
            paths[child] = join(paths[parent], name)
            inode = m.inodes.get(child)
            if inode is not None and stat.S_ISDIR(inode.mode):
                queue.append(child)
    return paths


def totals(m: Model, chunks: ChunkLengths) -> dict[str, int]:
    """The store counters implied by the model's inodes and extents and the given chunks."""
    return {
        "chunks": len(chunks),
        "chunk_raw_bytes": sum(raw for raw, _stored in chunks.values()),
        "chunk_stored_bytes": sum(stored for _raw, stored in chunks.values()),
        "referenced_bytes": sum(length for exts in m.extents.values() for _c, length in exts.values()),
        "inodes": len(m.inodes),
        "logical_bytes": sum(i.size for i in m.inodes.values() if stat.S_ISREG(i.mode)),
    }


def reachable_objects(m: Model, roots: Iterable[bytes]) -> set[bytes]:
    """Every object reachable from roots (all present in m.objects)."""
    seen: set[bytes] = set()
    pending = list(roots)
    while pending:
        oid = pending.pop()
        if oid not in seen:
            seen.add(oid)
            pending.extend(child for _n, child in m.objects[oid].entries if child not in seen)
    return seen
