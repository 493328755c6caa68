"""`maiffs fsck`: clean after real use, refuses a mounted store, and finds and repairs damage.

Damage is done the way a disk or a bug would do it: by changing records directly in LMDB while
the store is not mounted. Each case checks that fsck names the problem and exits 1, that
--repair fixes it (a second fsck is clean), and that the store then mounts and reads right.
One populated store is built per module and copied for each test, to keep the suite fast.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from click.testing import CliRunner

from conftest import MaiffsMount, maiffs, make_mount
from maiffs.cli import cli
from maiffs.report import store_report
from maiffs.namespace.records import (ROOT_INO, Inode, cookie_key, decode_dirent, decode_extent,
                                      dirent_key, encode_dirent, ino_key)
from maiffs.store import Store, Txn

BIG = os.urandom(3 << 20) + b"tail"  # several chunks
TEXT = b"hello, fsck\n" * 1000
T = TypeVar("T")
NEEDS_REPAIR = re.compile(r"fsck: \d+ problems? found \(run `maiffs fsck \S+ --repair`\)$")


def populate(root: Path) -> None:
    """Real use: files, dedup, hard links, dirs, symlink, xattr, rename, truncate, unlink-while-open."""
    (root / "big").write_bytes(BIG)
    (root / "copy").write_bytes(BIG)
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "text").write_bytes(TEXT)
    os.link(root / "d" / "text", root / "d" / "e" / "hardlink")
    os.symlink("d/text", root / "sym")
    os.setxattr(root / "d" / "text", "user.note", b"kept")
    (root / "gone").mkdir()
    (root / "gone").rmdir()
    (root / "cut").write_bytes(BIG)
    os.truncate(root / "cut", 1 << 20)
    (root / "d" / "moved").write_bytes(b"x" * 5000)
    os.rename(root / "d" / "moved", root / "d" / "e" / "moved")
    with open(root / "unlinked", "wb") as f:
        f.write(BIG[:100_000])
        os.unlink(root / "unlinked")
        f.write(b"more after unlink")
        f.flush()


def fsck(store: Path, *args: str) -> tuple[int, str]:
    """Run `maiffs fsck` in this process (saves a Python start per call): exit code, output."""
    result = CliRunner().invoke(cli, ["fsck", str(store), *args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store after real use through a mount, unmounted: the undamaged original of each test."""
    m = make_mount(tmp_path_factory.mktemp("template"))
    m.mount()
    try:
        populate(m.path)
    finally:
        m.cleanup()
    return m.store


@pytest.fixture
def store(template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(template, copy)
    return copy


def change(store: Path, fn: Callable[[Txn], object]) -> None:
    """Damage the store directly, in one LMDB write transaction, as a disk or a bug would."""
    s = Store.open(str(store))
    try:
        s.write(fn)
    finally:
        s.close()


def inspect(store: Path, fn: Callable[[Txn], T]) -> T:
    """Read the store directly (not mounted), in one read transaction."""
    s = Store.open(str(store), readonly=True)
    try:
        with s.read() as txn:
            return fn(txn)
    finally:
        s.close()


def lookup(txn: Txn, path: str) -> int:
    ino = ROOT_INO
    for name in filter(None, path.split("/")):
        ino = decode_dirent(txn.get("dirents", ino_key(ino) + name.encode()))[0]
    return ino


def inode_of(txn: Txn, path: str) -> Inode:
    ino = lookup(txn, path)
    return Inode.decode(ino, txn.get("inodes", ino_key(ino)))


def extents_of(txn: Txn, path: str) -> list[tuple[int, bytes, int]]:
    ino = lookup(txn, path)
    return [(struct.unpack(">Q", k[8:])[0], *decode_extent(v))
            for k, v in txn.prefix_items("extents", ino_key(ino))]


def detect_and_repair(store: Path, *expected: str) -> str:
    """fsck names the damage and exits 1; --repair fixes it; a second fsck is clean."""
    code, out = fsck(store)
    assert code == 1, out
    for text in expected:
        assert text in out, out
    assert NEEDS_REPAIR.match(out.splitlines()[-1]), out
    code, repaired = fsck(store, "--repair")
    assert code == 0, repaired
    assert "found and repaired" in repaired
    code, again = fsck(store)
    assert code == 0 and "is clean" in again, again
    return repaired


@pytest.fixture
def remount(tmp_path: Path) -> Iterator[Callable[[Path], MaiffsMount]]:
    """Mount a (repaired) store; always unmounted afterwards."""
    mounts: list[MaiffsMount] = []

    def mount(store: Path) -> MaiffsMount:
        mnt = tmp_path / f"mnt{len(mounts)}"
        mnt.mkdir()
        m = MaiffsMount(store, mnt, [])
        mounts.append(m)
        m.mount()
        return m

    try:
        yield mount
    finally:
        for m in mounts:
            m.cleanup()


def assert_undamaged(root: Path, *skip: str) -> None:
    """Everything populate left, but the paths in skip, reads back as written; writes work."""
    expected = {"big": BIG, "copy": BIG, "d/text": TEXT, "d/e/hardlink": TEXT,
                "cut": BIG[:1 << 20], "d/e/moved": b"x" * 5000}
    for rel, data in expected.items():
        if rel not in skip:
            assert (root / rel).read_bytes() == data, rel
    assert os.readlink(root / "sym") == "d/text"
    assert os.getxattr(root / "d" / "text", "user.note") == b"kept"
    assert os.stat(root / "d" / "text").st_nlink == 2
    assert os.stat(root / "d").st_nlink == 3
    (root / "d" / "new").mkdir()
    (root / "d" / "new" / "f").write_bytes(TEXT)  # and it takes new writes
    assert (root / "d" / "new" / "f").read_bytes() == TEXT


# -- clean stores ------------------------------------------------------------------------------
def test_clean_after_real_use(mounted: MaiffsMount) -> None:
    populate(mounted.path)
    mounted.unmount()
    code, out = fsck(mounted.store)
    assert code == 0, out
    assert "is clean" in out
    done = maiffs("fsck", "--json", mounted.store)  # the real command, in its own process
    report = json.loads(done.stdout)
    assert report["ok"] and report["problems"] == 0 and report["findings"] == []


def test_clean_after_crash_with_unlinked_open_file(mounted: MaiffsMount) -> None:
    """A file unlinked while open when the daemon died is an orphan, not a problem."""
    f = open(mounted.path / "f", "wb")  # noqa: SIM115 - still open when the daemon dies
    try:
        f.write(b"data")
        f.flush()
        os.fsync(f.fileno())
        os.unlink(mounted.path / "f")
        mounted.kill()
    finally:
        with contextlib.suppress(OSError):  # its mount is gone
            f.close()
    orphans = inspect(mounted.store, lambda txn: list(txn.prefix_items("orphans", b"")))
    assert orphans, "the unlinked file should be left as an orphan"
    code, out = fsck(mounted.store)
    assert code == 0, out


def test_rename_dir_over_empty_dir_in_same_parent(mounted: MaiffsMount) -> None:
    """`mv -T p/a p/b` (b an empty dir) must leave p with nlink 3 (2 + one subdirectory).

    Fails on a core bug that fsck found: Namespace.rename loads the parent twice (src_dir and
    dst_dir) when old_parent == new_parent; _drop_link decrements dst_dir.nlink, but
    _touch_dirs saves only src_dir when both are the same inode, so the decrement is lost.
    """
    (mounted.path / "p" / "a").mkdir(parents=True)
    (mounted.path / "p" / "b").mkdir()
    os.rename(mounted.path / "p" / "a", mounted.path / "p" / "b")
    nlink = os.stat(mounted.path / "p").st_nlink
    mounted.unmount()
    code, out = fsck(mounted.store)
    assert (nlink, code) == (3, 0), out


def test_refuses_mounted_store(mounted: MaiffsMount) -> None:
    for args in ((), ("--repair",)):
        for target in (mounted.store, mounted.path):
            code, out = fsck(target, *args)
            assert code == 1
            assert "in use by" in out and "unmount it first" in out
            assert len(out.strip().splitlines()) == 1
    (mounted.path / "still-works").write_text("yes")
    assert (mounted.path / "still-works").read_text() == "yes"


# -- damaged stores ---------------------------------------------------------------------------
def _first_chunk_of_big(txn: Txn) -> tuple[int, bytes, int]:
    return extents_of(txn, "/big")[1]


def test_corrupt_chunk_reads_eio_then_repair(store: Path, remount) -> None:
    found: list[tuple[int, bytes, int]] = []

    def flip(txn: Txn) -> None:
        found.append(_first_chunk_of_big(txn))
        cid = found[0][1]
        encoded = bytearray(txn.get("chunks", cid))
        encoded[len(encoded) // 2] ^= 0x40
        txn.put("chunks", cid, bytes(encoded))

    change(store, flip)
    off, cid, length = found[0]

    m = remount(store)
    with pytest.raises(OSError) as exc:
        (m.path / "big").read_bytes()
    assert exc.value.errno == errno.EIO
    with pytest.raises(OSError) as exc:  # shares the chunk: EIO there too, never wrong data
        (m.path / "copy").read_bytes()
    assert exc.value.errno == errno.EIO
    assert (m.path / "d" / "text").read_bytes() == TEXT
    m.unmount()

    out = detect_and_repair(store, f"chunk {cid.hex()}", "does not match its hash",
                            "(/big)", "(/copy)")
    assert f"bytes {off}-{off + length - 1} read as zeros" in out
    assert "data lost in 2 files" in out
    m = remount(store)
    expect = BIG[:off] + bytes(length) + BIG[off + length:]
    assert (m.path / "big").read_bytes() == expect
    assert (m.path / "copy").read_bytes() == expect
    assert_undamaged(m.path, "big", "copy")


def test_missing_chunk(store: Path, remount) -> None:
    found: list[tuple[int, bytes, int]] = []

    def delete(txn: Txn) -> None:
        found.append(_first_chunk_of_big(txn))
        txn.delete("chunks", found[0][1])

    change(store, delete)
    off, cid, length = found[0]
    detect_and_repair(store, f"chunk {cid.hex()}", "is missing from the store", "(/big)")
    m = remount(store)
    assert (m.path / "big").read_bytes() == BIG[:off] + bytes(length) + BIG[off + length:]
    assert_undamaged(m.path, "big", "copy")


def test_wrong_refcount(store: Path, remount) -> None:
    found: list[bytes] = []

    def bump(txn: Txn) -> None:
        found.append(extents_of(txn, "/d/text")[0][1])
        count, raw, stored = struct.unpack(">QII", txn.get("chunkrefs", found[0]))
        txn.put("chunkrefs", found[0], struct.pack(">QII", count + 6, raw, stored))

    change(store, bump)
    out = detect_and_repair(store, "refcount: chunk " + found[0].hex(),
                            "refcount is 7 but 1 extent uses it")
    assert "set to 1" in out
    m = remount(store)
    assert_undamaged(m.path)


def test_wrong_nlink(store: Path, remount) -> None:
    def bump(txn: Txn) -> None:
        inode = inode_of(txn, "/d/text")
        inode.nlink = 5
        txn.put("inodes", ino_key(inode.ino), inode.encode())

    change(store, bump)
    detect_and_repair(store, "nlink: inode", "(/d/text)", "link count is 5 but 2 entries name it")
    m = remount(store)
    assert_undamaged(m.path)


def test_dangling_dirent(store: Path, remount) -> None:
    def add(txn: Txn) -> None:
        txn.put("dirents", dirent_key(ROOT_INO, b"ghost"), encode_dirent(9999, 9999))
        txn.put("dircookies", cookie_key(ROOT_INO, 9999), b"ghost")

    change(store, add)
    detect_and_repair(store, "dirent: inode 1 (/ghost)", "names inode 9999, which does not exist")
    m = remount(store)
    assert "ghost" not in os.listdir(m.path)
    assert_undamaged(m.path)


def test_wrong_counter(store: Path, remount) -> None:
    def skew(txn: Txn) -> None:
        txn.count(logical_bytes=12345)

    change(store, skew)
    before = store_report(str(store))["logical_bytes"]
    detect_and_repair(store, "counter logical_bytes", f"is {before}")
    assert store_report(str(store))["logical_bytes"] == before - 12345
    m = remount(store)
    assert_undamaged(m.path)


def test_unreachable_file_goes_to_lost_and_found(store: Path, remount) -> None:
    inos: list[int] = []

    def unname(txn: Txn) -> None:
        inos.append(lookup(txn, "/d/e/moved"))
        _child, cookie = decode_dirent(txn.get("dirents", dirent_key(lookup(txn, "/d/e"), b"moved")))
        txn.delete("dirents", dirent_key(lookup(txn, "/d/e"), b"moved"))
        txn.delete("dircookies", cookie_key(lookup(txn, "/d/e"), cookie))

    change(store, unname)
    out = detect_and_repair(store, f"unreachable: inode {inos[0]}", "not reachable from /")
    assert f"/lost+found/#{inos[0]}" in out
    m = remount(store)
    assert (m.path / "lost+found" / f"#{inos[0]}").read_bytes() == b"x" * 5000
    assert os.stat(m.path / "lost+found").st_mode & 0o777 == 0o700
    assert_undamaged(m.path, "d/e/moved")


def test_unlinked_inode_not_in_orphans(store: Path, remount) -> None:
    """An nlink 0 inode missing from orphans would never be freed: fsck queues it."""
    inos: list[int] = []

    def leak(txn: Txn) -> None:
        inode = inode_of(txn, "/d/e/moved")
        inos.append(inode.ino)
        parent = lookup(txn, "/d/e")
        _child, cookie = decode_dirent(txn.get("dirents", dirent_key(parent, b"moved")))
        txn.delete("dirents", dirent_key(parent, b"moved"))
        txn.delete("dircookies", cookie_key(parent, cookie))
        inode.nlink = 0
        txn.put("inodes", ino_key(inode.ino), inode.encode())

    change(store, leak)
    detect_and_repair(store, f"orphan: inode {inos[0]}", "not listed in orphans")
    m = remount(store)
    assert_undamaged(m.path, "d/e/moved")
    m.unmount()
    assert inspect(store, lambda txn: txn.get("inodes", ino_key(inos[0]))) is None, "not freed"
    assert fsck(store)[0] == 0


def test_json_output(store: Path) -> None:
    change(store, lambda txn: txn.count(chunks=1))
    code, out = fsck(store, "--json")
    assert code == 1
    report = json.loads(out)
    assert not report["ok"] and report["problems"] == 1
    assert report["findings"][0]["category"] == "counter"
    assert report["findings"][0]["subject"] == "counter chunks"
