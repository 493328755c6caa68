"""Spotting sequential readers, so the chunks they will read next are decoded ahead of them.

The kernel asks for a file 128 KiB at a time; a chunk is about 1 MiB. Without help, the first
request that lands in a chunk waits while LMDB's pages come off the disk and the chunk is
hashed and decompressed, and the kernel's next request waits for that one. Decoding the next
few chunks on worker threads (`ChunkStore.decode_ahead`) overlaps that work with the answers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager

from maiffs.namespace.filedata import iter_extents
from maiffs.store.chunks import ChunkStore
from maiffs.store.env import Txn

WINDOW = 8 << 20  # bytes decoded ahead of a sequential reader (a few chunks, well inside the cache)
SLACK = 256 << 10  # a read this close to where the last one ended still counts as sequential
#                    (the kernel's read-ahead requests of 128 KiB may arrive slightly out of order)
TRACKED = 1024  # files whose read positions are remembered (least recently read forgotten)


class ReadAhead:
    """Per file: where the last read ended and how far ahead chunks were asked for."""

    def __init__(self, chunks: ChunkStore, open_read: Callable[..., AbstractContextManager[Txn]]) -> None:
        self.chunks = chunks
        self.open_read = open_read
        self.files: OrderedDict[int, tuple[int, int]] = OrderedDict()  # ino -> (read end, ahead to)

    def note_read(self, txn: Txn, ino: int, off: int, end: int) -> bool:
        """Note a read of [off, end) of ino; if it continues the last one, decode ahead of it
        and say it is sequential."""
        last_end, ahead_to = self.files.pop(ino, (None, 0))
        self.files[ino] = (end, ahead_to)
        if len(self.files) > TRACKED:
            self.files.popitem(last=False)
        if last_end is None or not last_end - SLACK <= off <= last_end + SLACK:
            return False
        if ahead_to >= end + WINDOW // 2:
            return True  # enough is on its way; ask again once half of it has been read
        wanted = []
        for ext_off, cid, length in iter_extents(txn, ino, max(ahead_to, end), end + WINDOW):
            wanted.append(cid)
            ahead_to = ext_off + length
        self.files[ino] = (end, max(ahead_to, end + WINDOW))
        self.chunks.decode_ahead(self.open_read, wanted)
        return True
