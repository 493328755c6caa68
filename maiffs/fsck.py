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

The model takes memory in proportion to the number of records (as e2fsck's does).
"""

from __future__ import annotations

import itertools
import stat
import struct
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from maiffs.errors import CorruptChunk, StoreError
from maiffs.namespace.filedata import is_zero
from maiffs.namespace.namespace import FIRST_COOKIE, NAME_MAX
from maiffs.namespace.records import (ROOT_INO, Inode, cookie_key, decode_dirent, decode_extent,
                                      dirent_key, encode_dirent, encode_extent, extent_key,
                                      ino_key, key_ino, now_ns)
from maiffs.options import MountOptions
from maiffs.store.chunks import REF_RECORD, ID_SIZE, PreparedChunk, decode_chunk, prepare_chunk
from maiffs.store.env import STAT_FIELDS, STATS_RECORD, Store, Txn
from maiffs.store.lock import StoreLock

#: Level for the one kind of chunk fsck writes: the head of a chunk cut at the end of its file.
LEVEL = MountOptions().compression
FILE_TYPES = (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK,
              stat.S_IFIFO, stat.S_IFSOCK)
#: What a record parser raises on a malformed record.
MALFORMED = (ValueError, struct.error, StoreError)
ALLOCATOR_FIRST = {b"next_ino": ROOT_INO + 1, b"next_cookie": FIRST_COOKIE}
#: directory ino -> [(name, child ino)], and child ino -> [(directory ino, name)]
Children = dict[int, list[tuple[bytes, int]]]
Names = dict[int, list[tuple[int, bytes]]]


@dataclass(frozen=True)
class Finding:
    """One broken invariant: what is concerned, what is wrong, and what --repair does about it.

    category is one of: record, allocator, chunk, data, extent, refcount, allocated, directory,
    dirent, cookie, unreachable, nlink, orphan, symlink, xattr, counter. lost is the byte range
    [start, end) of the file at path that reads as zeros after the repair.
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
        checker = _Checker(_load(txn), txn, verify_chunks=True)
        findings = checker.run()
    model = checker.model
    remaining: list[Finding] = []
    if repair and findings:
        store.write(model.apply, expected_bytes=sum(len(v or b"") for v in model.plan.values()))
        with store.read() as txn:  # chunk data was verified above and only deleted since
            remaining = _Checker(_load(txn), txn, verify_chunks=False).run()
    return Report(store.path, repair, findings, remaining, len(model.inodes), len(checker.good))


# -- the model ---------------------------------------------------------------------------------
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

    # changes
    def put(self, db: str, key: bytes, value: bytes) -> None:
        self.plan[(db, key)] = value

    def delete(self, db: str, key: bytes) -> None:
        self.plan[(db, key)] = None

    def changed(self, inode: Inode) -> None:
        self.inodes[inode.ino] = inode
        self.dirty.add(inode.ino)

    def new_dir(self, ino: int, parent: int, perm: int, uid: int, gid: int) -> None:
        t = now_ns()
        self.changed(Inode(ino, stat.S_IFDIR | perm, uid, gid, 2, parent=parent, atime_ns=t,
                           mtime_ns=t, ctime_ns=t, birth_ns=t))
        self.relinked.add(ino)

    def drop_inode(self, ino: int) -> None:
        """Delete an inode with its names and everything kept under its number."""
        self.inodes.pop(ino, None)
        self.dirty.discard(ino)
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
        if self.cookies.get((parent, cookie)) == name:
            del self.cookies[(parent, cookie)]
            self.delete("dircookies", cookie_key(parent, cookie))
        self._relinked(parent, child)

    def add_dirent(self, parent: int, name: bytes, child: int) -> None:
        self.set_cookie(parent, name, child)
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

    def put_extent(self, ino: int, off: int, cid: bytes, length: int) -> None:
        self.extents.setdefault(ino, {})[off] = (cid, length)
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
    }
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

    def __init__(self, model: _Model, txn: Txn, verify_chunks: bool) -> None:
        self.model = model
        self.txn = txn
        self.verify_chunks = verify_chunks
        self.findings: list[Finding] = []
        self.paths = _walk(model, _children(model), ROOT_INO, "/")
        self.found_totals = _totals(model, {c: (r[1], r[2]) for c, r in model.refs.items()})
        self.found_totals["inodes"] += sum(1 for db, _k, _w in model.bad if db == "inodes")
        self.found_refs = Counter(cid for exts in model.extents.values() for cid, _l in exts.values())
        self.good: dict[bytes, tuple[int, int]] = {}  # usable chunk -> (raw, stored length)
        self.broken: dict[bytes, str] = {}  # chunk id -> why its data is unusable
        self.lost_found: tuple[int, str] | None = None

    def run(self) -> list[Finding]:
        for check in (self._records, self._allocators, self._chunks, self._root, self._symlinks,
                      self._dirents, self._cookies, self._dir_names, self._reachable,
                      self._nlinks, self._orphans, self._xattrs, self._extents,
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
                self._report("record", f"{db} {_show_key(key)}", f"record does not decode ({why})",
                             "removed")
                self.model.delete(db, key)

    def _allocators(self) -> None:
        """New inode numbers and cookies must lie above all in use, or they would collide."""
        m = self.model
        cookies = itertools.chain((k for _p, k in m.cookies), (k for _c, k in m.dirents.values()))
        in_use = {b"next_ino": max(m.inodes, default=ROOT_INO),
                  b"next_cookie": max(cookies, default=FIRST_COOKIE - 1)}
        for name, top in in_use.items():
            if m.next_ids[name] <= top:
                self._report("allocator", f"meta {name.decode()}",
                             f"next value {m.next_ids[name]} is not above {top}, which is in use",
                             f"set to {top + 1}")
                m.set_next(name, top + 1)

    # chunks
    def _chunks(self) -> None:
        """Every chunk must decode to bytes matching its id; one that is missing is as bad."""
        lengths = {cid: n for exts in self.model.extents.values() for cid, n in exts.values()}
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
                     "deleted; the extents that use it are dropped")
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
        if cid in self.broken:
            return f"chunk {cid.hex()} {self.broken[cid]}"
        if cid not in self.good:
            return f"chunk {cid.hex()} is missing from the store"
        if length != self.good[cid][0]:
            return f"extent length {length} is not its chunk's length {self.good[cid][0]}"
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

    def _refcounts(self) -> None:
        """A chunk's refcount is the number of extents using it; a chunk nothing uses is deleted."""
        users = Counter(cid for exts in self.model.extents.values() for cid, _l in exts.values())
        for cid in sorted(self.good):
            if cid in self.model.chunk_ids:
                self._check_refcount(cid, users[cid])
            self._write_ref(cid, users[cid])
        self.good = {cid: lens for cid, lens in self.good.items() if users[cid]}

    def _check_refcount(self, cid: bytes, users: int) -> None:
        found, ref = self.found_refs[cid], self.model.refs.get(cid)
        if found == 0:
            self._report("chunk", f"chunk {cid.hex()}",
                         f"no extent uses it (refcount {ref[0] if ref else 'missing'})",
                         "deleted" if users == 0 else "kept: a repaired file uses it")
        elif ref is not None and ref[0] != found:
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
