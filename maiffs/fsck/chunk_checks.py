"""Chunk checks: every chunk is read and verified once, and the result (which chunks are usable,
with their lengths, and why the others are not) is what the extent and tree checks, the
refcounts and the counters go by."""

from __future__ import annotations

from typing import cast

from maiffs.errors import CorruptChunk
from maiffs.fsck.found import AsFound
from maiffs.fsck.model import ChunkLengths, Model
from maiffs.fsck.report import Findings
from maiffs.progress import Progress
from maiffs.store.chunks import EVICTED, ChunkStore, PreparedChunk, decode_chunk
from maiffs.store.env import Txn


class ChunkChecks:
    """Verifies the chunks; then says whether an extent's chunk is usable, and reads it."""

    def __init__(self, model: Model, txn: Txn, findings: Findings, found: AsFound,
                 verify: bool, progress: Progress | None = None) -> None:
        self.model = model
        self.txn = txn
        self.report = findings.report
        self.found = found
        #: False on the second pass after a repair: chunk data was verified by the first.
        self.verify = verify
        self.progress = progress  # told of each chunk read
        self.good: ChunkLengths = {}  # usable chunk -> (raw, stored length)
        self.broken: dict[bytes, str] = {}  # chunk id -> why its data is unusable

    def check(self) -> None:
        """Every chunk must decode to bytes matching its id; one that is missing is as bad."""
        lengths = {cid: n for obj in self.found.tree.values() for _o, cid, n in obj.extents}
        lengths.update((cid, n) for exts in self.model.extents.values() for cid, n in exts.values())
        present = sorted(self.model.chunk_ids)
        stored = {cid: self.model.refs[cid][2] if cid in self.model.refs else 0 for cid in present}
        if self.progress is not None:
            self.progress.start(sum(stored.values()), len(present))
        for cid in present:
            self._chunk(cid, lengths.get(cid))
            if self.progress is not None:
                self.progress.advance(stored[cid], 1)
        for cid in sorted(set(self.model.refs) - self.model.chunk_ids):
            raw_len, stored = self.model.refs[cid][1:]
            if stored == EVICTED:  # a cache store's: its remote holds the data
                self.good[cid] = (raw_len, EVICTED)
            else:
                self._broken(cid, "is missing from the store")

    def _chunk(self, cid: bytes, extent_len: int | None) -> None:
        ref = self.model.refs.get(cid)
        lengths = [n for n in (ref[1] if ref else None, extent_len) if n is not None]
        if not lengths:
            self.report("chunk", f"chunk {cid.hex()}", "has no reference record and no user",
                        "deleted")
            self.model.delete_chunk(cid)
            return
        encoded = self.encoded(cid)
        try:
            raw_len = self._verified_length(cid, encoded, lengths)
        except CorruptChunk as exc:
            self._broken(cid, exc.detail.removeprefix(f"chunk {cid.hex()} "))
            return
        self.good[cid] = (raw_len, len(encoded))
        if ref is None:
            self.report("chunk", f"chunk {cid.hex()}", "has no reference record",
                        "rebuilt from the extents that use it")
        elif ref[1:] != self.good[cid]:
            self.report("chunk", f"chunk {cid.hex()}",
                        f"reference record says {ref[1]} raw and {ref[2]} stored bytes, the "
                        f"chunk has {raw_len} and {len(encoded)}", "corrected")

    def _verified_length(self, cid: bytes, encoded: bytes, lengths: list[int]) -> int:
        """The raw length with which the chunk decodes: its record's, else its extents' (so a
        damaged reference record does not condemn good data)."""
        if not self.verify:
            return lengths[0]
        errors: list[CorruptChunk] = []
        for raw_len in dict.fromkeys(lengths):
            try:
                decode_chunk(cid, encoded, raw_len)
                return raw_len
            except CorruptChunk as exc:
                errors.append(exc)
        raise errors[0]

    def _broken(self, cid: bytes, why: str) -> None:
        self.broken[cid] = why
        self.report("chunk", f"chunk {cid.hex()}", why,
                    "deleted; the extents (and snapshot extents) that use it are dropped")
        self.model.delete_chunk(cid)

    def encoded(self, cid: bytes) -> bytes:
        """A present chunk's stored bytes."""
        encoded = self.txn.get("chunks", cid)
        assert encoded is not None, "listed as present in this same read transaction"
        return encoded

    def problem(self, cid: bytes, length: int) -> str | None:
        """Why an extent of length over chunk cid cannot be kept (None if it can)."""
        if cid in self.broken:
            return f"chunk {cid.hex()} {self.broken[cid]}"
        if cid not in self.good:
            return f"chunk {cid.hex()} is missing from the store"
        if length != self.good[cid][0]:
            return f"extent length {length} is not its chunk's length {self.good[cid][0]}"
        return None

    def add(self, chunk: PreparedChunk) -> None:
        """Store a chunk fsck made (the head of a cut extent) unless it is there already."""
        if chunk.id not in self.good:
            self.good[chunk.id] = (chunk.raw_len, len(chunk.encoded))
            self.model.put("chunks", chunk.id, chunk.encoded)

    def reader(self) -> ChunkStore:
        """Chunk data for `content_id`, from the chunks verified here (not their records)."""
        return cast(ChunkStore, _Reader(self))


class _Reader:
    """The one ChunkStore method `content_id` calls."""

    def __init__(self, chunks: ChunkChecks) -> None:
        self.chunks = chunks

    def get(self, txn: Txn, cid: bytes) -> bytes:
        return decode_chunk(cid, self.chunks.encoded(cid), self.chunks.good[cid][0])
