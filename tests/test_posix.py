"""POSIX behaviour through a real mount, with plain `os` calls, compared with what ext4 does."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import random
import socket
import stat
import time
from pathlib import Path

import pytest

from conftest import as_user, failed_with, mount_session
from fsutil import errno_of, read_file, store_stat, wait_for, write_file

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)

AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
MAX_FILE_SIZE = 1 << 44


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def renameat2(old: Path, new: Path, flags: int) -> None:
    libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                               ctypes.c_uint]
    if libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(old), None, str(new))


def utimensat(path: Path, atime: tuple[int, int], mtime: tuple[int, int]) -> None:
    """utimensat(2) with (sec, nsec) pairs, so UTIME_NOW and UTIME_OMIT can be passed."""
    times = (Timespec * 2)(Timespec(*atime), Timespec(*mtime))
    if libc.utimensat(AT_FDCWD, os.fsencode(path), times, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))


def tick() -> None:
    """Let the clock move on so that a new timestamp differs from the last one."""
    time.sleep(0.01)


@pytest.fixture(scope="module")
def shared_mount(tmp_path_factory):
    """One mount for the tests that need no remount and no store-wide numbers (saves time)."""
    with mount_session(tmp_path_factory.mktemp("posix")) as m:
        yield m


@pytest.fixture
def d(shared_mount, request) -> Path:
    """A fresh directory of its own for this test on the shared mount."""
    path = shared_mount.path / request.node.name
    os.mkdir(path)
    return path


# -- setattr ------------------------------------------------------------------------------------
def test_chmod_keeps_file_type(d):
    p = d
    write_file(p / "f", b"x")
    os.mkdir(p / "d")
    os.mkfifo(p / "p")
    for name, kind in (("f", stat.S_IFREG), ("d", stat.S_IFDIR), ("p", stat.S_IFIFO)):
        os.chmod(p / name, 0o4751)
        st = os.stat(p / name)
        assert stat.S_IFMT(st.st_mode) == kind
        assert stat.S_IMODE(st.st_mode) == 0o4751
        os.chmod(p / name, 0o600)
        assert os.stat(p / name).st_mode == kind | 0o600


def test_chown_as_root(d):
    f = d / "f"
    write_file(f, b"x")
    os.chown(f, 1234, 5678)
    st = os.stat(f)
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    os.chown(f, -1, 42)
    st = os.stat(f)
    assert (st.st_uid, st.st_gid) == (1234, 42)
    os.lchown(f, 7, -1)
    assert (os.stat(f).st_uid, os.stat(f).st_gid) == (7, 42)


def test_chown_clears_setuid(d):
    """As on ext4: chown of a set-uid executable drops S_ISUID."""
    f = d / "f"
    write_file(f, b"#!/bin/sh\n")
    os.chmod(f, 0o4755)
    os.chown(f, 1000, 1000)
    assert not os.stat(f).st_mode & stat.S_ISUID


def test_truncate_up_makes_a_hole(d):
    f = d / "f"
    write_file(f, b"abc")
    os.truncate(f, 10 << 20)
    st = os.stat(f)
    assert st.st_size == 10 << 20
    assert st.st_blocks * 512 < 1 << 20
    data = read_file(f)
    assert data[:3] == b"abc" and data[3:] == bytes((10 << 20) - 3)


def test_truncate_down(d):
    f = d / "f"
    data = os.urandom(3 << 20)
    write_file(f, data)
    os.truncate(f, 1000)
    assert os.stat(f).st_size == 1000
    assert read_file(f) == data[:1000]
    os.truncate(f, 5000)  # growing again must not bring the old bytes back
    assert read_file(f) == data[:1000] + bytes(4000)
    os.truncate(f, 0)
    assert os.stat(f).st_size == 0 and read_file(f) == b""


def test_ftruncate_open_file_with_unflushed_writes(d):
    f = d / "f"
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"a" * 100_000)
        os.ftruncate(fd, 10)
        os.pwrite(fd, b"Z", 20)
        assert os.fstat(fd).st_size == 21
        assert os.pread(fd, 100, 0) == b"a" * 10 + bytes(10) + b"Z"
    finally:
        os.close(fd)
    assert read_file(f) == b"a" * 10 + bytes(10) + b"Z"


def test_utime_explicit_ns(mounted):
    f = mounted.path / "f"
    write_file(f, b"x")
    os.utime(f, ns=(1_000_000_123, 2_000_000_456))
    st = os.stat(f)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_123, 2_000_000_456)
    os.utime(f, ns=(-5_000_000_000, 1 << 40))  # before 1970 and far in the future
    st = os.stat(f)
    assert (st.st_atime_ns, st.st_mtime_ns) == (-5_000_000_000, 1 << 40)
    mounted.remount()
    st = os.stat(f)
    assert (st.st_atime_ns, st.st_mtime_ns) == (-5_000_000_000, 1 << 40)


def test_utime_now_and_omit(d):
    f = d / "f"
    write_file(f, b"x")
    os.utime(f, ns=(1_000_000_000, 2_000_000_000))
    before = time.time_ns()
    utimensat(f, (0, UTIME_NOW), (0, UTIME_OMIT))
    st = os.stat(f)
    assert st.st_atime_ns >= before - 10**9
    assert st.st_mtime_ns == 2_000_000_000
    utimensat(f, (0, UTIME_OMIT), (0, UTIME_NOW))
    st2 = os.stat(f)
    assert st2.st_atime_ns == st.st_atime_ns
    assert st2.st_mtime_ns >= before - 10**9
    os.utime(f, ns=(3_000_000_000, 4_000_000_000))
    os.utime(f)  # times=None: both now
    st3 = os.stat(f)
    assert st3.st_atime_ns >= before - 10**9 and st3.st_mtime_ns >= before - 10**9


def test_ctime_changes(d):
    p = d
    f = p / "f"
    write_file(f, b"x")

    def ctime() -> int:
        return os.stat(f).st_ctime_ns

    c0 = ctime()
    tick()
    os.chmod(f, 0o600)
    c1 = ctime()
    assert c1 > c0
    tick()
    os.link(f, p / "g")
    c2 = ctime()
    assert c2 > c1
    tick()
    os.rename(f, p / "h")
    f = p / "h"
    c3 = ctime()
    assert c3 > c2
    tick()
    fd = os.open(f, os.O_WRONLY)
    os.write(fd, b"more")
    os.close(fd)
    c4 = ctime()
    assert c4 > c3
    assert os.stat(f).st_mtime_ns > c3
    tick()
    os.setxattr(f, b"user.k", b"v")
    assert ctime() > c4


def test_ctime_survives_remount(mounted):
    f = mounted.path / "f"
    write_file(f, b"x")
    os.chmod(f, 0o640)
    st = os.stat(f)
    mounted.remount()
    st2 = os.stat(f)
    assert (st2.st_ctime_ns, st2.st_mtime_ns, st2.st_mode) == (st.st_ctime_ns, st.st_mtime_ns, st.st_mode)
    # the ctime of a link and of a rename is the daemon's, not only the kernel's cached one
    tick()
    os.link(f, mounted.path / "g")
    tick()
    os.rename(f, mounted.path / "h")
    mounted.remount()
    assert os.stat(mounted.path / "h").st_ctime_ns > st.st_ctime_ns
    assert os.stat(mounted.path / "h").st_nlink == 2


# -- mknod --------------------------------------------------------------------------------------
@pytest.fixture
def no_umask():
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_mknod_regular_and_fifo(d, no_umask):
    p = d
    os.mknod(p / "r", stat.S_IFREG | 0o640)
    st = os.stat(p / "r")
    assert st.st_mode == stat.S_IFREG | 0o640 and st.st_size == 0
    write_file(p / "r", b"data")
    assert read_file(p / "r") == b"data"
    os.mkfifo(p / "fifo", 0o620)
    assert os.stat(p / "fifo").st_mode == stat.S_IFIFO | 0o620
    os.mknod(p / "fifo2", stat.S_IFIFO | 0o600)
    assert stat.S_ISFIFO(os.stat(p / "fifo2").st_mode)
    # a fifo on maiffs works as a fifo (the kernel serves it)
    r = os.open(p / "fifo", os.O_RDONLY | os.O_NONBLOCK)
    w = os.open(p / "fifo", os.O_WRONLY | os.O_NONBLOCK)
    os.write(w, b"through the pipe")
    assert os.read(r, 100) == b"through the pipe"
    os.close(w)
    os.close(r)


def test_unix_socket(d, no_umask):
    path = d / "sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(os.fsencode(path))
        server.listen(1)
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(os.fsencode(path))
        conn, _ = server.accept()
        client.sendall(b"ping")
        assert conn.recv(10) == b"ping"
        conn.close()
        client.close()
    finally:
        server.close()
    os.mknod(d / "sock2", stat.S_IFSOCK | 0o600)
    assert os.stat(d / "sock2").st_mode == stat.S_IFSOCK | 0o600


def test_mknod_devices(mounted, no_umask):
    p = mounted.path
    os.mknod(p / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(p / "blk", stat.S_IFBLK | 0o600, os.makedev(259, 70000))
    st = os.stat(p / "null")
    assert st.st_mode == stat.S_IFCHR | 0o666
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)
    st = os.stat(p / "blk")
    assert st.st_mode == stat.S_IFBLK | 0o600
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (259, 70000)
    mounted.remount()
    assert os.stat(p / "blk").st_rdev == os.makedev(259, 70000)
    # FUSE mounts are nodev: opening the node is refused, but it stays a node (not a file)
    try:
        fd = os.open(p / "null", os.O_RDWR)
    except OSError as exc:
        assert exc.errno == errno.EACCES
    else:
        try:
            assert os.write(fd, b"gone") == 4
            assert os.read(fd, 10) == b""
        finally:
            os.close(fd)
    assert os.stat(p / "null").st_size == 0


# -- directories ---------------------------------------------------------------------------------
def test_mkdir_rmdir(d):
    p = d
    os.mkdir(p / "d")
    assert os.stat(p).st_nlink == 3
    assert os.stat(p / "d").st_nlink == 2
    os.mkdir(p / "d" / "sub")
    assert os.stat(p / "d").st_nlink == 3
    assert errno_of(os.mkdir, p / "d") == errno.EEXIST
    write_file(p / "d" / "sub" / "f", b"x")
    assert errno_of(os.rmdir, p / "d") == errno.ENOTEMPTY
    assert errno_of(os.rmdir, p / "d" / "sub" / "f") == errno.ENOTDIR
    assert errno_of(os.rmdir, p / "d" / "sub" / "f" / "x") == errno.ENOTDIR
    assert errno_of(os.mkdir, p / "d" / "sub" / "f" / "x") == errno.ENOTDIR
    assert errno_of(os.rmdir, p / "missing") == errno.ENOENT
    os.unlink(p / "d" / "sub" / "f")
    os.rmdir(p / "d" / "sub")
    assert os.stat(p / "d").st_nlink == 2
    os.rmdir(p / "d")
    assert os.stat(p).st_nlink == 2
    assert os.listdir(p) == []


def test_rmdir_cwd_then_create_inside_fails(d):
    d = d / "d"
    os.mkdir(d)
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.rmdir(d)
        assert errno_of(os.open, "f", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd) == errno.ENOENT
        assert os.listdir(fd) == []
    finally:
        os.close(fd)


def test_unlink_dir_is_eisdir(d):
    os.mkdir(d / "d")
    assert errno_of(os.unlink, d / "d") == errno.EISDIR
    assert errno_of(os.unlink, d / "missing") == errno.ENOENT
    assert os.path.isdir(d / "d")


def test_unlink_open_file_stays_usable_then_space_returns(mounted):
    f = mounted.path / "f"
    data = os.urandom(2 << 20)
    write_file(f, data)
    assert store_stat(mounted.path)["referenced_bytes"] == len(data)
    fd = os.open(f, os.O_RDWR)
    try:
        os.unlink(f)
        assert not os.path.exists(f)
        assert os.listdir(mounted.path) == []
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, len(data), 0) == data
        os.pwrite(fd, b"written after unlink", len(data))
        os.fsync(fd)
        assert os.fstat(fd).st_size == len(data) + 20
        assert os.pread(fd, 100, len(data)) == b"written after unlink"
        assert os.pread(fd, 10, 0) == data[:10]
        # a new file of the same name is a different file
        write_file(f, b"new")
        assert os.pread(fd, 10, 0) == data[:10]
    finally:
        os.close(fd)
    assert read_file(f) == b"new"
    os.unlink(f)
    wait_for(lambda: store_stat(mounted.path)["referenced_bytes"] == 0,
             "referenced bytes back to 0 after the last close of an unlinked file", limit=20)
    report = store_stat(mounted.path)
    assert report["stored_bytes"] == 0
    assert report["inodes"] == 1  # the root only
    mounted.remount()
    assert os.listdir(mounted.path) == []


def test_unlinked_open_file_purged_after_kill(mounted):
    """An open unlinked file whose daemon is killed is gone (not resurrected) after remount."""
    f = mounted.path / "f"
    write_file(f, os.urandom(1 << 20))
    fd = os.open(f, os.O_RDWR)
    os.unlink(f)
    os.pwrite(fd, b"x", 0)
    os.fsync(fd)
    mounted.kill()
    try:
        os.close(fd)
    except OSError:
        pass
    mounted.mount()
    assert os.listdir(mounted.path) == []
    wait_for(lambda: store_stat(mounted.path)["referenced_bytes"] == 0, "orphan purged at mount", limit=20)


# -- symlinks and hard links -------------------------------------------------------------------
def test_symlink_readlink(d):
    p = d
    write_file(p / "target", b"hello")
    os.symlink("target", p / "link")
    assert os.readlink(p / "link") == "target"
    assert read_file(p / "link") == b"hello"
    st = os.lstat(p / "link")
    assert stat.S_ISLNK(st.st_mode) and st.st_size == len("target")
    os.symlink("nowhere/at/all", p / "dangling")
    assert os.readlink(p / "dangling") == "nowhere/at/all"
    assert errno_of(os.stat, p / "dangling") == errno.ENOENT
    assert errno_of(os.readlink, p / "target") == errno.EINVAL
    assert errno_of(os.symlink, "x", p / "link") == errno.EEXIST
    raw = b"\xff\xfe odd\nbytes"
    os.symlink(raw, os.fsencode(p / "raw"))
    assert os.readlink(os.fsencode(p / "raw")) == raw


def test_symlink_4095_byte_target(mounted):
    p = mounted.path
    target = ("a/" * 2047 + "b").encode()
    assert len(target) == 4095
    os.symlink(target, os.fsencode(p / "long"))
    assert os.readlink(os.fsencode(p / "long")) == target
    assert os.lstat(p / "long").st_size == 4095
    mounted.remount()
    assert os.readlink(os.fsencode(p / "long")) == target
    assert errno_of(os.symlink, b"c" * 4096, os.fsencode(p / "toolong")) == errno.ENAMETOOLONG


def test_hard_links(mounted):
    p = mounted.path
    write_file(p / "a", b"shared")
    os.link(p / "a", p / "b")
    os.mkdir(p / "d")
    os.link(p / "a", p / "d" / "c")
    for name in ("a", "b", "d/c"):
        st = os.stat(p / name)
        assert st.st_nlink == 3
        assert st.st_ino == os.stat(p / "a").st_ino
    write_file(p / "b", b"changed via b")
    assert read_file(p / "d" / "c") == b"changed via b"
    os.unlink(p / "a")
    assert os.stat(p / "b").st_nlink == 2
    assert errno_of(os.link, p / "b", p / "d" / "c") == errno.EEXIST
    assert errno_of(os.link, p / "d", p / "dlink") == errno.EPERM
    assert errno_of(os.link, p / "missing", p / "x") == errno.ENOENT
    mounted.remount()
    assert os.stat(p / "b").st_nlink == 2
    assert read_file(p / "d" / "c") == b"changed via b"
    os.unlink(p / "b")
    assert os.stat(p / "d" / "c").st_nlink == 1


# -- rename --------------------------------------------------------------------------------------
def test_rename_replaces_file(d):
    p = d
    write_file(p / "a", b"A")
    write_file(p / "b", b"B")
    ino_a = os.stat(p / "a").st_ino
    os.rename(p / "a", p / "b")
    assert not os.path.exists(p / "a")
    assert read_file(p / "b") == b"A"
    assert os.stat(p / "b").st_ino == ino_a
    assert os.listdir(p) == ["b"]


def test_rename_replaced_file_stays_open(d):
    p = d
    write_file(p / "a", b"A")
    write_file(p / "b", b"old B")
    fd = os.open(p / "b", os.O_RDONLY)
    try:
        os.rename(p / "a", p / "b")
        assert os.pread(fd, 10, 0) == b"old B"
        assert os.fstat(fd).st_nlink == 0
    finally:
        os.close(fd)
    assert read_file(p / "b") == b"A"


def test_rename_dir_over_empty_dir(d):
    p = d
    os.makedirs(p / "src" / "inner")
    os.mkdir(p / "dst")
    os.mkdir(p / "other")
    os.rename(p / "src", p / "other" / "dst2")
    os.rename(p / "other" / "dst2", p / "dst")
    assert os.path.isdir(p / "dst" / "inner")
    assert not os.path.exists(p / "src")
    assert os.stat(p).st_nlink == 4  # ., .., dst, other
    assert os.stat(p / "other").st_nlink == 2
    assert os.stat(p / "dst" / "inner" / "..").st_ino == os.stat(p / "dst").st_ino


def test_rename_dir_over_nonempty_dir(d):
    p = d
    os.mkdir(p / "src")
    os.makedirs(p / "dst" / "keep")
    assert errno_of(os.rename, p / "src", p / "dst") in (errno.ENOTEMPTY, errno.EEXIST)
    assert os.path.isdir(p / "src") and os.path.isdir(p / "dst" / "keep")


def test_rename_file_over_dir_and_dir_over_file(d):
    p = d
    write_file(p / "f", b"x")
    os.mkdir(p / "d")
    assert errno_of(os.rename, p / "f", p / "d") == errno.EISDIR
    assert errno_of(os.rename, p / "d", p / "f") == errno.ENOTDIR
    assert read_file(p / "f") == b"x" and os.path.isdir(p / "d")


def test_rename_dir_into_own_subtree(d):
    p = d
    os.makedirs(p / "a" / "b" / "c")
    assert errno_of(os.rename, p / "a", p / "a" / "b" / "c" / "a") == errno.EINVAL
    assert errno_of(os.rename, p / "a", p / "a" / "x") == errno.EINVAL
    assert os.path.isdir(p / "a" / "b" / "c")
    os.rename(p / "a" / "b" / "c", p / "c")  # moving up is fine
    assert os.path.isdir(p / "c")


def test_rename_noreplace(d):
    p = d
    write_file(p / "a", b"A")
    write_file(p / "b", b"B")
    assert errno_of(renameat2, p / "a", p / "b", RENAME_NOREPLACE) == errno.EEXIST
    assert read_file(p / "a") == b"A" and read_file(p / "b") == b"B"
    renameat2(p / "a", p / "c", RENAME_NOREPLACE)
    assert read_file(p / "c") == b"A" and not os.path.exists(p / "a")


def test_rename_exchange(mounted):
    p = mounted.path
    os.mkdir(p / "d1")
    os.makedirs(p / "d2" / "dir" / "child")
    write_file(p / "d1" / "file", b"F")
    renameat2(p / "d1" / "file", p / "d2" / "dir", RENAME_EXCHANGE)
    assert os.path.isdir(p / "d1" / "file" / "child")
    assert read_file(p / "d2" / "dir") == b"F"
    assert os.stat(p / "d1").st_nlink == 3
    assert os.stat(p / "d2").st_nlink == 2
    assert os.stat(p / "d1" / "file" / "..").st_ino == os.stat(p / "d1").st_ino
    # same directory, two files
    write_file(p / "x", b"X")
    write_file(p / "y", b"Y")
    renameat2(p / "x", p / "y", RENAME_EXCHANGE)
    assert read_file(p / "x") == b"Y" and read_file(p / "y") == b"X"
    assert errno_of(renameat2, p / "x", p / "missing", RENAME_EXCHANGE) == errno.ENOENT
    mounted.remount()
    assert os.path.isdir(p / "d1" / "file" / "child")
    assert read_file(p / "x") == b"Y"
    assert os.stat(p / "d1" / "file" / "..").st_ino == os.stat(p / "d1").st_ino


def test_rename_exchange_dir_into_own_subtree(d):
    p = d
    os.makedirs(p / "a" / "b")
    assert errno_of(renameat2, p / "a", p / "a" / "b", RENAME_EXCHANGE) == errno.EINVAL
    assert os.path.isdir(p / "a" / "b")


def test_rename_hard_links_of_same_inode_is_noop(d):
    p = d
    write_file(p / "a", b"same")
    os.link(p / "a", p / "b")
    os.rename(p / "a", p / "b")
    assert sorted(os.listdir(p)) == ["a", "b"]
    assert os.stat(p / "a").st_nlink == 2
    assert read_file(p / "b") == b"same"


def test_rename_across_dirs_and_back(d):
    p = d
    os.mkdir(p / "x")
    os.mkdir(p / "y")
    os.mkdir(p / "x" / "sub")
    os.rename(p / "x" / "sub", p / "y" / "sub")
    assert os.stat(p / "x").st_nlink == 2 and os.stat(p / "y").st_nlink == 3
    assert os.stat(p / "y" / "sub" / "..").st_ino == os.stat(p / "y").st_ino
    os.rmdir(p / "x")


# -- open and create ------------------------------------------------------------------------------
def test_o_excl(d):
    f = d / "f"
    fd = os.open(f, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.close(fd)
    assert errno_of(os.open, f, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644) == errno.EEXIST
    os.symlink("f", d / "l")
    assert errno_of(os.open, d / "l", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644) == errno.EEXIST


def test_o_trunc(d):
    f = d / "f"
    write_file(f, os.urandom(1 << 20))
    old = os.stat(f)
    tick()
    fd = os.open(f, os.O_WRONLY | os.O_TRUNC)
    try:
        assert os.fstat(fd).st_size == 0
    finally:
        os.close(fd)
    st = os.stat(f)
    assert st.st_size == 0 and read_file(f) == b""
    assert st.st_mtime_ns > old.st_mtime_ns and st.st_ctime_ns > old.st_ctime_ns


def test_o_trunc_with_unflushed_data_in_another_fd(d):
    f = d / "f"
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"buffered" * 1000)
        fd2 = os.open(f, os.O_WRONLY | os.O_TRUNC)
        os.write(fd2, b"new")
        os.close(fd2)
        assert os.pread(fd, 100, 0) == b"new"
    finally:
        os.close(fd)
    assert read_file(f) == b"new"


def test_o_append_from_several_fds(d):
    f = d / "f"
    write_file(f, b"start.")
    fds = [os.open(f, os.O_WRONLY | os.O_APPEND) for _ in range(3)]
    expected = b"start."
    try:
        for i in range(30):
            chunk = f"[{i}:{'x' * (i * 37)}]".encode()
            os.write(fds[i % 3], chunk)
            expected += chunk
    finally:
        for fd in fds:
            os.close(fd)
    assert read_file(f) == expected


# -- sparse files ---------------------------------------------------------------------------------
def test_sparse_file(mounted):
    f = mounted.path / "sparse"
    fd = os.open(f, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b"!", 1 << 30)
    finally:
        os.close(fd)
    st = os.stat(f)
    assert st.st_size == (1 << 30) + 1
    assert st.st_blocks * 512 <= 1 << 20
    with open(f, "rb") as fh:
        fh.seek(12345)
        assert fh.read(1 << 20) == bytes(1 << 20)
        fh.seek((1 << 30) - 4096)
        assert fh.read(8192) == bytes(4096) + b"!"
    report = store_stat(mounted.path)
    assert report["logical_bytes"] == (1 << 30) + 1
    assert report["stored_bytes"] < 1 << 20
    assert report["store_file_bytes"] < 64 << 20
    mounted.remount()
    assert os.stat(f).st_size == (1 << 30) + 1
    with open(f, "rb") as fh:
        fh.seek((1 << 30) - 1)
        assert fh.read() == b"\0!"


def test_sparse_zero_writes_become_holes(mounted):
    f = mounted.path / "zeros"
    write_file(f, bytes(8 << 20))
    assert read_file(f) == bytes(8 << 20)
    assert os.stat(f).st_blocks * 512 < 1 << 20
    assert store_stat(mounted.path)["stored_bytes"] < 1 << 20


# -- xattrs ----------------------------------------------------------------------------------------
def test_xattr_basics(mounted):
    f = mounted.path / "f"
    write_file(f, b"x")
    os.setxattr(f, "user.one", b"1")
    os.setxattr(f, "user.two", b"\x00binary\xff")
    assert os.getxattr(f, "user.one") == b"1"
    assert os.getxattr(f, "user.two") == b"\x00binary\xff"
    assert sorted(os.listxattr(f)) == ["user.one", "user.two"]
    os.setxattr(f, "user.one", b"")
    assert os.getxattr(f, "user.one") == b""
    os.removexattr(f, "user.one")
    assert os.listxattr(f) == ["user.two"]
    assert errno_of(os.getxattr, f, "user.one") == errno.ENODATA
    assert errno_of(os.removexattr, f, "user.one") == errno.ENODATA
    os.mkdir(mounted.path / "d")
    os.setxattr(mounted.path / "d", "user.dir", b"yes")
    os.symlink("f", mounted.path / "l")
    assert os.getxattr(mounted.path / "l", "user.two") == b"\x00binary\xff"  # follows
    mounted.remount()
    assert os.getxattr(f, "user.two") == b"\x00binary\xff"
    assert os.getxattr(mounted.path / "d", "user.dir") == b"yes"


def test_xattr_create_replace_flags(d):
    f = d / "f"
    write_file(f, b"x")
    assert errno_of(os.setxattr, f, "user.a", b"1", os.XATTR_REPLACE) == errno.ENODATA
    assert "user.a" not in os.listxattr(f)
    os.setxattr(f, "user.a", b"1", os.XATTR_CREATE)
    assert errno_of(os.setxattr, f, "user.a", b"2", os.XATTR_CREATE) == errno.EEXIST
    assert os.getxattr(f, "user.a") == b"1"
    os.setxattr(f, "user.a", b"3", os.XATTR_REPLACE)
    assert os.getxattr(f, "user.a") == b"3"


def test_xattr_value_size_limit(d):
    f = d / "f"
    write_file(f, b"x")
    big = os.urandom(65536)
    os.setxattr(f, "user.big", big)
    assert os.getxattr(f, "user.big") == big
    assert errno_of(os.setxattr, f, "user.bigger", big + b"!") in (errno.E2BIG, errno.ERANGE)
    assert "user.bigger" not in os.listxattr(f)
    assert os.getxattr(f, "user.big") == big


def test_content_id_xattr(mounted):
    p = mounted.path
    data = os.urandom(3 << 20)
    write_file(p / "a", data)
    write_file(p / "b", data)
    write_file(p / "c", data[:-1] + bytes([data[-1] ^ 1]))
    ida = os.getxattr(p / "a", "user.maiffs.id")
    assert len(ida) >= 32
    assert os.getxattr(p / "b", "user.maiffs.id") == ida
    assert os.getxattr(p / "c", "user.maiffs.id") != ida
    assert "user.maiffs.id" not in os.listxattr(p / "a")
    write_file(p / "empty1", b"")
    write_file(p / "empty2", b"")
    assert os.getxattr(p / "empty1", "user.maiffs.id") == os.getxattr(p / "empty2", "user.maiffs.id")
    fd = os.open(p / "a", os.O_WRONLY)
    try:
        os.pwrite(fd, b"?", 1000)
        # visible while the write is still buffered
        assert os.getxattr(p / "a", "user.maiffs.id") != ida
    finally:
        os.close(fd)
    changed = os.getxattr(p / "a", "user.maiffs.id")
    assert changed != ida
    write_file(p / "a", data)
    assert os.getxattr(p / "a", "user.maiffs.id") == ida
    mounted.remount()
    assert os.getxattr(p / "b", "user.maiffs.id") == ida
    assert errno_of(os.setxattr, p / "a", "user.maiffs.id", b"forged") in (errno.EPERM, errno.EACCES)


# -- statfs ----------------------------------------------------------------------------------------
def test_statvfs(shared_mount):
    st = os.statvfs(shared_mount.path)
    assert st.f_namemax == 255
    assert st.f_bsize > 0 and st.f_frsize > 0
    assert st.f_blocks > 0 and 0 < st.f_bavail <= st.f_blocks
    assert st.f_bfree >= st.f_bavail
    assert st.f_files > 0 and 0 < st.f_ffree <= st.f_files
    under = os.statvfs(shared_mount.store)
    assert abs(st.f_blocks * st.f_frsize - under.f_blocks * under.f_frsize) < 1 << 30


# -- readdir -----------------------------------------------------------------------------------------
def test_readdir_offsets_stable_under_changes(d):
    d = d / "big"
    os.mkdir(d)
    pad = "p" * 80
    names = [f"{i:05d}{pad}" for i in range(1000)]
    for name in names:
        os.close(os.open(d / name, os.O_CREAT | os.O_WRONLY, 0o644))
    rng = random.Random(7)
    deleted: set[str] = set()
    created: set[str] = set()
    seen: list[str] = []
    with os.scandir(d) as it:
        for entry in it:
            seen.append(entry.name)
            if len(seen) % 40 == 0:
                for victim in rng.sample([n for n in names if n not in deleted], 15):
                    os.unlink(d / victim)
                    deleted.add(victim)
                for _ in range(15):
                    new = f"new{len(created):05d}{pad}"
                    os.close(os.open(d / new, os.O_CREAT | os.O_WRONLY, 0o644))
                    created.add(new)
    assert len(seen) == len(set(seen)), "an entry was listed twice"
    survivors = set(names) - deleted
    assert not survivors - set(seen), f"{len(survivors - set(seen))} surviving entries missed"
    assert set(seen) <= set(names) | created
    assert sorted(os.listdir(d)) == sorted(survivors | created)


def test_readdir_dot_entries_and_types(d):
    p = d
    os.mkdir(p / "d")
    write_file(p / "f", b"x")
    os.symlink("f", p / "l")
    entries = {e.name: e for e in os.scandir(p)}
    assert set(entries) == {"d", "f", "l"}
    assert entries["d"].is_dir() and entries["f"].is_file() and entries["l"].is_symlink()
    assert entries["f"].inode() == os.stat(p / "f").st_ino


# -- names ----------------------------------------------------------------------------------------------
def test_name_length_limit(d):
    p = d
    ok = "n" * 255
    write_file(p / ok, b"x")
    os.mkdir(p / ("d" * 255))
    os.symlink("target", p / ("s" * 255))
    assert sorted(os.listdir(p)) == sorted([ok, "d" * 255, "s" * 255])
    assert read_file(p / ok) == b"x"
    long = "n" * 256
    assert errno_of(os.open, p / long, os.O_CREAT | os.O_WRONLY, 0o644) == errno.ENAMETOOLONG
    assert errno_of(os.mkdir, p / long) == errno.ENAMETOOLONG
    assert errno_of(os.stat, p / long) == errno.ENAMETOOLONG
    assert errno_of(os.symlink, "t", p / long) == errno.ENAMETOOLONG
    assert errno_of(os.link, p / ok, p / long) == errno.ENAMETOOLONG
    assert errno_of(os.rename, p / ok, p / long) == errno.ENAMETOOLONG
    assert errno_of(os.mknod, p / long, stat.S_IFIFO | 0o600) == errno.ENAMETOOLONG
    assert os.path.exists(p / ok)
    assert len(os.listdir(p)) == 3
    # multi-byte: 255 bytes is fine whatever the character count
    mb = "é" * 127 + "x"
    assert len(mb.encode()) == 255
    write_file(p / mb, b"y")
    assert mb in os.listdir(p)
    assert errno_of(os.mkdir, p / ("é" * 128)) == errno.ENAMETOOLONG


def test_odd_byte_names(mounted):
    p = os.fsencode(mounted.path)
    names = [b"new\nline", b"bad\xff\xfeutf8", b"\x01ctl\x7f", b" lead and trail ", b"-", b"\xc3("]
    for i, name in enumerate(names):
        write_file(p + b"/" + name, b"content %d" % i)
    os.mkdir(p + b"/dir\n\xff")
    listed = os.listdir(p)
    assert sorted(listed) == sorted(names + [b"dir\n\xff"])
    for i, name in enumerate(names):
        assert read_file(p + b"/" + name) == b"content %d" % i
    os.rename(p + b"/bad\xff\xfeutf8", p + b"/dir\n\xff/moved\xff")
    mounted.remount()
    assert os.listdir(p + b"/dir\n\xff") == [b"moved\xff"]
    assert read_file(p + b"/new\nline") == b"content 0"


# -- size limits -------------------------------------------------------------------------------------------
def test_write_past_max_file_size_is_efbig(d):
    f = d / "f"
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        assert errno_of(os.pwrite, fd, b"x", MAX_FILE_SIZE) == errno.EFBIG
        os.pwrite(fd, b"end", MAX_FILE_SIZE - 3)  # the last bytes that fit
        assert os.fstat(fd).st_size == MAX_FILE_SIZE
        # a write straddling the limit writes what fits (short write) or fails as a whole
        try:
            assert os.pwrite(fd, b"xy", MAX_FILE_SIZE - 1) == 1
        except OSError as exc:
            assert exc.errno == errno.EFBIG
        assert os.fstat(fd).st_size == MAX_FILE_SIZE
    finally:
        os.close(fd)
    assert os.stat(f).st_size == MAX_FILE_SIZE
    assert os.pread(fd2 := os.open(f, os.O_RDONLY), 3, MAX_FILE_SIZE - 3) in (b"end", b"enx")
    os.close(fd2)


def test_truncate_past_max_file_size_is_efbig(d):
    f = d / "f"
    write_file(f, b"abc")
    assert errno_of(os.truncate, f, MAX_FILE_SIZE + 1) == errno.EFBIG
    assert os.stat(f).st_size == 3
    os.truncate(f, MAX_FILE_SIZE)
    assert os.stat(f).st_size == MAX_FILE_SIZE
    assert errno_of(os.truncate, f, -1) == errno.EINVAL


# -- ownership inheritance and umask ------------------------------------------------------------------
def test_setgid_directory_inheritance(d):
    top = d
    sg = top / "shared"
    os.mkdir(sg)
    os.chown(sg, 0, 4321)
    os.chmod(sg, 0o2775)
    write_file(sg / "f", b"x")
    assert os.stat(sg / "f").st_gid == 4321
    os.mkdir(sg / "sub")
    st = os.stat(sg / "sub")
    assert st.st_gid == 4321 and st.st_mode & stat.S_ISGID
    write_file(sg / "sub" / "g", b"y")
    assert os.stat(sg / "sub" / "g").st_gid == 4321
    os.mkfifo(sg / "fifo")
    os.symlink("f", sg / "link")
    assert os.stat(sg / "fifo").st_gid == 4321
    assert os.lstat(sg / "link").st_gid == 4321
    # without the bit, the creator's group
    os.mkdir(top / "plain")
    os.chown(top / "plain", 0, 4321)
    write_file(top / "plain" / "f", b"x")
    assert os.stat(top / "plain" / "f").st_gid == os.getegid()


def test_umask_applied(d):
    p = d
    old = os.umask(0o077)
    try:
        os.close(os.open(p / "f", os.O_CREAT | os.O_WRONLY, 0o666))
        os.mkdir(p / "d", 0o777)
        os.mknod(p / "n", stat.S_IFREG | 0o666)
        os.mkfifo(p / "fifo", 0o666)
        os.umask(0o022)
        os.close(os.open(p / "g", os.O_CREAT | os.O_WRONLY, 0o777))
        os.mkdir(p / "e", 0o1777)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(p / "f").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(p / "d").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(p / "n").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(p / "fifo").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(p / "g").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(p / "e").st_mode) == 0o1755
    assert stat.S_IMODE(os.lstat(p / "f").st_mode) == 0o600


# -- permissions as another user ----------------------------------------------------------------------
NOBODY = 65534


def test_permissions_as_other_user(mounted_shared):
    p = mounted_shared.path
    write_file(p / "secret", b"root only")
    os.chmod(p / "secret", 0o600)
    write_file(p / "public", b"everyone")
    os.chmod(p / "public", 0o644)
    os.mkdir(p / "open")
    os.chmod(p / "open", 0o777)
    os.mkdir(p / "closed")
    os.chmod(p / "closed", 0o700)
    fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
    try:
        def read(name):
            def run(dfd):
                f = os.open(name, os.O_RDONLY, dir_fd=dfd)
                try:
                    return os.read(f, 100).decode()
                finally:
                    os.close(f)
            return run

        def create(name):
            def run(dfd):
                os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=dfd))
                return os.stat(name, dir_fd=dfd).st_uid
            return run

        assert failed_with(as_user(fd, NOBODY, NOBODY, read("secret"))) == errno.EACCES
        assert as_user(fd, NOBODY, NOBODY, read("public")) == "everyone"
        assert failed_with(as_user(fd, NOBODY, NOBODY, create("mine"))) == errno.EACCES
        assert failed_with(as_user(fd, NOBODY, NOBODY, create("closed/mine"))) == errno.EACCES
        assert failed_with(as_user(fd, NOBODY, NOBODY, lambda d: os.listdir(
            os.open("closed", os.O_RDONLY | os.O_DIRECTORY, dir_fd=d)))) == errno.EACCES
        assert as_user(fd, NOBODY, NOBODY, create("open/mine")) == NOBODY
        st = os.stat(p / "open" / "mine")
        assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
        assert failed_with(as_user(fd, NOBODY, NOBODY, lambda d: os.unlink("public", dir_fd=d))) == errno.EACCES
        assert failed_with(as_user(fd, NOBODY, NOBODY, lambda d: os.chmod("public", 0o777, dir_fd=d))) == errno.EPERM
        assert failed_with(as_user(fd, NOBODY, NOBODY, lambda d: os.chown("open/mine", 0, 0, dir_fd=d))) == errno.EPERM
        w = as_user(fd, NOBODY, NOBODY, lambda d: os.open("public", os.O_WRONLY, dir_fd=d))
        assert failed_with(w) == errno.EACCES
    finally:
        os.close(fd)
    assert read_file(p / "secret") == b"root only"
    assert sorted(os.listdir(p)) == ["closed", "open", "public", "secret"]


def test_sticky_directory(mounted_shared):
    p = mounted_shared.path
    os.mkdir(p / "tmp")
    os.chmod(p / "tmp", 0o1777)
    write_file(p / "tmp" / "theirs", b"owned by 1000")
    os.chown(p / "tmp" / "theirs", 1000, 1000)
    os.chmod(p / "tmp" / "theirs", 0o666)
    fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
    try:
        def unlink(d):
            os.unlink("tmp/theirs", dir_fd=d)

        def rename(d):
            os.rename("tmp/theirs", "tmp/stolen", src_dir_fd=d, dst_dir_fd=d)

        def replace(d):
            os.close(os.open("tmp/own", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=d))
            os.rename("tmp/own", "tmp/theirs", src_dir_fd=d, dst_dir_fd=d)

        def own(d):
            os.close(os.open("tmp/own2", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=d))
            os.rename("tmp/own2", "tmp/own3", src_dir_fd=d, dst_dir_fd=d)
            os.unlink("tmp/own3", dir_fd=d)
            return "ok"

        def write(d):
            f = os.open("tmp/theirs", os.O_WRONLY | os.O_APPEND, dir_fd=d)
            os.write(f, b"+")
            os.close(f)
            return "ok"

        assert failed_with(as_user(fd, NOBODY, NOBODY, unlink)) == errno.EPERM
        assert failed_with(as_user(fd, NOBODY, NOBODY, rename)) == errno.EPERM
        assert failed_with(as_user(fd, NOBODY, NOBODY, replace)) == errno.EPERM
        assert as_user(fd, NOBODY, NOBODY, own) == "ok"
        assert as_user(fd, NOBODY, NOBODY, write) == "ok"  # mode 0666 still allows writing
    finally:
        os.close(fd)
    assert read_file(p / "tmp" / "theirs") == b"owned by 1000+"
    assert sorted(os.listdir(p / "tmp")) == ["own", "theirs"]
