"""A listing of a cold store has every leaf page of the directory and inode B-trees read into
the page cache at once (leafahead.py): the walk of the branch pages names exactly LMDB's leaves,
a page that is not what the format says ends the walk quietly, and through a mount, listing one
directory brings in the pages of the others."""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import struct
from contextlib import contextmanager
from pathlib import Path

import lmdb

from fsutil import wait_for
from maiffs.store import Store
from maiffs.store import leafahead
from maiffs.store.leafahead import LeafAhead, NotAPage, branch_children, leaf_pages, runs

LISTING = ("dircookies", "dirents", "inodes")
_DB_RECORD = struct.Struct("=IHHQQQQQ")
P_LEAF = 0x02


def tree_record(raw: lmdb.Transaction, name: str) -> tuple[int, int, int, int]:
    """(root, depth, leaf pages, entries) of a named database, from the main database."""
    _pad, _flags, depth, _branch, leaves, _overflow, entries, root = _DB_RECORD.unpack(raw.get(name.encode()))
    return root, depth, leaves, entries


def page_reader(path: Path, page_size: int):
    fd = os.open(path, os.O_RDONLY)

    def read_pages(pages: list[int]) -> list[bytes]:
        return [os.pread(fd, page_size, pgno * page_size) for pgno in pages]
    return fd, read_pages


def resident_pages(path: Path, page_size: int) -> bytes:
    """One byte per page of the file, bit 0 set where the page is in the page cache (mincore:
    unlike a read, asking does not make the kernel read anything)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    size = os.path.getsize(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as m:
        address = ctypes.addressof(ctypes.c_char.from_buffer(m))
        vec = ctypes.create_string_buffer((size + page_size - 1) // page_size)
        assert libc.mincore(address, size, vec) == 0, os.strerror(ctypes.get_errno())
        return vec.raw


def resident_share(path: Path, pages: list[int], page_size: int) -> float:
    vec = resident_pages(path, page_size)
    return sum(vec[pgno] & 1 for pgno in pages) / len(pages)


def test_runs_merge_adjacent_pages():
    assert runs([9, 3, 4, 5, 11, 10, 20]) == [(3, 3), (9, 3), (20, 1)]
    assert runs([]) == []


def test_the_walk_names_every_leaf_page_of_a_tree(tmp_path):
    store = Store.create(str(tmp_path / "s"))
    try:
        def fill(txn):
            for i in range(30_000):
                txn.put("inodes", struct.pack(">Q", i * 7919 % 100_003), os.urandom(40 + i % 60))
        store.write(fill)
        with store.read() as txn:
            root, depth, leaves, entries = tree_record(txn.raw, "inodes")
            assert depth >= 3  # so the walk goes through two levels of branch pages
            fd, read_pages = page_reader(tmp_path / "s" / "data.mdb", store.page_size)
            try:
                found = leaf_pages(read_pages, root, depth)
                pages = read_pages(found)
            finally:
                os.close(fd)
    finally:
        store.close()
    assert len(found) == len(set(found)) == leaves
    nodes = 0
    for pgno, page in zip(found, pages):
        number, _pad, flags, lower, _upper = struct.unpack_from("=QHHHH", page)
        assert (number, flags & P_LEAF) == (pgno, P_LEAF)
        nodes += (lower - 16) // 2
    assert nodes == entries == 30_000


def test_a_page_that_is_not_a_branch_page_is_refused():
    page = bytearray(4096)
    struct.pack_into("=QHHHH", page, 0, 7, 0, P_LEAF, 20, 4000)
    try:
        branch_children(bytes(page), 7)
    except NotAPage as exc:
        assert "page 7" in str(exc)
    else:
        raise AssertionError("a leaf page was taken for a branch page")
    struct.pack_into("=QHHHH", page, 0, 8, 0, 0x01, 20, 4000)  # a branch page of another number
    try:
        branch_children(bytes(page), 7)
    except NotAPage:
        pass
    else:
        raise AssertionError("a page holding another number was walked")


def test_a_bad_tree_record_ends_the_read_ahead_quietly(tmp_path):
    """A record naming a page that is no branch page: the thread stops, nothing is raised."""
    data = tmp_path / "data.mdb"
    data.write_bytes(bytes(4096 * 4))

    class Main:
        def get(self, key: bytes) -> bytes:
            return _DB_RECORD.pack(0, 0, 3, 1, 1, 0, 1, 2)  # depth 3, root page 2 (all zeros)

    @contextmanager
    def reader():
        yield Main()

    ahead = LeafAhead(str(data), 4096)
    ahead.start(reader, ("inodes",))
    ahead.wait()
    assert ahead._thread is None
    ahead.start(reader, ("inodes",))  # again within AGAIN_S: not started
    assert ahead._thread is None


def test_trees_beyond_the_budget_are_left_alone(tmp_path, monkeypatch):
    """Reading more than BUDGET ahead would push out more of the page cache than it gains."""
    monkeypatch.setattr(leafahead, "BUDGET", 0)
    store = Store.create(str(tmp_path / "s"))
    try:
        store.write(lambda txn: txn.put("inodes", b"k" * 8, b"v"))
        calls = []
        monkeypatch.setattr(leafahead, "leaf_pages", lambda *a: calls.append(a) or [])
        store.read_tree_ahead(LISTING)
        store.leaf_ahead.wait()
        assert calls == []
        monkeypatch.setattr(leafahead, "BUDGET", 1 << 20)
        store.leaf_ahead._last -= leafahead.AGAIN_S
        store.read_tree_ahead(LISTING)
        store.leaf_ahead.wait()
        assert len(calls) == 1  # only inodes has records
    finally:
        store.close()


def test_listing_one_directory_reads_the_others_pages_ahead(mounted):
    """The store is sparse (120 MiB of chunks between the records), so the listing itself faults
    in only the pages it reads; the other directory's pages come from the read-ahead."""
    for d in ("one", "two"):
        (mounted.path / d).mkdir()
    for part in range(10):  # records between chunks, as in a store that has been used a while
        (mounted.path / f"big-{part}").write_bytes(os.urandom(12 << 20))
        for d in ("one", "two"):
            for i in range(part * 150, part * 150 + 150):
                (mounted.path / d / f"{d}-file-{i:05d}").write_bytes(b"x")
    mounted.unmount()
    env = lmdb.open(str(mounted.store), readonly=True, lock=False, max_dbs=64)
    try:
        with env.begin() as raw:
            page_size = env.stat()["psize"]
            fd, read_pages = page_reader(mounted.store / "data.mdb", page_size)
            try:
                pages = [pgno for name in LISTING
                         for pgno in leaf_pages(read_pages, *tree_record(raw, name)[:2])]
            finally:
                os.close(fd)
    finally:
        env.close()
    data = mounted.store / "data.mdb"
    mounted.mount()
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("1")
    assert resident_share(data, pages, page_size) < 0.5
    assert len(os.listdir(mounted.path / "one")) == 1500
    wait_for(lambda: resident_share(data, pages, page_size) == 1.0,
             "every leaf page of the listing trees in the page cache")
    assert sorted(os.listdir(mounted.path / "two")) == [f"two-file-{i:05d}" for i in range(1500)]
