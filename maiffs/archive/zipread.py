"""The index of a zip archive as a directory tree, read from its end records and central directory.

This is the pure layer under `data.zip#/` views: it sees the archive only through
`read_at(offset, size) -> bytes` and its size, and reads no more than it needs: one read of the
tail (end of central directory record, its comment, and the ZIP64 locator/record just before it),
one read of the central directory (none when it already lies in the tail), and, when a member is
opened (`maiffs.archive.zipmember`), its local header and data. Python's `zipfile` is not used:
it wants a seekable file, reads more than needed, and raises assorted exceptions on hostile
input. Here every problem is one of two exceptions:

- `BadZip`: the archive cannot be used at all (no end record, central directory outside the file
  or over the size limit, member count that does not match, a truncated central directory).
- `BadMember`: one member cannot be read (see zipmember); the others still can.

Errors raised by `read_at` itself (the store failing) pass through unchanged. A short read is
taken as a truncated archive.

How hostile or odd archives are handled (the policy for docs/archives.md):

- End record: the last 64 KiB + 22 bytes are searched for its signature; the last one whose
  comment ends exactly at the end of the file wins, else the last one whose comment fits in the
  file (data appended after the archive). Multi-disk archives are BadZip.
- The central directory is taken to end where the (ZIP64) end record starts; when its declared
  offset is smaller, the difference is data prepended to the archive (self-extracting archives)
  and every local header offset is shifted by it, as `zipfile` and `unzip` do. A declared
  directory that would run past its end record is BadZip.
- Counts: the records are read while their signature is present; their number must equal the
  declared count (for a 16-bit count in an archive without ZIP64, modulo 65536, since some
  writers wrap it), else BadZip. A declared count or directory size over the limits is BadZip
  before anything is read, so no allocation is ever sized by an untrusted number beyond them.
- Names are bytes, shown as stored: no transcoding from code page 437 or the UTF-8 flag (Linux
  names are bytes, guessing an OEM code page goes wrong, and raw bytes keep every name reachable).
- Backslash is a path separator, like '/': APPNOTE 4.4.17 allows only '/', and archives with
  backslashes come from Windows tools that meant a separator; a Unix name with a backslash in it
  is far rarer than those. It also means `..\\evil` is treated like `../evil`.
- Empty and '.' components are dropped (so `/abs/x`, `./x` and `a//x` become `abs/x`, `x`, `a/x`:
  nothing can be absolute). A member with a '..' component anywhere is hidden, even when it
  would stay inside the root: a path never escapes the root, and nothing is resolved.
- Hidden too: names containing NUL (no POSIX name can), a component over 255 bytes or a path
  over 4096 (the limits), a file whose name is empty after normalization, and a member whose
  ZIP64 extra field is too short to hold the values it must. `ZipIndex.hidden` lists every
  hidden member with the reason, so nothing disappears silently.
- Duplicate paths (after normalization): the last one in the central directory wins, as with
  `zipfile` and `unzip -o`; the earlier ones are hidden. A path that is both a file and a
  directory (an explicit `x/` entry or a prefix of other names) is a directory; the file is
  hidden. Directories implied by names exist without entries of their own.
- Members are files or directories (a trailing '/' or a Unix directory mode). Other Unix types
  (symlinks, devices) are shown as regular files holding their stored bytes: a FUSE view must not
  create symlinks that point anywhere the archive likes.
- Modes: only the permission bits (0o777) of Unix external attributes (made on Unix or macOS);
  setuid/setgid/sticky are dropped. Otherwise, or when no permission bit is set, 0o644 for files
  and 0o755 for directories.
- Times: the extended-timestamp extra field (0x5455) when present, else the DOS date and time,
  read as local time (DOS times carry no zone; `unzip` reads them as local time too).
- Unsupported methods (anything but stored and deflated) and encrypted members are listed, so
  users see them, but opening them is BadMember.
- Overlaps: each member's data must end before the next local header (by offset) or the central
  directory, as `zipfile` checks; members sharing one local header are readable only through the
  last of them in the central directory. This stops overlapping-member zip bombs.
- Local headers are only read when a member is opened; its name and sizes are not compared with
  the central directory's (writers differ; the central directory is authoritative), only its
  signature and the lengths that say where the data starts.
"""

from __future__ import annotations

import re
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

ReadAt = Callable[[int, int], bytes]
"""read_at(offset, size): the archive's bytes (fewer only at its end)."""

STORED = 0
DEFLATED = 8

_EOCD = struct.Struct("<4sHHHHIIH")  # end of central directory record, 22 bytes
_LOCATOR = struct.Struct("<4sIQI")  # ZIP64 end of central directory locator, 20 bytes
_EOCD64 = struct.Struct("<4sQHHIIQQQQ")  # ZIP64 end of central directory record, 56 bytes
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")  # central directory file header, 46 bytes
_EXTRA = struct.Struct("<HH")
_U64 = struct.Struct("<Q")

_EOCD_SIG = b"PK\x05\x06"
_LOCATOR_SIG = b"PK\x06\x07"
_EOCD64_SIG = b"PK\x06\x06"
_CENTRAL_SIG = b"PK\x01\x02"
_MAX_COMMENT = 0xFFFF
_ZIP64_EXTRA = 0x0001
_TIMESTAMP_EXTRA = 0x5455
_UNIX_HOSTS = (3, 19)  # Unix, OS X
_ODD_NAME = re.compile(rb"[\\\x00]|//|^/|(?:^|/)\.\.?(?:/|$)")  # names _normalize must rework


class BadZip(Exception):
    """The archive cannot be parsed at all; the message says what is wrong."""


class BadMember(Exception):
    """One member cannot be read; the message says what is wrong."""


@dataclass(frozen=True)
class Limits:
    """Bounds on what an archive can make us allocate or expose."""

    max_directory_bytes: int = 256 << 20  # central directory read in one piece
    max_members: int = 10_000_000
    max_path: int = 4096  # PATH_MAX
    max_component: int = 255  # NAME_MAX
    rewind_window: int = 1 << 20  # recent deflate output kept so small backward seeks are cheap


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Member:
    """One central directory entry, with what listing and reading need."""

    name: bytes  # normalized path: no leading '/', components joined by '/'
    method: int  # 0 stored, 8 deflated, others listed but unreadable
    flags: int  # general purpose bit flags (bit 0: encrypted)
    compressed_size: int
    size: int  # uncompressed, as declared: reads never produce more
    crc32: int
    header_offset: int  # of the local header, in the file (prepended data included)
    data_end: int  # the next local header or the central directory: the data must end by it
    mtime_ns: int
    mode: int  # permission bits only
    is_dir: bool

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & 1)


@dataclass(frozen=True, slots=True)
class Directory:
    """A directory of the tree, explicit (`member` is its own entry) or implied by names."""

    path: bytes
    member: Member | None = None

    @property
    def mode(self) -> int:
        return self.member.mode if self.member is not None else 0o755

    @property
    def mtime_ns(self) -> int | None:
        """None for an implied directory: the caller picks (the archive's own mtime, say)."""
        return self.member.mtime_ns if self.member is not None else None


Entry = Member | Directory


def _read_exact(read_at: ReadAt, offset: int, size: int, what: str) -> bytes:
    """read_at, with a short read (a truncated archive) turned into BadZip."""
    data = read_at(offset, size)
    if len(data) < size:
        raise BadZip(f"archive truncated: {what} at offset {offset} needs {size} bytes, "
                     f"only {len(data)} there")
    return data[:size] if len(data) > size else data


def _find_eocd(tail: bytes, tail_start: int, size: int) -> int:
    """Offset in tail of the end record: the last whose comment ends at EOF, else that fits."""
    fitting = -1
    pos = len(tail) - _EOCD.size
    while True:
        pos = tail.rfind(_EOCD_SIG, 0, pos + 4)
        if pos < 0:
            break
        comment_end = tail_start + pos + _EOCD.size + int.from_bytes(tail[pos + 20:pos + 22],
                                                                     "little")
        if comment_end == size:
            return pos
        if comment_end < size and fitting < 0:
            fitting = pos
        pos -= 1
    if fitting < 0:
        raise BadZip("no end of central directory record: not a zip archive, or truncated")
    return fitting


def _zip64_record(read_at: ReadAt, tail: bytes, tail_start: int, declared: int,
                  locator: int) -> tuple[int, tuple]:
    """Find the ZIP64 end record: at its declared offset, else just before the locator."""
    for pos in (declared, locator - _EOCD64.size):
        if pos < 0 or pos + _EOCD64.size > locator:
            continue
        if pos >= tail_start:
            raw = tail[pos - tail_start:pos - tail_start + _EOCD64.size]
        else:
            raw = _read_exact(read_at, pos, _EOCD64.size, "ZIP64 end record")
        if raw[:4] == _EOCD64_SIG:
            return pos, _EOCD64.unpack(raw)
    raise BadZip("ZIP64 end of central directory locator present but its record is not found")


def _dos_time_ns(date: int, dtime: int, cache: dict[int, int]) -> int:
    """DOS date and time as local time; cached, as members of one archive share a few times."""
    key = date << 16 | dtime
    ns = cache.get(key)
    if ns is None:
        tm = (1980 + (date >> 9), (date >> 5) & 0xF, date & 0x1F,
              dtime >> 11, (dtime >> 5) & 0x3F, (dtime & 0x1F) * 2, 0, 0, -1)
        try:
            ns = int(time.mktime(tm)) * 1_000_000_000
        except (OverflowError, ValueError):
            ns = 0
        cache[key] = ns
    return ns


def _normalize(raw: bytes, limits: Limits) -> tuple[bytes, bool] | str:
    """(path, whether it ends with a separator), or why the name is unusable."""
    if len(raw) <= min(limits.max_component, limits.max_path) and not _ODD_NAME.search(raw):
        return (raw[:-1], True) if raw.endswith(b"/") else (raw, False)  # the common case
    if b"\0" in raw:
        return "NUL byte in name"
    name = raw.replace(b"\\", b"/")
    parts = [c for c in name.split(b"/") if c and c != b"."]
    if b".." in parts:
        return "'..' component"
    for c in parts:
        if len(c) > limits.max_component:
            return f"component longer than {limits.max_component} bytes"
    path = b"/".join(parts)
    if len(path) > limits.max_path:
        return f"path longer than {limits.max_path} bytes"
    return (raw if path == raw else path), name.endswith(b"/")


def _parse_extra(extra: bytes, usize: int, csize: int, offset: int
                 ) -> tuple[int, int, int, int | None] | str:
    """Apply the ZIP64 field to the 0xFFFFFFFF values and pick up the 0x5455 mtime."""
    mtime = None
    i = 0
    while i + 4 <= len(extra):
        tag, length = _EXTRA.unpack_from(extra, i)
        start, i = i + 4, i + 4 + length
        if i > len(extra):
            break  # a malformed tail (padding, truncation): ignored like an absent field
        if tag == _ZIP64_EXTRA:
            j = start
            values = [usize, csize, offset]
            for k in range(3):
                if values[k] == 0xFFFFFFFF:
                    if j + 8 > i:
                        return "ZIP64 extra field too short"
                    values[k] = _U64.unpack_from(extra, j)[0]
                    j += 8
            usize, csize, offset = values
        elif tag == _TIMESTAMP_EXTRA and length >= 5 and extra[start] & 1:
            mtime = int.from_bytes(extra[start + 1:start + 5], "little", signed=True)
    return usize, csize, offset, mtime


def _data_ends(offsets: list[int | None], cd_start: int) -> list[int]:
    """Where each member's data must end: the next local header by offset, or the central
    directory; members sharing a header end at it, except the last in directory order."""
    order = sorted((offset, i) for i, offset in enumerate(offsets) if offset is not None)
    ends = [0] * len(offsets)
    for k, (_, i) in enumerate(order):
        ends[i] = min(order[k + 1][0], cd_start) if k + 1 < len(order) else cd_start
    return ends


class ZipIndex:
    """The members of one archive as a read-only tree of Directory and Member entries."""

    def __init__(self, members: list[Member], dirs: dict[bytes, Directory],
                 children: dict[bytes, dict[bytes, Entry]],
                 hidden: list[tuple[bytes, str]], comment: bytes) -> None:
        self.members = members  # members with usable names in directory order, duplicates too
        self.hidden = hidden  # (name as stored, why) for each member left out of the tree
        self.comment = comment
        self._dirs = dirs
        self._children = children
        self._sorted: dict[bytes, list[tuple[bytes, Entry]]] = {}

    @classmethod
    def parse(cls, read_at: ReadAt, size: int, limits: Limits = DEFAULT_LIMITS) -> ZipIndex:
        """Read the end records and the central directory; raise BadZip if unusable."""
        if size < _EOCD.size:
            raise BadZip(f"{size} bytes is too short for a zip archive")
        tail_start = max(0, size - (_EOCD.size + _MAX_COMMENT + _LOCATOR.size + _EOCD64.size))
        tail = _read_exact(read_at, tail_start, size - tail_start, "end of archive")
        search_from = max(0, size - (_EOCD.size + _MAX_COMMENT)) - tail_start
        at = _find_eocd(tail[search_from:], tail_start + search_from, size) + search_from
        eocd_pos = tail_start + at
        (_, disk, cd_disk, _, count, cd_size, cd_offset,
         comment_len) = _EOCD.unpack_from(tail, at)
        comment = tail[at + _EOCD.size:at + _EOCD.size + comment_len]
        end_pos = eocd_pos
        zip64 = False
        loc = at - _LOCATOR.size
        if loc >= 0 and tail[loc:loc + 4] == _LOCATOR_SIG:
            _, z_disk, z_offset, disks = _LOCATOR.unpack_from(tail, loc)
            if z_disk != 0 or disks > 1:
                raise BadZip("archives spanning several disks are not supported")
            end_pos, record = _zip64_record(read_at, tail, tail_start, z_offset, eocd_pos - 20)
            _, _, _, _, disk, cd_disk, _, count, cd_size, cd_offset = record
            zip64 = True
        if disk != 0 or cd_disk != 0:
            raise BadZip("archives spanning several disks are not supported")
        if cd_size > limits.max_directory_bytes:
            raise BadZip(f"central directory of {cd_size} bytes is over the limit of "
                         f"{limits.max_directory_bytes}")
        if count > limits.max_members:
            raise BadZip(f"{count} members is over the limit of {limits.max_members}")
        if count * _CENTRAL.size > cd_size:
            raise BadZip(f"{count} members cannot fit in a central directory of {cd_size} bytes")
        shift = end_pos - cd_size - cd_offset
        if shift < 0:
            raise BadZip(f"central directory at offset {cd_offset} of {cd_size} bytes runs "
                         f"past its end record at {end_pos}")
        cd_start = end_pos - cd_size
        if cd_start >= tail_start:
            cd = tail[cd_start - tail_start:end_pos - tail_start]
        else:
            cd = _read_exact(read_at, cd_start, cd_size, "central directory")
        return cls._build(cd, count, zip64, shift, cd_start, comment, limits)

    @classmethod
    def _build(cls, cd: bytes, count: int, zip64: bool, shift: int, cd_start: int,
               comment: bytes, limits: Limits) -> ZipIndex:
        parsed: list[tuple] = []  # (raw name, offset or None, Member fields or None)
        hidden: list[tuple[bytes, str]] = []
        times: dict[int, int] = {}
        unpack = _CENTRAL.unpack_from
        pos, end = 0, len(cd)
        while pos + _CENTRAL.size <= end and cd.startswith(_CENTRAL_SIG, pos):
            (_, made_by, _, flags, method, dtime, ddate, crc, csize, usize, n_name, n_extra,
             n_comment, _, _, attrs, offset) = unpack(cd, pos)
            name_at = pos + _CENTRAL.size
            pos = name_at + n_name + n_extra + n_comment
            if pos > end:
                raise BadZip(f"central directory entry {len(parsed)} runs past its end")
            if len(parsed) >= limits.max_members:
                raise BadZip(f"more than {limits.max_members} members")
            raw = cd[name_at:name_at + n_name]
            mtime = None
            if n_extra:
                extra = _parse_extra(cd[name_at + n_name:name_at + n_name + n_extra],
                                     usize, csize, offset)
                if isinstance(extra, str):
                    parsed.append((raw, None, None))
                    hidden.append((raw, extra))
                    continue
                usize, csize, offset, mtime = extra
            norm = _normalize(raw, limits)
            if isinstance(norm, str):
                parsed.append((raw, offset + shift, None))
                hidden.append((raw, norm))
                continue
            path, is_dir = norm
            unix = attrs >> 16 if made_by >> 8 in _UNIX_HOSTS else 0
            is_dir = is_dir or stat.S_ISDIR(unix)
            if not path and not is_dir:
                parsed.append((raw, offset + shift, None))
                hidden.append((raw, "empty name"))
                continue
            mode = unix & 0o777 or (0o755 if is_dir else 0o644)
            mtime_ns = (mtime * 1_000_000_000 if mtime is not None
                        else _dos_time_ns(ddate, dtime, times))
            parsed.append((raw, offset + shift,
                           (path, method, flags, csize, usize, crc, mtime_ns, mode, is_dir)))
        if len(parsed) != count and (zip64 or len(parsed) % 0x10000 != count):
            raise BadZip(f"central directory declares {count} members but holds {len(parsed)}")
        ends = _data_ends([offset for _, offset, _ in parsed], cd_start)
        members: list[Member] = []
        raws: list[bytes] = []
        for (raw, offset, fields), data_end in zip(parsed, ends):
            if fields is not None:
                path, method, flags, csize, usize, crc, mtime_ns, mode, is_dir = fields
                members.append(Member(path, method, flags, csize, usize, crc, offset, data_end,
                                       mtime_ns, mode, is_dir))
                raws.append(raw)
        return cls._tree(members, raws, hidden, comment)

    @classmethod
    def _tree(cls, members: list[Member], raws: list[bytes], hidden: list[tuple[bytes, str]],
              comment: bytes) -> ZipIndex:
        files: dict[bytes, int] = {}  # path -> index in members, the last one winning
        explicit: dict[bytes, int] = {}
        for i, m in enumerate(members):
            if not m.name:
                continue  # an entry for the root itself
            seen = explicit if m.is_dir else files
            old = seen.get(m.name)
            if old is not None:
                hidden.append((raws[old], "a later member has the same path"))
            seen[m.name] = i
        dirs: dict[bytes, Directory] = {b"": Directory(b"", None)}

        def add_dir(path: bytes) -> None:
            while path not in dirs:
                i = explicit.get(path)
                dirs[path] = Directory(path, None if i is None else members[i])
                path = path.rpartition(b"/")[0]

        for path in explicit:
            add_dir(path)
        for path in files:
            add_dir(path.rpartition(b"/")[0])
        children: dict[bytes, dict[bytes, Entry]] = {path: {} for path in dirs}
        for path, d in dirs.items():
            if path:
                parent, _, name = path.rpartition(b"/")
                children[parent][name] = d
        for path, i in files.items():
            if path in dirs:
                hidden.append((raws[i], "a directory has the same path"))
                continue
            parent, _, name = path.rpartition(b"/")
            children[parent][name] = members[i]
        return cls(members, dirs, children, hidden, comment)

    def entry(self, path: bytes) -> Entry | None:
        """The file or directory at path (b"" is the root), or None."""
        path = path.strip(b"/")
        d = self._dirs.get(path)
        if d is not None:
            return d
        parent, _, name = path.rpartition(b"/")
        return self.lookup(parent, name)

    def lookup(self, dir_path: bytes, name: bytes) -> Entry | None:
        """The entry called name in the directory dir_path, or None."""
        kids = self._children.get(dir_path.strip(b"/"))
        return None if kids is None else kids.get(name)

    def listdir(self, dir_path: bytes) -> list[tuple[bytes, Entry]]:
        """(name, entry) pairs of a directory sorted by name; KeyError if it is not one."""
        dir_path = dir_path.strip(b"/")
        listing = self._sorted.get(dir_path)
        if listing is None:
            listing = self._sorted[dir_path] = sorted(self._children[dir_path].items(),
                                                      key=lambda item: item[0])
        return list(listing)
