"""Directory remotes: push, pull and clone of snapshots, resumable, verified (design.md §6)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import lmdb
import pytest

from conftest import maiffs, make_mount, mount_session
from fsutil import wait_for
from maiffs.errors import FsError, StoreError
from maiffs.namespace import Namespace
from maiffs.remotes.dirremote import DirRemote
from maiffs.remotes.transfer import pull, push
from maiffs.snapshots.manager import Snapshots
from maiffs.store import Store


def session(base: Path):
    """A fresh store mounted under base (made here), unmounted afterwards whatever happens."""
    base.mkdir()
    return mount_session(base)


def fill(root: Path, tag: str) -> None:
    (root / "src").mkdir(exist_ok=True)
    for i in range(60):
        (root / "src" / f"f{i}.txt").write_text(f"{tag} line {i}\n" * (i * 50))
    (root / "big.bin").write_bytes(os.urandom(3 << 20))
    os.link(root / "src" / "f1.txt", root / "hard")
    os.symlink("src/f2.txt", root / "link")


def same_tree(a: Path, b: Path) -> None:
    done = subprocess.run(["diff", "-r", "--no-dereference", a, b], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_push_then_clone_gives_the_same_tree_and_snapshots(tmp_path):
    remote = tmp_path / "remote"
    with session(tmp_path / "a") as a:
        fill(a.path, "one")
        os.mkdir(a.path / ".snapshots" / "s1")
        (a.path / "src" / "f3.txt").write_text("changed")
        os.mkdir(a.path / ".snapshots" / "s2")
        maiffs("remote", "add", a.path, "origin", remote)
        first = maiffs("push", a.path, "origin").stdout
        assert "pushed 2 snapshots" in first
        again = maiffs("push", a.path, "origin").stdout
        assert "0 objects and 0 chunks sent (0 bytes)" in again  # only what the remote lacks
        clone = tmp_path / "b-store"
        maiffs("clone", remote, clone)
        (tmp_path / "b").mkdir()
        maiffs("mount", clone, tmp_path / "b")
        try:
            b = tmp_path / "b"
            same_tree(a.path, b)
            assert os.stat(b / "hard").st_ino == os.stat(b / "src" / "f1.txt").st_ino
            assert sorted(os.listdir(b / ".snapshots")) == ["s1", "s2"]
            same_tree(a.path / ".snapshots" / "s1", b / ".snapshots" / "s1")
            assert (b / ".snapshots" / "s1" / "src" / "f3.txt").read_text() != "changed"
        finally:
            maiffs("umount", b)
    assert maiffs("fsck", clone, check=False).returncode == 0


def test_pull_into_a_mounted_store_and_push_only_changes(tmp_path):
    remote = tmp_path / "remote"
    with session(tmp_path / "a") as a, session(tmp_path / "b") as b:
        fill(a.path, "base")
        os.mkdir(a.path / ".snapshots" / "v1")
        maiffs("remote", "add", a.store, "r", remote)
        maiffs("remote", "add", b.store, "r", remote)
        maiffs("push", a.store, "r")
        assert "pulled 1 snapshots" in maiffs("pull", b.path, "r").stdout
        same_tree(a.path / ".snapshots" / "v1", b.path / ".snapshots" / "v1")
        (a.path / "src" / "f10.txt").write_text("one change")
        os.mkdir(a.path / ".snapshots" / "v2")
        out = maiffs("push", a.store, "r", "v2").stdout
        assert "pushed 1 snapshots" in out
        sent = int(out.split("(")[1].split()[0])
        assert 0 < sent < 1 << 20  # one file and the directories above it, not 3 MiB again
        maiffs("pull", b.path, "r")
        assert (b.path / ".snapshots" / "v2" / "src" / "f10.txt").read_text() == "one change"


def offline_snapshots(store: Path) -> tuple[Store, Snapshots]:
    opened = Store.open(str(store))
    return opened, Snapshots(Namespace(opened))


def test_an_interrupted_push_finishes_when_run_again(tmp_path):
    with session(tmp_path / "a") as a:
        fill(a.path, "resume")
        os.mkdir(a.path / ".snapshots" / "s")
    store, snaps = offline_snapshots(tmp_path / "a" / "store")
    try:
        remote = DirRemote(str(tmp_path / "remote"))
        calls = {"n": 0}
        real_put = remote.put_object

        def failing_put(oid: bytes, encoded: bytes) -> None:
            calls["n"] += 1
            if calls["n"] == 20:
                raise OSError("the network went away")
            real_put(oid, encoded)

        remote.put_object = failing_put  # type: ignore[method-assign]
        with pytest.raises(OSError):
            push(snaps, remote)
        assert remote.refs() == []  # no ref before everything it needs is there
        remote.put_object = real_put  # type: ignore[method-assign]
        second = push(snaps, remote)
        assert second.objects > 0 and second.snapshots == 1
        total = push(snaps, DirRemote(str(tmp_path / "fresh")))
        assert second.objects == total.objects - 19  # nothing that arrived was sent again
    finally:
        store.close()
    b = tmp_path / "b"
    maiffs("clone", tmp_path / "remote", b)
    assert maiffs("fsck", b, check=False).returncode == 0


def test_a_corrupt_remote_object_is_refused_and_nothing_changes(tmp_path):
    with session(tmp_path / "a") as a:
        fill(a.path, "corrupt")
        os.mkdir(a.path / ".snapshots" / "s")
        maiffs("remote", "add", a.store, "r", tmp_path / "remote")
        maiffs("push", a.store, "r")
    victim = next(p for p in (tmp_path / "remote" / "chunks").rglob("*") if p.is_file())
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    maiffs("mkfs", tmp_path / "b")
    store, snaps = offline_snapshots(tmp_path / "b")
    try:
        with pytest.raises(FsError):
            pull(snaps, DirRemote(str(tmp_path / "remote")))
        assert snaps.list() == [] and store.stats()["chunks"] == 0
    finally:
        store.close()
    done = maiffs("clone", tmp_path / "remote", tmp_path / "c", check=False)
    assert done.returncode == 1 and done.stderr.startswith("maiffs: ")


def test_two_stores_push_to_one_remote_at_once(tmp_path):
    remote = tmp_path / "remote"
    stores = []
    for name in ("a", "b"):
        with session(tmp_path / name) as m:
            fill(m.path, name)
            (m.path / "shared.bin").write_bytes(b"the same content in both\n" * 100_000)
            os.mkdir(m.path / ".snapshots" / f"from-{name}")
        stores.append(offline_snapshots(tmp_path / name / "store"))
    try:
        errors: list[BaseException] = []

        def run(snaps: Snapshots) -> None:
            try:
                push(snaps, DirRemote(str(remote)))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(snaps,)) for _store, snaps in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
    finally:
        for store, _snaps in stores:
            store.close()
    assert DirRemote(str(remote)).refs() == ["from-a", "from-b"]
    maiffs("clone", remote, tmp_path / "c")
    assert maiffs("fsck", tmp_path / "c", check=False).returncode == 0


def test_remote_commands_refuse_bad_input(tmp_path):
    maiffs("mkfs", tmp_path / "s")
    for args, words in [
        (("remote", "add", tmp_path / "s", "x", "s3:///no-bucket"), "names no bucket"),
        (("remote", "add", tmp_path / "s", "x", "ftp://host/dir"), "a remote is a directory"),
        (("remote", "add", tmp_path / "s", "x", "/abs", "--endpoint", "http://h"), "goes with s3"),
        (("remote", "add", tmp_path / "s", "x", "relative/dir"), "absolute"),
        (("remote", "add", tmp_path / "plain", "x", "/abs"), "is not a maiffs store"),
        (("push", tmp_path / "s", "nope"), "no remote named"),
        (("clone", tmp_path / "empty-remote", tmp_path / "c"), "does not exist"),
    ]:
        (tmp_path / "plain").mkdir(exist_ok=True)
        done = maiffs(*args, check=False)
        assert done.returncode == 1 and words in done.stderr, (args, done.stderr)
    maiffs("remote", "add", tmp_path / "s", "x", tmp_path / "r")
    assert "exists" in maiffs("remote", "add", tmp_path / "s", "x", tmp_path / "r2", check=False).stderr
    assert oct(os.stat(tmp_path / "s" / "remotes.json").st_mode & 0o777) == "0o600"
    maiffs("remote", "remove", tmp_path / "s", "x")
    assert maiffs("remote", "list", tmp_path / "s").stdout == ""
    assert not (tmp_path / "c").exists()
    with pytest.raises(StoreError):
        DirRemote(str(tmp_path / "nowhere")).refs()


def flip_a_byte_of_every_chunk(store: Path) -> int:
    env = lmdb.open(str(store), max_dbs=32, map_size=4 << 30)
    chunks = env.open_db(b"chunks")
    with env.begin(write=True) as txn:
        items = [(bytes(k), bytearray(v)) for k, v in txn.cursor(db=chunks)]
        for key, value in items:
            value[len(value) // 2] ^= 0x55
            txn.put(key, bytes(value), db=chunks)
    env.close()
    return len(items)


def backed_up(m, data: bytes, remote: Path, name: str) -> None:
    """data.bin holding data, snapshot s, pushed to a new remote name at remote."""
    (m.path / "data.bin").write_bytes(data)
    os.mkdir(m.path / ".snapshots" / "s")
    maiffs("remote", "add", m.store, name, remote)
    maiffs("push", m.store, name)


def test_a_damaged_chunk_is_healed_from_a_remote(tmp_path):
    data = os.urandom(5 << 20)
    with session(tmp_path / "a") as a:
        backed_up(a, data, tmp_path / "remote", "backup")
        a.unmount()
        assert flip_a_byte_of_every_chunk(a.store) > 0
        assert maiffs("fsck", a.store, check=False).returncode == 1  # damaged, as meant
        a.mount()
        assert (a.path / "data.bin").read_bytes() == data  # served from the remote's copies
        log = (a.store / "maiffs.log").read_text()
        assert "using the copy on remote backup" in log
        a.unmount()  # writes the good copies back
        done = maiffs("fsck", a.store, check=False)
        assert done.returncode == 0, done.stdout
        a.mount()


def test_with_no_good_copy_a_damaged_chunk_is_eio(tmp_path):
    with session(tmp_path / "a") as a:
        (a.path / "data.bin").write_bytes(os.urandom(1 << 20))
        maiffs("remote", "add", a.store, "empty", tmp_path / "remote")
        (tmp_path / "remote").mkdir()
        a.unmount()
        flip_a_byte_of_every_chunk(a.store)
        a.mount()
        with pytest.raises(OSError) as exc:
            (a.path / "data.bin").read_bytes()
        assert exc.value.errno == errno.EIO
        assert "no remote has it" in (a.store / "maiffs.log").read_text()


def test_verify_reports_and_repairs_both_sides(tmp_path):
    data = os.urandom(4 << 20)
    with session(tmp_path / "a") as a:
        backed_up(a, data, tmp_path / "remote", "r")
        clean = maiffs("verify", a.path, "--remote", "r")
        assert clean.stdout.strip().endswith("0 problems")
        files = sorted(p for p in (tmp_path / "remote" / "chunks").rglob("*") if p.is_file())
        files[0].unlink()  # a remote chunk lost
        damaged = bytearray(files[1].read_bytes())
        damaged[-1] ^= 1
        files[1].write_bytes(bytes(damaged))  # and one corrupt
        found = maiffs("verify", a.path, "--remote", "r", check=False)
        assert found.returncode == 1
        assert f"r: chunk {files[0].name}: is missing (NOT repaired)" in found.stdout
        assert f"r: chunk {files[1].name}:" in found.stdout
        fixed = maiffs("verify", a.path, "--remote", "r", "--repair")
        assert fixed.stdout.count("(repaired)") == 2
        a.unmount()
        flip_a_byte_of_every_chunk(a.store)
        bad = maiffs("verify", a.store, "--json", check=False)
        assert bad.returncode == 1 and '"where": "local"' in bad.stdout
        maiffs("verify", a.store, "--remote", "r", "--repair")
        assert maiffs("verify", a.store, "--remote", "r").returncode == 0
        assert maiffs("fsck", a.store, check=False).returncode == 0
        a.mount()
        assert (a.path / "data.bin").read_bytes() == data


def test_replicate_pushes_every_new_snapshot_and_shows_the_lag(tmp_path):
    remote = tmp_path / "remote"
    base = tmp_path / "a"
    base.mkdir()
    m = make_mount(base, ["replicate=off", "snapshot_every=1s,keep=last:3"])
    maiffs("remote", "add", m.store, "off", remote)
    m.mount()
    try:
        (m.path / "f").write_text("one")
        os.mkdir(m.path / ".snapshots" / "manual")
        wait_for(lambda: "manual" in _refs(remote), "the manual snapshot reaches the remote")
        wait_for(lambda: any(n.startswith("auto-") for n in _refs(remote)), "an automatic one too")
        status = json.loads(maiffs("stat", "--json", m.path).stdout)["replication"]["off"]
        assert status["last_error"] is None and status["lag_seconds"] < 30
        m.unmount()
        shutil.rmtree(remote)
        remote.write_text("not a directory: pushes fail")
        m.mount()
        os.mkdir(m.path / ".snapshots" / "while-broken")
        wait_for(lambda: _replication(m)["last_error"], "the failure shows")
        assert "while-broken" in _replication(m)["pending"]
        out = maiffs("umount", m.path).stdout
        assert "replication to off not finished" in out
        remote.unlink()
        m.mount()  # what the remote lacks is pushed at mount
        wait_for(lambda: "while-broken" in _refs(remote), "pending snapshots pushed after remount")
        clone = tmp_path / "clone"
        maiffs("clone", remote, clone)
        assert maiffs("fsck", clone, check=False).returncode == 0
    finally:
        m.cleanup()


def _refs(remote: Path) -> list[str]:
    folder = remote / "refs" / "snapshots"
    return os.listdir(folder) if folder.is_dir() else []


def _replication(m) -> dict:
    return json.loads(maiffs("stat", "--json", m.path).stdout)["replication"]["off"]
