"""Unflushed writes of one file: sorted, non-overlapping byte ranges held in memory.

Writes land here first and are cut into chunks later (on close, fsync, or when enough has
piled up), so a stream of small writes becomes a few whole chunks instead of many tiny ones.
Reads overlay these ranges on the stored extents.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right


class DirtyRanges:
    """Byte ranges written but not yet chunked, as parallel sorted lists of starts and buffers."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.bufs: list[bytearray] = []
        self.nbytes = 0

    def __bool__(self) -> bool:
        return bool(self.starts)

    def end(self) -> int:
        """One past the last dirty byte (0 when empty)."""
        return self.starts[-1] + len(self.bufs[-1]) if self.starts else 0

    def write(self, off: int, data: bytes | memoryview) -> None:
        """Record data at off, merging with every range it overlaps or touches."""
        end = off + len(data)
        if self.starts and self.starts[-1] + len(self.bufs[-1]) == off:  # the common append
            self.bufs[-1] += data
            self.nbytes += len(data)
            return
        lo = bisect_left(self.starts, off)
        if lo > 0 and self.starts[lo - 1] + len(self.bufs[lo - 1]) >= off:
            lo -= 1
        hi = bisect_right(self.starts, end)
        if lo == hi:
            self.starts.insert(lo, off)
            self.bufs.insert(lo, bytearray(data))
            self.nbytes += len(data)
            return
        start = min(off, self.starts[lo])
        last_end = max(end, self.starts[hi - 1] + len(self.bufs[hi - 1]))
        merged = bytearray(last_end - start)
        for s, b in zip(self.starts[lo:hi], self.bufs[lo:hi]):
            merged[s - start:s - start + len(b)] = b
            self.nbytes -= len(b)
        merged[off - start:end - start] = data
        self.starts[lo:hi] = [start]
        self.bufs[lo:hi] = [merged]
        self.nbytes += len(merged)

    def overlay(self, off: int, buf: bytearray) -> None:
        """Copy the dirty bytes that fall inside [off, off+len(buf)) into buf."""
        end = off + len(buf)
        i = max(0, bisect_right(self.starts, off) - 1)
        while i < len(self.starts) and self.starts[i] < end:
            s, b = self.starts[i], self.bufs[i]
            lo, hi = max(s, off), min(s + len(b), end)
            if lo < hi:
                buf[lo - off:hi - off] = b[lo - s:hi - s]
            i += 1

    def truncate(self, size: int) -> None:
        """Forget every dirty byte at or beyond size."""
        while self.starts and self.starts[-1] >= size:
            self.starts.pop()
            self.nbytes -= len(self.bufs.pop())
        if self.starts and self.starts[-1] + len(self.bufs[-1]) > size:
            keep = size - self.starts[-1]
            self.nbytes -= len(self.bufs[-1]) - keep
            del self.bufs[-1][keep:]

    def take(self) -> list[tuple[int, bytearray]]:
        """Remove and return every range, in order."""
        taken = list(zip(self.starts, self.bufs))
        self.starts, self.bufs, self.nbytes = [], [], 0
        return taken
