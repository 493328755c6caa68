"""Checking a small read of a raw chunk without hashing the whole chunk.

A chunk is named by the hash of all its bytes (about 1 MiB), so verifying it costs a hash of
1 MiB, far more than a 4 KiB random read is worth. Once a raw (uncompressed) chunk has been
verified whole, the hashes of its 16 KiB blocks are kept here; a later small read of it hashes
only the blocks it touches, straight from LMDB's map, and compares. The block hashes come
from verified bytes, so a byte that changed on disk since still fails the check (the caller
then decodes the whole chunk, which reports it as corrupt): nothing unverified is returned.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import blake3

BLOCK = 16 << 10
DIGEST = 8  # bytes of each block hash kept: finds a random flip with odds 1 - 2**-64
KEPT_BYTES = 4 << 20  # memory for block hashes: ~8,000 chunks, ~8 GiB of data at 1 MiB each


def _digest(block: memoryview | bytes) -> bytes:
    return blake3.blake3(block, max_threads=1).digest(length=DIGEST)


class BlockHashes:
    """Block hashes of verified raw chunks, least recently used dropped past KEPT_BYTES."""

    def __init__(self, kept_bytes: int = KEPT_BYTES) -> None:
        self.kept_bytes = kept_bytes
        self.bytes = 0
        self.tables: OrderedDict[bytes, bytes] = OrderedDict()
        self.lock = threading.Lock()

    def __contains__(self, cid: bytes) -> bool:
        return cid in self.tables

    def remember(self, cid: bytes, data: bytes) -> None:
        """Keep the block hashes of a chunk whose bytes were just verified whole."""
        if cid in self.tables:
            return
        view = memoryview(data)
        table = b"".join(_digest(view[i:i + BLOCK]) for i in range(0, len(view), BLOCK))
        with self.lock:
            if cid in self.tables:
                return
            self.tables[cid] = table
            self.bytes += len(table)
            while self.bytes > self.kept_bytes:
                self.bytes -= len(self.tables.popitem(last=False)[1])

    def read(self, cid: bytes, raw: memoryview, lo: int, hi: int) -> bytes | None:
        """Bytes [lo, hi) of the raw chunk cid whose stored bytes are raw, if every block
        they touch matches its hash; None if the chunk is unknown here or a block differs."""
        with self.lock:
            table = self.tables.get(cid)
            if table is not None:
                self.tables.move_to_end(cid)
        if table is None or len(table) != -(-len(raw) // BLOCK) * DIGEST:
            return None
        for block in range(lo // BLOCK, -(-hi // BLOCK)):
            start = block * BLOCK
            if _digest(raw[start:start + BLOCK]) != table[block * DIGEST:(block + 1) * DIGEST]:
                return None
        return bytes(raw[lo:hi])
