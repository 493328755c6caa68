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
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import blake3
import lmdb
import pytest
from click.testing import CliRunner

from conftest import MaiffsMount, maiffs, make_mount
from fsutil import seeded_bytes
from maiffs.cli import cli
from maiffs.report import store_report
from maiffs.namespace.records import (ROOT_INO, Inode, backlink_key, cookie_key, decode_dirent,
                                      decode_extent, dirent_key, encode_dirent, ino_key)
from maiffs.snapshots.objects import (TreeObject, byid_key, decode_refcount, encode_refcount,
                                      object_id)
from maiffs.store import STORE_FORMAT, Store, Txn
from maiffs.store.seals import Sealing
from old_store import make_old

#: 4 chunks, the first ending past 1 MiB, where /cut is truncated (random draws have it under
#: 1 MiB a third of the time, and /cut then holds big's second chunk or not, as the flush
#: timing decides): test_the_data_is_cut_as_the_tests_need
BIG = seeded_bytes(3, 3 << 20) + b"tail"
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


def made_through_a_mount(base: Path, fill: Callable[[Path], object]) -> Path:
    """A store filled by fill(mount point) through a real mount, then unmounted."""
    m = make_mount(base)
    m.mount()
    try:
        fill(m.path)
    finally:
        m.cleanup()
    return m.store


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store after real use through a mount, unmounted: the undamaged original of each test."""
    return made_through_a_mount(tmp_path_factory.mktemp("template"), populate)


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


def format_of(store: Path) -> int:
    s = Store.open(str(store), readonly=True)
    s.close()
    return s.format


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


def users_of(store: Path, cid: bytes) -> list[str]:
    """The files of populate that hold chunk cid: big and copy; cut (big truncated to 1 MiB)
    too, should a flush have cut big's first chunk below 1 MiB. Counted, not guessed."""
    return inspect(store, lambda txn: [name for name in ("big", "copy", "cut")
                                       if any(c == cid for _o, c, _n in extents_of(txn, f"/{name}"))])


def with_hole(name: str, off: int, length: int) -> bytes:
    """What file name of populate reads after fsck --repair zeroed bytes off..off+length."""
    data = BIG[:off] + bytes(length) + BIG[off + length:]
    return data[:1 << 20] if name == "cut" else data


def test_the_data_is_cut_as_the_tests_need() -> None:
    """The damage tests break big's second chunk, which /cut must not hold, and a chunk in the
    middle of only1 (seeded_bytes)."""
    from maiffs.store.chunker import ChunkParams, cut_points

    big = cut_points(BIG, ChunkParams())
    assert len(big) >= 3 and big[0] > 1 << 20
    assert len(cut_points(ONLY1, ChunkParams())) >= 3


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
    users = users_of(store, cid)
    assert users[:2] == ["big", "copy"]

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
    assert f"data lost in {len(users)} files" in out
    m = remount(store)
    for name in users:
        assert (m.path / name).read_bytes() == with_hole(name, off, length)
    assert_undamaged(m.path, *users)


def test_missing_chunk(store: Path, remount) -> None:
    found: list[tuple[int, bytes, int]] = []

    def delete(txn: Txn) -> None:
        found.append(_first_chunk_of_big(txn))
        txn.delete("chunks", found[0][1])

    change(store, delete)
    off, cid, length = found[0]
    users = users_of(store, cid)
    detect_and_repair(store, f"chunk {cid.hex()}", "is missing from the store", "(/big)")
    m = remount(store)
    for name in users:
        assert (m.path / name).read_bytes() == with_hole(name, off, length)
    assert_undamaged(m.path, *users)


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


# -- stores with snapshots ---------------------------------------------------------------------
ONLY1 = seeded_bytes(100, 3 << 20)  # only snapshot s1 holds these (3) chunks at the end
ONLY2 = seeded_bytes(200, 1 << 20) + b"two"  # only s2
VERSIONS = {name: b"%s version\n" % name.encode() * 700 for name in ("s1", "s2", "s3")}
#: What each snapshot holds (beside what populate left, which none of them changes) ...
SNAPSHOT_FILES = {"s1": {"v": VERSIONS["s1"], "only1": ONLY1},
                  "s2": {"v": VERSIONS["s2"], "only2": ONLY2},
                  "s3": {"v": VERSIONS["s3"], "tmp": b"deleted after s3"}}
#: ... and what it must not hold.
SNAPSHOT_ABSENT = {"s1": ["only2", "tmp", "late"], "s2": ["only1", "tmp", "late"],
                   "s3": ["only1", "only2", "late"]}


def populate_snapshots(root: Path) -> None:
    """populate, then three snapshots with files changed and deleted in between (so that some
    chunks are held only by snapshots), then more changes after the last one."""
    populate(root)
    (root / "v").write_bytes(VERSIONS["s1"])
    (root / "only1").write_bytes(ONLY1)
    (root / ".snapshots" / "s1").mkdir()
    os.unlink(root / "only1")
    (root / "v").write_bytes(VERSIONS["s2"])
    (root / "only2").write_bytes(ONLY2)
    (root / ".snapshots" / "s2").mkdir()
    os.unlink(root / "only2")
    (root / "v").write_bytes(VERSIONS["s3"])
    (root / "tmp").write_bytes(b"deleted after s3")
    (root / ".snapshots" / "s3").mkdir()
    os.unlink(root / "tmp")  # dirty and gone, its cache entry still there
    (root / "late").write_bytes(b"late")


@pytest.fixture(scope="module")
def snap_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return made_through_a_mount(tmp_path_factory.mktemp("snap-template"), populate_snapshots)


@pytest.fixture
def snap_store(snap_template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(snap_template, copy)
    return copy


def assert_snapshots(root: Path, skip: tuple[str, ...] = (), gone: tuple[str, ...] = ()) -> None:
    """Every snapshot but those in gone reads back as taken, but the snapshot paths in skip
    ("s1/only1"); the live tree is as populate_snapshots left it."""
    names = sorted(os.listdir(root / ".snapshots"))
    assert names == sorted(set(SNAPSHOT_FILES) - set(gone)), names
    common = {"big": BIG, "copy": BIG, "d/text": TEXT, "d/e/hardlink": TEXT,
              "cut": BIG[:1 << 20], "d/e/moved": b"x" * 5000}
    for snap in names:
        top = root / ".snapshots" / snap
        for rel, data in {**common, **SNAPSHOT_FILES[snap]}.items():
            if f"{snap}/{rel}" not in skip:
                assert (top / rel).read_bytes() == data, f"{snap}/{rel}"
        for rel in SNAPSHOT_ABSENT[snap]:
            assert not (top / rel).exists(), f"{snap}/{rel}"
        assert os.readlink(top / "sym") == "d/text"
        assert os.getxattr(top / "d" / "text", "user.note") == b"kept"
    assert (root / "v").read_bytes() == VERSIONS["s3"]
    assert (root / "late").read_bytes() == b"late"
    for rel in ("only1", "only2", "tmp"):
        assert not (root / rel).exists()


def snapshot_root(txn: Txn, name: str) -> bytes:
    return bytes(struct.unpack(">BQq32s", txn.get("snapshots", name.encode()))[3])


def snap_object(txn: Txn, name: str, path: str) -> tuple[bytes, TreeObject]:
    """The id and object of path in snapshot name."""
    oid = snapshot_root(txn, name)
    for part in filter(None, path.split("/")):
        oid = dict(TreeObject.decode(txn.get("objects", oid)).entries)[part.encode()]
    return oid, TreeObject.decode(txn.get("objects", oid))


def chunk_ids(txn: Txn) -> set[bytes]:
    return set(txn.cursor("chunks").iternext(keys=True, values=False))


def live_chunk_ids(txn: Txn) -> set[bytes]:
    return {decode_extent(v)[0] for _k, v in txn.prefix_items("extents", b"")}


def objref(txn: Txn, oid: bytes) -> int | None:
    raw = txn.get("objrefs", oid)
    return None if raw is None else decode_refcount(raw)


def test_clean_with_snapshots_and_after_deleting_them(snap_store: Path) -> None:
    """Chunks only snapshots hold are live data, not leaks: clean, and clean after deletes."""
    only1 = inspect(snap_store, lambda txn: {c for _o, c, _l in
                                             snap_object(txn, "s1", "only1")[1].extents})
    present, live = inspect(snap_store, lambda txn: (chunk_ids(txn), live_chunk_ids(txn)))
    assert len(only1) > 1 and only1 <= present and not only1 & live
    code, out = fsck(snap_store)
    assert code == 0 and "is clean" in out, out
    code, out = fsck(snap_store, "--repair")  # nothing to do: nothing changes
    assert code == 0 and "is clean" in out, out
    assert inspect(snap_store, chunk_ids) == present
    chunks_before = store_report(str(snap_store))["chunks"]
    assert chunks_before == len(present)

    runner = CliRunner()
    for name in ("s1", "s3"):
        done = runner.invoke(cli, ["snapshot", "delete", str(snap_store), name])
        assert done.exit_code == 0, done.output
        code, out = fsck(snap_store)
        assert code == 0 and "is clean" in out, (name, out)
    after = inspect(snap_store, chunk_ids)
    assert not only1 & after, "s1's chunks should have gone with it"
    assert store_report(str(snap_store))["chunks"] == len(after) < chunks_before
    left = inspect(snap_store, lambda txn: [bytes(k) for k, _v in
                                            txn.prefix_items("snapshots", b"")])
    assert left == [b"s2"]


def test_clean_after_changes_since_the_last_snapshot(snap_store: Path, remount) -> None:
    """Real changes of every kind after a snapshot leave objcache consistent (no false alarms),
    and so do a restore, a diff (which rebuilds the cache without a snapshot) and a snapshot."""
    runner = CliRunner()
    m = remount(snap_store)
    root = m.path
    with open(root / "v", "ab") as f:
        f.write(b"appended")
    os.truncate(root / "cut", 1000)
    os.setxattr(root / "big", "user.x", b"1")
    os.chmod(root / "copy", 0o600)
    os.rename(root / "d" / "e" / "moved", root / "moved2")
    os.symlink("v", root / "sym2")
    os.link(root / "v", root / "d" / "vlink")
    done = runner.invoke(cli, ["snapshot", "restore", str(root), "s1", "only1"])
    assert done.exit_code == 0, done.output
    assert (root / "only1").read_bytes() == ONLY1
    m.unmount()
    code, out = fsck(snap_store)
    assert code == 0 and "is clean" in out, out
    for args in (["diff", str(snap_store), "s1"], ["create", str(snap_store), "s4"]):
        done = runner.invoke(cli, ["snapshot", *args])
        assert done.exit_code == 0, done.output
        code, out = fsck(snap_store)
        assert code == 0 and "is clean" in out, (args, out)
    m.mount()
    (root / "d" / "text").write_bytes(b"rewritten")
    os.unlink(root / "only1")
    assert (root / ".snapshots" / "s4" / "only1").read_bytes() == ONLY1
    assert (root / ".snapshots" / "s4" / "v").read_bytes() == VERSIONS["s3"] + b"appended"
    m.unmount()
    code, out = fsck(snap_store)
    assert code == 0 and "is clean" in out, out


def test_snapshot_wrong_object_refcount(snap_store: Path, remount) -> None:
    roots: list[bytes] = []

    def bump(txn: Txn) -> None:
        roots.append(snapshot_root(txn, "s2"))
        txn.put("objrefs", roots[0], encode_refcount(objref(txn, roots[0]) + 5))

    change(snap_store, bump)
    out = detect_and_repair(snap_store, f"refcount: object {roots[0].hex()}",
                            "refcount is 6 but 1 reference holds it")
    assert "set to 1" in out
    assert inspect(snap_store, lambda txn: objref(txn, roots[0])) == 1
    m = remount(snap_store)
    assert_snapshots(m.path)
    assert_undamaged(m.path)


def test_missing_and_extra_backlink(snap_store: Path, remount) -> None:
    inos: dict[str, int] = {}

    def damage(txn: Txn) -> None:
        inos.update(text=lookup(txn, "/d/text"), d=lookup(txn, "/d"), big=lookup(txn, "/big"))
        assert txn.delete("backlinks", backlink_key(inos["text"], inos["d"], b"text"))
        txn.put("backlinks", backlink_key(inos["big"], ROOT_INO, b"bogus"), b"")

    change(snap_store, damage)
    detect_and_repair(snap_store, f"backlink: inode {inos['text']} (/d/text)",
                      f"its entry 'text' in inode {inos['d']} has no backlink",
                      f"backlink: inode {inos['big']} (/big)",
                      "backlink names entry 'bogus' in inode 1, which does not exist")

    def check(txn: Txn) -> None:
        links = {bytes(k) for k, _v in txn.prefix_items("backlinks", b"")}
        entries = {backlink_key(decode_dirent(v)[0], struct.unpack(">Q", k[:8])[0], bytes(k[8:]))
                   for k, v in txn.prefix_items("dirents", b"")}
        assert links == entries
        assert backlink_key(inos["text"], inos["d"], b"text") in links

    inspect(snap_store, check)
    m = remount(snap_store)
    assert_snapshots(m.path)
    assert_undamaged(m.path)


def test_stale_objcache_entry(snap_store: Path, remount) -> None:
    """A cache entry of an inode that is gone (and not marked changed) is removed."""
    oids: list[bytes] = []

    def add(txn: Txn) -> None:
        oids.append(snap_object(txn, "s1", "only1")[0])
        txn.put("objcache", ino_key(99999), oids[0])
        txn.put("objrefs", oids[0], encode_refcount(objref(txn, oids[0]) + 1))  # as it would

    change(snap_store, add)
    before = inspect(snap_store, lambda txn: objref(txn, oids[0]))
    detect_and_repair(snap_store, "objcache: inode 99999",
                      f"cached object {oids[0].hex()} is of an inode that no longer exists")
    assert inspect(snap_store, lambda txn: (txn.get("objcache", ino_key(99999)),
                                            objref(txn, oids[0]))) == (None, before - 1)
    m = remount(snap_store)
    assert_snapshots(m.path)


def test_objcache_entry_not_matching_its_inode(snap_store: Path, remount) -> None:
    """A clean inode changed behind the cache's back: marked changed (with / above it), so
    the next snapshot shows it as it is, not as the cache remembers it."""
    inos: list[int] = []

    def chmod(txn: Txn) -> None:
        inode = inode_of(txn, "/v")
        assert txn.get("objcache", ino_key(inode.ino)) is not None
        assert txn.get("dirty", ino_key(inode.ino)) is None
        inos.append(inode.ino)
        inode.mode = stat.S_IFREG | 0o600
        txn.put("inodes", ino_key(inode.ino), inode.encode())

    change(snap_store, chmod)
    detect_and_repair(snap_store, f"objcache: inode {inos[0]} (/v)",
                      "has mode 0o100644 but the inode has 0o100600")
    dirty = inspect(snap_store, lambda txn: {struct.unpack(">Q", k)[0]
                                             for k, _v in txn.prefix_items("dirty", b"")})
    assert {inos[0], ROOT_INO} <= dirty
    m = remount(snap_store)
    (m.path / ".snapshots" / "s4").mkdir()
    assert stat.S_IMODE(os.stat(m.path / ".snapshots" / "s4" / "v").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(m.path / ".snapshots" / "s3" / "v").st_mode) == 0o644
    assert (m.path / ".snapshots" / "s4" / "v").read_bytes() == VERSIONS["s3"]
    os.rmdir(m.path / ".snapshots" / "s4")
    assert_snapshots(m.path)
    assert_undamaged(m.path)
    m.unmount()
    code, out = fsck(snap_store)
    assert code == 0, out


def test_missing_byid_entry(snap_store: Path, remount) -> None:
    keys: list[bytes] = []

    def drop(txn: Txn) -> None:
        oid, obj = snap_object(txn, "s1", "only1")
        keys.append(byid_key(obj.content_id, oid))
        assert txn.delete("byid", keys[0])

    change(snap_store, drop)
    detect_and_repair(snap_store, f"byid: object {keys[0][32:].hex()}",
                      "file object is not listed under its content id")
    assert inspect(snap_store, lambda txn: txn.get("byid", keys[0])) == b""
    m = remount(snap_store)
    assert_snapshots(m.path)


def test_chunk_only_a_snapshot_holds_is_missing(snap_store: Path, remount) -> None:
    """The snapshot's file loses that extent (a hole; its size stays); the rest survives."""
    found: list[tuple[int, bytes, int]] = []
    roots: list[bytes] = []

    def delete(txn: Txn) -> None:
        found.append(snap_object(txn, "s1", "only1")[1].extents[1])
        roots.append(snapshot_root(txn, "s1"))
        assert found[0][1] not in live_chunk_ids(txn)
        txn.delete("chunks", found[0][1])

    change(snap_store, delete)
    off, cid, length = found[0]
    out = detect_and_repair(snap_store, f"chunk {cid.hex()}", "is missing from the store",
                            "data: snapshot 's1' (/.snapshots/s1/only1)")
    assert f"bytes {off}-{off + length - 1} read as zeros" in out
    assert "data lost in 1 file" in out
    new_root = inspect(snap_store, lambda txn: snapshot_root(txn, "s1"))
    assert new_root != roots[0]
    m = remount(snap_store)
    expect = ONLY1[:off] + bytes(length) + ONLY1[off + length:]
    hole = m.path / ".snapshots" / "s1" / "only1"
    assert hole.read_bytes() == expect
    assert os.getxattr(hole, "user.maiffs.id").decode() == blake3.blake3(expect).hexdigest()
    assert_snapshots(m.path, skip=("s1/only1",))
    assert_undamaged(m.path)


def test_object_missing_from_a_snapshot(snap_store: Path, remount) -> None:
    """The directory object loses the entry; the object's chunks, held by nothing else, go."""
    found: list[tuple[bytes, TreeObject]] = []

    def delete(txn: Txn) -> None:
        found.append(snap_object(txn, "s2", "only2"))
        assert txn.delete("objects", found[0][0])

    change(snap_store, delete)
    oid, obj = found[0]
    detect_and_repair(snap_store, "snapshot: snapshot 's2' (/.snapshots/s2/only2)",
                      f"its object {oid.hex()} is missing from the store")
    chunks = inspect(snap_store, chunk_ids)
    assert not {cid for _o, cid, _l in obj.extents} & chunks, "only2's chunks should be freed"
    m = remount(snap_store)
    assert "only2" not in os.listdir(m.path / ".snapshots" / "s2")
    assert_snapshots(m.path, skip=("s2/only2",))
    assert_undamaged(m.path)


def test_corrupt_directory_object_shared_with_the_live_tree(snap_store: Path, remount) -> None:
    """/d/e's object never changed: every snapshot and objcache share it. All snapshots lose
    d/e, the live /d/e is rebuilt in the next snapshot, the rest is intact."""
    found: list[bytes] = []

    def flip(txn: Txn) -> None:
        oid = snap_object(txn, "s1", "d/e")[0]
        assert oid == snap_object(txn, "s3", "d/e")[0]
        assert txn.get("objcache", ino_key(lookup(txn, "/d/e"))) == oid
        found.append(oid)
        raw = bytearray(txn.get("objects", oid))
        raw[-1] ^= 1
        txn.put("objects", oid, bytes(raw))

    change(snap_store, flip)
    out = detect_and_repair(snap_store, f"object: object {found[0].hex()}: does not match its id",
                            "(/.snapshots/s1/d/e)", "(/.snapshots/s2/d/e)", "(/.snapshots/s3/d/e)",
                            "objcache: inode")
    assert "(/d/e)" in out
    m = remount(snap_store)
    for snap in SNAPSHOT_FILES:
        assert os.listdir(m.path / ".snapshots" / snap / "d") == ["text"]
    assert_undamaged(m.path)
    (m.path / ".snapshots" / "s4").mkdir()
    assert (m.path / ".snapshots" / "s4" / "d" / "e" / "moved").read_bytes() == b"x" * 5000
    assert (m.path / ".snapshots" / "s4" / "d" / "e" / "hardlink").read_bytes() == TEXT
    m.unmount()
    code, out = fsck(snap_store)
    assert code == 0, out


def test_snapshot_root_object_missing(snap_store: Path, remount) -> None:
    """A snapshot whose root is gone is lost: its record goes, and what only it held."""
    only1: set[bytes] = set()

    def delete(txn: Txn) -> None:
        only1.update(c for _o, c, _l in snap_object(txn, "s1", "only1")[1].extents)
        assert txn.delete("objects", snapshot_root(txn, "s1"))

    change(snap_store, delete)
    detect_and_repair(snap_store, "snapshot: snapshot 's1' (/.snapshots/s1)",
                      "the snapshot is lost")
    assert not only1 & inspect(snap_store, chunk_ids)
    m = remount(snap_store)
    assert_snapshots(m.path, gone=("s1",))
    assert_undamaged(m.path)


def test_unreferenced_object_and_snapshot_counter(snap_store: Path, remount) -> None:
    made: list[bytes] = []

    def damage(txn: Txn) -> None:
        _oid, obj = snap_object(txn, "s1", "sym")
        obj.target = b"elsewhere"
        encoded = obj.encode()
        made.append(object_id(encoded))
        txn.put("objects", made[0], encoded)
        txn.put("objrefs", made[0], encode_refcount(1))
        txn.put("meta", b"next_snapshot", struct.pack(">Q", 2))

    change(snap_store, damage)
    detect_and_repair(snap_store, f"object: object {made[0].hex()}: nothing references it",
                      "meta next_snapshot: next value 2 is not above 3", "set to 4")
    gone = inspect(snap_store, lambda txn: (txn.get("objects", made[0]), txn.get("objrefs", made[0])))
    assert gone == (None, None)
    m = remount(snap_store)
    (m.path / ".snapshots" / "s4").mkdir()
    assert (m.path / ".snapshots" / "s4" / "v").read_bytes() == VERSIONS["s3"]
    ino = os.stat(m.path / ".snapshots" / "s4" / "v").st_ino
    assert ino >> 40 == 5, "s4 is snapshot number 4"
    os.rmdir(m.path / ".snapshots" / "s4")
    assert_snapshots(m.path)


def test_format_1_store(store: Path, remount) -> None:
    """A store from before snapshots (no such databases) is checked, and repaired, as it is."""
    make_old(store, 1)
    assert inspect(store, lambda txn: txn.dbs["backlinks"] is None and txn.dbs["objects"] is None)
    code, out = fsck(store)
    assert code == 0 and "is clean" in out, out

    env = lmdb.open(str(store), max_dbs=32, subdir=True)
    try:
        with env.begin(write=True) as raw:
            dbs = {name: env.open_db(name.encode(), txn=raw, create=False)
                   for name in ("dirents", "inodes")}
            inode = inode_of(Txn(raw, dbs, write=True, sealing=Sealing(())), "/d/text")
            inode.nlink = 5
            raw.put(ino_key(inode.ino), inode.encode(), db=dbs["inodes"])
    finally:
        env.close()
    out = detect_and_repair(store, "link count is 5 but 2 entries name it")
    assert "backlink" not in out
    assert format_of(store) == 1, "fsck repairs a store in its own format"
    m = remount(store)  # upgrades it to the current format
    assert_undamaged(m.path)
    (m.path / ".snapshots" / "first").mkdir()
    m.unmount()
    assert format_of(store) == STORE_FORMAT
    code, out = fsck(store)
    assert code == 0 and "is clean" in out, out


def test_corrupt_chunk_shared_by_live_files_and_snapshots(snap_store: Path, remount) -> None:
    """One bad chunk of /big (and /copy): the live files and every snapshot's copies get the
    same hole, the cached objects are dropped, and everything else survives."""
    found: list[tuple[int, bytes, int]] = []

    def flip(txn: Txn) -> None:
        found.append(_first_chunk_of_big(txn))
        assert found[0] in snap_object(txn, "s1", "big")[1].extents
        encoded = bytearray(txn.get("chunks", found[0][1]))
        encoded[len(encoded) // 2] ^= 0x40
        txn.put("chunks", found[0][1], bytes(encoded))

    change(snap_store, flip)
    off, cid, length = found[0]
    users = users_of(snap_store, cid)  # every snapshot holds them as the live tree does
    out = detect_and_repair(snap_store, f"chunk {cid.hex()}", "does not match its hash", "(/big)",
                            "(/copy)", *(f"(/.snapshots/{s}/{f})" for s in SNAPSHOT_FILES
                                         for f in users))
    assert f"data lost in {len(users) * (1 + len(SNAPSHOT_FILES))} files" in out
    assert "objcache: inode" in out
    m = remount(snap_store)
    for top in [m.path, *(m.path / ".snapshots" / s for s in SNAPSHOT_FILES)]:
        for name in users:
            assert (top / name).read_bytes() == with_hole(name, off, length)
    assert_snapshots(m.path, skip=tuple(f"{s}/{f}" for s in SNAPSHOT_FILES for f in users))
    assert_undamaged(m.path, *users)
    (m.path / ".snapshots" / "s4").mkdir()
    assert (m.path / ".snapshots" / "s4" / "big").read_bytes() == with_hole("big", off, length)
    m.unmount()
    code, out = fsck(snap_store)
    assert code == 0, out
