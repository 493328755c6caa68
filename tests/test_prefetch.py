"""`maiffs prefetch PATH...` (issue 9): files of a follower mount read through it, so that its
store holds their data and later reads are local even with the remote away; with progress,
--quiet and --json like the other long commands."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import MaiffsMount, maiffs, make_mount, mount_session
from fsutil import read_file, wait_for
from remote_spots import DirSpot

MiB = 1 << 20


def stats(m: MaiffsMount) -> dict:
    return json.loads((m.path / ".maiffs" / "stats").read_text())


#: what the writer's snapshot v1 holds
FILES = {"d/one": 2 * MiB, "d/two": 2 * MiB, "d/small": 100, "other": MiB}


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[tuple[DirSpot, dict[str, bytes]]]:
    """A remote holding snapshot v1 of a writer (FILES, random), and that content."""
    spot = DirSpot(tmp_path / "remote")
    data = {name: os.urandom(size) for name, size in FILES.items()}
    (tmp_path / "w").mkdir()
    w = make_mount(tmp_path / "w")
    spot.add(w.store, "r")
    w.mount()
    try:
        (w.path / "d").mkdir()
        for name, content in data.items():
            (w.path / name).write_bytes(content)
        os.mkdir(w.path / ".snapshots" / "v1")
    finally:
        w.cleanup()
    maiffs("push", "--quiet", w.store, "r")
    yield spot, data


def follower(base: Path, spot: DirSpot, *options: str) -> MaiffsMount:
    base.mkdir()
    (base / "mnt").mkdir()
    m = MaiffsMount(base / "store", base / "mnt", [f"follow={spot.url}", "follow_every=0.5s",
                                                   "commit_interval=0.5", *options])
    m.mount()
    return m


def test_prefetched_files_read_locally_with_the_remote_away(tmp_path, remote):
    spot, data = remote
    f = follower(tmp_path / "f", spot)
    try:
        wait_for(lambda: stats(f)["follow"]["showing"] == "v1", "the follower shows v1")
        assert stats(f)["stored_bytes"] < MiB  # the tree only: data is fetched when read
        done = maiffs("prefetch", f.path / "d")
        assert done.stdout == f"prefetched 3 files ({4 * MiB + 100} bytes)\n"
        lines = done.stderr.splitlines()
        assert lines and all(line.startswith("prefetch [") for line in lines), done.stderr
        assert re.search(r"\] 100% 4\.0 MiB/4\.0 MiB 3/3 files .*/s ETA 0:00:00$", lines[-1])
        wait_for(lambda: stats(f)["stored_bytes"] >= 4 * MiB, "the fetched data is committed")

        os.rename(spot.root, tmp_path / "away")
        f.remount()  # nothing in memory: what is read now comes from the store or nowhere
        for name in ("d/one", "d/two", "d/small"):
            assert read_file(f.path / name) == data[name]
        assert stats(f)["follow"]["misses"] == 0

        failed = maiffs("prefetch", f.path / "other", f.path / "d" / "small", check=False)
        assert failed.returncode == 1
        assert f"maiffs: {f.path / 'other'}: Input/output error" in failed.stderr.splitlines()
        assert failed.stdout == "prefetched 1 files (100 bytes); 1 could not be read\n"
        wait_for(lambda: stats(f)["follow"]["last_error"], "the follower finds the remote gone")
        table = maiffs("stat", f.path).stdout
        assert re.search(r"^following +.*; last error: remote .* does not exist$", table, re.M)
        os.rename(tmp_path / "away", spot.root)
        wait_for(lambda: stats(f)["follow"]["showing"] == "v1", "the follower finds v1 again")
        table = maiffs("stat", f.path).stdout
        assert re.search(rf"^following +{re.escape(spot.url)}, showing v1; store cache "
                         r"unbounded, hit rate [\d.]+%", table, re.M), table
    finally:
        f.cleanup()


def test_quiet_json_and_the_cache_bound(tmp_path, remote):
    f = follower(tmp_path / "f", remote[0], "cache_size=3M")
    try:
        wait_for(lambda: stats(f)["follow"]["showing"] == "v1", "the follower shows v1")
        done = maiffs("prefetch", "--json", "--quiet", f.path / "d")
        assert json.loads(done.stdout) == {"files": 3, "bytes": 4 * MiB + 100, "failed": 0}
        assert done.stderr == (f"maiffs: warning: 4.0 MiB asked for in {f.path}, more than its "
                               f"store keeps (cache_size=3.0 MiB): what is read first is "
                               f"evicted again\n")
        assert maiffs("prefetch", "-q", f.path / "other").stderr == ""
    finally:
        f.cleanup()


def test_only_follower_mounts_are_prefetched(tmp_path):
    with mount_session(tmp_path) as m:
        (m.path / "f").write_text("here")
        for path, words in ((m.path / "f", f"maiffs: {m.path / 'f'} is not in a follower mount"),
                            (tmp_path, f"maiffs: {tmp_path} is not inside a maiffs mount")):
            done = maiffs("prefetch", path, check=False)
            assert done.returncode == 1 and done.stdout == ""
            assert done.stderr.startswith(words) and done.stderr.count("\n") == 1, done.stderr
