"""Listings read their scattered records without the kernel's read-around, where they are
sparse in the store file, and give the map its read-around back afterwards (readaround.py)."""

from __future__ import annotations

import os
from pathlib import Path

from maiffs.store import Store

LISTING = ("dircookies", "dirents", "inodes")


def map_flags(pid: int | str, store: Path) -> list[str]:
    """The VmFlags of process pid's mapping of the store's data.mdb."""
    data = str(store / "data.mdb")
    inside = False
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            if "-" in line.split(" ", 1)[0]:  # a mapping's header line
                inside = line.rstrip().endswith(data)
            elif inside and line.startswith("VmFlags:"):
                return line.split()[1:]
    raise AssertionError(f"{data} is not mapped by {pid}")


def test_sparse_records_are_read_without_read_around(tmp_path):
    store = Store.create(str(tmp_path / "s"))
    try:
        with store.read(scattered=LISTING):
            assert "rr" not in map_flags("self", tmp_path / "s")  # a tiny store: dense
        store.write(lambda txn: txn.put("chunks", b"c" * 32, os.urandom(8 << 20)))
        store.read_around._sparse.clear()  # as RECHECK_S later
        with store.read(scattered=LISTING) as txn:
            assert "rr" in map_flags("self", tmp_path / "s")
            with store.read(scattered=LISTING):
                assert "rr" in map_flags("self", tmp_path / "s")
            assert "rr" in map_flags("self", tmp_path / "s")  # the outer reader still reads
            assert txn.get("inodes", b"\0" * 8) is None
        assert "rr" not in map_flags("self", tmp_path / "s")
        with store.read():
            assert "rr" not in map_flags("self", tmp_path / "s")
    finally:
        store.close()


def test_listing_of_a_sparse_store_is_complete_and_leaves_read_around_on(mounted):
    big = os.urandom(32 << 20)
    (mounted.path / "big").write_bytes(big)
    d = mounted.path / "d"
    d.mkdir()
    names = {f"file-with-a-longish-name-{i:05d}" for i in range(600)}  # several readdir replies
    for name in names:
        (d / name).write_bytes(name.encode())
    mounted.remount()
    with os.scandir(d) as entries:
        listed = {e.name: e.stat().st_size for e in entries}
    assert listed == {name: len(name) for name in names}
    assert "rr" not in map_flags(mounted.daemon_pid(), mounted.store)
    assert (mounted.path / "big").read_bytes() == big
