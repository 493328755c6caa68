"""The LMDB environment: named sub-databases, format check, map growth, atomic write transactions.

Every change to a store is one LMDB write transaction (`Store.write`), so a namespace change and
the chunks it refers to commit together or not at all. Transactions commit without fsync; the
data reaches the OS page cache at commit, so a killed daemon loses nothing that committed, and
`Store.sync()` (called on fsync and every commit interval) makes it durable against power loss.

The map is grown before it can fill (LMDB's map is only address space; the file grows as pages are
written), and a transaction that still hits MapFullError is retried once the map has grown, so
map-full never reaches a user: a map that cannot grow (no address space left) fails the write with
ENOSPC, like a full disk, and the store goes on serving at its old size.

Every record but chunk data is sealed with a checksum of its key and value (seals.py): `Txn`
seals what it writes and checks what it reads, so a damaged record raises CorruptRecord.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import TypeVar
from zlib import crc32

import lmdb

from maiffs.errors import CorruptRecord, FsError, StoreError
from maiffs.store.leafahead import LeafAhead
from maiffs.store.readaround import ReadAround
from maiffs.store.seals import (SEAL_SIZE, SEALED_FORMAT, SEALED_RESIDUE, UNSEALED_DBS, Sealing,
                                seal, unseal)

#: Bumped whenever an on-disk encoding changes; a store with a newer number is refused, an
#: older one is upgraded when opened for writing (format 2 added backlinks and snapshots,
#: format 3 sealed every record).
STORE_FORMAT = 3
MAGIC = b"maiffs-store"
#: meta's record of an upgrade to format 3 under way (a sealed `Sealing`)
UPGRADE_MARK = b"sealing"
#: meta's records that the store reads itself, before it knows which records are sealed
HEADER_KEYS = (b"magic", b"format", UPGRADE_MARK)

DB_NAMES = (
    "meta",        # b"magic", b"format", counters (b"stats"), id allocators
    "chunks",      # chunk id (32 bytes) -> encoded chunk (format byte + payload)
    "chunkrefs",   # chunk id -> refcount, raw length, stored length
    "inodes",      # ino (8 bytes BE) -> inode record
    "dirents",     # parent ino + name -> child ino + cookie
    "dircookies",  # parent ino + cookie -> name (stable readdir offsets)
    "extents",     # ino + file offset -> chunk id + length
    "xattrs",      # ino + name -> value
    "symlinks",    # ino -> target
    "orphans",     # ino -> b"" for unlinked inodes still open; purged at open
    "backlinks",   # child ino + parent ino + name -> b"": the directories naming each inode
    "dirty",       # ino -> b"": inodes changed since their tree object was last built
    "objects",     # object id -> encoded tree object (a file's or a directory's state)
    "objrefs",     # object id -> refcount (parent directory objects, snapshots, objcache)
    "objcache",    # ino -> object id of a clean inode (holds one reference)
    "snapshots",   # snapshot name -> snapshot record (root object, time, number)
    "byid",        # content id + object id -> b"": file objects holding that content
)
#: The order in which the upgrade to format 3 seals the databases (meta last, with the format).
SEALING_ORDER = tuple(db for db in DB_NAMES if db != "meta" and db not in UNSEALED_DBS)

log = logging.getLogger(__name__)

INITIAL_MAP_SIZE = 1 << 30
HEADROOM = 256 << 20

T = TypeVar("T")

STATS_RECORD = struct.Struct(">qqqqqq")
STAT_FIELDS = ("chunks", "chunk_raw_bytes", "chunk_stored_bytes", "referenced_bytes",
               "inodes", "logical_bytes")


class Txn:
    """One LMDB transaction with named databases, sealed records and stats counters applied
    at commit. Values read are the records' without their seals."""

    def __init__(self, raw: lmdb.Transaction, dbs: dict[str, object], write: bool,
                 sealing: Sealing | None = None) -> None:
        self.raw = raw
        self.dbs = dbs
        self.write = write
        #: None when every record is sealed (format 3); else which are (an older store)
        self.sealing = sealing
        self.stat_delta: dict[str, int] = {}

    def get(self, db: str, key: bytes) -> bytes | None:
        handle = self.dbs[db]
        if handle is None:
            return None
        stored = self.raw.get(key, db=handle)
        return stored if stored is None else self.unseal(db, key, stored)

    def put(self, db: str, key: bytes, value: bytes, overwrite: bool = True) -> bool:
        if db not in UNSEALED_DBS and (self.sealing is None or self.sealing.sealed(db, key)):
            value = seal(key, value)
        return self.raw.put(key, value, db=self.dbs[db], overwrite=overwrite)

    def unseal(self, db: str, key: bytes, stored: bytes) -> bytes:
        """The value of a record as stored (read through `cursor` or `stored_items`), checked;
        CorruptRecord if it fails its check."""
        if self.sealing is None and db not in UNSEALED_DBS:  # (the common case, inlined)
            if crc32(stored, crc32(key)) != SEALED_RESIDUE:
                raise CorruptRecord(db, bytes(key))
            return stored[:-SEAL_SIZE]
        if db in UNSEALED_DBS or not self.sealing.sealed(db, key):
            return stored
        return unseal(db, key, stored)

    def delete(self, db: str, key: bytes) -> bool:
        return self.raw.delete(key, db=self.dbs[db])

    def clear(self, db: str) -> None:
        """Delete every record of db."""
        self.raw.drop(self.dbs[db], delete=False)

    def cursor(self, db: str) -> lmdb.Cursor:
        """A cursor over the records as stored: its values go through `unseal`."""
        return self.raw.cursor(db=self.dbs[db])

    def prefix_items(self, db: str, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Yield (key, value) for keys starting with prefix, from prefix+start on, in key order
        (CorruptRecord when a record fails its check)."""
        unseal = self.unseal
        for key, stored in self.stored_items(db, prefix, start):
            yield key, unseal(db, key, stored)

    def stored_items(self, db: str, prefix: bytes = b"", start: bytes = b""
                     ) -> Iterator[tuple[bytes, bytes]]:
        """prefix_items as stored, unchecked (readdir and fsck check each record themselves).
        A record whose damaged key sorts outside the prefix but sits among its records (the
        B-tree keeps it where it was) is yielded too, for its check to fail."""
        if self.dbs[db] is None:
            return
        cur = self.cursor(db)
        if not cur.set_range(prefix + start):
            return
        for key, stored in cur:
            if not key.startswith(prefix):  # past them, or a damaged key out of place among them
                if not (cur.next() and cur.key().startswith(prefix)):
                    return
                yield key, stored  # (a damaged key: its check fails)
                key, stored = cur.item()
            yield key, stored

    def count(self, **deltas: int) -> None:
        """Add to the store-wide counters (shown by `maiffs stat`); applied when the txn commits."""
        for name, delta in deltas.items():
            self.stat_delta[name] = self.stat_delta.get(name, 0) + delta


#: Below this much free space a failed commit is reported as a full disk.
LOW_SPACE = 64 << 20


def _is_no_space(exc: lmdb.Error, path: str, expected_bytes: int = 0) -> bool:
    """Did a commit fail because the disk is full? LMDB reports a short write on a nearly
    full disk as EIO, so the free space decides as much as the message does."""
    if "No space left" in str(exc) or "ENOSPC" in str(exc):
        return True
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < max(LOW_SPACE, 2 * expected_bytes)


class Store:
    """An open store directory. Use `Store.create` for a new one and `Store.open` otherwise."""

    def __init__(self, path: str, env: lmdb.Environment, readonly: bool, version: int) -> None:
        self.path = path
        self.env = env
        self.readonly = readonly
        self.dbs = {name: self._open_db(name) for name in DB_NAMES}
        self.page_size = env.stat()["psize"]
        self.read_around = ReadAround(env, os.path.join(path, "data.mdb"))
        self.leaf_ahead = LeafAhead(os.path.join(path, "data.mdb"), self.page_size)
        #: write transactions committed since open (views derived from the tree compare it)
        self.commits = 0
        #: growing the map remaps the file under every open reader of this process: it waits
        #: for the readers of worker threads (read_in_worker), and new ones wait for it
        self._map_guard = threading.Condition()
        self._worker_readers = 0
        self._growing = False
        #: the format the store was written in (older ones are upgraded by the namespace)
        self.format = version
        #: every record is sealed (and will stay so): no transaction needs to ask which are
        self.all_sealed = False
        with self.env.begin() as raw:
            self.all_sealed = self._sealing(raw) is None

    def _open_db(self, name: str) -> object | None:
        """A named database; None for one a read-only open of an older store does not have."""
        try:
            return self.env.open_db(name.encode(), create=not self.readonly)
        except lmdb.NotFoundError:
            return None

    def set_format(self, txn: Txn, version: int) -> None:
        """Record that the store is now in format version (after an upgrade)."""
        txn.raw.put(b"format", format_record(version), db=self.dbs["meta"])
        self.format = version

    def _sealing(self, raw: lmdb.Transaction) -> Sealing | None:
        """Which records are sealed, as of transaction raw: None for all of them. Read in every
        transaction until all are (another process may be upgrading the store meanwhile)."""
        if self.all_sealed:
            return None
        meta = self.dbs["meta"]
        if len(raw.get(b"format", db=meta)) == 4:  # before format 3
            return Sealing(SEALING_ORDER)
        mark = raw.get(UPGRADE_MARK, db=meta)
        return None if mark is None else Sealing.decode(SEALING_ORDER,
                                                         unseal("meta", UPGRADE_MARK, mark))

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str) -> "Store":
        """Make a new empty store at path (an absent or empty directory)."""
        if os.path.exists(path):
            if not os.path.isdir(path):
                raise StoreError(f"{path} exists and is not a directory")
            if os.listdir(path):
                raise StoreError(f"{path} is not empty; choose a new or empty directory")
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
        env = cls._open_env(path, readonly=False)
        with env.begin(write=True) as raw:
            meta = env.open_db(b"meta", txn=raw)
            raw.put(b"magic", MAGIC, db=meta)
            raw.put(b"format", format_record(STORE_FORMAT), db=meta)
        store = cls(path, env, readonly=False, version=STORE_FORMAT)
        store.sync()
        return store

    @classmethod
    def check(cls, path: str) -> None:
        """Refuse (StoreError) what is not a store this maiffs can open, changing nothing:
        before a command makes anything in path (a lock file) or forks a daemon for it."""
        cls.open(path, readonly=True).close()

    @classmethod
    def open(cls, path: str, readonly: bool = False) -> "Store":
        """Open an existing store, refusing anything that is not one or is of a newer format."""
        if not os.path.isdir(path):
            raise StoreError(f"{path}: no such store directory (create one with `maiffs mkfs {path}`)")
        if not all(os.path.exists(os.path.join(path, f)) for f in ("data.mdb", "lock.mdb")):
            raise StoreError(f"{path} is not a maiffs store (create one with `maiffs mkfs DIR`)")
        try:
            env = cls._open_env(path, readonly=readonly)
        except lmdb.Error as exc:
            raise StoreError(f"{path}: cannot open store: {exc}") from exc
        try:
            with env.begin() as raw:
                meta = env.open_db(b"meta", txn=raw, create=False)
                magic = raw.get(b"magic", db=meta)
                fmt = raw.get(b"format", db=meta)
        except lmdb.Error as exc:
            env.close()
            raise StoreError(f"{path} is not a maiffs store ({exc})") from exc
        try:
            if magic != MAGIC or fmt is None:
                raise StoreError(f"{path} is not a maiffs store (create one with `maiffs mkfs DIR`)")
            version = format_of(fmt)
            if version > STORE_FORMAT:
                raise StoreError(f"{path} has store format {version}, newer than this maiffs "
                                 f"understands ({STORE_FORMAT}); upgrade maiffs")
            return cls(path, env, readonly, version)
        except StoreError:
            env.close()
            raise

    @staticmethod
    def _open_env(path: str, readonly: bool) -> lmdb.Environment:
        """readahead stays on: a chunk is up to 4 MiB of contiguous overflow pages, and
        without it a cold read faults them in 4 KiB at a time (7x slower, measured)."""
        return lmdb.open(path, **Store._env_args(readonly))

    @staticmethod
    def _env_args(readonly: bool) -> dict[str, object]:
        return dict(map_size=INITIAL_MAP_SIZE, max_dbs=len(DB_NAMES) + 2, subdir=True,
                    readonly=readonly, sync=False, metasync=False, readahead=True,
                    writemap=False, lock=True, mode=0o600, create=not readonly)

    # -- transactions ---------------------------------------------------------------------
    @contextmanager
    def read(self, buffers: bool = False, scattered: tuple[str, ...] = ()) -> Iterator[Txn]:
        """A read-only snapshot of the committed state.

        buffers: values are views into the map, valid until the transaction ends (no copy).
        scattered: databases whose small records the reader touches here and there (a
        directory listing and its inodes): where they are sparse in the file, page faults
        read only the page they need while the transaction lasts (see readaround.py); other
        reads keep the kernel's read-around, which chunks want.
        """
        try:
            raw = self.env.begin(write=False, buffers=buffers)
        except lmdb.MapResizedError:
            self.env.set_mapsize(0)  # another process grew the map: adopt its size
            raw = self.env.begin(write=False, buffers=buffers)
        try:
            with (self.read_around.off(raw, (self.dbs[db] for db in scattered
                                                  if self.dbs[db] is not None))
                  if scattered else nullcontext()):
                yield Txn(raw, self.dbs, write=False, sealing=self._sealing(raw))
        finally:
            raw.abort()

    @contextmanager
    def read_in_worker(self, buffers: bool = False) -> Iterator[Txn]:
        """read() for a worker thread beside the trio thread: a map growth, which only the
        trio thread does (in write) and which LMDB allows only with no transaction open in
        the process, waits until this one has ended."""
        with self._map_guard:
            while self._growing:
                self._map_guard.wait()
            self._worker_readers += 1
        try:
            with self.read(buffers=buffers) as txn:
                yield txn
        finally:
            with self._map_guard:
                self._worker_readers -= 1
                self._map_guard.notify_all()

    def read_tree_ahead(self, names: tuple[str, ...]) -> None:
        """Have every leaf page of these databases read into the page cache in the background
        (leafahead.py): a listing is starting, and a walk of the tree may follow."""
        self.leaf_ahead.start(self._raw_read_in_worker, names)

    @contextmanager
    def _raw_read_in_worker(self) -> Iterator[lmdb.Transaction]:
        with self.read_in_worker() as txn:
            yield txn.raw

    def write(self, fn: Callable[[Txn], T], expected_bytes: int = 0) -> T:
        """Run fn in one atomic write transaction and return its result.

        fn must change nothing but the transaction (it may run twice: once more after the map
        grew). Any exception aborts the whole transaction. Disk-full surfaces as FsError(ENOSPC).
        """
        if self.readonly:
            raise FsError(errno.EROFS, "store opened read-only")
        for _attempt in range(4):
            self._ensure_room(expected_bytes)
            try:
                with self.env.begin(write=True) as raw:
                    txn = Txn(raw, self.dbs, write=True, sealing=self._sealing(raw))
                    result = fn(txn)
                    if txn.stat_delta:
                        self._apply_stats(txn)
                self.commits += 1
                return result
            except lmdb.MapFullError:
                self._grow(self.env.info()["map_size"] * 2)
            except lmdb.Error as exc:
                if _is_no_space(exc, self.path, expected_bytes):
                    raise FsError(errno.ENOSPC, "store's disk is full") from exc
                raise FsError(errno.EIO, f"store error: {exc}") from exc
        raise FsError(errno.ENOSPC, "store map cannot grow")

    def _ensure_room(self, expected_bytes: int) -> None:
        info = self.env.info()
        used = (info["last_pgno"] + 1) * self.page_size
        need = used + 2 * expected_bytes + HEADROOM
        if need > info["map_size"]:
            self._grow(max(need, info["map_size"] * 2))

    def _grow(self, new_size: int) -> None:
        """Grow the map to new_size bytes, or fail the write with ENOSPC (the store cannot
        take more) and keep serving at the old size.

        Growing needs address space, not disk (the file grows only as pages are written), but
        a limit on it (ulimit -v) makes set_mapsize fail, and py-lmdb then closes the whole
        environment: without reopening it, every later request of the mount would fail.
        """
        old_size = self.env.info()["map_size"]
        with self._map_guard:
            self._growing = True
            while self._worker_readers:
                self._map_guard.wait()
        try:
            self.env.set_mapsize(new_size)
        except lmdb.Error as exc:
            self._reopen(old_size)
            raise FsError(errno.ENOSPC, f"store map cannot grow to {new_size} bytes: {exc}") from exc
        finally:
            with self._map_guard:
                self._growing = False
                self._map_guard.notify_all()

    def _reopen(self, map_size: int) -> None:
        """Open the environment again (after py-lmdb closed it) with its databases."""
        try:
            self.env.close()
        except lmdb.Error:
            pass
        self.env = lmdb.open(self.path, **{**self._env_args(self.readonly), "map_size": map_size})
        self.dbs = {name: self._open_db(name) for name in DB_NAMES}
        self.read_around = ReadAround(self.env, self.read_around.data_path)  # (the old env is closed)

    def _apply_stats(self, txn: Txn) -> None:
        """Add the transaction's deltas to the counters. Damaged counters stay as they are
        (unreadable until fsck recounts them) rather than fail every write."""
        try:
            stored = txn.get("meta", b"stats")
        except CorruptRecord as exc:
            log.error("store counters not updated: %s", exc)
            return
        values = dict(zip(STAT_FIELDS, STATS_RECORD.unpack(stored or bytes(STATS_RECORD.size))))
        for name, delta in txn.stat_delta.items():
            values[name] += delta
        txn.put("meta", b"stats", STATS_RECORD.pack(*(values[f] for f in STAT_FIELDS)))

    def stats(self) -> dict[str, int]:
        """The store-wide counters as of the last commit."""
        with self.read() as txn:
            raw = txn.get("meta", b"stats") or bytes(STATS_RECORD.size)
        return dict(zip(STAT_FIELDS, STATS_RECORD.unpack(raw)))

    def next_id(self, txn: Txn, name: bytes, first: int) -> int:
        """Allocate from a monotonic counter in meta (inode numbers, readdir cookies)."""
        raw = txn.get("meta", name)
        value = struct.unpack(">Q", raw)[0] if raw else first
        txn.put("meta", name, struct.pack(">Q", value + 1))
        return value

    # -- durability -----------------------------------------------------------------------
    def sync(self) -> None:
        """Flush every committed transaction to disk (fsync/syncfs and the commit interval)."""
        if self.readonly:
            return
        try:
            self.env.sync(True)
        except lmdb.Error as exc:
            code = errno.ENOSPC if _is_no_space(exc, self.path) else errno.EIO
            raise FsError(code, f"sync: {exc}") from exc

    def disk_usage(self) -> tuple[int, int, int]:
        """(total, free, file bytes of the store) for statfs: numbers of the disk under it."""
        st = os.statvfs(self.path)
        size = sum(os.path.getsize(os.path.join(self.path, f)) for f in ("data.mdb",))
        return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize, size

    def close(self) -> None:
        self.leaf_ahead.wait()
        if not self.readonly:
            self.sync()
        self.env.close()


def format_record(version: int) -> bytes:
    """meta's `format` record: 4 bytes up to format 2, sealed from format 3 on (so that a
    damaged byte cannot make a sealed store look like one without seals)."""
    raw = struct.pack(">I", version)
    return raw if version < SEALED_FORMAT else seal(b"format", raw)


def format_of(record: bytes) -> int:
    """The version a `format` record holds (CorruptRecord if it is damaged)."""
    if len(record) == 4:
        version = struct.unpack(">I", record)[0]
        if SEALED_FORMAT <= version <= STORE_FORMAT:  # would have been sealed
            raise CorruptRecord("meta", b"format")
        return version
    value = unseal("meta", b"format", record)
    if len(value) != 4:
        raise CorruptRecord("meta", b"format")
    return struct.unpack(">I", value)[0]
