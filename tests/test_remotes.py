"""Remotes: push, pull and clone of snapshots, resumable, verified, healed (design.md §6).

Every test that takes `spot` runs twice: against a directory remote and against a bucket on a
real Ceph RADOS Gateway (remote_spots.py).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import maiffs, make_mount, mount_session
from fsutil import flip_a_byte_of_every_chunk, killed_once_arrived, wait_for
from maiffs.store.lock import StoreLock
from remote_spots import DirSpot, flip_byte


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


def moved(*args: str | os.PathLike) -> dict[str, int]:
    """What a push/pull/clone moved (its --json answer)."""
    return json.loads(maiffs(*args, "--json").stdout)


def test_push_then_clone_gives_the_same_tree_and_snapshots(tmp_path, spot):
    with session(tmp_path / "a") as a:
        fill(a.path, "one")
        os.mkdir(a.path / ".snapshots" / "s1")
        (a.path / "src" / "f3.txt").write_text("changed")
        os.mkdir(a.path / ".snapshots" / "s2")
        spot.add(a.path, "origin")
        first = maiffs("push", a.path, "origin")
        assert "pushed 2 snapshots" in first.stdout
        assert "push origin [" in first.stderr  # the progress display (plain lines: no terminal)
        again = moved("push", a.path, "origin")
        assert again == {"snapshots": 2, "objects": 0, "chunks": 0, "bytes": 0, "packs": 0}
        clone = tmp_path / "b-store"
        maiffs("clone", spot.url, clone)
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
    assert not (clone / "incoming").exists() or not os.listdir(clone / "incoming")


def test_small_files_are_packed(tmp_path, spot):
    with session(tmp_path / "a") as a:
        for d in range(20):
            (a.path / f"d{d}").mkdir()
            for i in range(250):
                (a.path / f"d{d}" / f"f{i}").write_bytes(os.urandom(2048))
        os.mkdir(a.path / ".snapshots" / "s")
        spot.add(a.store, "r")
        sent = moved("push", a.store, "r")
    assert sent["chunks"] == 5000 and sent["objects"] == 5021  # files, directories, the root
    assert len(spot.keys()) == 2 * sent["packs"] + 1  # each pack, its index, the ref
    assert sent["packs"] <= 4
    maiffs("clone", spot.url, tmp_path / "b")
    assert maiffs("fsck", tmp_path / "b", check=False).returncode == 0


def test_pull_into_a_mounted_store_and_push_only_changes(tmp_path, spot):
    with session(tmp_path / "a") as a, session(tmp_path / "b") as b:
        fill(a.path, "base")
        os.mkdir(a.path / ".snapshots" / "v1")
        spot.add(a.store, "r")
        spot.add(b.store, "r")
        maiffs("push", a.store, "r")
        assert "pulled 1 snapshots" in maiffs("pull", b.path, "r").stdout
        same_tree(a.path / ".snapshots" / "v1", b.path / ".snapshots" / "v1")
        (a.path / "src" / "f10.txt").write_text("one change")
        os.mkdir(a.path / ".snapshots" / "v2")
        sent = moved("push", a.store, "r", "v2")
        assert sent["snapshots"] == 1
        assert 0 < sent["bytes"] < 1 << 20  # one file and the directories above it, not 3 MiB again
        got = moved("pull", b.path, "r")
        assert got["snapshots"] == 1 and got["bytes"] < 1 << 20
        assert (b.path / ".snapshots" / "v2" / "src" / "f10.txt").read_text() == "one change"
        same_tree(a.path / ".snapshots" / "v2", b.path / ".snapshots" / "v2")


def test_a_push_or_pull_killed_half_way_finishes_when_run_again(tmp_path, spot):
    total = 96 << 20
    with session(tmp_path / "a") as a:
        for i in range(6):
            (a.path / f"part{i}").write_bytes(os.urandom(total // 6))
        os.mkdir(a.path / ".snapshots" / "s")
        spot.add(a.store, "r")
        killed_once_arrived(["push", a.store, "r"], lambda: spot.keys("index/"))
        assert spot.keys("volumes/") == []  # no ref before everything it needs is there
        arrived = len(spot.keys("index/"))
        second = moved("push", a.store, "r")
        assert second["snapshots"] == 1
        assert second["bytes"] <= total - arrived * (15 << 20)  # nothing that arrived went again

        maiffs("mkfs", tmp_path / "b-store")
        spot.add(tmp_path / "b-store", "r")
        staged = tmp_path / "b-store" / "incoming"

        def staged_indexes() -> list[Path]:  # not the temp files they are written as
            return [p for p in staged.glob("*/index/*") if not p.name.startswith(".")]

        killed_once_arrived(["pull", tmp_path / "b-store", "r"], staged_indexes)
        beside = StoreLock(str(next(staged.iterdir())), "a test")  # as a pull running beside
        try:
            done = maiffs("pull", tmp_path / "b-store", "r", check=False)
        finally:
            beside.release()
        assert done.returncode == 1 and "is running (pid " in done.stderr
        arrived = len(staged_indexes())
        assert maiffs("snapshot", "list", tmp_path / "b-store").stdout == ""
        got = moved("pull", tmp_path / "b-store", "r")
        assert got["snapshots"] == 1 and got["bytes"] <= total - arrived * (15 << 20)
        (tmp_path / "b").mkdir()
        maiffs("mount", tmp_path / "b-store", tmp_path / "b")
        try:
            same_tree(a.path, tmp_path / "b" / ".snapshots" / "s")
        finally:
            maiffs("umount", tmp_path / "b")
    assert maiffs("fsck", tmp_path / "b-store", check=False).returncode == 0


def test_a_corrupt_remote_pack_is_refused_and_nothing_changes(tmp_path, spot):
    with session(tmp_path / "a") as a:
        (a.path / "data.bin").write_bytes(os.urandom(2 << 20))
        os.mkdir(a.path / ".snapshots" / "s")
        spot.add(a.store, "r")
        maiffs("push", a.store, "r")
    data_pack = max(spot.keys("packs/"), key=lambda k: len(spot.read(k)))
    flip_byte(spot, data_pack, 1 << 20)
    maiffs("mkfs", tmp_path / "b")
    spot.add(tmp_path / "b", "r")
    done = maiffs("pull", tmp_path / "b", "r", check=False)
    last = done.stderr.splitlines()[-1]
    assert done.returncode == 1 and last.startswith("maiffs: remote ") and "does not match" in last
    assert json.loads(maiffs("stat", "--json", tmp_path / "b").stdout)["chunks"] == 0
    assert maiffs("snapshot", "list", tmp_path / "b").stdout == ""
    done = maiffs("clone", spot.url, tmp_path / "c", check=False)
    assert done.returncode == 1 and done.stderr.splitlines()[-1].startswith("maiffs: remote ")


def test_two_stores_push_to_one_remote_at_once(tmp_path, spot):
    for name in ("a", "b"):
        with session(tmp_path / name) as m:
            fill(m.path, name)
            (m.path / "shared.bin").write_bytes(b"the same content in both\n" * 400_000)
            os.mkdir(m.path / ".snapshots" / f"from-{name}")
            spot.add(m.store, "r")
    pushes = [subprocess.Popen([sys.executable, "-m", "maiffs", "push", "--quiet",
                                tmp_path / name / "store", "r"], stderr=subprocess.PIPE)
              for name in ("a", "b")]
    for push in pushes:
        assert push.wait(timeout=120) == 0, push.stderr.read() if push.stderr else ""
        if push.stderr:
            push.stderr.close()
    assert sorted(k.rsplit("/", 1)[1] for k in spot.keys("volumes/")) == ["from-a", "from-b"]
    maiffs("clone", spot.url, tmp_path / "c")
    assert maiffs("fsck", tmp_path / "c", check=False).returncode == 0
    assert maiffs("verify", tmp_path / "c", "--remote", "origin").returncode == 0


def test_volumes_keep_writers_apart_and_share_their_data(tmp_path, spot):
    same = os.urandom(4 << 20)
    for name in ("a", "b"):
        with session(tmp_path / name) as m:
            (m.path / "same.bin").write_bytes(same)
            (m.path / "own").write_text(name)
            os.mkdir(m.path / ".snapshots" / "daily")  # the same name in both volumes
            spot.add(m.store, "r", volume=name)
            sent = moved("push", m.store, "r")
        assert (sent["bytes"] > 4 << 20) == (name == "a")  # b's copy of same.bin was there
    for name in ("a", "b"):
        maiffs("clone", f"{spot.url}#{name}", tmp_path / f"clone-{name}")
        (tmp_path / f"m-{name}").mkdir()
        maiffs("mount", tmp_path / f"clone-{name}", tmp_path / f"m-{name}")
        try:
            assert (tmp_path / f"m-{name}" / "own").read_text() == name
            assert (tmp_path / f"m-{name}" / "same.bin").read_bytes() == same
        finally:
            maiffs("umount", tmp_path / f"m-{name}")
    done = maiffs("remote", "add", tmp_path / "clone-a", "bad", f"{spot.url}#no/slash", check=False)
    assert done.returncode == 1 and "volume 'no/slash'" in done.stderr


def backed_up(m, data: bytes, spot, name: str) -> None:
    """data.bin holding data, snapshot s, pushed to a new remote name at spot."""
    (m.path / "data.bin").write_bytes(data)
    os.mkdir(m.path / ".snapshots" / "s")
    spot.add(m.store, name)
    maiffs("push", m.store, name)


def test_a_damaged_chunk_is_healed_from_a_remote(tmp_path, spot):
    data = os.urandom(5 << 20)
    with session(tmp_path / "a") as a:
        backed_up(a, data, spot, "backup")
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
        log = (a.store / "maiffs.log").read_text()
        assert "no remote has it" in log and "data.bin" in log


def test_verify_reports_and_repairs_both_sides(tmp_path, spot):
    data = os.urandom(40 << 20)  # three data packs
    with session(tmp_path / "a") as a:
        backed_up(a, data, spot, "r")
        clean = maiffs("verify", a.path, "--remote", "r")
        assert clean.stdout.strip().endswith("0 problems")
        checked = int(clean.stdout.split("verify: ")[1].split()[0])
        sampled = maiffs("verify", a.path, "--remote", "r", "--sample", "0").stdout
        assert int(sampled.split("verify: ")[1].split()[0]) < checked  # objects only
        packs = sorted(spot.keys("packs/"), key=lambda k: len(spot.read(k)))
        lost, damaged = packs[-1], packs[-2]  # two data packs: one lost, one with a flipped byte
        spot.delete(lost)
        flip_byte(spot, damaged, 100)
        found = maiffs("verify", a.path, "--remote", "r", check=False)
        assert found.returncode == 1
        assert "is missing (NOT repaired)" in found.stdout
        assert "does not match its hash (NOT repaired)" in found.stdout \
            or "does not decompress" in found.stdout
        fixed = maiffs("verify", a.path, "--remote", "r", "--repair")
        assert fixed.stdout.count("(repaired)") == found.stdout.count("(NOT repaired)")
        assert maiffs("verify", a.path, "--remote", "r").returncode == 0
        a.unmount()
        flip_a_byte_of_every_chunk(a.store)
        bad = maiffs("verify", a.store, "--json", check=False)
        assert bad.returncode == 1 and '"where": "local"' in bad.stdout
        maiffs("verify", a.store, "--remote", "r", "--repair")
        assert maiffs("verify", a.store, "--remote", "r").returncode == 0
        assert maiffs("fsck", a.store, check=False).returncode == 0
        a.mount()
        assert (a.path / "data.bin").read_bytes() == data


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
        (("clone", "ftp://host/dir", tmp_path / "c"), "a remote is a directory"),
    ]:
        (tmp_path / "plain").mkdir(exist_ok=True)
        done = maiffs(*args, check=False)
        assert done.returncode == 1 and words in done.stderr, (args, done.stderr)
    maiffs("remote", "add", tmp_path / "s", "x", tmp_path / "r")
    assert "exists" in maiffs("remote", "add", tmp_path / "s", "x", tmp_path / "r2", check=False).stderr
    assert oct(os.stat(tmp_path / "s" / "remotes.json").st_mode & 0o777) == "0o600"
    done = maiffs("pull", tmp_path / "s", "x", "no-such", check=False)
    assert done.returncode == 1 and "has no snapshot 'no-such'" in done.stderr
    maiffs("remote", "remove", tmp_path / "s", "x")
    assert maiffs("remote", "list", tmp_path / "s").stdout == ""
    assert not (tmp_path / "c").exists()


def test_replicate_pushes_every_new_snapshot_and_shows_the_lag(tmp_path):
    remote = DirSpot(tmp_path / "remote")
    base = tmp_path / "a"
    base.mkdir()
    m = make_mount(base, ["replicate=off", "snapshot_every=1s,keep=last:3"])
    remote.add(m.store, "off")
    m.mount()
    try:
        (m.path / "f").write_text("one")
        os.mkdir(m.path / ".snapshots" / "manual")
        wait_for(lambda: "manual" in _refs(remote), "the manual snapshot reaches the remote")
        wait_for(lambda: any(n.startswith("auto-") for n in _refs(remote)), "an automatic one too")
        status = json.loads(maiffs("stat", "--json", m.path).stdout)["replication"]["off"]
        assert status["last_error"] is None and status["lag_seconds"] < 30
        m.unmount()
        os.rename(remote.root, tmp_path / "moved")
        remote.root.write_text("not a directory: pushes fail")
        m.mount()
        os.mkdir(m.path / ".snapshots" / "while-broken")
        wait_for(lambda: _replication(m)["last_error"], "the failure shows")
        assert "while-broken" in _replication(m)["pending"]
        out = maiffs("umount", m.path).stdout
        assert "replication to off not finished" in out
        remote.root.unlink()
        os.rename(tmp_path / "moved", remote.root)
        m.mount()  # what the remote lacks is pushed at mount
        wait_for(lambda: "while-broken" in _refs(remote), "pending snapshots pushed after remount")
        clone = tmp_path / "clone"
        maiffs("clone", remote.url, clone)
        assert maiffs("fsck", clone, check=False).returncode == 0
    finally:
        m.cleanup()


def _refs(remote: DirSpot) -> list[str]:
    return [k.rsplit("/", 1)[1] for k in remote.keys("volumes/default/refs")]


def _replication(m) -> dict:
    return json.loads(maiffs("stat", "--json", m.path).stdout)["replication"]["off"]
