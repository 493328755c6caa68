"""The zip writing layer (maiffs.archive.zipwrite): archives produced piecewise from in-memory
members, checked by zipfile, unzip, bsdtar and maiffs' own zip reader; ZIP64 by size (without
writing 5 GiB) and by count; CRCs asked for only when their bytes are read."""

from __future__ import annotations

import io
import os
import random
import shutil
import stat
import struct
import subprocess
import time
import zipfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maiffs.archive import ZipIndex, open_member
from maiffs.archive.zipwrite import ZipEntry, ZipLayout

UTF8_ENV = {**os.environ, "LC_ALL": "C.UTF-8"}
MTIME = 1_700_000_000_123_456_789
GiB = 1 << 30
MiB = 1 << 20

needs_unzip = pytest.mark.skipif(shutil.which("unzip") is None, reason="unzip not installed")
needs_bsdtar = pytest.mark.skipif(shutil.which("bsdtar") is None, reason="bsdtar not installed")

# --- helpers ---------------------------------------------------------------------------------


class Archive:
    """A layout over in-memory contents (None: a directory), counting CRC requests."""

    def __init__(self, contents: dict[str, bytes | None], modes: dict[str, int] | None = None,
                 mtimes: dict[str, int] | None = None) -> None:
        modes, mtimes = modes or {}, mtimes or {}
        self.names = list(contents)
        self.data = [contents[n] or b"" for n in self.names]
        self.entries = [
            ZipEntry(name=n.encode(), size=len(self.data[i]),
                     mtime_ns=mtimes.get(n, MTIME + i * 3_600_000_000_007),
                     mode=modes.get(n, 0o755 if contents[n] is None else 0o644),
                     is_dir=contents[n] is None)
            for i, n in enumerate(self.names)]
        self.layout = ZipLayout(self.entries)
        self.crc_calls: list[int] = []

    def read_member(self, index: int, offset: int, size: int) -> bytes:
        assert not self.entries[index].is_dir and size > 0
        assert 0 <= offset and offset + size <= self.entries[index].size, (index, offset, size)
        return self.data[index][offset:offset + size]

    def crc_of(self, index: int) -> int:
        self.crc_calls.append(index)
        return zlib.crc32(self.data[index])

    def read(self, offset: int, size: int) -> bytes:
        return self.layout.read(offset, size, self.read_member, self.crc_of)

    def whole(self) -> bytes:
        return self.read(0, self.layout.total_size)

    def archive_names(self) -> list[str]:
        return [n + "/" if e.is_dir else n for n, e in zip(self.names, self.entries)]

    def files(self) -> dict[str, tuple[bytes, ZipEntry]]:
        return {n: (d, e) for n, d, e in zip(self.names, self.data, self.entries) if not e.is_dir}

    def dirs(self) -> dict[str, ZipEntry]:
        return {n: e for n, e in zip(self.names, self.entries) if e.is_dir}


def piecewise(read, total: int, rng: random.Random) -> bytes:
    """The archive read in random-sized pieces, in random order, reassembled by offset."""
    spans, pos = [], 0
    while pos < total:
        size = rng.choice([1, 2, 7, 30, 46, rng.randint(1, 300), rng.randint(1, 70_000)])
        spans.append((pos, size))
        pos += size
    rng.shuffle(spans)
    out = bytearray(total)
    for offset, size in spans:
        piece = read(offset, size)
        assert len(piece) == min(size, total - offset)
        out[offset:offset + len(piece)] = piece
    return bytes(out)


def dos_time(mtime_ns: int) -> tuple[int, ...]:
    """What zipfile should report as date_time: local time, 2-second steps, 1980..2107."""
    try:
        tm = time.localtime(mtime_ns // 1_000_000_000)
    except (OverflowError, OSError, ValueError):
        tm = None
    if tm is None or tm.tm_year > 2107:
        return (2107, 12, 31, 23, 59, 58)
    if tm.tm_year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    return (*tm[:5], min(tm.tm_sec, 59) // 2 * 2)


def check_with_zipfile(archive: Archive, zf: zipfile.ZipFile) -> None:
    assert zf.testzip() is None
    assert zf.namelist() == archive.archive_names()
    for i, info in enumerate(zf.infolist()):
        entry = archive.entries[i]
        assert info.compress_type == zipfile.ZIP_STORED
        assert info.date_time == dos_time(entry.mtime_ns)
        assert info.create_system == 3
        kind = stat.S_IFDIR if entry.is_dir else stat.S_IFREG
        assert info.external_attr >> 16 == kind | entry.mode
        assert info.header_offset == archive.layout.header_offset(i)
        assert info.is_dir() == entry.is_dir
        if not entry.is_dir:
            assert zf.read(info) == archive.data[i]


def local_header(archive: Archive, index: int) -> tuple:
    """The parsed fixed part of member index's local header, its name and its extra field."""
    start = archive.layout.header_offset(index)
    fixed = struct.unpack("<4sHHHHHIIIHH", archive.read(start, 30))
    name_len, extra_len = fixed[-2:]
    rest = archive.read(start + 30, name_len + extra_len)
    return fixed, rest[:name_len], rest[name_len:]


def extras(field: bytes) -> dict[int, bytes]:
    found, pos = {}, 0
    while pos < len(field):
        tag, length = struct.unpack_from("<HH", field, pos)
        found[tag] = field[pos + 4:pos + 4 + length]
        pos += 4 + length
    assert pos == len(field)
    return found


SAMPLE_CONTENTS: dict[str, bytes | None] = {
    "docs": None,
    "docs/readme.txt": b"hello\n" * 100,
    "docs/deep/er/nested.bin": random.Random(1).randbytes(7000),
    "empty.txt": b"",
    "ünïcödé/日本語.txt": "テキスト\n".encode(),
    "scripts/run.sh": b"#!/bin/sh\necho hi\n",
    "emptydir": None,
    "PK-lookalike.zip": b"PK\x03\x04PK\x07\x08PK\x01\x02PK\x05\x06" * 50,
}
SAMPLE_MODES = {"docs": 0o750, "emptydir": 0o700, "scripts/run.sh": 0o755,
                "docs/deep/er/nested.bin": 0o600}


@pytest.fixture
def sample() -> Archive:
    return Archive(SAMPLE_CONTENTS, SAMPLE_MODES)


@pytest.fixture
def sample_zip(sample: Archive, tmp_path: Path) -> Path:
    path = tmp_path / "run42.zip"
    path.write_bytes(sample.whole())
    return path


def check_extracted(archive: Archive, root: Path, mtimes: bool = True) -> None:
    """The tree under root holds exactly the archive's members, with their modes and mtimes."""
    for name, (data, entry) in archive.files().items():
        path = root / name
        assert path.read_bytes() == data, name
        st_ = path.stat()
        assert stat.S_IMODE(st_.st_mode) == entry.mode, name
        if mtimes:
            assert int(st_.st_mtime) == entry.mtime_ns // 1_000_000_000, name
    for name, entry in archive.dirs().items():
        path = root / name
        assert path.is_dir()
        assert stat.S_IMODE(path.stat().st_mode) == entry.mode, name
    found = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert found == set(archive.files())


# --- producing the bytes -----------------------------------------------------------------------


def test_pieces_at_random_offsets_match_one_full_read(sample: Archive) -> None:
    full = sample.whole()
    total = sample.layout.total_size
    assert len(full) == total
    for seed in range(5):
        rng = random.Random(seed)
        assert piecewise(sample.read, total, rng) == full
        for _ in range(200):
            offset = rng.randrange(total + 10)
            size = rng.randrange(3000)
            assert sample.read(offset, size) == full[offset:offset + size]
    assert sample.read(total, 100) == b""
    assert sample.read(5, 0) == b""
    with pytest.raises(ValueError):
        sample.read(-1, 10)


def test_offsets_and_total_size_are_known_before_any_read(sample: Archive) -> None:
    layout = sample.layout
    assert sample.crc_calls == []
    full = sample.whole()
    for i, entry in enumerate(sample.entries):
        assert full[layout.header_offset(i):layout.header_offset(i) + 4] == b"PK\x03\x04"
        start = layout.data_offset(i)
        assert full[start:start + entry.size] == sample.data[i]
    assert full[layout.central_offset:layout.central_offset + 4] == b"PK\x01\x02"
    assert layout.central_offset + layout.central_size == layout.total_size - 22
    assert not layout.zip64


def test_headers(sample: Archive) -> None:
    for i, entry in enumerate(sample.entries):
        fixed, name, extra = local_header(sample, i)
        sig, version, flags, method, _, _, crc, csize, usize, _, _ = fixed
        assert sig == b"PK\x03\x04" and method == 0 and not flags & 0x8
        assert version == (20 if entry.is_dir else 10)
        assert name == entry.name + (b"/" if entry.is_dir else b"")
        assert bool(flags & 0x800) == (not name.isascii())
        assert csize == usize == entry.size and crc == zlib.crc32(sample.data[i])
        ut = extras(extra)[0x5455]
        assert ut == struct.pack("<Bi", 1, entry.mtime_ns // 1_000_000_000)
    # the central directory says the same about times as the local headers
    full = sample.whole()
    pos = sample.layout.central_offset
    for entry in sample.entries:
        fixed = struct.unpack_from("<4sHHHHHHIIIHHHHHII", full, pos)
        name_len, extra_len, comment_len = fixed[10:13]
        assert fixed[1] == 3 << 8 | 63
        extra = full[pos + 46 + name_len:pos + 46 + name_len + extra_len]
        assert extras(extra)[0x5455] == struct.pack("<Bi", 1, entry.mtime_ns // 1_000_000_000)
        pos += 46 + name_len + extra_len + comment_len


def test_names_are_bytes_with_utf8_flag_only_when_valid_and_not_ascii() -> None:
    entries = [ZipEntry(b"plain", 0, MTIME, 0o644), ZipEntry("é".encode(), 0, MTIME, 0o644),
               ZipEntry(b"latin\xe9", 0, MTIME, 0o644)]
    layout = ZipLayout(entries)
    data = layout.read(0, layout.total_size, lambda *a: b"", lambda i: 0)
    flags = [struct.unpack_from("<H", data, layout.header_offset(i) + 6)[0] & 0x800
             for i in range(3)]
    assert flags == [0, 0x800, 0]
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.namelist() == ["plain", "é", b"latin\xe9".decode("cp437")]
        assert zf.testzip() is None


def test_times_out_of_range() -> None:
    """DOS dates clamp to 1980..2107; the UT field is left out when 32 bits cannot hold it."""
    mtimes = [-5 * 10**18, -1, 0, 10**9 * 300_000_000, 2**31 * 10**9, 5 * 10**20]
    layout = ZipLayout([ZipEntry(f"f{i}".encode(), 0, m, 0o644) for i, m in enumerate(mtimes)])
    data = layout.read(0, layout.total_size, lambda *a: b"", lambda i: 0)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        for info, mtime in zip(zf.infolist(), mtimes):
            assert info.date_time == dos_time(mtime)
            has_ut = b"UT" in info.extra
            assert has_ut == (0 <= mtime // 10**9 < 2**31)


def test_member_changed_after_the_layout_is_padded_or_cut() -> None:
    entries = [ZipEntry(b"shrunk", 100, MTIME, 0o644), ZipEntry(b"grown", 10, MTIME, 0o644)]
    layout = ZipLayout(entries)
    now = [b"x" * 40, b"y" * 50]
    full = layout.read(0, layout.total_size, lambda i, off, n: now[i][off:off + n] if i
                       else now[i][off:], lambda i: 0)
    assert len(full) == layout.total_size
    assert full[layout.data_offset(0):layout.data_offset(0) + 100] == b"x" * 40 + bytes(60)
    assert full[layout.data_offset(1):layout.data_offset(1) + 14] == b"y" * 10 + b"PK\x01\x02"
    oversized = layout.read(layout.data_offset(1), 5, lambda i, off, n: b"z" * 1000, lambda i: 0)
    assert oversized == b"z" * 5


@pytest.mark.parametrize("entry", [
    ZipEntry(b"", 0, MTIME, 0o644), ZipEntry(b"/abs", 0, MTIME, 0o644),
    ZipEntry(b"a/../b", 0, MTIME, 0o644), ZipEntry(b"a//b", 0, MTIME, 0o644),
    ZipEntry(b"./a", 0, MTIME, 0o644), ZipEntry(b"dir/", 0, MTIME, 0o755, True),
    ZipEntry(b"n\0ul", 0, MTIME, 0o644), ZipEntry(b"neg", -1, MTIME, 0o644),
    ZipEntry(b"d", 5, MTIME, 0o755, True), ZipEntry(b"x" * 70_000, 0, MTIME, 0o644)])
def test_bad_entries_are_refused(entry: ZipEntry) -> None:
    with pytest.raises(ValueError):
        ZipLayout([entry])


def test_crc_is_asked_for_only_when_its_bytes_are_read() -> None:
    archive = Archive({f"dir{i // 100}/file{i:04}.txt": bytes([i % 251]) * 100
                       for i in range(1000)})
    layout = archive.layout
    assert archive.read(0, 10) and archive.crc_calls == []  # before the CRC field
    archive.read(0, 100)
    assert archive.crc_calls == [0]
    archive.crc_calls.clear()
    archive.read(layout.data_offset(500), 100)  # content only
    archive.read(layout.header_offset(500), 14)  # the header up to its CRC
    archive.read(layout.total_size - 22, 22)  # the end record
    assert archive.crc_calls == []
    archive.read(layout.header_offset(500) + 10, 5)
    assert archive.crc_calls == [500]
    archive.crc_calls.clear()
    archive.read(layout.central_offset, layout.central_size)
    assert archive.crc_calls == list(range(1000))


def test_empty_members_and_directories_need_no_crc() -> None:
    archive = Archive({"d": None, "e": b"", "d/f": b""})
    assert zipfile.ZipFile(io.BytesIO(archive.whole())).testzip() is None
    assert archive.crc_calls == []


def test_empty_archive() -> None:
    layout = ZipLayout([])
    data = layout.read(0, 1000, lambda *a: b"", lambda i: 0)
    assert layout.total_size == len(data) == 22
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.namelist() == []


# --- readers ---------------------------------------------------------------------------------


def test_zipfile_reads_it(sample: Archive, sample_zip: Path) -> None:
    with zipfile.ZipFile(sample_zip) as zf:
        check_with_zipfile(sample, zf)


def test_maiffs_zip_reader_reads_it(sample: Archive) -> None:
    index = ZipIndex.parse(sample.read, sample.layout.total_size)
    assert index.hidden == []
    for name, (data, entry) in sample.files().items():
        member = index.entry(name.encode())
        assert member.mtime_ns == entry.mtime_ns // 10**9 * 10**9 and member.mode == entry.mode
        assert open_member(sample.read, member).read(0, len(data) + 1) == data
    assert index.entry(b"docs").mode == 0o750


@needs_unzip
def test_unzip_tests_and_extracts_it(sample: Archive, sample_zip: Path, tmp_path: Path) -> None:
    done = subprocess.run(["unzip", "-t", sample_zip], capture_output=True, env=UTF8_ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "unzipped"
    done = subprocess.run(["unzip", "-q", sample_zip, "-d", out], capture_output=True,
                          env=UTF8_ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    check_extracted(sample, out)


@needs_bsdtar
def test_bsdtar_lists_and_extracts_it(sample: Archive, sample_zip: Path, tmp_path: Path) -> None:
    done = subprocess.run(["bsdtar", "-tf", sample_zip], capture_output=True, env=UTF8_ENV)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == sample.archive_names()
    out = tmp_path / "bsdtar"
    out.mkdir()
    done = subprocess.run(["bsdtar", "-xpf", sample_zip, "-C", out], capture_output=True,
                          env=UTF8_ENV)
    assert done.returncode == 0, done.stderr
    check_extracted(sample, out)


@needs_bsdtar
def test_bsdtar_extracts_it_streamed(sample: Archive, sample_zip: Path, tmp_path: Path) -> None:
    """From a pipe, bsdtar walks the local headers in order: they must carry sizes and CRCs."""
    out = tmp_path / "streamed"
    out.mkdir()
    done = subprocess.run(["bsdtar", "-xf", "-", "-C", out], input=sample_zip.read_bytes(),
                          capture_output=True, env=UTF8_ENV)
    assert done.returncode == 0, done.stderr
    for name, (data, _) in sample.files().items():
        assert (out / name).read_bytes() == data


# --- ZIP64 -------------------------------------------------------------------------------------


class LayoutFile(io.RawIOBase):
    """A seekable read-only file whose bytes come from ZipLayout.read."""

    def __init__(self, layout: ZipLayout, read_member, crc_of) -> None:
        self.layout, self.read_member, self.crc_of = layout, read_member, crc_of
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.layout.total_size}
        self.pos = base[whence] + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer) -> int:
        data = self.layout.read(self.pos, len(buffer), self.read_member, self.crc_of)
        buffer[:len(data)] = data
        self.pos += len(data)
        return len(data)


PERIOD = 65_521  # prime: a wrong offset shows unless it is off by a multiple of it
PATTERN = random.Random(7).randbytes(PERIOD)


_TILE = PATTERN * (16 * MiB // PERIOD + 2)  # zipfile reads 16 MiB at a time


def pattern(offset: int, size: int) -> bytes:
    """Content at offset of a member made of PATTERN repeated."""
    start = offset % PERIOD
    if start + size <= len(_TILE):
        return _TILE[start:start + size]
    return (PATTERN * ((start + size) // PERIOD + 1))[start:start + size]


def crc_of_generated(size: int, generate, chunk: int = 16 * MiB) -> int:
    crc = 0
    for offset in range(0, size, chunk):
        crc = zlib.crc32(generate(offset, min(chunk, size - offset)), crc)
    return crc


BIG = 5 * GiB


def big_layout() -> tuple[ZipLayout, list[bytes]]:
    small = [b"first member\n", b"after the big one, past 4 GiB\n"]
    entries = [ZipEntry(b"a.txt", len(small[0]), MTIME, 0o644),
               ZipEntry(b"big/big.bin", BIG, MTIME, 0o600),
               ZipEntry(b"z.txt", len(small[1]), MTIME, 0o644)]
    return ZipLayout(entries), small


def test_zip64_big_member_headers_and_zipfile() -> None:
    layout, small = big_layout()
    crcs: dict[int, int] = {}

    def read_member(index: int, offset: int, size: int) -> bytes:
        return pattern(offset, size) if index == 1 else small[index // 2][offset:offset + size]

    def crc_of(index: int) -> int:
        if index not in crcs:
            crcs[index] = (crc_of_generated(BIG, pattern) if index == 1
                           else zlib.crc32(small[index // 2]))
        return crcs[index]

    assert layout.zip64 and layout.header_offset(2) > 4 * GiB
    # local header of the big member: 0xFFFFFFFF sizes, ZIP64 extra with both, version 4.5
    start = layout.header_offset(1)
    head = layout.read(start, layout.data_offset(1) - start, read_member, lambda i: 0)
    sig, version, _, _, _, _, _, csize, usize, name_len, extra_len = struct.unpack_from(
        "<4sHHHHHIIIHH", head)
    assert (sig, version, csize, usize) == (b"PK\x03\x04", 45, 0xFFFFFFFF, 0xFFFFFFFF)
    assert extras(head[30 + name_len:])[1] == struct.pack("<QQ", BIG, BIG)
    # the small member past 4 GiB has a plain local header, and a ZIP64 offset in the directory
    fixed = struct.unpack_from("<4sHHHHHIIIHH", layout.read(layout.header_offset(2), 30,
                                                            read_member, crc_of))
    assert fixed[7:9] == (len(small[1]), len(small[1])) and fixed[1] == 45
    # the end: ZIP64 end record, locator, end record with 0xFFFFFFFF offset
    tail = layout.read(layout.total_size - 98, 98, read_member, lambda i: 0)
    assert tail[:4] == b"PK\x06\x06" and tail[56:60] == b"PK\x06\x07"
    assert tail[76:80] == b"PK\x05\x06"
    assert struct.unpack_from("<Q", tail, 64)[0] == layout.total_size - 98
    assert struct.unpack_from("<QQ", tail, 40) == (layout.central_size, layout.central_offset)

    with zipfile.ZipFile(io.BufferedReader(LayoutFile(layout, read_member, crc_of))) as zf:
        infos = zf.infolist()
        assert [i.filename for i in infos] == ["a.txt", "big/big.bin", "z.txt"]
        assert infos[1].file_size == infos[1].compress_size == BIG
        assert [i.header_offset for i in infos] == [layout.header_offset(i) for i in range(3)]
        assert zf.read("a.txt") == small[0] and zf.read("z.txt") == small[1]
        with zf.open("big/big.bin") as member:
            assert member.read(MiB) == pattern(0, MiB)
        with zf.open("big/big.bin") as member:  # zipfile streams up to there, checking the CRC
            member.seek(BIG - MiB)
            assert member.read() == pattern(BIG - MiB, MiB)

    # maiffs' own reader, which seeks for real
    index = ZipIndex.parse(lambda o, n: layout.read(o, n, read_member, crc_of),
                           layout.total_size)
    member = index.entry(b"big/big.bin")
    assert member.size == BIG
    reader = open_member(lambda o, n: layout.read(o, n, read_member, crc_of), member)
    assert reader.read(BIG - MiB, 2 * MiB) == pattern(BIG - MiB, MiB)


@needs_unzip
@needs_bsdtar
def test_zip64_big_member_as_a_sparse_file(tmp_path: Path) -> None:
    """The 5 GiB member is zeros, left as a hole: unzip and bsdtar read the real file (not
    `unzip -t`: checking 5 GiB takes it half a minute)."""
    layout, small = big_layout()
    zeros = bytes(16 * MiB)

    def read_member(index: int, offset: int, size: int) -> bytes:
        return zeros[:size] if index == 1 else small[index // 2][offset:offset + size]

    big_crc = crc_of_generated(BIG, lambda o, n: zeros[:n])

    def crc_of(index: int) -> int:
        return big_crc if index == 1 else zlib.crc32(small[index // 2])

    path = tmp_path / "big.zip"
    try:
        check_sparse_big_zip(path, layout, small, read_member, crc_of, big_crc, tmp_path)
    finally:
        path.unlink(missing_ok=True)  # no 5 GiB apparent size left behind in the basetemp


def check_sparse_big_zip(path: Path, layout: ZipLayout, small: list[bytes], read_member,
                         crc_of, big_crc: int, tmp_path: Path) -> None:
    with open(path, "wb") as f:
        f.write(layout.read(0, layout.data_offset(1), read_member, crc_of))
        f.seek(layout.data_offset(1) + BIG)
        rest = layout.total_size - f.tell()
        f.write(layout.read(f.tell(), rest, read_member, crc_of))
    assert path.stat().st_size == layout.total_size
    if path.stat().st_blocks * 512 > 64 * MiB:
        pytest.skip("this file system does not keep holes")
    done = subprocess.run(["unzip", "-lv", path], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{big_crc:08x}" in done.stdout and str(BIG) in done.stdout
    done = subprocess.run(["unzip", "-p", path, "z.txt"], capture_output=True)
    assert done.returncode == 0 and done.stdout == small[1]
    done = subprocess.run(["bsdtar", "-tvf", path], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [line.split()[-1] for line in done.stdout.splitlines()] == [
        "a.txt", "big/big.bin", "z.txt"]
    assert str(BIG) in done.stdout.splitlines()[1]
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run(["bsdtar", "-xf", path, "-C", out, "z.txt"], capture_output=True)
    assert done.returncode == 0 and (out / "z.txt").read_bytes() == small[1]


def test_zip64_by_count_threshold() -> None:
    def layout(n: int) -> ZipLayout:
        return ZipLayout([ZipEntry(b"f%d" % i, 0, MTIME, 0o644) for i in range(n)])

    assert not layout(65_534).zip64
    assert layout(65_535).zip64


def test_zip64_threshold_by_member_size() -> None:
    layout = ZipLayout([ZipEntry(b"a", 0xFFFFFFFE, MTIME, 0o644),
                        ZipEntry(b"b", 0xFFFFFFFF, MTIME, 0o644)])
    versions = [struct.unpack_from("<H", layout.read(layout.header_offset(i), 30,
                                                     lambda *a: b"", lambda i: 0), 4)[0]
                for i in range(2)]
    assert versions == [10, 45]


@pytest.fixture(scope="module")
def many() -> Archive:
    contents: dict[str, bytes | None] = {}
    for i in range(70_000):
        if i % 1000 == 0:
            contents[f"d{i // 1000:02}"] = None
        contents[f"d{i // 1000:02}/f{i:05}.txt"] = b"%d\n" % i
    return Archive(contents)


@pytest.fixture(scope="module")
def many_zip(many: Archive, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("many") / "many.zip"
    with open(path, "wb") as f:
        for offset in range(0, many.layout.total_size, MiB):
            f.write(many.read(offset, MiB))
    return path


def test_zip64_by_count_zipfile(many: Archive, many_zip: Path) -> None:
    assert many.layout.zip64
    assert many_zip.stat().st_size == many.layout.total_size
    tail = many_zip.read_bytes()[-22:]
    assert struct.unpack_from("<HH", tail, 8) == (0xFFFF, 0xFFFF)
    with zipfile.ZipFile(many_zip) as zf:
        names = zf.namelist()
        assert len(names) == 70_070 and names == many.archive_names()
        for name in ("d00/f00000.txt", "d35/f35123.txt", "d69/f69999.txt"):
            assert zf.read(name) == b"%d\n" % int(name[-9:-4])
        assert zf.testzip() is None
    index = ZipIndex.parse(many.read, many.layout.total_size)
    assert len(index.listdir(b"d42")) == 1000


@needs_unzip
def test_zip64_by_count_unzip(many_zip: Path) -> None:
    done = subprocess.run(["unzip", "-tq", many_zip], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_bsdtar
def test_zip64_by_count_bsdtar(many: Archive, many_zip: Path) -> None:
    done = subprocess.run(["bsdtar", "-tf", many_zip], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == many.archive_names()


def test_hundred_thousand_members_are_cheap_to_lay_out_and_read() -> None:
    n = 100_000
    start = time.monotonic()
    layout = ZipLayout([ZipEntry(b"dir%03d/file%06d" % (i // 1000, i), i % 50, MTIME, 0o644)
                        for i in range(n)])

    def content(index: int, offset: int, size: int) -> bytes:
        return bytes([index % 256]) * size

    def crc_of(index: int) -> int:
        return zlib.crc32(content(index, 0, index % 50))

    for i in random.Random(3).sample(range(n), 200):
        piece = layout.read(layout.header_offset(i), 200, content, crc_of)
        assert piece[:4] == b"PK\x03\x04"
    tail = layout.read(layout.total_size - 22, 22, content, crc_of)
    assert tail[:4] == b"PK\x05\x06"
    with zipfile.ZipFile(io.BufferedReader(LayoutFile(layout, content, crc_of))) as zf:
        for i in (0, 49, 54_321, n - 1):
            assert zf.read("dir%03d/file%06d" % (i // 1000, i)) == content(i, 0, i % 50)
    assert time.monotonic() - start < 30


# --- properties ------------------------------------------------------------------------------

_component = st.text(alphabet="abcxyz_-. 0123456789é", min_size=1, max_size=6).filter(
    lambda s: s not in (".", ".."))
_paths = st.lists(_component, min_size=1, max_size=3).map("/".join)


@st.composite
def _trees(draw) -> tuple[dict[str, bytes | None], dict[str, int], dict[str, int]]:
    """Members in random order; a name that is a prefix of another is a directory."""
    raw = draw(st.dictionaries(_paths, st.one_of(st.none(), st.integers(0, 5000)), max_size=10))
    contents: dict[str, bytes | None] = {}
    for name, size in raw.items():
        is_dir = size is None or any(o.startswith(name + "/") for o in raw)
        contents[name] = None if is_dir else random.Random(name).randbytes(size)
    modes = {n: draw(st.sampled_from([0o600, 0o644, 0o755, 0o700])) for n in contents}
    mtimes = {n: draw(st.integers(-2**33, 2**34)) * 10**9 + draw(st.integers(0, 10**9 - 1))
              for n in contents}
    return contents, modes, mtimes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=_trees(), rng=st.randoms(use_true_random=False))
def test_random_trees_round_trip(tree, rng: random.Random) -> None:
    contents, modes, mtimes = tree
    archive = Archive(contents, modes, mtimes)
    full = archive.whole()
    assert len(full) == archive.layout.total_size
    assert piecewise(archive.read, len(full), rng) == full
    with zipfile.ZipFile(io.BytesIO(full)) as zf:
        check_with_zipfile(archive, zf)
