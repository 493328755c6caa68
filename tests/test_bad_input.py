"""Bad input through the CLI: a one-line reason on stderr, a non-zero exit, and nothing stored lost."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import lmdb
import pytest

from conftest import MaiffsMount, make_mount, maiffs
from fsutil import write_file
from maiffs.mounts import find_mount, is_mountpoint
from maiffs.store import STORE_FORMAT
from maiffs.store.env import format_of
from maiffs.store.lock import is_locked


def refused(done: subprocess.CompletedProcess, *needles: object) -> str:
    """The command failed with exactly one clear line on stderr mentioning every needle."""
    err = done.stderr.strip()
    assert done.returncode != 0, f"succeeded: {done.stdout!r}"
    assert err, "no reason given on stderr"
    assert "\n" not in err, f"not one line:\n{err}"
    assert "Traceback" not in err and "Usage:" not in err
    for needle in needles:
        assert str(needle) in err, f"{needle!r} not in {err!r}"
    return err


def snapshot_tree(root: Path) -> dict[str, tuple[int, str]]:
    """Every file and directory under root with its mode and content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
            out[str(path.relative_to(root))] = (st.st_mode, digest)
    return out


def unmount_if_mounted(path: Path) -> None:
    """Safety net for a mount that should have been refused but happened."""
    if is_mountpoint(str(path)):
        if maiffs("umount", path, check=False).returncode != 0:
            subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True)


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.fixture
def store_with_data(tmp_path: Path):
    """An unmounted store holding one known file, and a free mount point."""
    m = make_mount(tmp_path)
    data = os.urandom(300_000)
    m.mount()
    try:
        write_file(m.path / "kept", data)
    finally:
        m.unmount()
    yield m, data
    m.cleanup()


def assert_data_intact(m: MaiffsMount, data: bytes) -> None:
    m.mount()
    try:
        assert (m.path / "kept").read_bytes() == data
    finally:
        m.unmount()


# -- stores that are not stores ---------------------------------------------------------------
def test_mount_empty_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "mnt").mkdir()
    err = refused(maiffs("mount", tmp_path / "empty", tmp_path / "mnt", check=False), tmp_path / "empty")
    assert "store" in err
    assert os.listdir(tmp_path / "empty") == []
    assert not is_mountpoint(str(tmp_path / "mnt"))


def test_mount_dir_with_random_files(tmp_path):
    junk = tmp_path / "junk"
    (junk / "sub").mkdir(parents=True)
    (junk / "notes.txt").write_text("my notes\n")
    (junk / "sub" / "blob.bin").write_bytes(os.urandom(100_000))
    (tmp_path / "mnt").mkdir()
    before = snapshot_tree(junk)
    err = refused(maiffs("mount", junk, tmp_path / "mnt", check=False), junk)
    assert "store" in err
    assert snapshot_tree(junk) == before
    assert not is_mountpoint(str(tmp_path / "mnt"))


def test_mount_dir_with_garbage_data_mdb(tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    garbage = os.urandom(64 << 10)
    (junk / "data.mdb").write_bytes(garbage)
    (junk / "readme").write_text("not a store\n")
    (tmp_path / "mnt").mkdir()
    refused(maiffs("mount", junk, tmp_path / "mnt", check=False), junk)
    assert (junk / "data.mdb").read_bytes() == garbage
    assert (junk / "readme").read_text() == "not a store\n"
    assert not is_mountpoint(str(tmp_path / "mnt"))


def test_mount_foreign_lmdb_env(tmp_path):
    """Another program's LMDB environment is refused and left as it was."""
    foreign = tmp_path / "foreign"
    env = lmdb.open(str(foreign), map_size=16 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"their", b"data")
    env.close()
    (tmp_path / "mnt").mkdir()
    data_before = (foreign / "data.mdb").read_bytes()
    err = refused(maiffs("mount", foreign, tmp_path / "mnt", check=False), foreign)
    assert "store" in err
    assert (foreign / "data.mdb").read_bytes() == data_before
    env = lmdb.open(str(foreign), map_size=16 << 20, readonly=True)
    with env.begin() as txn:
        assert txn.get(b"their") == b"data"
    env.close()
    assert not is_mountpoint(str(tmp_path / "mnt"))


def test_mount_missing_store(tmp_path):
    (tmp_path / "mnt").mkdir()
    missing = tmp_path / "nowhere"
    refused(maiffs("mount", missing, tmp_path / "mnt", check=False), missing)
    assert not missing.exists()
    assert not is_mountpoint(str(tmp_path / "mnt"))


def test_stat_and_umount_of_missing_store(tmp_path):
    refused(maiffs("stat", tmp_path / "nowhere", check=False), tmp_path / "nowhere")
    refused(maiffs("stat", tmp_path, check=False))
    assert not (tmp_path / "nowhere").exists()


def test_newer_store_format(store_with_data):
    m, data = store_with_data
    env = lmdb.open(str(m.store), max_dbs=16)
    meta = env.open_db(b"meta")
    with env.begin(write=True) as txn:
        current = txn.get(b"format", db=meta)
        assert format_of(current) == STORE_FORMAT
        txn.put(b"format", struct.pack(">I", 99), db=meta)
    env.close()
    before = (m.store / "data.mdb").read_bytes()
    err = refused(maiffs("mount", m.store, m.path, check=False), "99")
    assert "format" in err
    assert not is_mountpoint(str(m.path))
    refused(maiffs("stat", m.store, check=False), "99")
    assert (m.store / "data.mdb").read_bytes() == before
    assert not is_locked(str(m.store))
    env = lmdb.open(str(m.store), max_dbs=16)
    meta = env.open_db(b"meta")
    with env.begin(write=True) as txn:
        txn.put(b"format", current, db=meta)
    env.close()
    assert_data_intact(m, data)


# -- two mounts, busy and odd mount points -----------------------------------------------------------
def test_same_store_mounted_twice(mounted, tmp_path):
    write_file(mounted.path / "f", b"first mount")
    pid = mounted.daemon_pid()
    other = tmp_path / "mnt2"
    other.mkdir()
    try:
        err = refused(maiffs("mount", mounted.store, other, check=False))
        assert not is_mountpoint(str(other))
    finally:
        unmount_if_mounted(other)
    assert str(pid) in err and str(mounted.path) in err, err
    assert mounted.daemon_pid() == pid
    assert (mounted.path / "f").read_bytes() == b"first mount"
    write_file(mounted.path / "g", b"still works")
    assert sorted(os.listdir(mounted.path)) == ["f", "g"]
    mounted.remount()
    assert (mounted.path / "g").read_bytes() == b"still works"


def test_same_store_mounted_twice_foreground(mounted, tmp_path):
    other = tmp_path / "mnt2"
    other.mkdir()
    try:
        done = maiffs("mount", "-f", mounted.store, other, check=False, timeout=60)
        assert done.returncode != 0
        assert not is_mountpoint(str(other))
    finally:
        unmount_if_mounted(other)
    assert "in use" in done.stderr or str(mounted.daemon_pid()) in done.stderr
    assert os.listdir(mounted.path) == []
    write_file(mounted.path / "f", b"ok")


def test_missing_mount_point(store_with_data, tmp_path):
    m, data = store_with_data
    missing = tmp_path / "no" / "such"
    refused(maiffs("mount", m.store, missing, check=False), missing)
    assert not missing.exists()
    assert not is_locked(str(m.store))
    assert_data_intact(m, data)


def test_mount_point_is_a_file(tmp_path):
    m = make_mount(tmp_path)
    (tmp_path / "file").write_text("x")
    refused(maiffs("mount", m.store, tmp_path / "file", check=False), tmp_path / "file")
    assert (tmp_path / "file").read_text() == "x"
    assert not is_locked(str(m.store))


def test_non_empty_mount_point(store_with_data):
    m, data = store_with_data
    (m.path / "precious").write_text("do not hide me\n")
    refused(maiffs("mount", m.store, m.path, check=False), m.path)
    assert not is_mountpoint(str(m.path))
    assert (m.path / "precious").read_text() == "do not hide me\n"
    assert not is_locked(str(m.store))
    (m.path / "precious").unlink()
    assert_data_intact(m, data)


def test_mount_point_already_mounted(mounted, tmp_path):
    write_file(mounted.path / "f", b"first")
    second = tmp_path / "second"
    maiffs("mkfs", second)
    try:
        err = refused(maiffs("mount", second, mounted.path, check=False), mounted.path)
        assert find_mount(str(mounted.path)).store == str(mounted.store)
    finally:
        if find_mount(str(mounted.path)) and find_mount(str(mounted.path)).store == str(second):
            maiffs("umount", mounted.path, check=False)
    assert "mount" in err
    assert not is_locked(str(second))
    assert (mounted.path / "f").read_bytes() == b"first"
    # the same store on its own mount point again
    refused(maiffs("mount", mounted.store, mounted.path, check=False))
    assert (mounted.path / "f").read_bytes() == b"first"


@pytest.mark.parametrize("option", ["bogus", "allow_other,nonsense=1", "compression=abc",
                                    "compression=99", "commit_interval=0", "cache_size=lots"])
def test_bad_mount_option(tmp_path, option):
    m = make_mount(tmp_path)
    try:
        err = refused(maiffs("mount", m.store, m.path, "-o", option, check=False))
    finally:
        m.cleanup()
    assert option.split(",")[-1].split("=")[0] in err
    assert not is_mountpoint(str(m.path))
    assert not is_locked(str(m.store))


def test_bad_mount_option_leaves_store_usable(store_with_data):
    m, data = store_with_data
    refused(maiffs("mount", m.store, m.path, "-o", "bogus", check=False), "bogus")
    assert_data_intact(m, data)


# -- umount and mkfs ---------------------------------------------------------------------------------
def test_umount_not_mounted(tmp_path):
    (tmp_path / "plain").mkdir()
    err = refused(maiffs("umount", tmp_path / "plain", check=False), tmp_path / "plain")
    assert "not" in err
    refused(maiffs("umount", tmp_path / "missing", check=False), tmp_path / "missing")


def test_umount_of_a_foreign_mount_leaves_it_alone(tmp_path):
    d = tmp_path / "tmpfs"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)], check=True)
    try:
        (d / "f").write_text("tmpfs data")
        refused(maiffs("umount", d, check=False), d)
        assert is_mountpoint(str(d))
        assert (d / "f").read_text() == "tmpfs data"
    finally:
        subprocess.run(["umount", str(d)], check=False)


def test_umount_twice(mounted):
    mounted.unmount()
    refused(maiffs("umount", mounted.path, check=False), mounted.path)
    mounted.mount()


def test_mkfs_on_non_empty_dir(tmp_path):
    d = tmp_path / "full"
    d.mkdir()
    (d / "thesis.tex").write_text("years of work\n")
    before = snapshot_tree(d)
    refused(maiffs("mkfs", d, check=False), d)
    assert snapshot_tree(d) == before


def test_mkfs_on_existing_store(store_with_data):
    m, data = store_with_data
    before = (m.store / "data.mdb").read_bytes()
    refused(maiffs("mkfs", m.store, check=False), m.store)
    assert (m.store / "data.mdb").read_bytes() == before
    assert_data_intact(m, data)


def test_mkfs_on_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    refused(maiffs("mkfs", tmp_path / "f", check=False), tmp_path / "f")
    assert (tmp_path / "f").read_text() == "x"


def test_mkfs_on_mounted_store(mounted):
    write_file(mounted.path / "f", b"data")
    refused(maiffs("mkfs", mounted.store, check=False))
    refused(maiffs("mkfs", mounted.path, check=False))
    assert (mounted.path / "f").read_bytes() == b"data"


# -- a killed daemon -----------------------------------------------------------------------------------
def test_killed_daemon_store_mounts_again(mounted):
    data = os.urandom(1 << 20)
    write_file(mounted.path / "f", data, sync=True)
    write_file(mounted.path / "closed", b"closed, not synced")
    mounted.kill()
    assert not is_locked(str(mounted.store))
    mounted.mount()
    assert (mounted.path / "f").read_bytes() == data
    assert (mounted.path / "closed").read_bytes() == b"closed, not synced"


def kill_daemon_leaving_dead_mount(m: MaiffsMount) -> bytes:
    data = os.urandom(1 << 20)
    write_file(m.path / "f", data, sync=True)
    pid = m.daemon_pid()
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)
    with pytest.raises(OSError) as info:
        os.listdir(m.path)
    assert info.value.errno == errno.ENOTCONN
    return data


def test_killed_daemon_dead_mount_cleared_by_umount(mounted):
    data = kill_daemon_leaving_dead_mount(mounted)
    maiffs("stat", mounted.path)  # the dead mount point still leads to the store
    maiffs("umount", mounted.path)
    assert not is_mountpoint(str(mounted.path))
    mounted.mount()
    assert (mounted.path / "f").read_bytes() == data


def test_mount_over_dead_mount_says_umount(mounted):
    """Mounting on the dead mount of a killed daemon is refused with the way out, not a wrong reason."""
    kill_daemon_leaving_dead_mount(mounted)
    err = refused(maiffs("mount", mounted.store, mounted.path, check=False), mounted.path)
    assert "umount" in err, err
    assert "does not exist" not in err, err


def test_a_reader_that_left_ends_the_command_quietly(tmp_path):
    """`maiffs snapshot list S | head -1` and the like: a closed pipe is not an error to print;
    the command ends as tools killed by SIGPIPE do (status 141)."""
    maiffs("mkfs", tmp_path / "s")
    for i in range(3):
        maiffs("snapshot", "create", tmp_path / "s", f"snap-{i}")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "maiffs", "snapshot", "list", str(tmp_path / "s")],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")
