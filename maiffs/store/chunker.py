"""Content-defined chunking: cut points follow the content, so an insertion shifts few chunks.

FastCDC (pyfastcdc, ~1.4 GB/s here) with min 256 KiB / average 1 MiB / max 4 MiB (design.md §3).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyfastcdc import FastCDC


@dataclass(frozen=True)
class ChunkParams:
    """Sizes for the chunker; the defaults are the ones of design.md §3."""

    min_size: int = 256 << 10
    avg_size: int = 1 << 20
    max_size: int = 4 << 20


def cut_points(data: bytes | bytearray | memoryview, params: ChunkParams) -> list[int]:
    """Return the end offsets of the chunks of data (the last is always len(data))."""
    if not data:
        return []
    cdc = FastCDC(avg_size=params.avg_size, min_size=params.min_size, max_size=params.max_size)
    return [c.offset + c.length for c in cdc.cut_buf(data)]
