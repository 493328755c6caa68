"""What the namespace keeps in memory about inodes in use: open counts, kernel lookup counts,
and for regular files the writes not yet chunked with the size/mtime they imply.

Stored records stay the truth for everything else; these states exist only while a file is
open (or being flushed) and are folded back into the stored inode by a flush.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from maiffs.namespace.dirty import DirtyRanges


@dataclass
class FileState:
    """A regular file with open handles: unflushed data and the attributes that go with it."""

    size: int
    opens: int = 0
    dirty: DirtyRanges = field(default_factory=DirtyRanges)
    in_flight: list[tuple[int, bytearray]] = field(default_factory=list)
    mtime_ns: int | None = None
    ctime_ns: int | None = None
    flushing: bool = False
    #: its stored extents were found to add up to its allocated bytes (at its first read)
    extents_checked: bool = False

    def has_unflushed(self) -> bool:
        return bool(self.dirty) or bool(self.in_flight) or self.mtime_ns is not None

    def pending_bytes(self) -> int:
        return self.dirty.nbytes + sum(len(b) for _, b in self.in_flight)

    def overlay(self, off: int, buf: bytearray) -> None:
        """Lay unflushed bytes (in flight first, then newer dirty ones) over stored bytes."""
        end = off + len(buf)
        for start, data in self.in_flight:
            lo, hi = max(start, off), min(start + len(data), end)
            if lo < hi:
                buf[lo - off:hi - off] = data[lo - start:hi - start]
        self.dirty.overlay(off, buf)
