"""Spotting sequential readers, so the chunks they will read next are decoded ahead of them.

The kernel asks for a file 128 KiB at a time; a chunk is about 1 MiB. Without help, the first
request that lands in a chunk waits while LMDB's pages come off the disk and the chunk is
hashed and decompressed, and the kernel's next request waits for that one. Decoding the next
few chunks on worker threads (`ChunkStore.decode_ahead`) overlaps that work with the answers.
Once the reader has gone past chunks decoded for it, their pages in the store's file are
dropped from the page cache (dropbehind.py): the kernel keeps the bytes as the FUSE file's.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from maiffs.namespace.filedata import iter_extents
from maiffs.store.chunks import ChunkStore
from maiffs.store.env import Txn

WINDOW = 8 << 20  # bytes decoded ahead of a sequential reader (a few chunks, well inside the cache)
SLACK = 256 << 10  # a read this close to where the last one ended still counts as sequential
#                    (the kernel's read-ahead requests of 128 KiB may arrive slightly out of order)
TRACKED = 1024  # files whose read positions are remembered (least recently read forgotten)
DROP_EVERY = 8 << 20  # chunks passed by a reader are dropped behind it (dropbehind.py) in batches


@dataclass
class Reader:
    """Where a file's last read ended, how far ahead chunks were asked for, and those chunks
    (with where each ends in the file) until the reader has gone past them."""

    end: int
    ahead_to: int = 0
    ahead: deque[tuple[int, bytes, int]] = field(default_factory=deque)  # (end, cid, length)
    passed: list[bytes] = field(default_factory=list)
    passed_bytes: int = 0


class ReadAhead:
    """Per file: a Reader."""

    def __init__(self, chunks: ChunkStore, open_read: Callable[..., AbstractContextManager[Txn]]) -> None:
        self.chunks = chunks
        self.open_read = open_read
        self.files: OrderedDict[int, Reader] = OrderedDict()

    def note_read(self, txn: Txn, ino: int, off: int, end: int, at_eof: bool = False) -> bool:
        """Note a read of [off, end) of ino (at_eof: end is the file's end); if it continues
        the last one, decode ahead of it and say it is sequential."""
        reader = self.files.pop(ino, None)
        sequential = reader is not None and reader.end - SLACK <= off <= reader.end + SLACK
        if not sequential:
            reader = Reader(end)  # (after a jump, what was asked for ahead is not passed in order)
        self.files[ino] = reader
        if len(self.files) > TRACKED:
            self.files.popitem(last=False)
        if not sequential:
            return False
        reader.end = end
        self._pass(reader, end if at_eof else off)
        if reader.ahead_to >= end + WINDOW // 2:
            return True  # enough is on its way; ask again once half of it has been read
        wanted = []
        for ext_off, cid, length in iter_extents(txn, ino, max(reader.ahead_to, end), end + WINDOW):
            wanted.append(cid)
            reader.ahead.append((ext_off + length, cid, length))
            reader.ahead_to = ext_off + length
        reader.ahead_to = max(reader.ahead_to, end + WINDOW)
        self.chunks.decode_ahead(self.open_read, wanted)
        return True

    def _pass(self, reader: Reader, off: int) -> None:
        """The chunks asked for ahead that end by off are read: have their pages in the store's
        file dropped (dropbehind.py), DROP_EVERY bytes at a time or once all are read."""
        while reader.ahead and reader.ahead[0][0] <= off:
            _end, cid, length = reader.ahead.popleft()
            reader.passed.append(cid)
            reader.passed_bytes += length
        if reader.passed_bytes >= DROP_EVERY or reader.passed_bytes and not reader.ahead:
            self.chunks.drop_behind(reader.passed)
            reader.passed, reader.passed_bytes = reader.passed[-1:], 0  # (see DropBehind.drop)
