"""Snapshots against crashes, old stores and the clock: kill -9 while a snapshot is being taken
or deleted leaves the old state or the new one; a format-1 store is upgraded when mounted;
automatic snapshots are taken and pruned by the keep policy on a real mount.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest

from conftest import MaiffsMount, maiffs, mount_session
from maiffs.snapshots.retention import auto_time
from maiffs.store import STORE_FORMAT, Store
from old_store import make_old

FILES = 1500


def fill(root: Path, tag: str) -> dict[str, bytes]:
    """A tree of FILES small files (distinct content per tag) under root; returns path -> bytes."""
    expected = {}
    for i in range(FILES):
        rel = f"d{i % 30}/f{i}"
        data = hashlib.sha256(f"{tag}{i}".encode()).digest() * (1 + i % 7)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[rel] = data
    return expected


def tree_of(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            out[str(path.relative_to(root))] = path.read_bytes()
    return out


def snapshots(m: MaiffsMount) -> list[str]:
    return sorted(os.listdir(m.path / ".snapshots"))


def fsck_clean(m: MaiffsMount) -> None:
    m.unmount()
    done = maiffs("fsck", m.store, check=False)
    m.mount()
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.08, 0.2])
def test_kill_9_while_a_snapshot_is_taken(tmp_path, delay):
    with mount_session(tmp_path) as m:
        before = fill(m.path / "t", "old")
        os.mkdir(m.path / ".snapshots" / "first")
        after = fill(m.path / "t", "new")  # the snapshot below must build 1500 new objects
        names = kill_during(m, os.mkdir, m.path / ".snapshots" / "second", delay)
        assert names in (["first"], ["first", "second"]), names
        assert tree_of(m.path / ".snapshots" / "first" / "t") == before
        if "second" in names:
            assert tree_of(m.path / ".snapshots" / "second" / "t") == after
        assert tree_of(m.path / "t") == after  # closed files survive kill -9
        os.mkdir(m.path / ".snapshots" / "third")  # and it keeps working
        assert tree_of(m.path / ".snapshots" / "third" / "t") == after
        fsck_clean(m)


def kill_during(m: MaiffsMount, action, path: Path, delay: float) -> list[str]:
    """Run action(path) in a thread, kill -9 the daemon after delay, remount; the snapshots."""
    worker = threading.Thread(target=_ignore_errors, args=(action, path))
    worker.start()
    time.sleep(delay)
    m.kill()
    worker.join(timeout=30)
    m.mount()
    return snapshots(m)


def _ignore_errors(action, path: Path) -> None:
    try:
        action(path)
    except OSError:
        pass  # the daemon died under it


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2])
def test_kill_9_while_a_snapshot_is_deleted(tmp_path, delay):
    with mount_session(tmp_path) as m:
        old = fill(m.path / "t", "old")
        os.mkdir(m.path / ".snapshots" / "doomed")
        new = fill(m.path / "t", "new")  # the old content is held by the snapshot alone
        os.mkdir(m.path / ".snapshots" / "kept")
        names = kill_during(m, os.rmdir, m.path / ".snapshots" / "doomed", delay)
        assert names in (["doomed", "kept"], ["kept"]), names
        if "doomed" in names:
            assert tree_of(m.path / ".snapshots" / "doomed" / "t") == old
        assert tree_of(m.path / ".snapshots" / "kept" / "t") == new
        fsck_clean(m)


def test_a_format_1_store_is_upgraded_when_mounted(tmp_path):
    with mount_session(tmp_path) as m:
        expected = fill(m.path / "t", "v1")
        os.link(m.path / "t" / "d0" / "f0", m.path / "hard")
        m.unmount()
        make_old(m.store, 1)  # make it a store as maiffs 0.1 wrote it

        report = json.loads(maiffs("stat", "--json", m.store).stdout)  # read-only open of format 1
        assert report["inodes"] == FILES + 30 + 2 and report["snapshots"] == 0

        m.mount()
        assert tree_of(m.path / "t") == expected
        os.mkdir(m.path / ".snapshots" / "after-upgrade")
        (m.path / "t" / "d0" / "f0").write_bytes(b"changed")
        assert (m.path / "hard").read_bytes() == b"changed"
        assert tree_of(m.path / ".snapshots" / "after-upgrade" / "t") == expected
        diff = maiffs("snapshot", "diff", m.path, "after-upgrade").stdout.split("\n")
        assert "M t/d0/f0" in diff and "M hard" in diff
        fsck_clean(m)
        store = Store.open(str(m.store), readonly=True)
        store.close()
        assert store.format == STORE_FORMAT


def test_automatic_snapshots_are_taken_and_pruned(tmp_path):
    with mount_session(tmp_path, ["snapshot_every=1s,keep=last:2", "commit_interval=0.5"]) as m:
        os.mkdir(m.path / ".snapshots" / "manual")
        seen: set[str] = set()
        deadline = time.monotonic() + 30
        counter = 0
        while len(seen) < 4:
            assert time.monotonic() < deadline, f"automatic snapshots seen so far: {sorted(seen)}"
            counter += 1
            (m.path / "counter").write_text(str(counter))
            names = snapshots(m)
            autos = [n for n in names if auto_time(n) is not None]
            assert "manual" in names  # never pruned
            assert len(autos) <= 2 + 1, names  # one may be taken between prune and listing
            seen.update(autos)
            time.sleep(0.3)
        time.sleep(0.5)
        autos = [n for n in snapshots(m) if auto_time(n) is not None]
        seen.update(autos)
        assert autos == sorted(seen)[-len(autos):]  # the newest ones are those kept
        newest = m.path / ".snapshots" / autos[-1] / "counter"
        assert int(newest.read_text()) <= counter


def test_snapshot_names_are_checked(mounted):
    snapdir = mounted.path / ".snapshots"
    with pytest.raises(OSError) as exc:
        os.mkdir(snapdir / ("x" * 256))
    assert exc.value.errno == errno.ENAMETOOLONG
    os.mkdir(snapdir / "a b ü")
    with pytest.raises(FileExistsError):
        os.mkdir(snapdir / "a b ü")
    with pytest.raises(FileNotFoundError):
        os.rmdir(snapdir / "missing")
    assert snapshots(mounted) == ["a b ü"]
