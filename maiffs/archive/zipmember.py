"""Read one zip member's bytes at any offset, for `cat data.zip#/dir/file`.

Stored members are read straight from the archive. Deflated ones can only be decompressed from
their start, so a reader keeps its decompressor, its position and the last `rewind_window`
bytes of output: sequential reads cost O(n) in total, reads slightly behind the position (the
kernel's readahead can reorder requests) are served from that window, and only a seek further
back starts again from the beginning.

Guarantees on hostile data (see `maiffs.archive.zipread` for the archive-level policy):

- Encrypted members and methods other than stored and deflated are BadMember when opened.
- The local header must be inside the archive, start with its signature, and the data it leads
  to (30 bytes + the local name and extra lengths, which may differ from the central ones) must
  end before the next member's local header or the central directory.
- Output never exceeds the declared size: decompression asks zlib for no more than what is
  still missing, so a deflate bomb costs at most its declared size (visible in `ls -l`).
- A stream that ends before the declared size, corrupt deflate data, a short read, and a CRC-32
  that does not match once every byte has been produced in order (from offset 0 to the end,
  over any number of reads) are BadMember; after one, every later read of that reader fails
  too, so a file read twice fails twice. Members that are only read in pieces out of order are
  not checked.
"""

from __future__ import annotations

import struct
import zlib

from maiffs.archive.zipread import (DEFAULT_LIMITS, DEFLATED, STORED, BadMember, Limits,
                                    Member, ReadAt)

_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # local file header, 30 bytes
_LOCAL_SIG = b"PK\x03\x04"
_IN_CHUNK = 64 << 10  # compressed bytes per read_at
_OUT_CHUNK = 256 << 10  # most decompressed bytes made at once (while skipping forward)


def open_member(read_at: ReadAt, member: Member, limits: Limits = DEFAULT_LIMITS
                ) -> MemberReader:
    """A reader for member's content; BadMember if it cannot be read at all."""
    if member.is_dir:
        raise BadMember("is a directory")
    if member.encrypted:
        raise BadMember("encrypted members are not supported")
    if member.method not in (STORED, DEFLATED):
        raise BadMember(f"compression method {member.method} is not supported")
    if member.header_offset + _LOCAL.size > member.data_end:
        raise BadMember(f"local header at offset {member.header_offset} does not fit before "
                        f"{member.data_end} (the next member, the central directory or EOF)")
    header = read_at(member.header_offset, _LOCAL.size)
    if len(header) < _LOCAL.size:
        raise BadMember(f"archive truncated in the local header at {member.header_offset}")
    sig, *_, name_len, extra_len = _LOCAL.unpack(header[:_LOCAL.size])
    if sig != _LOCAL_SIG:
        raise BadMember(f"no local header signature at offset {member.header_offset}")
    start = member.header_offset + _LOCAL.size + name_len + extra_len
    if start + member.compressed_size > member.data_end:
        raise BadMember(f"{member.compressed_size} bytes of data at offset {start} run past "
                        f"{member.data_end} (the next member, the central directory or EOF)")
    if member.size == 0 and member.crc32 != 0:
        raise BadMember(f"CRC-32 of the empty content is 0, not {member.crc32:#010x}")
    if member.method == STORED:
        if member.compressed_size != member.size:
            raise BadMember(f"stored member with compressed size {member.compressed_size} "
                            f"and size {member.size}")
        return _StoredReader(read_at, member, start)
    return _DeflatedReader(read_at, member, start, limits.rewind_window)


class MemberReader:
    """read(offset, size) of one member's content; reads past the end are short or empty."""

    def __init__(self, read_at: ReadAt, member: Member, start: int) -> None:
        self.member = member
        self.size = member.size
        self._read_at = read_at
        self._start = start  # of the member's data in the archive
        self._crc = 0
        self._crc_pos = 0  # content [0, _crc_pos) has been produced in order and checksummed
        self._failed: str | None = None

    def read(self, offset: int, size: int) -> bytes:
        """Up to size bytes of content at offset; BadMember if the member's data is bad."""
        if offset < 0 or size < 0:
            raise ValueError(f"negative offset or size: {offset}, {size}")
        if self._failed is not None:
            raise BadMember(self._failed)
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        try:
            return self._read(offset, end)
        except BadMember as e:
            self._failed = str(e)
            raise

    def _read(self, offset: int, end: int) -> bytes:
        raise NotImplementedError

    def _fetch(self, offset: int, size: int) -> bytes:
        """size bytes of the archive at offset (all checked to lie inside the member area)."""
        data = self._read_at(offset, size)
        if len(data) < size:
            raise BadMember(f"archive truncated: {size} bytes at {offset} needed, "
                            f"{len(data)} there")
        return data[:size] if len(data) > size else data

    def _checksum(self, offset: int, data: bytes) -> None:
        """Extend the running CRC-32 with content data produced at offset."""
        if offset <= self._crc_pos < offset + len(data):
            self._crc = zlib.crc32(memoryview(data)[self._crc_pos - offset:], self._crc)
            self._crc_pos = offset + len(data)
            if self._crc_pos == self.size and self._crc != self.member.crc32:
                raise BadMember(f"CRC-32 mismatch: content has {self._crc:#010x}, "
                                f"the archive says {self.member.crc32:#010x}")


class _StoredReader(MemberReader):
    def _read(self, offset: int, end: int) -> bytes:
        data = self._fetch(self._start + offset, end - offset)
        self._checksum(offset, data)
        return data


class _DeflatedReader(MemberReader):
    def __init__(self, read_at: ReadAt, member: Member, start: int, window: int) -> None:
        super().__init__(read_at, member, start)
        self._window = window
        self._restart()

    def _restart(self) -> None:
        self._z = zlib.decompressobj(-15)
        self._out = 0  # content bytes produced so far
        self._in = 0  # compressed bytes fed so far
        self._waiting = True  # zlib stopped for lack of input, not of output space
        self._recent = bytearray()  # the last content bytes produced, ending at _out

    def _read(self, offset: int, end: int) -> bytes:
        if offset < self._out - len(self._recent):
            self._restart()
        parts = []
        if offset < self._out:
            at = len(self._recent) - (self._out - offset)
            parts.append(bytes(self._recent[at:at + min(end, self._out) - offset]))
        while self._out < end:
            at = self._out
            piece = self._inflate(min(end - at, _OUT_CHUNK))
            if at + len(piece) > offset:
                parts.append(piece[max(0, offset - at):])
        return b"".join(parts)

    def _inflate(self, want: int) -> bytes:
        """The next 1..want content bytes."""
        while True:
            if self._z.eof:
                raise BadMember(f"deflate stream ends after {self._out} of {self.size} bytes")
            data = self._z.unconsumed_tail
            if not data and self._waiting:
                left = self.member.compressed_size - self._in
                if left <= 0:
                    raise BadMember(f"compressed data ends after {self._out} of {self.size} "
                                    "bytes, inside the deflate stream")
                data = self._fetch(self._start + self._in, min(_IN_CHUNK, left))
                self._in += len(data)
            try:
                out = self._z.decompress(data, want)
            except zlib.error as e:
                raise BadMember(f"corrupt deflate data: {e}") from None
            self._waiting = len(out) < want
            if out:
                at = self._out
                self._out += len(out)
                self._recent += out
                if len(self._recent) > self._window:
                    del self._recent[:len(self._recent) - self._window]
                self._checksum(at, out)
                return out
            if data and len(self._z.unconsumed_tail) == len(data) and not self._z.eof:
                raise BadMember("deflate data makes no progress")
