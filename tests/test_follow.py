"""Follower mounts (issue 6): `maiffs mount --follow URL STORE MNT` shows the newest snapshot of
a remote volume read-only, switches as the writer pushes, and keeps its store as a bounded
cache. Each test runs against a directory remote and a real Ceph RGW bucket (`spot`)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import MaiffsMount, maiffs, make_mount
from fsutil import wait_for
from maiffs.follower import Follower
from maiffs.namespace import Namespace
from maiffs.service import SnapshotService
from maiffs.snapshots.manager import Snapshots
from maiffs.store import Store
from maiffs.store.chunks import prepare_chunk


def writer(tmp_path: Path, spot, every: str = "") -> MaiffsMount:
    """A mounted store replicating every snapshot to spot (as remote r)."""
    (tmp_path / "w").mkdir()
    m = make_mount(tmp_path / "w", ["replicate=r"])
    spot.add(m.store, "r")
    m.mount()
    return m


def follower(tmp_path: Path, name: str, spot, *options: str) -> MaiffsMount:
    (tmp_path / name).mkdir()
    (tmp_path / name / "mnt").mkdir()
    m = MaiffsMount(tmp_path / name / "store", tmp_path / name / "mnt",
                    [f"follow={spot.url}", "follow_every=0.5s", *options])
    m.mount()
    return m


def status(m: MaiffsMount) -> dict:
    return json.loads((m.path / ".maiffs" / "stats").read_text())["follow"]


def pushed(w: MaiffsMount, spot, name: str) -> None:
    os.mkdir(w.path / ".snapshots" / name)
    wait_for(lambda: any(k.endswith(f"/refs/{name}") for k in spot.keys("volumes/")),
             f"{name} reaches the remote", limit=60)


@contextmanager
def one_file_followed(tmp_path: Path, spot, data: bytes, *options: str) -> Iterator[MaiffsMount]:
    """A writer whose snapshot v1 holds data (file `data`) and a follower showing it; both
    unmounted afterwards whatever happens."""
    w = writer(tmp_path, spot)
    mounts = [w]
    try:
        (w.path / "data").write_bytes(data)
        pushed(w, spot, "v1")
        f = follower(tmp_path, "f", spot, "commit_interval=0.5", *options)
        mounts.append(f)
        wait_for(lambda: status(f)["showing"] == "v1", "the follower shows v1")
        yield f
    finally:
        for m in mounts:
            m.cleanup()


def stored(m: MaiffsMount) -> int:
    return json.loads((m.path / ".maiffs" / "stats").read_text())["stored_bytes"]


def test_followers_show_the_newest_snapshot_and_switch(tmp_path, spot):
    w = writer(tmp_path, spot)
    mounts = [w]
    try:
        (w.path / "d").mkdir()
        (w.path / "d" / "log").write_text("first\n")
        (w.path / "data").write_bytes(os.urandom(3 << 20))
        pushed(w, spot, "v1")
        mounts += [follower(tmp_path, "f1", spot), follower(tmp_path, "f2", spot)]
        for f in mounts[1:]:
            wait_for(lambda: status(f)["showing"] == "v1", "the follower shows v1")
            assert (f.path / "d" / "log").read_text() == "first\n"
            assert (f.path / "data").read_bytes() == (w.path / "data").read_bytes()
        held = open(mounts[1].path / "d" / "log", "rb")
        try:
            (w.path / "d" / "log").write_text("second\n")
            (w.path / "new").write_text("new file")
            pushed(w, spot, "v2")
            for f in mounts[1:]:
                wait_for(lambda: status(f)["showing"] == "v2", "the follower switches to v2")
                assert (f.path / "d" / "log").read_text() == "second\n"
                assert (f.path / "new").read_text() == "new file"
                assert sorted(os.listdir(f.path / ".snapshots")) == ["v1", "v2"]
                assert (f.path / ".snapshots" / "v1" / "d" / "log").read_text() == "first\n"
            assert held.read() == b"first\n"  # open before the switch: the version it opened
        finally:
            held.close()
        f = mounts[1]
        for attempt in (lambda: (f.path / "x").write_text("no"),
                        lambda: os.mkdir(f.path / "dir"),
                        lambda: os.unlink(f.path / "new"),
                        lambda: os.rename(f.path / "new", f.path / "renamed"),
                        lambda: open(f.path / "data", "r+b"),
                        lambda: os.mkdir(f.path / ".snapshots" / "mine")):
            with pytest.raises(OSError) as exc:
                attempt()
            assert exc.value.errno == errno.EROFS
        done = subprocess.run(["cp", "-r", str(f.path / "d"), str(tmp_path / "copy")],
                              capture_output=True)
        assert done.returncode == 0 and (tmp_path / "copy" / "log").read_text() == "second\n"
    finally:
        for m in mounts:
            m.cleanup()
    for m in mounts[1:]:
        assert maiffs("fsck", m.store, check=False).returncode == 0


def test_mount_follow_returns_showing_the_newest_snapshot(tmp_path, spot):
    """What runs right after `maiffs mount --follow` sees the remote's newest snapshot."""
    w = writer(tmp_path, spot)
    mounts = [w]
    try:
        (w.path / "d").mkdir()
        for i in range(5000):
            (w.path / "d" / f"f{i}").write_text(str(i))
        pushed(w, spot, "v1")
        f = follower(tmp_path, "f", spot)
        mounts.append(f)
        assert len(os.listdir(f.path / "d")) == 5000  # no wait
        assert status(f)["showing"] == "v1"
    finally:
        for m in mounts:
            m.cleanup()


def test_the_cache_stays_within_its_bound_and_refetches(tmp_path, spot):
    data = os.urandom(72 << 20)  # more than the follower's 64 MiB of memory cache
    with one_file_followed(tmp_path, spot, data, "cache_size=16M") as f:
        misses = 0
        for _ in range(2):  # the second read fetches again what was evicted
            Path("/proc/sys/vm/drop_caches").write_text("3\n")  # not from the page cache
            assert (f.path / "data").read_bytes() == data
            assert status(f)["misses"] > misses
            misses = status(f)["misses"]
            wait_for(lambda: status(f)["evictions"] > 0 and stored(f) <= 16 << 20,
                     "eviction brings the store within its bound")
        assert 0 <= status(f)["hit_rate"] < 1
        stat = json.loads(maiffs("stat", "--json", f.path).stdout)
        assert stat["follow"]["cache_limit"] == 16 << 20 and stat["follow"]["evictions"] > 0
    assert maiffs("fsck", tmp_path / "f" / "store", check=False).returncode == 0


def test_what_the_unmount_stores_is_trimmed_to_the_bound(tmp_path, spot):
    """No commit runs between the read and the unmount: the unmount's own commit keeps the bound."""
    data = os.urandom(24 << 20)
    with one_file_followed(tmp_path, spot, data, "cache_size=8M", "commit_interval=600") as f:
        assert (f.path / "data").read_bytes() == data
    at_rest = json.loads(maiffs("stat", "--json", tmp_path / "f" / "store").stdout)
    assert at_rest["stored_bytes"] <= 8 << 20


def test_prefetch_makes_first_reads_local(tmp_path, spot):
    data = os.urandom(8 << 20)
    with one_file_followed(tmp_path, spot, data, "prefetch") as f:
        wait_for(lambda: stored(f) >= 8 << 20, "the data arrives without being read")
        assert (f.path / "data").read_bytes() == data
        state = status(f)
        assert state["misses"] == 0 and state["hits"] > 0


def test_a_read_that_goes_to_the_remote_fetches_what_follows(tmp_path, spot):
    data = os.urandom(32 << 20)
    with one_file_followed(tmp_path, spot, data) as f:
        with open(f.path / "data", "rb") as reader:
            assert reader.read(65536) == data[:65536]
            assert status(f)["misses"] >= 1
            wait_for(lambda: stored(f) >= 2 << 20, "read-ahead brings the chunks that follow")
            before = status(f)["misses"]
            assert reader.read(2 << 20) == data[65536:65536 + (2 << 20)]
            assert status(f)["misses"] == before  # already here


def test_eviction_never_drops_the_last_copy(tmp_path):
    """Chunks the remote does not hold keep their data, however far past the bound."""
    maiffs("mkfs", tmp_path / "s")
    store = Store.open(str(tmp_path / "s"))
    try:
        snapshots = Snapshots(Namespace(store))
        follower = Follower(SnapshotService(snapshots), str(tmp_path / "s"),
                            str(tmp_path / "remote"), 1.0, cache_limit=1)
        chunks = [prepare_chunk(os.urandom(4096), 3) for _ in range(4)]
        with follower.remote.uploader() as up:  # the remote holds the first two only
            for chunk in chunks[:2]:
                up.add_chunk(chunk.id, chunk.raw_len, chunk.encoded)
        store.write(lambda txn: [snapshots.ns.chunks.add(txn, chunk) for chunk in chunks])
        follower.trim()
        with store.read() as txn:
            kept = [txn.get("chunks", chunk.id) is not None for chunk in chunks]
        assert kept == [False, False, True, True] and follower.evictions == 2
    finally:
        store.close()
