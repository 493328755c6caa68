"""A regular file's bytes as extents: file offset -> (chunk id, length), holes being absent.

Extents always cover whole chunks, so a change rewrites exactly the chunks it touches: the
dirty bytes are widened to the boundaries of the stored chunks they overlap (`plan_regions`),
the widened regions are cut anew by the content-defined chunker (`prepare_region`, pure and
thread-safe), and the old extents of those regions are replaced in one transaction
(`replace_region`). All-zero chunks become holes, so sparse files and zero runs cost nothing.
"""

from __future__ import annotations

import itertools

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from maiffs.namespace.records import decode_extent, encode_extent, extent_key, ino_key, key_ino
from maiffs.store.chunker import ChunkParams, cut_points
from maiffs.store.chunks import ChunkStore, PreparedChunk, prepare_chunk
from maiffs.store.env import Txn


@dataclass
class Region:
    """A byte range to rewrite: its new content, and whether its last chunk may wait for more."""

    start: int
    data: bytearray
    hold_tail: bool = False

    @property
    def end(self) -> int:
        return self.start + len(self.data)


@dataclass
class PreparedRegion:
    """A region cut into chunks: (file offset, chunk or None for a hole) and a held-back tail."""

    start: int
    end: int
    pieces: list[tuple[int, int, PreparedChunk | None]] = field(default_factory=list)
    tail: bytes = b""


READ_AHEAD = 8  # chunks after a read that went to a remote, fetched before they are asked for


def iter_extents(txn: Txn, ino: int, start: int, end: int) -> Iterator[tuple[int, bytes, int]]:
    """Yield (offset, chunk id, length) of the extents overlapping [start, end), in order."""
    prefix = ino_key(ino)  # (keys are compared by slices: a buffers txn gives memoryviews)
    first = extent_key(ino, start)
    cur = txn.cursor("extents")
    found = cur.set_range(first)
    if not found or cur.key() != first:  # an extent starting earlier may reach into the range
        stepped_back = cur.prev() if found else cur.last()
        if stepped_back and cur.key()[:8] == prefix:
            off = key_ino(cur.key(), 8)
            cid, length = decode_extent(txn.unseal("extents", cur.key(), cur.value()))
            if off < start < off + length:
                yield off, cid, length
        if not found or not (cur.next() if stepped_back else cur.set_range(first)):
            return
    for key, value in cur:
        off = key_ino(key, 8)
        if key[:8] != prefix or off >= end:
            return
        cid, length = decode_extent(txn.unseal("extents", key, value))
        yield off, cid, length


def stored_pieces(txn: Txn, chunks: ChunkStore, ino: int, off: int, size: int,
                  piecewise: bool = False) -> list[bytes | memoryview]:
    """The stored bytes of [off, off+size) in order: chunk data where there are extents, zeros
    elsewhere. Joined they are the range; a reader that needs one piece needs no copy at all.

    piecewise (a small read at random, best in a buffers txn): each chunk is asked only for
    the part wanted, and such a piece may be a view of LMDB's map, valid while txn is."""
    pieces: list[bytes | memoryview] = []
    pos, end = off, off + size
    fetched_before = chunks.remote_reads
    for ext_off, cid, length in iter_extents(txn, ino, off, end):
        lo, hi = max(off, ext_off), min(end, ext_off + length)
        if lo > pos:
            pieces.append(bytes(lo - pos))  # a hole
        if piecewise:
            pieces.append(chunks.get_range(txn, cid, lo - ext_off, hi - ext_off))
        else:
            pieces.append(memoryview(chunks.get(txn, cid))[lo - ext_off:hi - ext_off])
        pos = hi
    if pos < end:
        pieces.append(bytes(end - pos))
    if chunks.read_ahead is not None and chunks.remote_reads > fetched_before:
        later = (cid for _o, cid, _n in iter_extents(txn, ino, end, 1 << 63))
        wanted = [cid for cid in itertools.islice(later, READ_AHEAD) if chunks.evicted(txn, cid)]
        if wanted:  # a read had to go to the remote: ask for what follows it in the file
            chunks.read_ahead(wanted)
    return pieces


def read_stored(txn: Txn, chunks: ChunkStore, ino: int, off: int, size: int) -> bytearray:
    """The stored bytes of [off, off+size) in one buffer (see stored_pieces)."""
    return bytearray().join(stored_pieces(txn, chunks, ino, off, size))


def plan_regions(txn: Txn, chunks: ChunkStore, ino: int, segments: list[tuple[int, bytearray]],
                 min_chunk: int, hold_tail_from: int | None) -> list[Region]:
    """Widen dirty segments to whole stored chunks and fill them with old bytes under new ones.

    A short extent ending right where a segment starts is taken in too, so a file appended
    to in small fsync'd steps ends up in full-sized chunks. Segments reaching hold_tail_from
    (the end of the file, for a flush that is not final) may keep their last chunk back.
    A span no stored extent reaches into (a new file, or data appended) has nothing old to
    read: one segment is its region as it is (no copy), adjacent ones are joined once.
    """
    spans: list[tuple[int, int, bool]] = []  # (lo, hi, whether stored bytes lie inside)
    for seg_start, buf in segments:
        lo, hi = seg_start, seg_start + len(buf)
        stored = False
        for ext_off, _cid, length in iter_extents(txn, ino, max(0, lo - 1), hi):
            if ext_off < lo and (ext_off + length > lo or length < min_chunk):
                lo = ext_off
            stored = stored or ext_off + length > lo
            hi = max(hi, ext_off + length)
        if spans and lo <= spans[-1][1]:
            last_lo, last_hi, last_stored = spans[-1]
            spans[-1] = (last_lo, max(last_hi, hi), last_stored or stored)
        else:
            spans.append((lo, hi, stored))
    regions = []
    seg_iter = iter(segments)
    pending = next(seg_iter, None)
    for lo, hi, stored in spans:
        inside = []
        while pending is not None and pending[0] < hi:
            inside.append(pending)
            pending = next(seg_iter, None)
        regions.append(Region(lo, _span_data(txn, chunks, ino, lo, hi, stored, inside),
                              hold_tail=hold_tail_from is not None and hi >= hold_tail_from))
    return regions


def _span_data(txn: Txn, chunks: ChunkStore, ino: int, lo: int, hi: int, stored: bool,
               segments: list[tuple[int, bytearray]]) -> bytearray:
    """The new content of [lo, hi): the segments over the stored bytes (zeros where none)."""
    if not stored and sum(len(buf) for _start, buf in segments) == hi - lo:  # no gaps
        return segments[0][1] if len(segments) == 1 else bytearray().join(b for _s, b in segments)
    data = read_stored(txn, chunks, ino, lo, hi - lo) if stored else bytearray(hi - lo)
    for seg_start, buf in segments:
        data[seg_start - lo:seg_start - lo + len(buf)] = buf
    return data


_ZEROS = bytes(ChunkParams().max_size)


def is_zero(data: memoryview) -> bool:
    """True for an all-zero buffer (stored as a hole)."""
    if len(data) <= len(_ZEROS):
        return data == memoryview(_ZEROS)[:len(data)]
    return bytes(data).count(0) == len(data)


def _prepare_piece(args: tuple[memoryview, int]) -> PreparedChunk | None:
    piece, level = args
    return None if is_zero(piece) else prepare_chunk(piece, level)


def prepare_region(region: Region, params: ChunkParams, level: int,
                   mapper: Callable = map) -> PreparedRegion:
    """Cut a region into chunks and hash/compress them (with mapper, e.g. a thread pool's map).

    Pure: safe on worker threads. A region that may hold its tail keeps its last chunk back.
    """
    view = memoryview(region.data)
    cuts = cut_points(view, params)
    if region.hold_tail:
        keep = cuts[-2] if len(cuts) > 1 else 0
        cuts = cuts[:-1]
    else:
        keep = len(view)
    out = PreparedRegion(region.start, region.start + keep, tail=bytes(view[keep:]))
    bounds = list(zip([0] + cuts[:-1], cuts))
    chunks = mapper(_prepare_piece, [(view[lo:hi], level) for lo, hi in bounds])
    out.pieces = [(region.start + lo, hi - lo, chunk) for (lo, hi), chunk in zip(bounds, chunks)]
    return out


def replace_region(txn: Txn, chunks: ChunkStore, ino: int, start: int, end: int,
                   pieces: list[tuple[int, int, PreparedChunk | None]]) -> int:
    """Replace the extents inside [start, end) by pieces; return the change in stored bytes."""
    removed = delete_extents(txn, chunks, ino, start, end)
    added = 0
    for off, length, chunk in pieces:
        if chunk is None:
            continue
        chunks.add(txn, chunk)
        txn.put("extents", extent_key(ino, off), encode_extent(chunk.id, length))
        added += length
    txn.count(referenced_bytes=added)
    return added - removed


def delete_extents(txn: Txn, chunks: ChunkStore, ino: int, start: int, end: int) -> int:
    """Drop the extents starting inside [start, end) with their chunk references."""
    doomed = [(off, cid, length) for off, cid, length in iter_extents(txn, ino, start, end)
              if off >= start]
    removed = 0
    for off, cid, length in doomed:
        txn.delete("extents", extent_key(ino, off))
        chunks.decref(txn, cid)
        removed += length
    txn.count(referenced_bytes=-removed)
    return removed


def truncate_extents(txn: Txn, chunks: ChunkStore, ino: int, size: int, level: int) -> int:
    """Cut a file's extents at size (the chunk across it is rewritten); return stored-bytes change."""
    delta = 0
    for off, cid, length in list(iter_extents(txn, ino, size, size + 1)):
        if off < size < off + length:
            head = memoryview(chunks.get(txn, cid))[:size - off]
            piece = None if is_zero(head) else prepare_chunk(head, level)
            delta += replace_region(txn, chunks, ino, off, off + length, [(off, size - off, piece)])
    return delta - delete_extents(txn, chunks, ino, size, 1 << 64)
