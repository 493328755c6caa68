"""Chunks: hash-named, zstd-compressed (raw when that does not pay), reference counted, verified.

A chunk's id is BLAKE3-256 of its raw bytes. Hashing and compressing (`prepare_chunk`) are pure
and release the GIL, so the write path runs them on worker threads; storing (`ChunkStore.add`)
happens inside the caller's transaction. Every read re-hashes the bytes: a flipped bit is
reported as CorruptChunk (EIO), never returned as data.
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass

import blake3
import zstandard

from maiffs.errors import CorruptChunk
from maiffs.store.blocks import BLOCK, BlockHashes
from maiffs.store.env import Txn

FORMAT_RAW = 0
FORMAT_ZSTD = 1
REF_RECORD = struct.Struct(">QII")  # refcount, raw length, stored length
#: the stored length of a chunk whose data a cache store dropped (a remote holds it); a stored
#: chunk is never 0 bytes (its format byte)
EVICTED = 0
RECENT_KEPT = 1 << 20  # chunk ids remembered as recently read (32 MiB of ids)
ID_SIZE = 32
DECODERS = 2  # threads decoding ahead of sequential readers: one per core here
#: A compressed chunk must save at least this fraction to be kept compressed.
MIN_SAVING = 0.03

_local = threading.local()


def chunk_id(data: bytes | bytearray | memoryview) -> bytes:
    """The 256-bit content hash naming a chunk."""
    return blake3.blake3(data, max_threads=1).digest()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache = _local.__dict__.setdefault("compressors", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_local, "decompressor"):
        _local.decompressor = zstandard.ZstdDecompressor()
    return _local.decompressor


@dataclass(frozen=True)
class PreparedChunk:
    """A chunk ready to store: its id, raw length and encoded (format byte + payload) bytes."""

    id: bytes
    raw_len: int
    encoded: bytes


def prepare_chunk(data: bytes | bytearray | memoryview, level: int) -> PreparedChunk:
    """Hash and compress one chunk (thread-safe, GIL-free in the heavy parts)."""
    cid = chunk_id(data)
    packed = _compressor(level).compress(data) if level > 0 else b""
    if level > 0 and len(packed) <= len(data) * (1 - MIN_SAVING):
        encoded = bytes((FORMAT_ZSTD,)) + packed
    else:
        encoded = bytes((FORMAT_RAW,)) + bytes(data)
    return PreparedChunk(cid, len(data), encoded)


def decode_chunk(cid: bytes, encoded: bytes | memoryview, raw_len: int) -> bytes:
    """Decompress and verify a stored chunk; raise CorruptChunk if it does not match its id.

    encoded may be a view into LMDB's map (valid while its transaction is): a raw chunk is
    verified there and copied once."""
    if not encoded:
        raise CorruptChunk(cid, "is empty")
    fmt, payload = encoded[0], memoryview(encoded)[1:]
    try:
        if fmt == FORMAT_RAW:
            data = payload
        elif fmt == FORMAT_ZSTD:
            data = _decompressor().decompress(payload, max_output_size=raw_len)
        else:
            raise CorruptChunk(cid, f"has unknown format byte {fmt}")
    except zstandard.ZstdError as exc:
        raise CorruptChunk(cid, f"does not decompress ({exc})") from exc
    if len(data) != raw_len or chunk_id(data) != cid:
        raise CorruptChunk(cid, "does not match its hash")
    return bytes(data) if fmt == FORMAT_RAW else data


class ChunkCache:
    """A bounded LRU of decompressed chunks, so sequential small reads decompress each chunk once.

    Locked: the read-ahead workers fill it while the FUSE thread reads it."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.items: OrderedDict[bytes, bytes] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.lock = threading.Lock()

    def get(self, cid: bytes) -> bytes | None:
        with self.lock:
            data = self.items.get(cid)
            if data is None:
                self.misses += 1
                return None
            self.hits += 1
            self.items.move_to_end(cid)
            return data

    def holds(self, cid: bytes) -> bool:
        """Is cid cached (not counted as a hit or a miss)?"""
        return cid in self.items

    def put(self, cid: bytes, data: bytes) -> None:
        with self.lock:
            if len(data) > self.max_bytes or cid in self.items:
                return
            self.items[cid] = data
            self.bytes += len(data)
            while self.bytes > self.max_bytes:
                _, old = self.items.popitem(last=False)
                self.bytes -= len(old)

    def drop(self, cid: bytes) -> None:
        with self.lock:
            data = self.items.pop(cid, None)
            if data is not None:
                self.bytes -= len(data)


class ChunkStore:
    """Reference-counted chunk storage inside the store's transactions."""

    def __init__(self, cache_bytes: int = 64 << 20) -> None:
        self.cache = ChunkCache(cache_bytes)
        #: where a good copy of a damaged chunk may be had: cid -> (raw length, encoded) or None
        #: (cid, damaged: not merely evicted) -> (raw length, encoded) or None
        self.fallback: Callable[[bytes, bool], tuple[int, bytes] | None] | None = None
        self.healed: dict[bytes, tuple[int, bytes]] = {}  # good copies of damaged chunks
        self.filled: dict[bytes, tuple[int, bytes]] = {}  # evicted chunks read again
        #: a cache store's chunks recently read, newest last (None: not tracked, as a store
        #: that evicts nothing needs no record of its reads)
        self.recent: OrderedDict[bytes, None] | None = None
        #: a cache store's: asked for evicted chunks that a read will want soon
        self.read_ahead: Callable[[list[bytes]], None] | None = None
        self.local_reads = 0  # chunk reads served by the store (a cache store's hits)
        self.remote_reads = 0  # evicted chunks fetched again (its misses)
        self.blocks = BlockHashes()
        self.ahead: dict[bytes, Future] = {}  # chunks being decoded for a sequential reader
        self._decoders: ThreadPoolExecutor | None = None

    def add(self, txn: Txn, chunk: PreparedChunk) -> None:
        """Store a chunk or, if the store has it already, take one more reference to it."""
        ref = txn.get("chunkrefs", chunk.id)
        if ref is not None:
            count, raw_len, stored = REF_RECORD.unpack(ref)
            txn.put("chunkrefs", chunk.id, REF_RECORD.pack(count + 1, raw_len, stored))
            return
        txn.put("chunks", chunk.id, chunk.encoded)
        txn.put("chunkrefs", chunk.id, REF_RECORD.pack(1, chunk.raw_len, len(chunk.encoded)))
        txn.count(chunks=1, chunk_raw_bytes=chunk.raw_len, chunk_stored_bytes=len(chunk.encoded))

    def adopt(self, txn: Txn, cid: bytes, raw_len: int, encoded: bytes) -> None:
        """Store a chunk received from elsewhere, already checked against its id by the caller
        (decoding it again costs a third of a pull), with no reference yet (its users take
        theirs), kept as it came (already encoded)."""
        if txn.get("chunkrefs", cid) is not None:
            return
        txn.put("chunks", cid, encoded)
        txn.put("chunkrefs", cid, REF_RECORD.pack(0, raw_len, len(encoded)))
        txn.count(chunks=1, chunk_raw_bytes=raw_len, chunk_stored_bytes=len(encoded))

    def encoded(self, txn: Txn, cid: bytes) -> tuple[int, bytes]:
        """(raw length, encoded bytes) of a stored chunk, to send it elsewhere as it is."""
        ref, encoded = txn.get("chunkrefs", cid), txn.get("chunks", cid)
        if ref is None or encoded is None:
            raise CorruptChunk(cid, "is missing from the store")
        return REF_RECORD.unpack(ref)[1], bytes(encoded)

    def incref(self, txn: Txn, cid: bytes) -> None:
        """Take one more reference to a chunk the store already holds."""
        count, raw_len, stored = self._ref(txn, cid)
        txn.put("chunkrefs", cid, REF_RECORD.pack(count + 1, raw_len, stored))

    def decref(self, txn: Txn, cid: bytes) -> None:
        """Drop one reference; the chunk is deleted with its last one."""
        count, raw_len, stored = self._ref(txn, cid)
        if count > 1:
            txn.put("chunkrefs", cid, REF_RECORD.pack(count - 1, raw_len, stored))
            return
        txn.delete("chunkrefs", cid)
        txn.delete("chunks", cid)
        txn.count(chunks=-1, chunk_raw_bytes=-raw_len, chunk_stored_bytes=-stored)
        self.cache.drop(cid)

    def get(self, txn: Txn, cid: bytes) -> bytes:
        """The raw bytes of a chunk, verified against its id; a chunk evicted from a cache store
        is fetched from the fallback source (a remote); a missing or corrupt one too, when there
        is one, else CorruptChunk."""
        data = self.cache.get(cid)
        if data is not None:
            return data
        ahead = self.ahead.pop(cid, None)  # (a worker that failed leaves it to the path below)
        data = ahead.result() if ahead is not None and ahead.exception() is None else None
        if data is not None:
            self.local_reads += 1
            self.used(cid)
            return data
        ref = txn.get("chunkrefs", cid)
        encoded = txn.get("chunks", cid)
        arrived = self.filled.get(cid)  # fetched ahead, not yet stored
        if arrived is not None:
            data = decode_chunk(cid, arrived[1], arrived[0])
            self.local_reads += 1
        elif ref is not None and encoded is None and REF_RECORD.unpack(ref)[2] == EVICTED:
            data = self._fill(cid)
        else:
            try:
                if ref is None or encoded is None:
                    raise CorruptChunk(cid, "is missing from the store")
                data = decode_chunk(cid, encoded, REF_RECORD.unpack(ref)[1])
                self.local_reads += 1
            except CorruptChunk as exc:
                data = self._heal(cid, exc, known=ref is not None)
        self.used(cid)
        self.cache.put(cid, data)
        return data

    def get_range(self, txn: Txn, cid: bytes, lo: int, hi: int) -> bytes | memoryview:
        """Bytes [lo, hi) of a chunk, for a small read that is not part of a sequential one:
        a raw chunk verified whole before is read and checked block by block from LMDB's map
        (see blocks.py; txn best opened with buffers, so that nothing else is copied), anything
        else decoded whole (and its block hashes kept if raw)."""
        if cid in self.blocks and not self.cache.holds(cid):
            encoded = txn.get("chunks", cid)
            if encoded is not None and encoded[0] == FORMAT_RAW:
                part = self.blocks.read(cid, memoryview(encoded)[1:], lo, hi)
                if part is not None:
                    self.local_reads += 1
                    self.used(cid)
                    return part
        data = self.get(txn, cid)
        if len(data) > 2 * BLOCK:  # (a smaller chunk costs as little to verify whole)
            ref = txn.get("chunkrefs", cid)
            if ref is not None and REF_RECORD.unpack(ref)[2] == len(data) + 1:  # stored raw
                self.blocks.remember(cid, data)
        return memoryview(data)[lo:hi]

    def decode_ahead(self, open_read: Callable[..., AbstractContextManager[Txn]],
                     cids: Iterable[bytes]) -> None:
        """Decode, on worker threads, chunks a sequential reader will ask for next, so that its
        reads find them in the cache: reading LMDB's pages from disk, hashing and zstd run
        there without the GIL while the FUSE thread answers the reads before them."""
        self.ahead = {cid: job for cid, job in self.ahead.items() if not job.done()}
        for cid in cids:
            if cid not in self.ahead and not self.cache.holds(cid):
                if self._decoders is None:
                    self._decoders = ThreadPoolExecutor(DECODERS, thread_name_prefix="maiffs-decode")
                self.ahead[cid] = self._decoders.submit(self._decode_local, open_read, cid)

    def stop_decoding(self) -> None:
        """Let the decodes in progress end and drop the queued ones, before the store closes:
        a decoder's read transaction would otherwise outlive the environment (its views point
        into a map that closing unmaps)."""
        if self._decoders is not None:
            self._decoders.shutdown(wait=True, cancel_futures=True)
            self._decoders = None
        self.ahead.clear()

    def _decode_local(self, open_read: Callable[..., AbstractContextManager[Txn]],
                      cid: bytes) -> bytes | None:
        """A stored chunk's verified bytes, now cached; None for anything but a good local
        copy (the reader's own get then fetches, heals or reports it)."""
        with open_read(buffers=True) as txn:
            ref, encoded = txn.get("chunkrefs", cid), txn.get("chunks", cid)
            if ref is None or encoded is None:
                return None
            try:
                data = decode_chunk(cid, encoded, REF_RECORD.unpack(ref)[1])
            except CorruptChunk:
                return None
        self.cache.put(cid, data)
        return data

    def _fetch(self, cid: bytes, damaged: bool) -> tuple[int, bytes, bytes] | None:
        """(raw length, encoded, raw bytes) of a good copy from the fallback, or None."""
        found = self.fallback(cid, damaged) if self.fallback is not None else None
        if found is None:
            return None
        raw_len, encoded = found
        try:
            return raw_len, encoded, decode_chunk(cid, encoded, raw_len)
        except CorruptChunk:
            return None

    def _fill(self, cid: bytes) -> bytes:
        """An evicted chunk, fetched again and queued to be stored (a cache miss)."""
        found = self._fetch(cid, damaged=False)
        if found is None:
            raise CorruptChunk(cid, "was evicted from this cache and no remote has it")
        self.remote_reads += 1
        self.filled[cid] = found[:2]
        return found[2]

    def _heal(self, cid: bytes, damage: CorruptChunk, known: bool) -> bytes:
        """A good copy of a damaged chunk from the fallback, queued to be written back (by
        write_back, in a write transaction of the caller's: reads run in read transactions)."""
        found = self._fetch(cid, damaged=True)
        if found is None:
            raise damage
        if known:  # a chunk whose record is gone entirely is fsck's to rebuild
            self.healed[cid] = found[:2]
        return found[2]

    def evicted(self, txn: Txn, cid: bytes) -> bool:
        """Is cid's data neither here nor on its way (a cache store's chunk a read would fetch)?"""
        ref = txn.get("chunkrefs", cid)
        return (ref is not None and REF_RECORD.unpack(ref)[2] == EVICTED and cid not in self.filled
                and txn.get("chunks", cid) is None)

    def used(self, cid: bytes) -> None:
        """Remember cid as recently read (a cache store evicts the least recently read)."""
        if self.recent is None:
            return
        self.recent[cid] = None
        self.recent.move_to_end(cid)
        if len(self.recent) > RECENT_KEPT:
            self.recent.popitem(last=False)

    def write_back(self, txn: Txn) -> int:
        """Store the good copies fetched by reads over their damaged or evicted local ones;
        the count of damaged ones replaced."""
        for cid, (raw_len, encoded) in self.filled.items():
            self.replace(txn, cid, raw_len, encoded)
        return sum(self.replace(txn, cid, raw_len, encoded)
                   for cid, (raw_len, encoded) in self.healed.items())

    def record_absent(self, txn: Txn, cid: bytes, raw_len: int) -> None:
        """A chunk a remote holds, known here without its data (a cache store's, fetched on
        first read); its users take their references."""
        if txn.get("chunkrefs", cid) is None:
            txn.put("chunkrefs", cid, REF_RECORD.pack(0, raw_len, EVICTED))
            txn.count(chunks=1, chunk_raw_bytes=raw_len)

    def evict(self, txn: Txn, cid: bytes) -> int:
        """Drop a chunk's data, keeping its record (a remote holds it); the bytes freed."""
        ref = txn.get("chunkrefs", cid)
        if ref is None or txn.get("chunks", cid) is None:
            return 0
        count, raw_len, stored = REF_RECORD.unpack(ref)
        txn.delete("chunks", cid)
        txn.put("chunkrefs", cid, REF_RECORD.pack(count, raw_len, EVICTED))
        txn.count(chunk_stored_bytes=-stored)
        self.cache.drop(cid)
        return stored

    @staticmethod
    def replace(txn: Txn, cid: bytes, raw_len: int, encoded: bytes) -> bool:
        """Put a good copy (already verified) over a stored chunk, keeping its references;
        False if the store no longer has that chunk."""
        ref = txn.get("chunkrefs", cid)
        if ref is None:
            return False
        count, _raw, stored = REF_RECORD.unpack(ref)
        txn.put("chunks", cid, encoded)
        txn.put("chunkrefs", cid, REF_RECORD.pack(count, raw_len, len(encoded)))
        txn.count(chunk_stored_bytes=len(encoded) - stored)
        return True

    @staticmethod
    def _ref(txn: Txn, cid: bytes) -> tuple[int, int, int]:
        ref = txn.get("chunkrefs", cid)
        if ref is None:
            raise CorruptChunk(cid, "has no reference record")
        return REF_RECORD.unpack(ref)

    @staticmethod
    def refcount(txn: Txn, cid: bytes) -> int:
        ref = txn.get("chunkrefs", cid)
        return REF_RECORD.unpack(ref)[0] if ref else 0
