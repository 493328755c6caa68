"""A zip archive of a list of members, produced on demand at any byte range (the pure layer
under the read-only `run42.zip` file that mirrors a writable `run42.zip#/` directory).

Nothing is built in memory or on disk: `ZipLayout` computes from names and sizes alone where
every record lies, so `total_size` is known for `stat` before a byte is read, and `read(offset,
size, ...)` generates the header bytes that fall in the range and asks the caller for member
content. This works because every member is stored (method 0; the store already compresses).

CRC-32 choice: CRCs are in the local headers (no data descriptors, flag bit 3 clear). A data
descriptor would let the first bytes of a local header be served without a CRC, but:
- stored + data descriptor makes a streaming reader (bsdtar reading a pipe, Java's
  ZipInputStream) find the end of the data by scanning for the descriptor signature, a guess the
  member's content can defeat (a zip stored in the zip), and ZipInputStream rejects it outright
  ("only DEFLATED entries can have EXT descriptor"). bsdtar 3.6 (file and pipe), unzip 6.0 and
  zipfile accept it, but sizes and CRC up front are accepted everywhere, streamed or not;
- the laziness gained is small: random-access readers read the central directory first, which
  needs every CRC either way, and a sequential reader that reads a local header goes on to read
  that member's content anyway.
`crc_of(index)` is still called lazily: only when the requested range covers the 4 CRC bytes of
that member's local header or central directory record, and never for empty members (CRC 0).

The archive reflects the sizes taken when the layout was made: a member whose content is shorter
at read time (a file truncated meanwhile) is padded with zeros, a longer one is cut, so offsets
never move. Its CRC is then whatever `crc_of` says; a mismatch is the honest outcome.

Format details: ZIP64 records and extra fields only where a value does not fit (a member size or
header offset >= 0xFFFFFFFF, the central directory beyond it, or >= 0xFFFF entries), with
"version needed" 4.5 for those members, else 1.0 for files and 2.0 for directories. Names are
bytes as given; the UTF-8 flag is set when a name is valid UTF-8 and not ASCII. External
attributes carry the Unix mode (made by Unix, spec 6.3) so unzip and bsdtar restore permissions.
Times: the DOS date/time in local time (clamped to 1980..2107, taken when the layout is made, so
a later time zone change does not alter bytes already served) plus the extended timestamp
(0x5455, mtime in UTC) with the same content in local and central headers, omitted when the
mtime does not fit its signed 32 bits (readers then use the DOS time).
"""

from __future__ import annotations

import stat
import struct
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass

ReadMember = Callable[[int, int, int], bytes]
"""read_member(index, member_offset, size): the member's content bytes (short or long is fixed)."""

CrcOf = Callable[[int], int]
"""crc_of(index): the CRC-32 of the member's whole content; may be slow, so called lazily."""

_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # local file header, 30 bytes
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")  # central directory file header, 46 bytes
_EOCD64 = struct.Struct("<4sQHHIIQQQQ")  # ZIP64 end of central directory record, 56 bytes
_LOCATOR = struct.Struct("<4sIQI")  # ZIP64 end of central directory locator, 20 bytes
_EOCD = struct.Struct("<4sHHHHIIH")  # end of central directory record, 22 bytes
_EXTRA = struct.Struct("<HH")
_TIMESTAMP = struct.Struct("<HHBi")  # 0x5455 with flags=1 (mtime only), 9 bytes

_LOCAL_CRC = 14  # offset of the CRC in a local header
_CENTRAL_CRC = 16  # and in a central directory record
_MAX32 = 0xFFFFFFFF
_MAX16 = 0xFFFF
_ZIP64_EXTRA = 0x0001
_TIMESTAMP_EXTRA = 0x5455
_UTF8_FLAG = 1 << 11
_MADE_BY = 3 << 8 | 63  # Unix, spec 6.3
_MSDOS_DIR = 0x10


@dataclass(frozen=True, slots=True)
class ZipEntry:
    """One member. `name` is its path with '/' separators and no trailing '/' (the layout adds
    it for directories); `mode` is st_mode or just permission bits (the type comes from
    `is_dir`); `size` is the content size taken now, 0 for directories."""

    name: bytes
    size: int
    mtime_ns: int
    mode: int
    is_dir: bool = False


def _check(entry: ZipEntry) -> None:
    """Refuse what would make an unsafe or unrepresentable archive, before any offset is made."""
    name = entry.name
    parts = name.split(b"/")
    if not name or b"\0" in name or any(p in (b"", b".", b"..") for p in parts):
        raise ValueError(f"zip member name {name!r}: empty, absolute, with NUL, or with an "
                         f"empty, '.' or '..' component")
    if len(name) + entry.is_dir > _MAX16:
        raise ValueError(f"zip member name too long: {len(name)} bytes")
    if entry.size < 0 or (entry.is_dir and entry.size):
        raise ValueError(f"zip member {name!r}: size {entry.size}")


def _dos_datetime(mtime_ns: int) -> int:
    """DOS date << 16 | time, local time, clamped to what it can say (1980..2107)."""
    latest = (127 << 9 | 12 << 5 | 31) << 16 | (23 << 11 | 59 << 5 | 29)
    earliest = (1 << 5 | 1) << 16
    try:
        tm = time.localtime(mtime_ns // 1_000_000_000)
    except (OverflowError, OSError, ValueError):
        return latest if mtime_ns > 0 else earliest
    if tm.tm_year > 2107:
        return latest
    if tm.tm_year < 1980:
        return earliest
    date = (tm.tm_year - 1980) << 9 | tm.tm_mon << 5 | tm.tm_mday
    return date << 16 | tm.tm_hour << 11 | tm.tm_min << 5 | min(tm.tm_sec, 59) // 2


def _unix_seconds(mtime_ns: int) -> int | None:
    """The 0x5455 mtime, or None when a signed 32-bit field cannot hold it."""
    seconds = mtime_ns // 1_000_000_000
    return seconds if 0 <= seconds <= 0x7FFFFFFF else None


def _timestamp_extra(mtime_ns: int) -> bytes:
    seconds = _unix_seconds(mtime_ns)
    return b"" if seconds is None else _TIMESTAMP.pack(_TIMESTAMP_EXTRA, 5, 1, seconds)


def _flags(name: bytes) -> int:
    if name.isascii():
        return 0
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        return 0
    return _UTF8_FLAG


def _zip64_fields(size: int, header_offset: int) -> tuple[bool, bool]:
    """Whether the sizes, and the header offset, need ZIP64 extra fields."""
    return size >= _MAX32, header_offset >= _MAX32


class ZipLayout:
    """Where every record of the archive of `entries` lies; `read` produces any byte range.

    Memory is a few ints per member; a read costs a bisect plus the records it touches, each
    generated in O(name length).
    """

    def __init__(self, entries: Sequence[ZipEntry]) -> None:
        self.entries: tuple[ZipEntry, ...] = tuple(entries)
        self._headers: list[int] = []  # local header offsets
        self._datetimes: list[int] = []  # DOS date << 16 | time, fixed now
        pos = 0
        for entry in self.entries:
            _check(entry)
            self._headers.append(pos)
            self._datetimes.append(_dos_datetime(entry.mtime_ns))
            pos += self._local_size(entry) + entry.size
        self.central_offset: int = pos
        self._centrals: list[int] = []  # central directory record offsets
        for i, entry in enumerate(self.entries):
            self._centrals.append(pos)
            pos += self._central_size(entry, self._headers[i])
        self.central_size: int = pos - self.central_offset
        count = len(self.entries)
        self.zip64: bool = (count >= _MAX16 or self.central_offset >= _MAX32
                            or self.central_size >= _MAX32)
        tail = b""
        if self.zip64:
            tail = (_EOCD64.pack(b"PK\x06\x06", _EOCD64.size - 12, _MADE_BY, 45, 0, 0, count,
                                 count, self.central_size, self.central_offset)
                    + _LOCATOR.pack(b"PK\x06\x07", 0, pos, 1))
        tail += _EOCD.pack(b"PK\x05\x06", 0, 0, min(count, _MAX16), min(count, _MAX16),
                           min(self.central_size, _MAX32), min(self.central_offset, _MAX32), 0)
        self._tail = tail
        self._tail_offset = pos
        self.total_size: int = pos + len(tail)

    def header_offset(self, index: int) -> int:
        """Offset of member `index`'s local header."""
        return self._headers[index]

    def data_offset(self, index: int) -> int:
        """Offset of member `index`'s content."""
        return self._headers[index] + self._local_size(self.entries[index])

    @staticmethod
    def _local_size(entry: ZipEntry) -> int:
        extra = 20 if entry.size >= _MAX32 else 0
        extra += 0 if _unix_seconds(entry.mtime_ns) is None else _TIMESTAMP.size
        return _LOCAL.size + len(entry.name) + entry.is_dir + extra

    @staticmethod
    def _central_size(entry: ZipEntry, header_offset: int) -> int:
        big_size, big_offset = _zip64_fields(entry.size, header_offset)
        n64 = 2 * big_size + big_offset
        extra = 4 + 8 * n64 if n64 else 0
        extra += 0 if _unix_seconds(entry.mtime_ns) is None else _TIMESTAMP.size
        return _CENTRAL.size + len(entry.name) + entry.is_dir + extra

    def _common(self, index: int) -> tuple[ZipEntry, bytes, int, int, bool, bool]:
        """What local and central records share: entry, archive name, version, flags, ZIP64."""
        entry = self.entries[index]
        name = entry.name + b"/" if entry.is_dir else entry.name
        big_size, big_offset = _zip64_fields(entry.size, self._headers[index])
        version = 45 if big_size or big_offset else 20 if entry.is_dir else 10
        return entry, name, version, _flags(name), big_size, big_offset

    def _crc(self, index: int, crc_of: CrcOf) -> int:
        return crc_of(index) & _MAX32 if self.entries[index].size else 0

    def _local_header(self, index: int, crc: int) -> bytes:
        entry, name, version, flags, big_size, _ = self._common(index)
        dt = self._datetimes[index]
        size32 = _MAX32 if big_size else entry.size
        extra = (_EXTRA.pack(_ZIP64_EXTRA, 16) + entry.size.to_bytes(8, "little") * 2
                 if big_size else b"") + _timestamp_extra(entry.mtime_ns)
        return (_LOCAL.pack(b"PK\x03\x04", version, flags, 0, dt & _MAX16, dt >> 16, crc,
                            size32, size32, len(name), len(extra)) + name + extra)

    def _central_record(self, index: int, crc: int) -> bytes:
        entry, name, version, flags, big_size, big_offset = self._common(index)
        dt = self._datetimes[index]
        offset = self._headers[index]
        zip64 = (entry.size.to_bytes(8, "little") * 2 if big_size else b"") + (
            offset.to_bytes(8, "little") if big_offset else b"")
        extra = (_EXTRA.pack(_ZIP64_EXTRA, len(zip64)) + zip64 if zip64 else b""
                 ) + _timestamp_extra(entry.mtime_ns)
        kind = stat.S_IFDIR if entry.is_dir else stat.S_IFREG
        attributes = (kind | entry.mode & 0o7777) << 16 | (_MSDOS_DIR if entry.is_dir else 0)
        size32 = _MAX32 if big_size else entry.size
        return (_CENTRAL.pack(b"PK\x01\x02", _MADE_BY, version, flags, 0, dt & _MAX16, dt >> 16,
                              crc, size32, size32, len(name), len(extra), 0, 0, 0, attributes,
                              _MAX32 if big_offset else offset) + name + extra)

    def read(self, offset: int, size: int, read_member: ReadMember, crc_of: CrcOf) -> bytes:
        """The archive's bytes [offset, offset + size), fewer only at its end."""
        if offset < 0 or size < 0:
            raise ValueError(f"bad range: offset {offset}, size {size}")
        end = min(offset + size, self.total_size)
        parts: list[bytes] = []
        pos = offset
        while pos < end:
            if pos < self.central_offset:
                i = bisect_right(self._headers, pos) - 1
                data = self.data_offset(i)
                if pos < data:
                    lo, hi = pos - self._headers[i], min(end, data) - self._headers[i]
                    crc = self._crc(i, crc_of) if lo < _LOCAL_CRC + 4 and hi > _LOCAL_CRC else 0
                    piece = self._local_header(i, crc)[lo:hi]
                else:
                    n = min(end, data + self.entries[i].size) - pos
                    piece = read_member(i, pos - data, n)
                    if len(piece) != n:  # changed since the layout: cut or pad with zeros
                        piece = bytes(piece[:n]) + bytes(max(0, n - len(piece)))
            elif pos < self._tail_offset:
                i = bisect_right(self._centrals, pos) - 1
                start = self._centrals[i]
                lo = pos - start
                hi = min(end, self._centrals[i + 1] if i + 1 < len(self._centrals)
                         else self._tail_offset) - start
                crc = self._crc(i, crc_of) if lo < _CENTRAL_CRC + 4 and hi > _CENTRAL_CRC else 0
                piece = self._central_record(i, crc)[lo:hi]
            else:
                piece = self._tail[pos - self._tail_offset:end - self._tail_offset]
            parts.append(piece)
            pos += len(piece)
        return b"".join(parts)
