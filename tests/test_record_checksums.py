"""Every record but chunk data is sealed with a checksum of its key and value (store format 3).

A byte is flipped in data.mdb of an unmounted store, inside one record (found by its exact
stored bytes, key then value, as LMDB lays out a small record; every copy, since LMDB keeps old
versions of pages). Then: the mount answers EIO for what that record describes and serves
everything else; `maiffs fsck` names the record and the file; `--repair` puts back what other
records still say and reports what is lost. Older stores are read as they are and upgraded
when mounted, also after a kill half way through the upgrade.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import stat
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import lmdb
import pytest

from conftest import MaiffsMount, maiffs, make_mount
from fsutil import assert_same_tree, errno_of, run, seeded_bytes, tree_state
from maiffs.errors import CorruptRecord, FsError, StoreError
from maiffs.fsck import fsck as fsck_report
from maiffs.namespace.namespace import Namespace
from maiffs.namespace.records import ROOT_INO, decode_dirent, dirent_key, ino_key, key_ino
from maiffs.store import STORE_FORMAT, Store
from maiffs.store.env import DB_NAMES, UPGRADE_MARK
from maiffs.store.seals import UNSEALED_DBS, Sealing, unseal
from old_store import make_old

TEXT = b"the victim's own words\n" * 500
BIG = seeded_bytes(3, 3 << 20)  # 4 chunks (tests damage the second)
SIBLINGS = {"d/a.txt": b"alpha\n" * 300, "d/sub/inner": b"inner\n" * 10}


def populate(root: Path) -> None:
    (root / "d" / "sub").mkdir(parents=True)
    for rel, data in SIBLINGS.items():
        (root / rel).write_bytes(data)
    (root / "d" / "m-victim").write_bytes(TEXT)
    os.chmod(root / "d" / "m-victim", 0o640)
    (root / "d" / "z.txt").write_bytes(b"zulu\n" * 100)
    (root / "big").write_bytes(BIG)
    os.symlink("d/a.txt", root / "link")
    os.setxattr(root / "d" / "a.txt", "user.note", b"kept")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store after real use: a snapshot, which caches every inode's tree object, then a
    change (so that some inodes are marked changed since)."""
    m = make_mount(tmp_path_factory.mktemp("template"))
    m.mount()
    try:
        populate(m.path)
        (m.path / ".snapshots" / "before").mkdir()
        (m.path / "later").write_bytes(b"after the snapshot")
    finally:
        m.cleanup()
    return m.store


@pytest.fixture
def store(template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(template, copy)
    return copy


# -- reading the store directly ----------------------------------------------------------------
def stored(store: Path, db: str, key: bytes) -> bytes:
    """A record's bytes as stored (value and seal)."""
    env = lmdb.open(str(store), max_dbs=32, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            value = txn.get(key, db=env.open_db(db.encode(), txn=txn, create=False))
    finally:
        env.close()
    assert value is not None, f"no {db} record {key.hex()}"
    return bytes(value)


def ino_of(store: Path, path: str) -> int:
    ino = ROOT_INO
    for name in path.split("/"):
        ino = decode_dirent(unseal("dirents", dirent_key(ino, name.encode()),
                                   stored(store, "dirents", dirent_key(ino, name.encode()))))[0]
    return ino


def extents_of(store: Path, ino: int) -> list[tuple[int, int]]:
    """(offset, length) of a file's extents."""
    s = Store.open(str(store), readonly=True)
    try:
        with s.read() as txn:
            return [(key_ino(key, 8), struct.unpack(">I", value[32:])[0])
                    for key, value in txn.prefix_items("extents", ino_key(ino))]
    finally:
        s.close()


def flip(store: Path, db: str, key: bytes, at: int, must: bool = True) -> int:
    """Flip one bit of byte `at` of key + stored value, in data.mdb; how many copies there were
    (with must, at least one)."""
    needle = key + stored(store, db, key)
    data = (store / "data.mdb").read_bytes()
    spots = []
    found = data.find(needle)
    while found >= 0:
        spots.append(found)
        found = data.find(needle, found + 1)
    assert spots or not must, f"{db} record {key.hex()} not found in data.mdb"
    with open(store / "data.mdb", "r+b") as f:
        for spot in spots:
            f.seek(spot + at)
            byte = f.read(1)[0]
            f.seek(spot + at)
            f.write(bytes([byte ^ 0x01]))
    return len(spots)


def fsck(store: Path, *args: str) -> subprocess.CompletedProcess:
    return maiffs("fsck", store, *args, check=False)


def daemon_lives(m: MaiffsMount) -> None:
    (m.path / "new").write_bytes(b"still serving")
    assert (m.path / "new").read_bytes() == b"still serving"
    (m.path / "new").unlink()


# -- the store layer ---------------------------------------------------------------------------
def test_a_record_answers_for_its_own_key_only(tmp_path: Path) -> None:
    """A sealed record moved under another key (a damaged key) fails its check there."""
    s = Store.create(str(tmp_path / "s"))
    try:
        s.write(lambda txn: txn.put("symlinks", ino_key(7), b"target"))
        with s.read() as txn:
            assert txn.get("symlinks", ino_key(7)) == b"target"
            moved = txn.raw.get(ino_key(7), db=txn.dbs["symlinks"])
        s.write(lambda txn: txn.raw.put(ino_key(6), moved, db=txn.dbs["symlinks"]))
        with s.read() as txn, pytest.raises(CorruptRecord) as info:
            txn.get("symlinks", ino_key(6))
        assert (info.value.db, info.value.key) == ("symlinks", ino_key(6))
        assert "symlinks record 0000000000000006 is damaged" in str(info.value)
    finally:
        s.close()


# -- damage seen through a mount ---------------------------------------------------------------
def test_damaged_inode_dirent_and_extent_give_eio_only_there(store: Path, remount) -> None:
    victim, big = ino_of(store, "d/m-victim"), ino_of(store, "big")
    extents = extents_of(store, big)
    assert len(extents) >= 2, "big should be several chunks"
    (off, length) = extents[1]
    d = ino_of(store, "d")
    assert flip(store, "inodes", ino_key(victim), 8 + 2) >= 1  # a byte of its mode
    assert flip(store, "dirents", dirent_key(d, b"z.txt"), len(dirent_key(d, b"z.txt")) + 3)
    assert flip(store, "extents", ino_key(big) + struct.pack(">Q", off), 16 + 5)  # its chunk id

    m = remount(store)
    for fn in (os.stat, os.open):
        assert errno_of(fn, m.path / "d" / "m-victim", *((os.O_RDONLY,) if fn is os.open else ())) == errno.EIO
    assert errno_of(os.stat, m.path / "d" / "z.txt") == errno.EIO
    for rel, data in SIBLINGS.items():
        assert (m.path / rel).read_bytes() == data
    assert os.readlink(m.path / "link") == "d/a.txt"
    assert os.getxattr(m.path / "d" / "a.txt", "user.note") == b"kept"
    listing = run("ls", m.path / "d", ok=False)
    assert listing.returncode == 2 and "Input/output error" in listing.stderr, listing
    assert sorted(listing.stdout.split()) == ["a.txt", "sub"]
    assert os.stat(m.path / "big").st_size == len(BIG)
    assert errno_of((m.path / "big").read_bytes) == errno.EIO
    with open(m.path / "big", "rb") as f:  # the whole file: a read checks all its extents
        assert errno_of(os.pread, f.fileno(), 4096, 0) == errno.EIO and off > 128 << 10
    daemon_lives(m)
    log = (store / "maiffs.log").read_text()
    assert f"inodes record {ino_key(victim).hex()} is damaged" in log
    assert f"dirents record {dirent_key(d, b'z.txt').hex()} is damaged" in log
    assert f"extents record {(ino_key(big) + struct.pack('>Q', off)).hex()} is damaged" in log
    assert "leaves out entry 'm-victim'" in log
    m.unmount()

    check = fsck(store)
    assert check.returncode == 1, check.stdout
    assert f"record: inode {victim} (/d/m-victim): record fails its checksum" in check.stdout
    assert f"record: dirents {dirent_key(d, b'z.txt').hex()} (/d/z.txt): record fails its checksum" in check.stdout
    extent = (ino_key(big) + struct.pack(">Q", off)).hex()
    assert f"record: extents {extent} (/big): record fails its checksum" in check.stdout
    assert check.stdout.splitlines()[-1].startswith("fsck: 3 problems found"), check.stdout


def test_repair_restores_from_cached_tree_objects(store: Path, remount) -> None:
    """Inodes unchanged since the snapshot: their damaged inode and extent records come back
    exactly as they were, from the tree objects the snapshot cached; the entry from its
    backlink and readdir cookie. Nothing is lost."""
    victim, big, d = ino_of(store, "d/m-victim"), ino_of(store, "big"), ino_of(store, "d")
    off = extents_of(store, big)[1][0]
    flip(store, "inodes", ino_key(victim), 8 + 2)
    flip(store, "dirents", dirent_key(d, b"z.txt"), len(dirent_key(d, b"z.txt")) + 3)
    flip(store, "extents", ino_key(big) + struct.pack(">Q", off), 16 + 5)

    repair = fsck(store, "--repair")
    assert repair.returncode == 0, repair.stdout
    out = repair.stdout
    assert f"inode {victim} (/d/m-victim): record fails its checksum (repaired: restored from its cached tree object" in out
    assert "(/d/z.txt): record fails its checksum (repaired: restored from its backlink and readdir cookie)" in out
    assert f"extents {(ino_key(big) + struct.pack('>Q', off)).hex()} (/big): record fails its checksum (repaired: restored from its cached tree object" in out
    assert "data lost" not in out and "3 problems found and repaired" in out, out
    assert "is clean" in fsck(store).stdout

    m = remount(store)
    assert (m.path / "d" / "m-victim").read_bytes() == TEXT
    assert stat.S_IMODE(os.stat(m.path / "d" / "m-victim").st_mode) == 0o640
    assert (m.path / "d" / "z.txt").read_bytes() == b"zulu\n" * 100
    assert (m.path / "big").read_bytes() == BIG
    assert (m.path / ".snapshots" / "before" / "big").read_bytes() == BIG


def test_repair_rebuilds_what_no_tree_object_holds(store: Path, remount) -> None:
    """Changed since the snapshot (so their cached objects are stale): the file's inode is
    rebuilt from its extents (mode, owner and times lost), and the damaged extent's bytes read
    as zeros, reported as lost."""
    m = remount(store)
    os.utime(m.path / "d" / "m-victim", ns=(1, 2))
    with open(m.path / "big", "r+b") as f:
        f.write(b"changed")
    m.unmount()
    victim, big = ino_of(store, "d/m-victim"), ino_of(store, "big")
    off, length = extents_of(store, big)[1]
    flip(store, "inodes", ino_key(victim), 8 + 2)
    flip(store, "extents", ino_key(big) + struct.pack(">Q", off), 16 + 5)

    repair = fsck(store, "--repair")
    assert repair.returncode == 0, repair.stdout
    out = repair.stdout
    assert (f"inode {victim} (/d/m-victim): record fails its checksum (repaired: rebuilt as a "
            f"file of {len(TEXT)} bytes from its extents; its mode, owner and times are lost "
            f"(now 0600, owner 0:0))") in out
    assert (f"data: inode {big} (/big): extent record at byte {off} fails its checksum "
            f"(repaired: removed; bytes {off}-{off + length - 1} read as zeros)") in out
    assert "data lost in 1 file" in out
    assert "is clean" in fsck(store).stdout

    m = remount(store)
    assert (m.path / "d" / "m-victim").read_bytes() == TEXT
    assert stat.S_IMODE(os.stat(m.path / "d" / "m-victim").st_mode) == 0o600
    expect = b"changed" + BIG[7:off] + bytes(length) + BIG[off + length:]
    assert (m.path / "big").read_bytes() == expect
    daemon_lives(m)


def test_damaged_key_answers_for_no_name(store: Path, remount) -> None:
    """A damaged byte in a key: the old name is not found, the new one fails its check, the
    listing shows the rest and ends in EIO; repair puts the entry back under its name."""
    d = ino_of(store, "d")
    key = dirent_key(d, b"m-victim")
    flip(store, "dirents", key, len(key) - 1)  # "m-victim" -> "m-victil": same place in the tree

    m = remount(store)
    assert errno_of(os.stat, m.path / "d" / "m-victim") == errno.ENOENT
    assert errno_of(os.stat, m.path / "d" / "m-victil") == errno.EIO
    listing = run("ls", m.path / "d", ok=False)
    assert "Input/output error" in listing.stderr
    assert sorted(listing.stdout.split()) == ["a.txt", "sub", "z.txt"]
    m.unmount()

    out = fsck(store, "--repair").stdout
    assert f"dirents {dirent_key(d, b'm-victil').hex()} (/d/m-victil): record fails its checksum (repaired: removed" in out
    assert f"dirents {key.hex()} (/d/m-victim): record is missing (repaired: restored from its backlink and readdir cookie)" in out
    assert "is clean" in fsck(store).stdout
    m = remount(store)
    assert (m.path / "d" / "m-victim").read_bytes() == TEXT
    assert sorted(os.listdir(m.path / "d")) == ["a.txt", "m-victim", "sub", "z.txt"]


def test_extent_moved_by_a_damaged_key_is_not_read_as_a_hole(store: Path, remount) -> None:
    """An extent whose key now names another inode is missing from its file, where a read
    would find a hole (zeros): the file's extents no longer add up to its allocated bytes, so
    its reads fail instead. Repair puts the extent back (from the cached tree object)."""
    big = ino_of(store, "big")
    off = extents_of(store, big)[1][0]
    key = ino_key(big) + struct.pack(">Q", off)
    flip(store, "extents", key, 5)  # inode 8 -> 65544, which does not exist

    m = remount(store)
    assert os.stat(m.path / "big").st_size == len(BIG)
    assert errno_of((m.path / "big").read_bytes) == errno.EIO
    assert (m.path / "d" / "a.txt").read_bytes() == SIBLINGS["d/a.txt"]
    m.unmount()
    assert f"extents record {ino_key(big).hex()} is damaged (missing: they hold" in (
        store / "maiffs.log").read_text()

    out = fsck(store, "--repair").stdout
    assert f"extents {key.hex()} (/big): record is missing (repaired: restored from its cached" in out
    m = remount(store)
    assert (m.path / "big").read_bytes() == BIG


def test_damaged_counters_and_allocator_stop_only_what_needs_them(store: Path, remount) -> None:
    """Damaged store counters: statfs fails, writes go on (the counters wait for fsck). A
    damaged inode allocator: creating files fails (a new inode number could collide), the
    rest works. fsck --repair recounts and sets the allocator above every number in use."""
    flip(store, "meta", b"stats", len(b"stats") + 9)
    flip(store, "meta", b"next_ino", len(b"next_ino") + 7)
    m = remount(store)
    assert errno_of(os.statvfs, m.path) == errno.EIO
    assert errno_of(os.open, m.path / "d" / "new", os.O_CREAT | os.O_WRONLY, 0o644) == errno.EIO
    with open(m.path / "d" / "z.txt", "ab") as f:
        f.write(b"appended\n")
    assert (m.path / "d" / "z.txt").read_bytes() == b"zulu\n" * 100 + b"appended\n"
    assert (m.path / "d" / "a.txt").read_bytes() == SIBLINGS["d/a.txt"]
    m.unmount()

    out = fsck(store, "--repair").stdout
    assert "record: meta stats: record fails its checksum (repaired: removed; rebuilt from the other records)" in out
    assert "record: meta next_ino: record fails its checksum" in out
    assert "is clean" in fsck(store).stdout
    m = remount(store)
    assert os.statvfs(m.path).f_files > 0
    (m.path / "d" / "new").write_bytes(b"new")
    assert (m.path / "d" / "new").read_bytes() == b"new"


def test_damaged_format_record_is_refused_in_one_line(store: Path) -> None:
    flip(store, "meta", b"format", len(b"format") + 3)
    for args in (("stat", store), ("fsck", store)):
        done = maiffs(*args, check=False)
        assert done.returncode != 0
        assert done.stderr.strip() == ("maiffs: meta record format is damaged (fails its checksum); "
                                       "`maiffs fsck` lists the damage, `maiffs fsck --repair` "
                                       "repairs it"), done.stderr


# -- upgrading older stores --------------------------------------------------------------------
def all_sealed(store: Path) -> int:
    """Check every record's seal directly; how many there are."""
    env = lmdb.open(str(store), max_dbs=32, readonly=True, lock=False)
    count = 0
    try:
        with env.begin() as txn:
            meta = env.open_db(b"meta", txn=txn, create=False)
            assert txn.get(UPGRADE_MARK, db=meta) is None
            for name in DB_NAMES:
                if name in UNSEALED_DBS:
                    continue
                for key, value in txn.cursor(db=env.open_db(name.encode(), txn=txn, create=False)):
                    if key != b"magic":
                        unseal(name, bytes(key), bytes(value))
                        count += 1
    finally:
        env.close()
    return count


def counts(store: Path) -> dict:
    """What `maiffs stat --json` of an unmounted store (a read-only open) counts in its records."""
    report = json.loads(maiffs("stat", "--json", store).stdout)
    return {name: report[name] for name in ("inodes", "files", "directories", "snapshots",
                                            "logical_bytes", "referenced_bytes", "chunks")}


def made_format_2(store: Path, remount) -> tuple[dict, dict, int]:
    """The tree of a store through a mount and its counts, then the store made format 2; and
    how many records that unsealed."""
    m = remount(store)
    expected = tree_state(m.path)
    m.unmount()
    report = counts(store)
    return expected, report, make_old(store, 2)


def test_format_2_store_is_read_as_it_is_and_upgraded_when_mounted(store: Path, remount) -> None:
    expected, report, records = made_format_2(store, remount)
    assert records > 30

    assert counts(store) == report  # read-only opens
    assert "is clean" in fsck(store).stdout
    with pytest.raises(CorruptRecord):
        all_sealed(store)

    m = remount(store)
    assert_same_tree(expected, tree_state(m.path), "the upgraded store")
    m.unmount()
    assert all_sealed(store) >= records
    s = Store.open(str(store), readonly=True)
    s.close()
    assert s.format == STORE_FORMAT and s.all_sealed


UPGRADE_KILLED = textwrap.dedent("""
    import os, signal, sys
    from maiffs.store import upgrade
    from maiffs.store.env import SEALING_ORDER, UPGRADE_MARK, Store
    from maiffs.store.seals import Sealing, unseal

    upgrade.STEP_RECORDS = 3
    step = upgrade._step

    def step_or_die(txn):
        mark = txn.raw.get(UPGRADE_MARK, db=txn.dbs["meta"])
        done = mark and Sealing.decode(SEALING_ORDER, unseal("meta", UPGRADE_MARK, mark))
        if done and done.done >= 1 and done.upto:  # half way through the second database or later:
            os.kill(os.getpid(), signal.SIGKILL)  # die in a write transaction, as kill -9 would
        return step(txn)

    upgrade._step = step_or_die
    upgrade.seal_records(Store.open(sys.argv[1]))
""")


def test_upgrade_killed_half_way_opens_and_finishes(store: Path, remount) -> None:
    expected, report, records = made_format_2(store, remount)
    died = subprocess.run([sys.executable, "-c", UPGRADE_KILLED, str(store)],
                          capture_output=True, text=True)
    assert died.returncode == -9, died.stderr

    mark = stored(store, "meta", UPGRADE_MARK)
    progress = Sealing.decode((), unseal("meta", UPGRADE_MARK, mark))
    assert progress.done >= 1 and progress.upto is not None, "killed inside a database"
    s = Store.open(str(store), readonly=True)
    s.close()
    assert s.format == STORE_FORMAT and not s.all_sealed
    assert "is clean" in fsck(store).stdout  # every record read right, sealed or not yet
    assert counts(store) == report

    m = remount(store)  # goes on from the mark
    assert_same_tree(expected, tree_state(m.path), "the store after the upgrade")
    m.unmount()
    assert all_sealed(store) >= records


def every_record(store: Path) -> list[tuple[str, bytes, int]]:
    """(db, key, stored length) of every sealed record, but meta's header."""
    env = lmdb.open(str(store), max_dbs=32, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return [(name, bytes(key), len(value)) for name in DB_NAMES if name not in UNSEALED_DBS
                    for key, value in txn.cursor(db=env.open_db(name.encode(), txn=txn))
                    if (name, bytes(key)) not in (("meta", b"magic"), ("meta", b"format"))]
    finally:
        env.close()


REFUSED = "refused"  # an answer that is an error: CorruptRecord, CorruptChunk, an errno


def answers(store: Path, paths: list[str]) -> dict[tuple[str, str], object]:
    """What a read-only namespace answers about each path of the live tree: attributes,
    listing, content, symlink target, xattrs; REFUSED for each it raises on instead."""
    s = Store.open(str(store), readonly=True)
    ns = Namespace(s)
    out: dict[tuple[str, str], object] = {}

    def answer(path: str, facet: str, fn) -> None:
        try:
            out[(path, facet)] = fn()
        except (StoreError, FsError):
            out[(path, facet)] = REFUSED

    def resolve(path: str) -> int:
        ino = ROOT_INO
        for name in filter(None, path.split("/")):
            ino = ns.lookup(ino, name.encode()).ino
        return ino

    def listing(ino: int) -> list:
        """As the kernel lists: from the last offset again, until a call yields nothing."""
        entries: list = []
        offset = 0
        while batch := list(ns.readdir(ino, offset)):
            entries += [(name, inode.ino) for name, inode, _offset in batch]
            offset = batch[-1][2]
        return sorted(entries)

    def content(ino: int) -> bytes:
        ns.open(ino)
        try:
            return ns.read(ino, 0, 1 << 30)
        finally:
            ns.release(ino)

    try:
        for path in paths:
            answer(path, "attrs", lambda: ns.getattr(resolve(path)))
            if out[(path, "attrs")] == REFUSED:
                continue
            ino, kind = resolve(path), stat.S_IFMT(out[(path, "attrs")].mode)
            answer(path, "xattrs", lambda: {n: ns.getxattr(ino, n) for n in ns.listxattr(ino)})
            if kind == stat.S_IFDIR:
                answer(path, "listing", lambda: listing(ino))
            elif kind == stat.S_IFREG:
                answer(path, "content", lambda: content(ino))
            elif kind == stat.S_IFLNK:
                answer(path, "target", lambda: ns.readlink(ino))
    finally:
        s.close()
    return out


def tree_paths(store: Path) -> list[str]:
    s = Store.open(str(store), readonly=True)
    ns = Namespace(s)
    paths, pending = [""], [("", ROOT_INO)]
    try:
        while pending:
            path, ino = pending.pop()
            for name, inode, _offset in ns.readdir(ino, 0):
                if name not in (b".", b".."):
                    paths.append(f"{path}/{name.decode()}")
                    if stat.S_ISDIR(inode.mode):
                        pending.append((paths[-1], inode.ino))
    finally:
        s.close()
    return paths


def test_a_flipped_byte_in_any_record_is_found_and_never_read_wrong(template: Path,
                                                                    tmp_path: Path) -> None:
    """Each record of the store in turn gets one byte flipped, in its key or its value (seeded
    random). Every answer about the live tree is then the right one or an error (only a
    listing, or a file's xattrs, may miss what a damaged key of its own record moved away);
    fsck finds the damage (exit 1); --repair ends with a clean store."""
    rng = random.Random(8)
    records = every_record(template)
    assert len(records) > 60 and len({db for db, _k, _n in records}) == 15  # all but orphans
    paths = tree_paths(template)
    right = answers(template, paths)
    assert len(right) > 20 and REFUSED not in right.values()
    flipped = 0
    for db, key, length in records:
        copy = tmp_path / "copy"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(template, copy)
        at = rng.randrange(len(key) + length)
        if flip(copy, db, key, at, must=False) == 0:
            continue  # a value too big to lie beside its key (an overflow page)
        flipped += 1
        where = f"{db} {key.hex()} byte {at}"
        partial = {"dircookies": "listing", "xattrs": "xattrs"}.get(db) if at < len(key) else None
        for (path, facet), seen in answers(copy, paths).items():
            want = right.get((path, facet))
            if facet == partial and isinstance(seen, (list, dict)):
                assert all(item in want for item in seen), f"{where}: {path} {facet}: {seen!r}"
            else:
                assert seen in (want, REFUSED), f"{where}: {path} {facet}: {seen!r}, not {want!r}"
        found = fsck_report(str(copy), repair=False)
        assert not found.ok and found.findings, where
        repaired = fsck_report(str(copy), repair=True)
        assert repaired.ok, f"{where}: {[f.line(True) for f in repaired.remaining]}"
        assert fsck_report(str(copy), repair=False).ok, where
    assert flipped >= len(records) - 3, (flipped, len(records))
