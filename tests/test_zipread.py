"""The zip reading layer (maiffs.archive): archives built with zipfile and by hand, read through
read_at only, checked against zipfile's own reading, and hostile or mutated archives."""

from __future__ import annotations

import io
import random
import stat
import struct
import time
import tracemalloc
import zipfile
import zlib
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maiffs.archive import (BadMember, BadZip, Directory, Limits, Member, ZipIndex,
                            open_member)

# --- helpers ---------------------------------------------------------------------------------


class Source:
    """An archive in memory behind read_at, counting calls and checking they stay in bounds."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.calls: list[tuple[int, int]] = []

    def read_at(self, offset: int, size: int) -> bytes:
        assert 0 <= offset and 0 <= size and offset + size <= len(self.data), (offset, size)
        self.calls.append((offset, size))
        return self.data[offset:offset + size]

    def bytes_read(self) -> int:
        return sum(size for _, size in self.calls)

    def index(self, limits: Limits = Limits()) -> ZipIndex:
        return ZipIndex.parse(self.read_at, len(self.data), limits)

    def content(self, member: Member, chunk: int = 1 << 16) -> bytes:
        reader = open_member(self.read_at, member)
        parts, offset = [], 0
        while offset < member.size:
            piece = reader.read(offset, chunk)
            assert piece, "a read before the end returned nothing"
            parts.append(piece)
            offset += len(piece)
        return b"".join(parts)


def walk(index: ZipIndex, path: bytes = b"") -> dict[bytes, Member | Directory]:
    """Every entry under path, by full path, through listdir and lookup only."""
    found = {}
    for name, entry in index.listdir(path):
        full = path + b"/" + name if path else name
        assert index.lookup(path, name) is entry
        assert index.entry(full) is entry
        found[full] = entry
        if isinstance(entry, Directory):
            assert entry.path == full
            found.update(walk(index, full))
        else:
            assert entry.name == full and not entry.is_dir
    return found


def files_of(index: ZipIndex) -> dict[bytes, Member]:
    return {p: e for p, e in walk(index).items() if isinstance(e, Member)}


def deflate(data: bytes, level: int = 6) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def dos_mtime_ns(date_time: tuple) -> int:
    return int(time.mktime((*date_time, 0, 0, -1))) * 1_000_000_000


U32 = 0xFFFFFFFF


@dataclass
class Raw:
    """One member of a hand-built archive: every field a hostile writer could get wrong."""

    name: bytes
    content: bytes = b""
    method: int = 0
    payload: bytes | None = None  # the bytes stored; default content, deflated for method 8
    size: int | None = None  # declared sizes and CRC; default from content and payload
    csize: int | None = None
    crc: int | None = None
    flags: int = 0
    made_by: int = 3 << 8 | 20  # Unix
    attrs: int = (stat.S_IFREG | 0o644) << 16
    date: int = (2020 - 1980) << 9 | 6 << 5 | 15
    dtime: int = 12 << 11 | 34 << 5 | 28
    extra: bytes = b""  # central directory extra field
    local_extra: bytes = b""
    offset: int | None = None  # declared local header offset; default where it was written
    zip64: bool = False  # sizes and offset as 0xFFFFFFFF plus a ZIP64 extra field


def build(raws: list[Raw], *, comment: bytes = b"", count: int | None = None,
          cd_offset: int | None = None, cd_size: int | None = None, zip64_end: bool = False,
          disk: int = 0) -> bytes:
    out = bytearray()
    central = bytearray()
    for r in raws:
        payload = r.payload
        if payload is None:
            payload = deflate(r.content) if r.method == 8 else r.content
        size = len(r.content) if r.size is None else r.size
        csize = len(payload) if r.csize is None else r.csize
        crc = zlib.crc32(r.content) if r.crc is None else r.crc
        offset = len(out) if r.offset is None else r.offset
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, r.flags, r.method, r.dtime,
                           r.date, crc, min(csize, U32), min(size, U32), len(r.name),
                           len(r.local_extra)) + r.name + r.local_extra + payload
        extra = r.extra
        if r.zip64:
            extra = struct.pack("<HHQQQ", 1, 24, size, csize, offset) + extra
            size = csize = offset = U32
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", r.made_by, 20, r.flags,
                               r.method, r.dtime, r.date, crc, csize, size, len(r.name),
                               len(extra), 0, 0, 0, r.attrs, offset) + r.name + extra
    start = len(out) if cd_offset is None else cd_offset
    size = len(central) if cd_size is None else cd_size
    n = len(raws) if count is None else count
    out += central
    if zip64_end:
        record = len(out)
        out += struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, disk, disk, n, n, size,
                           start)
        out += struct.pack("<4sIQI", b"PK\x06\x07", 0, record, 1)
        out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, U32,
                           U32, len(comment)) + comment
    else:
        out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", disk, disk, n, n, size, start,
                           len(comment)) + comment
    return bytes(out)


def sample_archive() -> bytes:
    """A small archive with every feature zipfile can write."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("top.txt", b"top level\n")
        z.writestr("train/0001.jpg", bytes(range(256)) * 40, compress_type=zipfile.ZIP_DEFLATED)
        z.writestr("train/0002.jpg", b"", compress_type=zipfile.ZIP_DEFLATED)
        z.mkdir("empty-dir")
        z.writestr("a/b/c/deep.txt", b"deep " * 1000, compress_type=zipfile.ZIP_DEFLATED)
        z.writestr("données/café ☕.txt", "unicode ✓".encode())
        z.writestr("empty", b"")
        info = zipfile.ZipInfo("commented.bin", date_time=(2001, 2, 3, 4, 5, 6))
        info.comment = b"a member comment"
        info.extra = struct.pack("<HH", 0xCAFE, 4) + b"junk"
        info.external_attr = (stat.S_IFREG | 0o755) << 16
        z.writestr(info, b"with comment and extra", compress_type=zipfile.ZIP_DEFLATED)
        with z.open("forced64.txt", "w", force_zip64=True) as f:
            f.write(b"zip64 local header " * 50)
        z.comment = b"the archive comment"
    return buf.getvalue()


# --- valid archives against zipfile ----------------------------------------------------------


def check_against_zipfile(data: bytes) -> ZipIndex:
    src = Source(data)
    index = src.index()
    files = files_of(index)
    tree = walk(index)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        infos = [i for i in z.infolist() if not i.is_dir()]
        assert set(files) == {i.filename.encode() for i in infos}
        for info in z.infolist():
            name = info.filename.rstrip("/").encode()
            entry = tree[name]
            member = entry.member if isinstance(entry, Directory) else entry
            assert isinstance(entry, Directory) == info.is_dir()
            assert member.size == info.file_size
            assert member.compressed_size == info.compress_size
            assert member.crc32 == info.CRC
            assert member.method == info.compress_type
            assert member.mtime_ns == dos_mtime_ns(info.date_time)
            expected_mode = (info.external_attr >> 16) & 0o777 or (0o755 if info.is_dir()
                                                                   else 0o644)
            assert member.mode == expected_mode
            assert entry.mode == expected_mode
            if not info.is_dir():
                assert src.content(member) == z.read(info)
                assert src.content(member, chunk=777) == z.read(info)
        assert index.comment == z.comment
    for path in {p.rpartition(b"/")[0] for p in tree}:
        assert isinstance(index.entry(path), Directory)  # implied parents exist
    assert index.hidden == []
    return index


def test_matches_zipfile_listing_sizes_times_and_content():
    index = check_against_zipfile(sample_archive())
    assert [name for name, _ in index.listdir(b"")] == sorted(
        [b"top.txt", b"train", b"empty-dir", b"a", b"donn\xc3\xa9es", b"empty",
         b"commented.bin", b"forced64.txt"])
    assert isinstance(index.entry(b"a/b"), Directory)
    assert index.entry(b"a/b").member is None and index.entry(b"a/b").mtime_ns is None
    assert index.entry(b"empty-dir").member is not None
    assert index.listdir(b"empty-dir") == []
    assert index.entry(b"commented.bin").mode == 0o755


def test_lookup_entry_and_listdir_api():
    index = Source(sample_archive()).index()
    assert isinstance(index.entry(b""), Directory) and index.entry(b"").path == b""
    assert index.entry(b"/train/") is index.entry(b"train")
    assert index.entry(b"train/0001.jpg") is index.lookup(b"train", b"0001.jpg")
    assert index.lookup(b"train", b"nope") is None
    assert index.lookup(b"no/such/dir", b"x") is None
    assert index.entry(b"top.txt/x") is None
    with pytest.raises(KeyError):
        index.listdir(b"top.txt")
    listing = index.listdir(b"train")
    listing.clear()  # a copy: the index is not changed
    assert len(index.listdir(b"train")) == 2


def test_empty_archive():
    buf = io.BytesIO()
    zipfile.ZipFile(buf, "w").close()
    index = Source(buf.getvalue()).index()
    assert index.listdir(b"") == [] and index.members == []


def test_hand_built_zip64_extra_and_end_record_match_zipfile():
    content = b"sixty-four " * 300
    data = build([Raw(b"big/one.txt", content, method=8, zip64=True),
                  Raw(b"two.txt", b"stored", zip64=True),
                  Raw(b"three.txt", b"plain")], zip64_end=True)
    files = files_of(Source(data).index())
    with zipfile.ZipFile(io.BytesIO(data)) as z:  # the builder writes what zipfile reads
        assert z.read("big/one.txt") == content
        for info in z.infolist():
            member = files[info.filename.encode()]
            assert (member.size, member.compressed_size, member.header_offset) == (
                info.file_size, info.compress_size, info.header_offset)
    assert Source(data).content(files[b"big/one.txt"]) == content
    assert Source(data).content(files[b"two.txt"]) == b"stored"


def test_100000_members_parse_with_a_few_reads_and_zip64_end_record():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(100_000):
            z.writestr(f"d{i % 100:02}/f{i:06}", str(i).encode())
    data = buf.getvalue()
    assert b"PK\x06\x06" in data[-200:]  # more than 65535 members: zipfile wrote ZIP64 records
    src = Source(data)
    index = src.index()
    assert len(src.calls) <= 3
    assert len(index.members) == 100_000
    assert len(index.listdir(b"")) == 100
    assert len(index.listdir(b"d42")) == 1000
    src.calls.clear()
    for i in (0, 4242, 65535, 65536, 99_999):
        member = index.entry(f"d{i % 100:02}/f{i:06}".encode())
        assert src.content(member) == str(i).encode()
    assert len(src.calls) == 10  # the local header and the data of each, nothing else


# --- reading at any offset -------------------------------------------------------------------


def compressible(n: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefgh") for _ in range(rng.randint(1, 9))) for _ in range(50)]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words) + b" "
    return bytes(out[:n])


@pytest.mark.parametrize("window", [0, 4096, 1 << 20])
def test_random_offset_reads_equal_slices(window):
    content = compressible(700_000)
    data = build([Raw(b"d", content, method=8), Raw(b"s", content)])
    src = Source(data)
    files = files_of(src.index())
    rng = random.Random(window)
    for name in (b"d", b"s"):
        reader = open_member(src.read_at, files[name], Limits(rewind_window=window))
        assert reader.size == len(content)
        for _ in range(150):
            offset = rng.randrange(0, len(content) + 100)
            size = rng.choice([0, 1, 100, 4096, 65536, 300_000])
            assert reader.read(offset, size) == content[offset:offset + size], (offset, size)


def test_sequential_deflate_reads_are_linear_and_small_rewinds_are_free():
    content = compressible(3_000_000, seed=2)
    data = build([Raw(b"d", content, method=8)])
    src = Source(data)
    member = files_of(src.index())[b"d"]
    reader = open_member(src.read_at, member)
    src.calls.clear()
    got = b"".join(reader.read(off, 16384) for off in range(0, len(content), 16384))
    assert got == content
    assert src.bytes_read() == member.compressed_size  # every compressed byte read once
    before = src.bytes_read()
    assert reader.read(len(content) - 200_000, 1000) == content[-200_000:-199_000]
    assert src.bytes_read() == before  # served from the rewind window
    assert reader.read(10, 5) == content[10:15]  # far back: starts again from the beginning
    assert src.calls[-1][1] <= 65536 and src.bytes_read() > before


def test_reads_are_clamped_at_the_end():
    src = Source(build([Raw(b"s", b"0123456789"), Raw(b"d", b"0123456789", method=8)]))
    for member in files_of(src.index()).values():
        reader = open_member(src.read_at, member)
        assert reader.read(7, 100) == b"789"
        assert reader.read(10, 5) == b"" and reader.read(50, 5) == b""
        assert reader.read(3, 0) == b""
        with pytest.raises(ValueError):
            reader.read(-1, 5)


# --- attributes -------------------------------------------------------------------------------


def test_times_from_extended_timestamp_and_dos_fields():
    unix_time = 1_234_567_890
    ext = struct.pack("<HHBi", 0x5455, 5, 1, unix_time)
    no_mtime = struct.pack("<HHB", 0x5455, 1, 0)  # the flag says no mtime: DOS time is used
    files = files_of(Source(build([Raw(b"ext", extra=ext), Raw(b"dos", extra=no_mtime),
                                   Raw(b"plain")])).index())
    assert files[b"ext"].mtime_ns == unix_time * 1_000_000_000
    assert files[b"dos"].mtime_ns == dos_mtime_ns((2020, 6, 15, 12, 34, 56))
    assert files[b"plain"].mtime_ns == dos_mtime_ns((2020, 6, 15, 12, 34, 56))


def test_modes_and_types_from_external_attributes():
    dos = 0 << 8 | 20
    data = build([
        Raw(b"exec", attrs=(stat.S_IFREG | 0o4755) << 16),  # setuid dropped
        Raw(b"dosfile", made_by=dos, attrs=0x20),
        Raw(b"dosdir/", made_by=dos, attrs=0x10),
        Raw(b"unixdir", attrs=(stat.S_IFDIR | 0o700) << 16),  # a directory without a '/'
        Raw(b"link", b"/etc/passwd", attrs=(stat.S_IFLNK | 0o777) << 16),
        Raw(b"noperm", attrs=stat.S_IFREG << 16),
    ])
    src = Source(data)
    index = src.index()
    assert index.entry(b"exec").mode == 0o755
    assert index.entry(b"dosfile").mode == 0o644
    assert isinstance(index.entry(b"dosdir"), Directory) and index.entry(b"dosdir").mode == 0o755
    assert isinstance(index.entry(b"unixdir"), Directory) and index.entry(b"unixdir").mode == 0o700
    link = index.entry(b"link")
    assert isinstance(link, Member) and link.mode == 0o777
    assert src.content(link) == b"/etc/passwd"  # a regular file holding the target
    assert index.entry(b"noperm").mode == 0o644


# --- hostile names and duplicates ------------------------------------------------------------


def test_hostile_names_are_normalized_or_hidden():
    names = [b"../evil", b"a/../../evil2", b"ok/../inside", b"..\\evil3", b"/abs/file",
             b"./dot/./file", b"a//b", b"win\\dir\\file", b"nul\x00name", b"x" * 256 + b"/f",
             (b"d" * 200 + b"/") * 21 + b"f", b"/", b"", b"..", b"./", b"fine"]
    src = Source(build([Raw(n, n) for n in names]))
    index = src.index()
    files = files_of(index)
    assert set(files) == {b"abs/file", b"dot/file", b"a/b", b"win/dir/file", b"fine"}
    assert src.content(files[b"win/dir/file"]) == b"win\\dir\\file"
    assert src.content(files[b"abs/file"]) == b"/abs/file"
    hidden = dict(index.hidden)
    for name in (b"../evil", b"a/../../evil2", b"ok/../inside", b"..\\evil3", b".."):
        assert hidden[name] == "'..' component"
    assert hidden[b"nul\x00name"] == "NUL byte in name"
    assert "component longer" in hidden[b"x" * 256 + b"/f"]
    assert "path longer" in hidden[(b"d" * 200 + b"/") * 21 + b"f"]
    assert hidden[b""] == "empty name"
    assert b"/" not in hidden and b"./" not in hidden  # the root itself: nothing to hide
    assert [name for name, _ in index.listdir(b"")] == [b"a", b"abs", b"dot", b"fine", b"win"]


def test_duplicates_last_wins_and_directories_beat_files():
    data = build([
        Raw(b"dup", b"first"), Raw(b"dup", b"second"),
        Raw(b"./norm", b"one"), Raw(b"norm", b"two"),
        Raw(b"x/", attrs=(stat.S_IFDIR | 0o700) << 16), Raw(b"x", b"file x"),
        Raw(b"y", b"file y"), Raw(b"y/z", b"under y"),
        Raw(b"d/", attrs=(stat.S_IFDIR | 0o700) << 16),
        Raw(b"d/", attrs=(stat.S_IFDIR | 0o750) << 16),
    ])
    src = Source(data)
    index = src.index()
    assert src.content(index.entry(b"dup")) == b"second"
    assert src.content(index.entry(b"norm")) == b"two"
    assert isinstance(index.entry(b"x"), Directory) and index.entry(b"x").mode == 0o700
    assert isinstance(index.entry(b"y"), Directory)
    assert src.content(index.entry(b"y/z")) == b"under y"
    assert index.entry(b"d").mode == 0o750
    assert sorted(index.hidden) == sorted([
        (b"dup", "a later member has the same path"),
        (b"./norm", "a later member has the same path"),
        (b"d/", "a later member has the same path"),
        (b"x", "a directory has the same path"),
        (b"y", "a directory has the same path"),
    ])


# --- hostile members ---------------------------------------------------------------------------


@pytest.mark.parametrize("raw, why", [
    (Raw(b"secret", b"data", flags=1), "encrypted"),
    (Raw(b"m99", b"data", method=99), "method 99"),
    (Raw(b"bz2", b"data", method=12), "method 12"),
])
def test_encrypted_and_unsupported_members_are_listed_but_unreadable(raw, why):
    src = Source(build([raw, Raw(b"ok", b"fine")]))
    index = src.index()
    member = index.entry(raw.name)
    assert isinstance(member, Member) and member.size == 4
    with pytest.raises(BadMember, match=why):
        open_member(src.read_at, member)
    assert src.content(index.entry(b"ok")) == b"fine"


def test_deflate_bomb_output_is_capped_at_the_declared_size():
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = b"".join(bomb.compress(bytes(1 << 20)) for _ in range(48)) + bomb.flush()
    assert len(payload) < 65536  # one read_at chunk would inflate to 48 MiB
    honest_crc = Raw(b"liar", method=8, payload=payload, size=1000, crc=zlib.crc32(bytes(1000)))
    real_crc = Raw(b"bomb", method=8, payload=payload, size=1000,
                   crc=zlib.crc32(bytes(48 << 20)))
    src = Source(build([honest_crc, real_crc]))
    files = files_of(src.index())
    tracemalloc.start()
    try:
        liar = open_member(src.read_at, files[b"liar"])
        assert liar.read(0, 10 ** 9) == bytes(1000)
        bomb_reader = open_member(src.read_at, files[b"bomb"])
        assert bomb_reader.read(0, 500) == bytes(500)
        with pytest.raises(BadMember, match="CRC-32"):
            bomb_reader.read(500, 10 ** 9)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_bad_data_is_bad_member_and_stays_bad():
    content = compressible(200_000, seed=3)
    good = deflate(content)
    data = build([
        Raw(b"crc-stored", content, crc=12345),
        Raw(b"crc-deflated", content, method=8, crc=12345),
        Raw(b"short", content, method=8, size=len(content) + 10),
        Raw(b"garbage", method=8, payload=b"\xff" * 100, size=1000),
        Raw(b"cut", content, method=8, payload=good[:len(good) // 2]),
        Raw(b"sizes", b"abc", csize=2, payload=b"ab"),
        Raw(b"empty-crc", b"", crc=7),
    ])
    src = Source(data)
    files = files_of(src.index())
    for name, why in [(b"crc-stored", "CRC-32"), (b"crc-deflated", "CRC-32"),
                      (b"short", "deflate stream ends"), (b"garbage", "corrupt deflate"),
                      (b"cut", "compressed data ends")]:
        reader = open_member(src.read_at, files[name])
        if name != b"garbage":
            assert reader.read(0, 10) == content[:10]  # a good start reads fine
        with pytest.raises(BadMember, match=why):
            src.content(files[name])  # fresh reader, all of it
        with pytest.raises(BadMember, match=why):
            while True:
                reader.read(0, 10 ** 7)  # the same reader to the end
        with pytest.raises(BadMember, match=why):
            reader.read(0, 10)  # and it stays failed
    with pytest.raises(BadMember, match="compressed size 2 and size 3"):
        open_member(src.read_at, files[b"sizes"])
    with pytest.raises(BadMember, match="CRC-32"):
        open_member(src.read_at, files[b"empty-crc"])


def test_wrong_local_header_offsets_are_bad_member():
    first = Raw(b"first", b"1" * 100)
    data = build([first, Raw(b"past-end", b"x", offset=10 ** 9),
                  Raw(b"mid-data", b"y", offset=40),
                  Raw(b"at-cd", b"z", offset=0)])
    cd_start = data.index(b"PK\x01\x02")
    data = build([first, Raw(b"past-end", b"x", offset=10 ** 9),
                  Raw(b"mid-data", b"y", offset=40),
                  Raw(b"at-cd", b"z", offset=cd_start),
                  Raw(b"ok", b"fine")])
    src = Source(data)
    files = files_of(src.index())
    assert set(files) == {b"first", b"past-end", b"mid-data", b"at-cd", b"ok"}
    with pytest.raises(BadMember, match="does not fit"):
        open_member(src.read_at, files[b"past-end"])
    with pytest.raises(BadMember, match="no local header signature"):
        open_member(src.read_at, files[b"mid-data"])
    with pytest.raises(BadMember, match="does not fit"):
        open_member(src.read_at, files[b"at-cd"])
    with pytest.raises(BadMember, match="run past"):
        open_member(src.read_at, files[b"first"])  # "mid-data" claims a header inside its data
    assert src.content(files[b"ok"]) == b"fine"


def test_overlapping_members_are_bad_member():
    victim = Raw(b"victim", b"v" * 50)
    data = build([victim, Raw(b"twin", b"v" * 50, offset=0), Raw(b"last", b"L" * 10)])
    src = Source(data)
    files = files_of(src.index())
    with pytest.raises(BadMember, match="does not fit"):
        open_member(src.read_at, files[b"victim"])  # shares its header with a later member
    assert src.content(files[b"twin"]) == b"v" * 50
    greedy = build([Raw(b"greedy", b"g" * 10, csize=10 + 30 + 4 + 5), Raw(b"next", b"n" * 5)])
    src = Source(greedy)
    files = files_of(src.index())
    with pytest.raises(BadMember, match="run past"):
        open_member(src.read_at, files[b"greedy"])  # its data would cover the next member
    assert src.content(files[b"next"]) == b"n" * 5


def test_huge_declared_sizes_are_refused_without_allocating():
    stream = deflate(b"small")
    data = build([Raw(b"huge-stored", b"tiny", zip64=True, size=2 ** 40, csize=2 ** 40),
                  Raw(b"huge-deflated", b"small", method=8, payload=stream, zip64=True,
                      size=2 ** 40)], zip64_end=True)
    src = Source(data)
    files = files_of(src.index())
    assert files[b"huge-stored"].size == 2 ** 40
    with pytest.raises(BadMember, match="run past"):
        open_member(src.read_at, files[b"huge-stored"])
    reader = open_member(src.read_at, files[b"huge-deflated"])
    assert reader.read(0, 5) == b"small"
    with pytest.raises(BadMember, match="ends after 5 of"):
        reader.read(5, 1 << 16)
    for kw in [dict(count=2 ** 60), dict(cd_size=2 ** 60), dict(cd_offset=2 ** 62)]:
        src = Source(build([Raw(b"a", b"a")], zip64_end=True, **kw))
        with pytest.raises(BadZip):
            src.index()
        assert src.bytes_read() < 70_000  # the tail only


# --- hostile archives ------------------------------------------------------------------------


def test_every_truncation_is_bad_zip():
    data = sample_archive()
    for cut in range(len(data)):
        with pytest.raises(BadZip):
            Source(data[:cut]).index()


def test_bytes_removed_before_the_central_directory_are_bad_zip():
    data = sample_archive()
    with pytest.raises(BadZip, match="runs past"):
        Source(data[:100] + data[120:]).index()


@pytest.mark.parametrize("kw, why", [
    (dict(cd_offset=10 ** 6), "runs past"),
    (dict(cd_size=10 ** 6), "runs past"),
    (dict(count=3), "3 members cannot fit"),
    (dict(count=1), "declares 1 members but holds 2"),
    (dict(disk=1), "several disks"),
    (dict(cd_size=92), "declares 2 members but holds 0"),  # starts inside the first entry
])
def test_broken_end_records_are_bad_zip(kw, why):
    with pytest.raises(BadZip, match=why):
        Source(build([Raw(b"a", b"aa"), Raw(b"b", b"bb")], **kw)).index()


def test_central_directory_entry_running_past_its_end_is_bad_zip():
    data = bytearray(build([Raw(b"a", b"aa"), Raw(b"b", b"bb")]))
    cd = data.index(b"PK\x01\x02", data.index(b"PK\x01\x02") + 1)
    data[cd + 28:cd + 30] = struct.pack("<H", 500)  # name length of the second entry
    with pytest.raises(BadZip, match="entry 1 runs past"):
        Source(bytes(data)).index()


def test_limits_refuse_big_central_directories_and_many_members():
    data = build([Raw(b"a" * 40, b"aa"), Raw(b"b", b"bb")])
    with pytest.raises(BadZip, match="over the limit"):
        Source(data).index(Limits(max_directory_bytes=100))
    with pytest.raises(BadZip, match="over the limit"):
        Source(data).index(Limits(max_members=1))
    assert len(Source(data).index(Limits(max_directory_bytes=200, max_members=2)).members) == 2


def test_not_a_zip_is_bad_zip():
    for data in [b"", b"PK", b"hello world" * 10, bytes(100_000)]:
        with pytest.raises(BadZip):
            Source(data).index()


def test_fake_end_record_in_the_comment_and_trailing_data():
    fake = b"PK\x05\x06" + bytes(18)  # an empty archive's end record, inside the comment
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("real", b"content")
        z.comment = b"look: " + fake + b" end"
    index = Source(buf.getvalue()).index()
    assert [name for name, _ in index.listdir(b"")] == [b"real"]
    assert index.comment == b"look: " + fake + b" end"
    plain = io.BytesIO()
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("real", b"content")
    appended = Source(plain.getvalue() + b"trailing garbage")
    assert [name for name, _ in appended.index().listdir(b"")] == [b"real"]


def test_prepended_data_shifts_offsets_like_zipfile():
    data = b"#!/bin/sh\nexit 0\n" * 20 + sample_archive()
    check_against_zipfile(data)


def test_zip64_locator_without_record_is_bad_zip():
    data = bytearray(build([Raw(b"a", b"a")], zip64_end=True))
    record = data.index(b"PK\x06\x06")
    data[record:record + 4] = b"XXXX"
    with pytest.raises(BadZip, match="ZIP64"):
        Source(bytes(data)).index()


def test_short_zip64_extra_field_hides_the_member():
    short = struct.pack("<HHQ", 1, 8, 5)  # says the size but not the compressed size
    data = build([Raw(b"short64", b"hello", size=U32, csize=U32, extra=short),
                  Raw(b"fine", b"ok")])
    index = Source(data).index()
    assert set(files_of(index)) == {b"fine"}
    assert index.hidden == [(b"short64", "ZIP64 extra field too short")]


# --- fuzzing -----------------------------------------------------------------------------------

SEEDS = [
    sample_archive(),
    build([Raw(b"z64/d", compressible(3000), method=8, zip64=True),
           Raw(b"z64/s", b"stored bytes", zip64=True, extra=struct.pack("<HHBi", 0x5455, 5, 1, 7)),
           Raw(b"dir/", attrs=(stat.S_IFDIR | 0o755) << 16)], zip64_end=True, comment=b"c"),
]

position = st.tuples(st.booleans(), st.integers(0, 1 << 16))  # (from the end, distance)
mutation = st.one_of(
    st.tuples(st.just("flip"), position, st.integers(1, 255)),
    st.tuples(st.just("set"), position,
              st.sampled_from([b"\xff\xff\xff\xff", b"\0\0\0\0", b"\xff\xff", b"\x7f"])),
    st.tuples(st.just("insert"), position, st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), position, st.integers(1, 16)),
    st.tuples(st.just("truncate"), position, st.none()),
)


def mutate(data: bytes, mutations: list) -> bytes:
    out = bytearray(data)
    for op, (from_end, distance), arg in mutations:
        if not out:
            break
        at = distance % len(out)
        if from_end:
            at = len(out) - 1 - (distance % min(len(out), 400))  # the end records and directory
        if op == "flip":
            out[at] ^= arg
        elif op == "set":
            out[at:at + len(arg)] = arg
        elif op == "insert":
            out[at:at] = arg
        elif op == "delete":
            del out[at:at + arg]
        else:
            del out[at:]
    return bytes(out)


def exercise(data: bytes) -> None:
    """Parse, list and read everything: only BadZip/BadMember may fail, and names stay safe."""
    src = Source(data)
    try:
        index = src.index()
    except BadZip:
        return
    for path, entry in walk(index).items():
        for name in path.split(b"/"):
            assert name not in (b"", b".", b"..") and b"\0" not in name and len(name) <= 255
        if isinstance(entry, Directory):
            continue
        try:
            reader = open_member(src.read_at, entry)
            offset = 0
            for _ in range(10_000):
                piece = reader.read(offset, 1 << 16)
                if not piece:
                    break
                offset += len(piece)
            else:
                raise AssertionError("reading never ends")
            assert offset == entry.size
        except BadMember:
            pass


@settings(max_examples=200, deadline=3000, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(range(len(SEEDS))), mutations=st.lists(mutation, min_size=1,
                                                                  max_size=4))
def test_fuzzed_archives_fail_only_with_bad_zip_or_bad_member(seed, mutations):
    exercise(mutate(SEEDS[seed], mutations))


def test_fuzz_seeds_are_valid():
    for data in SEEDS:
        assert files_of(Source(data).index())
        exercise(data)
