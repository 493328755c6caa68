"""Snapshots through a real mount: `.snapshots/`, `.maiffs/`, and the snapshot/log CLI.

What a user can do and see is checked with plain `os` calls and ordinary tools (cp -a, diff -r,
rsync, tar, du, find, stat, getfattr/setfattr), against plain-directory copies made at the same
moment as each snapshot: a snapshot must show the tree exactly as it was (bytes, modes, owners,
nanosecond mtimes, xattrs, symlink targets, hard-link structure, holes), refuse every change
with EROFS, keep its inode numbers apart from the live tree's and other snapshots', survive a
remount, and be diffed, restored, logged and deleted (freeing its space) by the CLI, mounted
or not.

Needs the Debian packages rsync, tar, attr, diffutils, coreutils and findutils.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import random
import shutil
import stat
import struct
import subprocess
import time
from pathlib import Path

import blake3
import pytest

from conftest import as_user, failed_with, maiffs, mount_session
from fsutil import (BASE_NS, assert_same_tree, errno_of, log_problems, read_file, run, set_times, store_stat,
                    tree_state, wait_for, write_file)
from maiffs import commands

MiB = 1 << 20
ID_XATTR = "user.maiffs.id"


# -- helpers -----------------------------------------------------------------------------------
def take(m, name: str) -> Path:
    """mkdir MNT/.snapshots/NAME: snapshot the whole tree; returns the snapshot's root."""
    path = m.path / ".snapshots" / name
    os.mkdir(path)
    return path


def content_id(path: Path) -> str:
    """`getfattr -n user.maiffs.id` of path, with the tool."""
    return run("getfattr", "--only-values", "-n", ID_XATTR, path).stdout.strip()


def populate(root: Path, seed: int = 1) -> None:
    """A tree with one of everything: empty, small and random files, another owner, set-uid,
    directories with modes and xattrs, symlinks (relative, dangling, to a directory), a file
    with three hard links in three directories, a fifo, and a directory of 120 entries."""
    rng = random.Random(seed)
    root.mkdir()
    write_file(root / "empty", b"")
    write_file(root / "small.txt", b"hello\n")
    write_file(root / "random.bin", rng.randbytes(200_000))
    write_file(root / "owned", b"owned by someone else\n")
    os.chown(root / "owned", 1234, 5678)
    os.chmod(root / "owned", 0o640)
    write_file(root / "exec", b"#!/bin/sh\necho hi\n")
    os.chmod(root / "exec", 0o4751)
    docs = root / "docs"
    docs.mkdir()
    os.chmod(docs, 0o750)
    os.setxattr(docs, "user.dir", b"directory value")
    write_file(docs / "a.md", b"# A\n" * 100)
    os.setxattr(docs / "a.md", "user.note", b"first")
    os.setxattr(docs / "a.md", "user.bin", b"\x00\xff\x01")
    (docs / "deep" / "er").mkdir(parents=True)
    write_file(docs / "deep" / "er" / "leaf.txt", b"leaf")
    links = root / "links"
    links.mkdir()
    os.symlink("../small.txt", links / "rel")
    os.symlink("/nonexistent/target", links / "dangling")
    os.symlink("../docs", links / "dirlink")
    write_file(root / "hl1", b"linked content\n")
    os.link(root / "hl1", docs / "hl2")
    os.link(root / "hl1", links / "hl3")
    os.mkfifo(root / "fifo", 0o600)
    many = root / "many"
    many.mkdir()
    for i in range(120):
        write_file(many / f"entry-{i:04d}-with-a-name-long-enough-to-fill-buffers", b"%d\n" % i)
    set_times(root)


def mutate(root: Path) -> None:
    """Change every kind of thing populate made, in place."""
    write_file(root / "small.txt", b"HELLO, changed\n")
    with open(root / "random.bin", "ab") as f:
        f.write(b"appended")
    os.chmod(root / "owned", 0o600)
    os.chown(root / "owned", 4321, 8765)
    os.setxattr(root / "docs" / "a.md", "user.note", b"second")
    os.removexattr(root / "docs" / "a.md", "user.bin")
    os.setxattr(root / "docs" / "a.md", "user.new", b"n")
    os.chmod(root / "docs", 0o700)
    os.removexattr(root / "docs", "user.dir")
    os.unlink(root / "links" / "rel")
    os.symlink("../empty", root / "links" / "rel")
    os.unlink(root / "docs" / "hl2")
    write_file(root / "hl1", b"linked content, changed\n")
    shutil.rmtree(root / "docs" / "deep")
    write_file(root / "newfile", b"new")
    (root / "newdir" / "x").mkdir(parents=True)
    os.utime(root / "empty", ns=(1, 2))
    os.unlink(root / "fifo")
    write_file(root / "fifo", b"now a regular file")
    for i in range(0, 120, 7):
        os.unlink(root / "many" / f"entry-{i:04d}-with-a-name-long-enough-to-fill-buffers")


def diff_rq(a: Path, b: Path) -> tuple[set[str], set[str], set[str]]:
    """(added, removed, modified) paths relative to a/b, as `diff -rq --no-dereference` says."""
    done = run("diff", "-rq", "--no-dereference", a, b, ok=False)
    assert done.returncode in (0, 1), done.stderr
    added, removed, modified = set(), set(), set()
    for line in done.stdout.splitlines():
        if line.startswith("Only in "):
            where, name = line[len("Only in "):].split(": ", 1)
            side, base = (added, b) if Path(where).is_relative_to(b) else (removed, a)
            added_path = Path(where, name).relative_to(base)
            side.add(str(added_path))
        elif line.startswith(("Files ", "Symbolic links ")) and line.endswith(" differ"):
            left = line.split(" and ", 1)[0].split(" ", 2 if line.startswith("Symbolic") else 1)[-1]
            modified.add(str(Path(left).relative_to(a)))
        elif line.startswith("File ") and " while file " in line:
            left = line[len("File "):].split(" is a ", 1)[0]
            rel = str(Path(left).relative_to(a))
            added.add(rel)
            removed.add(rel)
        else:
            raise AssertionError(f"unexpected diff output: {line}")
    return added, removed, modified


def all_below(root: Path, tops: set[str]) -> set[str]:
    """tops and every path below each of them (relative to root)."""
    out = set()
    for top in tops:
        out.add(top)
        if (root / top).is_dir() and not (root / top).is_symlink():
            out.update(str(p.relative_to(root)) for p in (root / top).rglob("*"))
    return out


def maiffs_diff(target: Path, a: str, b: str | None = None) -> list[tuple[str, str]]:
    out = maiffs("snapshot", "diff", target, a, *([b] if b else [])).stdout
    rows = [tuple(line.split(" ", 1)) for line in out.splitlines()]
    assert all(mark in ("A", "D", "M") for mark, _ in rows), out
    return rows


def strip_prefix(paths, prefix: str = "tree/") -> set[str]:
    return {p[len(prefix):] for p in paths if p.startswith(prefix)}


def one_line_error(done: subprocess.CompletedProcess, *words: str) -> str:
    """The command failed, printing exactly one line `maiffs: ...` naming words (no traceback)."""
    assert done.returncode != 0, f"succeeded: {done.stdout}"
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("maiffs: "), done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    return lines[0]


# -- 1. what a snapshot holds ------------------------------------------------------------------
def test_snapshot_keeps_every_kind_of_entry_as_it_was(mounted):
    tree = mounted.path / "tree"
    populate(tree)
    before = tree_state(tree)
    snap = take(mounted, "s1") / "tree"
    assert_same_tree(before, tree_state(snap), "the snapshot right after it was taken")

    mutate(tree)
    after = tree_state(tree)
    changed = {rel for rel in before.keys() | after.keys() if before.get(rel) != after.get(rel)}
    # the live tree did change, in every way populate allows
    assert {"small.txt", "random.bin", "owned", "docs", "docs/a.md", "links/rel", "hl1", "empty",
            "fifo", "docs/hl2", "docs/deep/er/leaf.txt", "newfile", "newdir/x"} <= changed
    assert_same_tree(before, tree_state(snap), "the snapshot after the live tree changed")

    # the same, as ordinary tools see it
    assert read_file(snap / "small.txt") == b"hello\n"
    assert run("cat", snap / "small.txt").stdout == "hello\n"
    assert run("stat", "-c", "%a %u %g %Y", snap / "owned").stdout.split() == \
        ["640", "1234", "5678", str(os.stat(snap / "owned").st_mtime_ns // 10**9)]
    assert run("stat", "-c", "%a %u %g", tree / "owned").stdout.split() == ["600", "4321", "8765"]
    assert os.stat(snap / "exec").st_mode == stat.S_IFREG | 0o4751
    assert stat.S_IMODE(os.stat(snap / "docs").st_mode) == 0o750
    dump = run("getfattr", "-d", "-e", "hex", snap / "docs" / "a.md").stdout
    assert 'user.note=0x6669727374' in dump and "user.bin=0x00ff01" in dump and "user.new" not in dump
    assert os.getxattr(snap / "docs", "user.dir") == b"directory value"
    assert run("readlink", snap / "links" / "rel").stdout.strip() == "../small.txt"
    assert os.readlink(snap / "links" / "dangling") == "/nonexistent/target"
    assert read_file(snap / "links" / "rel") == b"hello\n"  # resolves inside the snapshot
    assert read_file(snap / "links" / "dirlink" / "deep" / "er" / "leaf.txt") == b"leaf"
    assert stat.S_ISFIFO(os.lstat(snap / "fifo").st_mode)
    assert not (snap / "newfile").exists() and not (snap / "newdir").exists()
    assert len(os.listdir(snap / "many")) == 120
    assert len(os.listdir(tree / "many")) == 120 - len(range(0, 120, 7))
    assert not log_problems(mounted)


def test_hard_links_share_an_inode_within_a_snapshot_only(mounted):
    tree = mounted.path / "tree"
    populate(tree)
    live_ino = os.stat(tree / "hl1").st_ino
    snap = take(mounted, "s") / "tree"
    names = [snap / "hl1", snap / "docs" / "hl2", snap / "links" / "hl3"]
    stats = [os.lstat(p) for p in names]
    assert len({st.st_ino for st in stats}) == 1
    assert all(st.st_nlink == 3 for st in stats)
    assert stats[0].st_ino != live_ino
    assert run("stat", "-c", "%i", *names).stdout.split() == [str(stats[0].st_ino)] * 3

    os.unlink(tree / "docs" / "hl2")
    with open(tree / "links" / "hl3", "ab") as f:
        f.write(b"more")
    assert os.stat(tree / "hl1").st_nlink == 2
    assert [os.lstat(p).st_ino for p in names] == [stats[0].st_ino] * 3
    assert all(os.lstat(p).st_nlink == 3 for p in names)
    assert {read_file(p) for p in names} == {b"linked content\n"}
    assert read_file(tree / "hl1") == b"linked content\nmore"

    # a second snapshot: its hard links share one inode of their own
    snap2 = take(mounted, "s2") / "tree"
    two = [os.lstat(snap2 / "hl1"), os.lstat(snap2 / "links" / "hl3")]
    assert two[0].st_ino == two[1].st_ino and two[0].st_nlink == 2
    assert two[0].st_ino not in (live_ino, stats[0].st_ino)
    assert not (snap2 / "docs" / "hl2").exists()


def test_snapshot_holds_data_written_but_not_yet_closed(mounted):
    f = mounted.path / "open.txt"
    fd = os.open(f, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"written before the snapshot")
        snap = take(mounted, "s")
        os.write(fd, b", and after")
    finally:
        os.close(fd)
    assert read_file(snap / "open.txt") == b"written before the snapshot"
    assert read_file(f) == b"written before the snapshot, and after"


def test_sparse_file_snapshot_reads_zeros_in_holes_and_costs_no_chunks(mounted):
    size = 100 * MiB
    blocks = {0: b"A" * 4096, 50 * MiB + 123: b"B" * 4096, size - 4096: b"C" * 4096}
    f = mounted.path / "sparse"
    fd = os.open(f, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, size)
        for off, data in blocks.items():
            os.pwrite(fd, data, off)
    finally:
        os.close(fd)
    live_id = content_id(f)
    live_blocks = os.stat(f).st_blocks
    before = store_stat(mounted.path)
    assert before["stored_bytes"] < 1 * MiB

    snap = take(mounted, "sparse-snap")
    after = store_stat(mounted.path)
    assert after["snapshots"] == 1
    for key in ("stored_bytes", "unique_bytes", "chunks"):
        assert after[key] == before[key], f"the snapshot added {key}: {before[key]} -> {after[key]}"

    s = os.stat(snap / "sparse")
    assert s.st_size == size
    assert s.st_blocks == live_blocks and s.st_blocks * 512 < 1 * MiB
    assert content_id(snap / "sparse") == live_id

    # overwrite one block and punch nothing: the snapshot keeps the old bytes and its holes
    with open(f, "r+b") as out:
        out.seek(50 * MiB + 123)
        out.write(b"Z" * 4096)
    expected_zero = bytes(MiB)
    with open(snap / "sparse", "rb") as src:
        for block_no in range(size // MiB):
            start = block_no * MiB
            block = src.read(MiB)
            assert len(block) == MiB
            want = bytearray(expected_zero)
            for off, data in blocks.items():
                lo, hi = max(off, start), min(off + len(data), start + MiB)
                if lo < hi:
                    want[lo - start:hi - start] = data[lo - off:hi - off]
            assert block == want, f"snapshot differs in MiB {block_no}"
        assert src.read(1) == b""
    with open(f, "rb") as live:
        live.seek(50 * MiB + 123)
        assert live.read(4096) == b"Z" * 4096
    h = blake3.blake3()
    h.update(b"A" * 4096)
    h.update(bytes(50 * MiB + 123 - 4096))
    h.update(b"B" * 4096)
    h.update(bytes(size - 4096 - (50 * MiB + 123 + 4096)))
    h.update(b"C" * 4096)
    assert live_id == h.hexdigest()


# -- 2. a snapshot equals a plain copy made at the same moment ----------------------------------
def test_snapshot_equals_plain_copy_made_at_the_same_moment(mounted, tmp_path):
    tree = mounted.path / "tree"
    populate(tree)
    plain = tmp_path / "plain"
    run("cp", "-a", tree, plain)
    snap = take(mounted, "moment") / "tree"
    mutate(tree)

    assert_same_tree(tree_state(plain), tree_state(snap), "snapshot vs cp -a copy")
    assert run("diff", "-r", "--no-dereference", "-x", "fifo", plain, snap, ok=False).returncode == 0
    # and the live tree no longer does
    assert run("diff", "-rq", "--no-dereference", "-x", "fifo", plain, tree, ok=False).returncode == 1

    # copying out of the snapshot with rsync -aHAX and tar gives the same tree again
    out = tmp_path / "rsynced"
    run("rsync", "-aHAX", f"{snap}/", f"{out}/")
    assert_same_tree(tree_state(plain), tree_state(out), "rsync -aHAX of the snapshot")
    untarred = tmp_path / "untarred"
    untarred.mkdir()
    archive = tmp_path / "snap.tar"
    run("tar", "--xattrs", "--xattrs-include=user.*", "-C", snap.parent, "-cf", archive, "tree")
    run("tar", "--xattrs", "--xattrs-include=user.*", "-C", untarred, "-xpf", archive)
    run("tar", "--compare", "-C", snap.parent, "-f", archive)
    plain_state, tar_state = tree_state(plain), tree_state(untarred / "tree")
    for state in (plain_state, tar_state):  # tar keeps mtimes to the microsecond only
        for info in state.values():
            info["mtime_ns"] //= 1000
    assert_same_tree(plain_state, tar_state, "tar of the snapshot")


# -- 3. hidden names ---------------------------------------------------------------------------
def test_hidden_names_are_not_listed_but_can_be_entered(mounted):
    mnt = mounted.path
    write_file(mnt / "file", b"x")
    os.mkdir(mnt / "dir")
    take(mounted, "one")
    take(mounted, "two")
    assert sorted(os.listdir(mnt)) == ["dir", "file"]
    assert sorted(e.name for e in os.scandir(mnt)) == ["dir", "file"]
    assert ".snapshots" not in run("ls", "-a", mnt).stdout.split()
    assert ".maiffs" not in run("ls", "-a", mnt).stdout.split()
    for name in (".snapshots", ".maiffs"):
        st = os.stat(mnt / name)
        assert stat.S_ISDIR(st.st_mode)
        assert (mnt / name).is_dir()
    assert run("ls", mnt / ".snapshots").stdout.split() == ["one", "two"]
    assert sorted(os.listdir(mnt / ".maiffs")) == ["by-id", "control", "stats"]
    assert os.listdir(mnt / ".maiffs" / "by-id") == []
    assert os.stat(mnt / ".snapshots" / "..").st_ino == os.stat(mnt).st_ino
    assert os.stat(mnt / ".snapshots" / "one" / "..").st_ino == os.stat(mnt / ".snapshots").st_ino
    # a snapshot holds no `.snapshots` or `.maiffs` of its own (no recursion)
    assert sorted(os.listdir(mnt / ".snapshots" / "two")) == ["dir", "file"]
    for name in (".snapshots", ".maiffs"):
        assert errno_of(os.stat, mnt / ".snapshots" / "two" / name) == errno.ENOENT
    # below the root, `.snapshots` is an ordinary name
    os.mkdir(mnt / "dir" / ".snapshots")
    write_file(mnt / "dir" / ".snapshots" / "f", b"ordinary")
    assert os.listdir(mnt / "dir") == [".snapshots"]
    three = take(mounted, "three")
    assert read_file(three / "dir" / ".snapshots" / "f") == b"ordinary"
    stats = json.loads(read_file(mnt / ".maiffs" / "stats"))
    assert stats["snapshots"] == 3
    assert json.loads(run("cat", mnt / ".maiffs" / "stats").stdout)["snapshots"] == 3
    os.rmdir(mnt / ".snapshots" / "one")
    assert json.loads(read_file(mnt / ".maiffs" / "stats"))["snapshots"] == 2
    assert store_stat(mounted.path)["snapshots"] == 2


def test_copy_tools_du_and_find_do_not_descend_into_snapshots(mounted, tmp_path):
    mnt = mounted.path
    populate(mnt / "tree")
    du_before = run("du", "-s", "--apparent-size", "-B1", mnt).stdout.split()[0]
    take(mounted, "a")
    take(mounted, "b")

    cp_out = tmp_path / "cp"
    run("cp", "-a", f"{mnt}/.", cp_out)
    assert os.listdir(cp_out) == ["tree"]
    rsync_out = tmp_path / "rsync"
    run("rsync", "-a", f"{mnt}/", f"{rsync_out}/")
    assert os.listdir(rsync_out) == ["tree"]
    rsync_out = tmp_path / "rsync-HX"
    run("rsync", "-aHX", f"{mnt}/", f"{rsync_out}/")
    assert os.listdir(rsync_out) == ["tree"]
    assert_same_tree(tree_state(cp_out / "tree"), tree_state(rsync_out / "tree"), "rsync vs cp")

    du = run("du", "-a", mnt).stdout
    assert ".snapshots" not in du and ".maiffs" not in du
    assert run("du", "-s", "--apparent-size", "-B1", mnt).stdout.split()[0] == du_before
    found = run("find", mnt).stdout
    assert ".snapshots" not in found and ".maiffs" not in found
    listing = run("tar", "-C", mnt, "-cf", "-", ".", text=False).stdout
    assert b".snapshots" not in listing and b".maiffs" not in listing


def test_the_reserved_names_cannot_be_created_replaced_or_removed(mounted):
    mnt = mounted.path
    write_file(mnt / "f", b"file")
    os.mkdir(mnt / "emptydir")
    take(mounted, "keep")
    snaps = mnt / ".snapshots"

    refused = {errno.EEXIST, errno.EBUSY, errno.EISDIR, errno.ENOTEMPTY, errno.EPERM}
    assert errno_of(os.open, snaps, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644) == errno.EEXIST
    assert errno_of(os.open, snaps, os.O_WRONLY | os.O_CREAT, 0o644) == errno.EISDIR
    assert errno_of(os.mkdir, snaps) == errno.EEXIST
    assert errno_of(os.mkfifo, snaps) == errno.EEXIST
    assert errno_of(os.symlink, "f", snaps) == errno.EEXIST
    assert errno_of(os.symlink, "f", mnt / ".maiffs") == errno.EEXIST
    assert errno_of(os.link, mnt / "f", snaps) == errno.EEXIST
    assert errno_of(os.rename, mnt / "f", snaps) in refused
    assert errno_of(os.rename, mnt / "emptydir", snaps) in refused
    assert errno_of(os.rename, mnt / "emptydir", mnt / ".maiffs") in refused
    assert errno_of(os.rename, snaps, mnt / "moved") in refused
    assert errno_of(os.rename, mnt / ".maiffs", mnt / "moved") in refused
    assert errno_of(os.rmdir, snaps) in refused
    assert errno_of(os.rmdir, mnt / ".maiffs") in refused
    done = run("cp", mnt / "f", snaps, ok=False)  # into the directory: EROFS, not a replacement
    assert done.returncode != 0

    assert read_file(mnt / "f") == b"file"
    assert os.path.isdir(mnt / "emptydir")
    assert not os.path.lexists(mnt / "moved")
    assert sorted(os.listdir(mnt)) == ["emptydir", "f"]
    assert os.listdir(snaps) == ["keep"]
    assert read_file(snaps / "keep" / "f") == b"file"
    assert sorted(os.listdir(mnt / ".maiffs")) == ["by-id", "control", "stats"]


# -- 4. read-only ------------------------------------------------------------------------------
def test_every_change_inside_a_snapshot_is_refused_with_erofs(mounted):
    mnt = mounted.path
    tree = mnt / "tree"
    tree.mkdir()
    write_file(tree / "f", b"original")
    os.setxattr(tree / "f", "user.k", b"v")
    os.link(tree / "f", tree / "hl")
    (tree / "d" / "empty").mkdir(parents=True)
    os.symlink("f", tree / "l")
    os.mkfifo(tree / "p")
    snap = take(mounted, "ro")
    s = snap / "tree"
    before = tree_state(snap)

    attempts = {
        "create": lambda: os.open(s / "new", os.O_WRONLY | os.O_CREAT, 0o644),
        "create-excl": lambda: os.open(s / "new", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644),
        "open-wronly": lambda: os.open(s / "f", os.O_WRONLY),
        "open-rdwr": lambda: os.open(s / "f", os.O_RDWR),
        "open-append": lambda: os.open(s / "f", os.O_WRONLY | os.O_APPEND),
        "open-trunc": lambda: os.open(s / "f", os.O_RDONLY | os.O_TRUNC),
        "truncate": lambda: os.truncate(s / "f", 0),
        "unlink": lambda: os.unlink(s / "f"),
        "unlink-link": lambda: os.unlink(s / "l"),
        "rename-inside": lambda: os.rename(s / "f", s / "g"),
        "rename-dir": lambda: os.rename(s / "d", s / "d2"),
        "rename-into": lambda: os.rename(mnt / "live", s / "live"),
        "rename-out": lambda: os.rename(s / "f", mnt / "out"),
        "rename-snapshot": lambda: os.rename(snap, mnt / ".snapshots" / "renamed"),
        "chmod": lambda: os.chmod(s / "f", 0o777),
        "chmod-dir": lambda: os.chmod(s / "d", 0o700),
        "chmod-root": lambda: os.chmod(snap, 0o700),
        "chmod-.snapshots": lambda: os.chmod(mnt / ".snapshots", 0o700),
        "chown": lambda: os.chown(s / "f", 1, 1),
        "lchown": lambda: os.lchown(s / "l", 1, 1),
        "utime": lambda: os.utime(s / "f", ns=(1, 1)),
        "utime-now": lambda: os.utime(s / "f"),
        "utime-link": lambda: os.utime(s / "l", ns=(1, 1), follow_symlinks=False),
        "setxattr": lambda: os.setxattr(s / "f", "user.new", b"1"),
        "replace-xattr": lambda: os.setxattr(s / "f", "user.k", b"other"),
        "setxattr-dir": lambda: os.setxattr(s / "d", "user.new", b"1"),
        "removexattr": lambda: os.removexattr(s / "f", "user.k"),
        "mkdir": lambda: os.mkdir(s / "newdir"),
        "mkdir-deeper": lambda: os.mkdir(s / "d" / "newdir"),
        "mkdir-in-snapshot-root": lambda: os.mkdir(snap / "newdir"),
        "rmdir": lambda: os.rmdir(s / "d" / "empty"),
        "rmdir-tree": lambda: os.rmdir(snap / "tree"),
        "symlink": lambda: os.symlink("f", s / "newlink"),
        "link-into": lambda: os.link(mnt / "live", s / "newhl"),
        "mkfifo": lambda: os.mkfifo(s / "newfifo"),
        "mknod": lambda: os.mknod(s / "newnode", stat.S_IFREG | 0o644),
    }
    write_file(mnt / "live", b"live file")
    wrong = {}
    for what, attempt in attempts.items():
        try:
            result = attempt()
        except OSError as exc:
            if exc.errno != errno.EROFS:
                wrong[what] = errno.errorcode.get(exc.errno, exc.errno)
        else:
            if isinstance(result, int):
                os.close(result)
            wrong[what] = "succeeded"
    assert not wrong, f"not refused with EROFS: {wrong}"
    # a hard link from a snapshot into the live tree cannot be made either (another "device")
    assert errno_of(os.link, s / "f", mnt / "linked") in (errno.EXDEV, errno.EROFS)

    # ordinary tools fail too, and say why
    for args in (["touch", s / "f"], ["setfattr", "-n", "user.x", "-v", "1", s / "f"],
                 ["rm", "-rf", s], ["chmod", "-R", "777", s], ["cp", mnt / "live", s / "copy"],
                 ["tee", s / "f"], ["mv", s / "f", mnt / "moved"]):
        done = run(*args, ok=False, input="data")
        assert done.returncode != 0, f"{args[0]} succeeded inside a snapshot"
        assert "Read-only file system" in done.stderr, (args, done.stderr)

    assert_same_tree(before, tree_state(snap), "the snapshot after attempts to change it")
    assert read_file(mnt / "live") == b"live file"
    assert not os.path.lexists(mnt / "out") and not os.path.lexists(mnt / "linked")
    assert not os.path.lexists(mnt / "moved")
    assert os.listdir(mnt / ".snapshots") == ["ro"]
    assert read_file(tree / "f") == b"original"
    # reading is fine
    fd = os.open(s / "f", os.O_RDONLY)
    try:
        assert os.read(fd, 100) == b"original"
    finally:
        os.close(fd)


# -- 5. names, errors, remount -----------------------------------------------------------------
def test_snapshot_names_and_their_errors(mounted):
    snaps = mounted.path / ".snapshots"
    write_file(mounted.path / "f", b"x")
    names = ["with space", "ünïcødé 📸", "a" * 255, "é" * 127 + "b", ".dot", "-dash"]
    for name in names:
        assert len(os.fsencode(name)) <= 255
        take(mounted, name)
        assert read_file(snaps / name / "f") == b"x"
    assert sorted(os.listdir(snaps)) == sorted(names)
    listed = json.loads(maiffs("snapshot", "list", "--json", mounted.path).stdout)
    assert [info["name"] for info in listed] == names  # oldest first
    assert set(maiffs("snapshot", "list", mounted.path).stdout.split("\n")[0].split()) >= {"with", "space"}

    assert errno_of(os.mkdir, snaps / "with space") == errno.EEXIST
    assert errno_of(os.rmdir, snaps / "missing") == errno.ENOENT
    assert errno_of(os.stat, snaps / "missing") == errno.ENOENT
    assert errno_of(os.mkdir, snaps / ("a" * 256)) == errno.ENAMETOOLONG
    assert errno_of(os.mkdir, snaps / ("é" * 128)) == errno.ENAMETOOLONG
    one_line_error(maiffs("snapshot", "create", mounted.path, "with space", check=False), "exists")
    one_line_error(maiffs("snapshot", "create", mounted.path, "a" * 256, check=False), "255")
    one_line_error(maiffs("snapshot", "create", mounted.path, "..", check=False))
    one_line_error(maiffs("snapshot", "create", mounted.path, "a/b", check=False))
    one_line_error(maiffs("snapshot", "delete", mounted.path, "missing", check=False), "missing")
    assert sorted(os.listdir(snaps)) == sorted(names)

    os.rmdir(snaps / "ünïcødé 📸")
    maiffs("snapshot", "delete", mounted.path, "with space")
    assert sorted(os.listdir(snaps)) == sorted(set(names) - {"ünïcødé 📸", "with space"})
    assert errno_of(os.stat, snaps / "with space") == errno.ENOENT
    # a name can be used again once free, and shows the tree as it is now
    write_file(mounted.path / "f", b"y")
    take(mounted, "with space")
    assert read_file(snaps / "with space" / "f") == b"y"


def test_snapshots_survive_a_remount_with_their_contents_and_inode_numbers(mounted):
    tree = mounted.path / "tree"
    populate(tree)
    states, inos = {}, {}
    for name in ("first", "second"):
        snap = take(mounted, name)
        states[name] = tree_state(snap)
        inos[name] = {rel: os.lstat(snap / rel).st_ino for rel in states[name]}
        if name == "first":
            mutate(tree)
        else:
            write_file(tree / "third", b"3")
    listing = json.loads(maiffs("snapshot", "list", "--json", mounted.path).stdout)
    live = tree_state(tree)

    mounted.remount()
    assert sorted(os.listdir(mounted.path / ".snapshots")) == ["first", "second"]
    assert json.loads(maiffs("snapshot", "list", "--json", mounted.path).stdout) == listing
    for name in ("first", "second"):
        snap = mounted.path / ".snapshots" / name
        assert_same_tree(states[name], tree_state(snap), f"snapshot {name} after remount")
        assert {rel: os.lstat(snap / rel).st_ino for rel in states[name]} == inos[name]
    assert_same_tree(live, tree_state(tree), "the live tree after remount")
    assert "third" not in os.listdir(mounted.path / ".snapshots" / "first" / "tree")


# -- 6. inode numbers --------------------------------------------------------------------------
def test_inode_numbers_never_collide_across_live_tree_and_snapshots(mounted):
    mnt = mounted.path
    populate(mnt / "tree")
    take(mounted, "A")
    mutate(mnt / "tree")
    os.link(mnt / "tree" / "newfile", mnt / "tree" / "newdir" / "newfile-link")
    take(mounted, "B")
    write_file(mnt / "tree" / "after-B", b"live only")

    roots = {"live": mnt, "A": mnt / ".snapshots" / "A", "B": mnt / ".snapshots" / "B"}
    out = run("find", *roots.values(), "-printf", r"%i\t%y\t%n\t%p\n").stdout
    by_ino: dict[int, list[tuple[str, str, int, str]]] = {}
    count = 0
    for line in out.splitlines():
        ino, kind, nlink, path = line.split("\t", 3)
        which = next(name for name, root in sorted(roots.items(), key=lambda kv: -len(str(kv[1])))
                     if path == str(root) or path.startswith(f"{root}/"))
        by_ino.setdefault(int(ino), []).append((which, kind, int(nlink), path))
        count += 1
    for name, root in roots.items():  # find saw every path (it trusts directory link counts)
        walked = {str(root)} | {os.path.join(d, n) for d, dirs, files in os.walk(root)
                                for n in dirs + files}
        assert {e[3] for entries in by_ino.values() for e in entries if e[0] == name} == walked, name
    assert count > 3 * 120
    problems = []
    for ino, entries in by_ino.items():
        trees = {e[0] for e in entries}
        if len(trees) > 1:
            problems.append(f"inode {ino} is shared by {[e[3] for e in entries]}")
        elif len(entries) > 1 and not all(e[1] == "f" and e[2] == len(entries) for e in entries):
            problems.append(f"inode {ino} names more paths than its link count: {entries}")
    assert not problems, "\n".join(problems[:20])

    def ino(path: Path) -> int:
        return os.lstat(path).st_ino

    for name in ("A", "B"):
        t = roots[name] / "tree"
        assert ino(t / "hl1") == ino(t / "links" / "hl3")
    assert ino(roots["A"] / "tree" / "hl1") == ino(roots["A"] / "tree" / "docs" / "hl2")
    assert ino(roots["B"] / "tree" / "newfile") == ino(roots["B"] / "tree" / "newdir" / "newfile-link")
    # the virtual directories and files have numbers of their own too
    extra = [mnt / ".snapshots", mnt / ".maiffs", mnt / ".maiffs" / "stats",
             mnt / ".maiffs" / "control", mnt / ".maiffs" / "by-id"]
    byid = mnt / ".maiffs" / "by-id" / content_id(roots["A"] / "tree" / "small.txt")
    extra.append(byid)
    extra_inos = [ino(p) for p in extra]
    assert len(set(extra_inos)) == len(extra_inos)
    assert not set(extra_inos) & set(by_ino), "a virtual file shares an inode number with a tree"
    # what readdir reports (d_ino) is what stat reports
    for name in ("A", "B"):
        for dirpath in (roots[name], roots[name] / "tree", roots[name] / "tree" / "many"):
            for entry in os.scandir(dirpath):
                assert entry.inode() == os.lstat(entry.path).st_ino, entry.path


# -- 7. diff and restore -----------------------------------------------------------------------
def diff_tree(root: Path) -> None:
    """The starting tree of the diff test."""
    root.mkdir()
    for name in ("a.txt", "gone.txt", "meta.txt", "touched", "xa", "r1", "flip", "same.txt"):
        write_file(root / name, f"{name} content\n".encode())
    os.symlink("a.txt", root / "link")
    (root / "olddir" / "sub").mkdir(parents=True)
    write_file(root / "olddir" / "sub" / "x", b"x")
    write_file(root / "olddir" / "y", b"y")
    (root / "keep").mkdir()
    write_file(root / "keep" / "k", b"k")
    write_file(root / "hl", b"hard linked\n")
    os.link(root / "hl", root / "keep" / "hl-too")
    set_times(root)


def test_snapshot_diff_matches_diff_rq_of_plain_copies(mounted, tmp_path):
    mnt = mounted.path
    tree = mnt / "tree"
    diff_tree(tree)
    copies = {}

    def moment(name: str) -> None:
        copies[name] = tmp_path / name
        run("cp", "-a", tree, copies[name])
        take(mounted, name)

    moment("A")
    write_file(tree / "a.txt", b"a.txt changed\n")
    (tree / "new" / "y").mkdir(parents=True)
    write_file(tree / "new" / "x", b"x")
    write_file(tree / "new" / "y" / "z", b"z")
    os.unlink(tree / "gone.txt")
    shutil.rmtree(tree / "olddir")
    os.chmod(tree / "meta.txt", 0o600)  # metadata only: diff -rq cannot see these three
    os.utime(tree / "touched", ns=(BASE_NS, BASE_NS + 999))
    os.setxattr(tree / "xa", "user.tag", b"1")
    os.rename(tree / "r1", tree / "r2")
    os.unlink(tree / "flip")
    os.mkdir(tree / "flip")
    write_file(tree / "flip" / "inside", b"i")
    os.unlink(tree / "link")
    os.symlink("same.txt", tree / "link")
    with open(tree / "keep" / "hl-too", "ab") as f:  # through one name: both names differ
        f.write(b"more\n")
    meta_only_1 = {"meta.txt", "touched", "xa"}
    moment("B")
    write_file(tree / "new" / "x", b"x changed")
    os.unlink(tree / "a.txt")
    write_file(tree / "late", b"late")
    os.chmod(tree / "keep", 0o700)  # a directory's mode: M, invisible to diff -rq
    meta_only_2 = {"keep"}
    live = tmp_path / "live"
    run("cp", "-a", tree, live)

    cases = [("A", "B", copies["A"], copies["B"], meta_only_1),
             ("B", None, copies["B"], live, meta_only_2),
             ("A", None, copies["A"], live, None)]
    for a, b, left, right, meta_only in cases:
        rows = maiffs_diff(mnt, a, b)
        assert rows == sorted(rows, key=lambda r: r[1]), "diff output is not sorted by path"
        assert len(rows) == len(set(rows)), f"repeated rows: {rows}"
        marks = {mark: strip_prefix(p for m_, p in rows if m_ == mark) for mark in "ADM"}
        assert all(p.startswith("tree/") for _m, p in rows), rows
        added, removed, modified = diff_rq(left, right)
        what = f"maiffs snapshot diff {a} {b or '(live)'}"
        assert marks["A"] == all_below(right, added), what
        assert marks["D"] == all_below(left, removed), what
        assert modified <= marks["M"], what
        if meta_only is not None:
            assert marks["M"] == modified | meta_only, what
        else:
            assert marks["M"] - modified <= meta_only_1 | meta_only_2, what
    # the unchanged subtree and unchanged file are never reported
    every = {p for _m, p in maiffs_diff(mnt, "A")}
    assert "tree/same.txt" not in every and "tree/keep/k" not in every
    # the same answer from the store's path while mounted
    assert maiffs_diff(mounted.store, "A", "B") == maiffs_diff(mnt, "A", "B")
    assert maiffs_diff(mnt, "B", "B") == []


def restore_tree(root: Path) -> None:
    root.mkdir()
    docs = root / "docs"
    (docs / "sub").mkdir(parents=True)
    write_file(docs / "a.md", b"version one of a.md\n" * 50)
    os.chmod(docs / "a.md", 0o640)
    os.setxattr(docs / "a.md", "user.note", b"one")
    write_file(docs / "b.md", b"b\n")
    write_file(docs / "sub" / "deep.txt", b"deep\n")
    os.link(docs / "b.md", docs / "sub" / "b-link")
    os.symlink("../a.md", docs / "sub" / "to-a")
    os.setxattr(docs, "user.dirnote", b"docs")
    os.chmod(docs, 0o750)
    write_file(root / "top.txt", b"top one\n")
    set_times(root)


def test_restore_a_single_file(mounted):
    mnt = mounted.path
    tree = mnt / "tree"
    restore_tree(tree)
    snap = take(mounted, "S") / "tree"
    a = tree / "docs" / "a.md"
    write_file(a, b"version two")
    os.chmod(a, 0o666)
    os.setxattr(a, "user.note", b"two")
    os.setxattr(a, "user.extra", b"x")
    write_file(tree / "docs" / "after.txt", b"created after the snapshot")
    write_file(tree / "top.txt", b"top two\n")
    write_file(tree / "docs" / "b.md", b"b two\n")
    others = {rel: info for rel, info in tree_state(tree).items() if rel != "docs/a.md"}

    done = maiffs("snapshot", "restore", mnt, "S", "tree/docs/a.md")
    assert "restored" in done.stdout
    want, got = tree_state(snap / "docs")["a.md"], tree_state(tree / "docs")["a.md"]
    for key in ("mode", "uid", "gid", "mtime_ns", "xattrs", "size", "sha256"):
        assert got[key] == want[key], key
    assert read_file(a) == b"version one of a.md\n" * 50
    assert run("getfattr", "--only-values", "-n", "user.note", a).stdout == "one"
    assert content_id(a) == content_id(snap / "docs" / "a.md")
    after = tree_state(tree)
    for rel, info in others.items():  # nothing else changed (the directory's mtime may)
        if rel in (".", "docs"):
            info, after[rel] = dict(info, mtime_ns=None), dict(after[rel], mtime_ns=None)
        assert after[rel] == info, rel

    assert "tree/docs/a.md" not in {p for _m, p in maiffs_diff(mnt, "S")}
    # a symlink and a fifo are restored as what they were
    os.unlink(tree / "docs" / "sub" / "to-a")
    write_file(tree / "docs" / "sub" / "to-a", b"now a file")
    os.mkfifo(tree / "docs" / "fifo")
    take(mounted, "with-fifo")
    os.unlink(tree / "docs" / "fifo")
    maiffs("snapshot", "restore", mnt, "S", "tree/docs/sub/to-a")
    maiffs("snapshot", "restore", mnt, "with-fifo", "tree/docs/fifo")
    assert os.readlink(tree / "docs" / "sub" / "to-a") == "../a.md"
    assert os.lstat(tree / "docs" / "sub" / "to-a").st_mtime_ns == \
        os.lstat(snap / "docs" / "sub" / "to-a").st_mtime_ns
    assert stat.S_ISFIFO(os.lstat(tree / "docs" / "fifo").st_mode)
    # a file deleted since (the kernel has just been told it is gone) comes back at once
    os.unlink(tree / "docs" / "b.md")
    assert errno_of(os.stat, tree / "docs" / "b.md") == errno.ENOENT
    maiffs("snapshot", "restore", mnt, "S", "tree/docs/b.md")
    assert read_file(tree / "docs" / "b.md") == b"b\n"
    # outside the restored path a hard link is not re-linked: the restored file is its own
    assert read_file(tree / "docs" / "sub" / "b-link") == b"b two\n"
    assert os.stat(tree / "docs" / "b.md").st_nlink == 1
    # restoring over and over from the same snapshot is idempotent and always seen at once
    for i in range(5):
        write_file(a, b"scribble %d" % i)
        maiffs("snapshot", "restore", mnt, "S", "tree/docs/a.md")
        assert read_file(a) == b"version one of a.md\n" * 50
    assert not log_problems(mounted)


def test_restore_a_subtree_leaves_everything_else_alone(mounted):
    mnt = mounted.path
    tree = mnt / "tree"
    restore_tree(tree)
    snap = take(mounted, "S") / "tree"
    docs = tree / "docs"
    shutil.rmtree(docs / "sub")
    write_file(docs / "new.txt", b"new")
    write_file(docs / "a.md", b"rewritten")
    os.chmod(docs, 0o777)
    os.setxattr(docs, "user.dirnote", b"changed")
    write_file(tree / "outside-new.txt", b"created after the snapshot")
    write_file(tree / "top.txt", b"top two\n")
    outside = tree_state(tree / "outside-new.txt")["."], tree_state(tree / "top.txt")["."]

    maiffs("snapshot", "restore", mnt, "S", "tree/docs")
    assert_same_tree(tree_state(snap / "docs"), tree_state(docs), "the restored subtree")
    assert not (docs / "new.txt").exists()
    assert os.stat(docs / "b.md").st_ino == os.stat(docs / "sub" / "b-link").st_ino
    assert (tree_state(tree / "outside-new.txt")["."], tree_state(tree / "top.txt")["."]) == outside
    assert read_file(tree / "top.txt") == b"top two\n"
    assert sorted(os.listdir(tree)) == ["docs", "outside-new.txt", "top.txt"]
    assert sorted(maiffs_diff(mnt, "S")) == [("A", "tree/outside-new.txt"), ("M", "tree/top.txt")]
    # the restored files are live, writable files again, independent of the snapshot
    write_file(docs / "a.md", b"edited after restore")
    assert read_file(snap / "docs" / "a.md") == b"version one of a.md\n" * 50


def test_restore_everything(mounted):
    mnt = mounted.path
    restore_tree(mnt / "tree")
    write_file(mnt / "root-file", b"root")
    os.setxattr(mnt / "root-file", "user.r", b"1")
    snap = take(mounted, "S")
    want = tree_state(snap)
    shutil.rmtree(mnt / "tree" / "docs")
    write_file(mnt / "root-file", b"changed")
    (mnt / "later" / "deeper").mkdir(parents=True)
    write_file(mnt / "later" / "f", b"later")
    write_file(mnt / "tree" / "later.txt", b"later")

    maiffs("snapshot", "restore", mnt, "S")
    got = tree_state(mnt)
    for state in (want, got):
        state["."].pop("mtime_ns")  # the root's own mtime: see test_full_restore_gives_the_root_its_mtime
    assert_same_tree(want, got, "the tree after restoring everything")
    assert sorted(os.listdir(mnt)) == ["root-file", "tree"]
    assert os.listdir(mnt / ".snapshots") == ["S"]
    assert_same_tree(tree_state(snap), tree_state(mnt / ".snapshots" / "S"), "the snapshot itself")
    assert maiffs_diff(mnt, "S") == []
    assert maiffs_diff(mnt, "S", take(mounted, "after-restore").name) == []
    # offline too: restore everything on the unmounted store
    write_file(mnt / "again", b"again")
    mounted.unmount()
    maiffs("snapshot", "restore", mounted.store, "S")
    mounted.mount()
    assert sorted(os.listdir(mnt)) == ["root-file", "tree"]
    assert read_file(mnt / "root-file") == b"root"


def test_restore_keeps_open_handles_working(mounted):
    mnt = mounted.path
    tree = mnt / "tree"
    restore_tree(tree)
    take(mounted, "S")
    data = os.urandom(300_000)
    write_file(tree / "docs" / "a.md", data)
    write_file(tree / "docs" / "b.md", b"live b")
    reader = os.open(tree / "docs" / "a.md", os.O_RDONLY)
    dir_fd = os.open(tree / "docs", os.O_RDONLY | os.O_DIRECTORY)
    other = os.open(tree / "top.txt", os.O_RDONLY)
    try:
        assert os.read(reader, 1000) == data[:1000]
        maiffs("snapshot", "restore", mnt, "S", "tree/docs")
        # the open file still reads what it had, to the end
        rest = b""
        while chunk := os.read(reader, 65536):
            rest += chunk
        assert rest == data[1000:]
        assert os.pread(reader, 10, 0) == data[:10]
        assert os.fstat(reader).st_size == len(data)
        assert os.fstat(dir_fd).st_ino != os.stat(tree / "docs").st_ino
        assert os.pread(other, 100, 0) == b"top one\n"
        # the path shows the snapshot's version
        assert read_file(tree / "docs" / "a.md") == b"version one of a.md\n" * 50
        # and a full restore while the same files are open
        maiffs("snapshot", "restore", mnt, "S")
        assert os.pread(reader, 5, len(data) - 5) == data[-5:]
        assert os.pread(other, 100, 0) == b"top one\n"
    finally:
        os.close(reader)
        os.close(dir_fd)
        os.close(other)
    assert not log_problems(mounted)


# -- 8. log ------------------------------------------------------------------------------------
def test_log_lists_every_version_newest_first(mounted):
    mnt = mounted.path
    (mnt / "dir").mkdir()
    f = mnt / "dir" / "f.txt"
    versions = {"s1": b"version one\n", "s2": b"version two, longer\n", "s3": b"3\n"}
    times = {}
    for i, (name, data) in enumerate(versions.items()):
        write_file(f, data)
        times[name] = BASE_NS + i * 10**9
        os.utime(f, ns=(times[name], times[name]))
        if name == "s2":
            write_file(mnt / "dir" / "born-in-s2", b"b")
        take(mounted, name)
    write_file(f, b"live, not in any snapshot\n")

    rows = json.loads(maiffs("log", "--json", f).stdout)
    assert [r["snapshot"] for r in rows] == ["s3", "s2", "s1"]
    for row in rows:
        name = row["snapshot"]
        in_snap = mnt / ".snapshots" / name / "dir" / "f.txt"
        assert read_file(in_snap) == versions[name]
        assert row["id"] == content_id(in_snap) == blake3.blake3(versions[name]).hexdigest()
        assert row["size"] == len(versions[name]) == os.stat(in_snap).st_size
        assert row["mtime_ns"] == times[name] == os.stat(in_snap).st_mtime_ns
        assert row["type"] == "file"
    assert len({r["id"] for r in rows}) == 3
    created = [r["snapshot_created_ns"] for r in rows]
    assert created == sorted(created, reverse=True)

    table = maiffs("log", f).stdout.splitlines()
    assert [line.split()[0] for line in table] == ["s3", "s2", "s1"]
    assert [line.split()[-1] for line in table] == [r["id"] for r in rows]

    # from inside the mount, by a relative path
    rel = json.loads(maiffs("log", "--json", "f.txt", cwd=mnt / "dir").stdout)
    assert rel == rows
    assert [r["snapshot"] for r in json.loads(maiffs("log", "--json", mnt / "dir" / "born-in-s2").stdout)] \
        == ["s3", "s2"]
    dir_rows = json.loads(maiffs("log", "--json", mnt / "dir").stdout)
    assert [(r["snapshot"], r["type"], r["id"]) for r in dir_rows] == \
        [("s3", "directory", None), ("s2", "directory", None), ("s1", "directory", None)]
    # a file deleted from the live tree still has its history
    os.unlink(f)
    assert json.loads(maiffs("log", "--json", f).stdout) == rows
    assert json.loads(maiffs("log", "--json", mnt / "dir" / "never-existed").stdout) == []
    os.rmdir(mnt / ".snapshots" / "s2")
    assert [r["snapshot"] for r in json.loads(maiffs("log", "--json", f).stdout)] == ["s3", "s1"]


def test_content_ids_follow_the_content_not_the_attributes(mounted):
    """Ids stay when only attributes change, and change with any byte (same size included)."""
    mnt = mounted.path
    f = mnt / "f"
    a = bytearray(os.urandom(200_000))
    write_file(f, bytes(a))
    take(mounted, "s1")
    os.chmod(f, 0o600)
    os.utime(f, ns=(BASE_NS, BASE_NS))
    os.setxattr(f, "user.tag", b"attributes only")
    read_file(f)  # and an atime update
    take(mounted, "s2")
    b = bytearray(a)
    b[150_000:150_010] = b"0123456789"
    with open(f, "r+b") as out:  # same size, one region rewritten in place
        out.seek(150_000)
        out.write(b"0123456789")
    take(mounted, "s3")
    rows = {r["snapshot"]: r for r in json.loads(maiffs("log", "--json", f).stdout)}
    assert list(rows) == ["s3", "s2", "s1"]
    assert rows["s1"]["id"] == rows["s2"]["id"] == blake3.blake3(a).hexdigest()
    assert rows["s3"]["id"] == blake3.blake3(b).hexdigest() != rows["s1"]["id"]
    for name, row in rows.items():
        assert content_id(mnt / ".snapshots" / name / "f") == row["id"]
    assert content_id(f) == rows["s3"]["id"]
    assert read_file(mnt / ".maiffs" / "by-id" / rows["s1"]["id"]) == a
    assert read_file(mnt / ".maiffs" / "by-id" / rows["s3"]["id"]) == b
    assert maiffs_diff(mnt, "s1", "s2") == [("M", "f")]
    assert maiffs_diff(mnt, "s2", "s3") == [("M", "f")]
    assert stat.S_IMODE(os.stat(mnt / ".snapshots" / "s1" / "f").st_mode) == 0o644
    assert os.getxattr(mnt / ".snapshots" / "s2" / "f", "user.tag") == b"attributes only"


# -- 9. by-id ----------------------------------------------------------------------------------
def test_by_id_reads_content_a_snapshot_holds(mounted):
    mnt = mounted.path
    f = mnt / "f.bin"
    old = os.urandom(300_000)
    write_file(f, old)
    os.chmod(f, 0o644)
    cid = content_id(f)
    assert cid == blake3.blake3(old).hexdigest()
    take(mounted, "s")
    new = b"overwritten"
    write_file(f, new)
    new_id = content_id(f)
    assert new_id != cid

    byid = mnt / ".maiffs" / "by-id"
    assert read_file(byid / cid) == old
    os.unlink(f)
    assert read_file(byid / cid) == old
    assert hashlib.sha256(run("cat", byid / cid, text=False).stdout).digest() == hashlib.sha256(old).digest()
    st = os.stat(byid / cid)
    assert stat.S_ISREG(st.st_mode) and st.st_size == len(old)
    assert content_id(byid / cid) == cid
    assert content_id(mnt / ".snapshots" / "s" / "f.bin") == cid
    assert os.listdir(byid) == []  # reached by id, not listed

    for unknown in ("0" * 64, blake3.blake3(b"never stored").hexdigest(), new_id, "xyz", cid[:32],
                    cid + "00", "g" * 64):
        assert errno_of(os.stat, byid / unknown) == errno.ENOENT, unknown
    not_allowed = {errno.EROFS, errno.EACCES, errno.EPERM}
    assert errno_of(os.open, byid / cid, os.O_WRONLY) in not_allowed
    assert errno_of(os.open, byid / cid, os.O_RDWR) in not_allowed
    assert errno_of(os.open, byid / cid, os.O_WRONLY | os.O_APPEND) in not_allowed
    assert errno_of(os.truncate, byid / cid, 0) in not_allowed
    assert errno_of(os.chmod, byid / cid, 0o777) in not_allowed
    assert errno_of(os.utime, byid / cid, ns=(1, 1)) in not_allowed
    assert errno_of(os.setxattr, byid / cid, "user.x", b"1") in not_allowed
    assert errno_of(os.unlink, byid / cid) in not_allowed
    assert errno_of(os.rename, byid / cid, mnt / "stolen") in not_allowed
    assert errno_of(os.open, byid / ("1" * 64), os.O_WRONLY | os.O_CREAT, 0o644) in not_allowed
    assert errno_of(os.mkdir, byid / "d") in not_allowed
    assert errno_of(os.open, mnt / ".maiffs" / "stats", os.O_WRONLY) in not_allowed
    assert read_file(byid / cid) == old

    # once no snapshot holds it, the id is gone
    os.rmdir(mnt / ".snapshots" / "s")

    def gone() -> bool:
        try:
            os.stat(byid / cid)
        except FileNotFoundError:
            return True
        return False

    wait_for(gone, "by-id/ID gone once the last snapshot holding it was deleted", limit=5)


# -- 10. the CLI on an unmounted store, and its errors -----------------------------------------
def test_cli_on_an_unmounted_store(tmp_path):
    with mount_session(tmp_path) as m:
        mnt = m.path
        (mnt / "tree").mkdir()
        write_file(mnt / "tree" / "f", b"one")
        write_file(mnt / "tree" / "g", b"g")
        m.unmount()

        assert "created snapshot first" in maiffs("snapshot", "create", m.store, "first").stdout
        m.mount()
        write_file(mnt / "tree" / "f", b"two")
        write_file(mnt / "tree" / "h", b"h")
        os.unlink(mnt / "tree" / "g")
        m.unmount()
        maiffs("snapshot", "create", m.store, "second")
        out = maiffs("snapshot", "create", m.store).stdout  # default name: the UTC time
        auto = out.split()[2]
        assert len(auto) == 16 and auto.endswith("Z") and auto[8] == "T"
        names = [i["name"] for i in json.loads(maiffs("snapshot", "list", "--json", m.store).stdout)]
        assert names == ["first", "second", auto]
        assert [line.split()[0] for line in maiffs("snapshot", "list", m.store).stdout.splitlines()] == names
        assert maiffs_diff(m.store, "first", "second") == [("M", "tree/f"), ("D", "tree/g"), ("A", "tree/h")]
        assert maiffs_diff(m.store, "second") == []
        assert sorted(maiffs_diff(m.store, "first")) == [("A", "tree/h"), ("D", "tree/g"), ("M", "tree/f")]
        maiffs("snapshot", "restore", m.store, "first", "tree/f")
        maiffs("snapshot", "restore", m.store, "first", "tree/g")
        assert sorted(maiffs_diff(m.store, "first")) == [("A", "tree/h")]
        maiffs("snapshot", "delete", m.store, "second")
        assert not os.path.exists(m.store / "maiffs.lock") or os.path.getsize(m.store / "maiffs.lock") == 0

        m.mount()
        assert sorted(os.listdir(mnt / ".snapshots")) == sorted(["first", auto])
        assert read_file(mnt / "tree" / "f") == b"one"
        assert read_file(mnt / "tree" / "g") == b"g"
        assert read_file(mnt / "tree" / "h") == b"h"
        assert read_file(mnt / ".snapshots" / "first" / "tree" / "f") == b"one"
        assert read_file(mnt / ".snapshots" / auto / "tree" / "f") == b"two"
        # mounted, the store's path reaches the daemon (and the change shows at once)
        assert errno_of(os.stat, mnt / ".snapshots" / "while-mounted") == errno.ENOENT
        maiffs("snapshot", "create", m.store, "while-mounted")
        assert os.stat(mnt / ".snapshots" / "while-mounted" / "tree" / "h").st_size == 1
        assert "while-mounted" in os.listdir(mnt / ".snapshots")
        maiffs("snapshot", "delete", m.store, "while-mounted")
        assert errno_of(os.stat, mnt / ".snapshots" / "while-mounted") == errno.ENOENT


def test_cli_errors_are_one_line_and_exit_nonzero(tmp_path):
    with mount_session(tmp_path) as m:
        write_file(m.path / "f", b"x")
        take(m, "s")
        for target in (m.path, m.store):
            one_line_error(maiffs("snapshot", "delete", target, "nosuch", check=False), "nosuch")
            one_line_error(maiffs("snapshot", "diff", target, "nosuch", check=False), "nosuch")
            one_line_error(maiffs("snapshot", "diff", target, "s", "nosuch", check=False), "nosuch")
            one_line_error(maiffs("snapshot", "restore", target, "nosuch", check=False), "nosuch")
            one_line_error(maiffs("snapshot", "restore", target, "s", "no/such/path", check=False))
            one_line_error(maiffs("snapshot", "create", target, "s", check=False), "exists")
        one_line_error(maiffs("log", tmp_path / "outside", check=False), "not inside a maiffs mount")
        m.unmount()
        for args in (("delete", m.store, "nosuch"), ("diff", m.store, "nosuch"),
                     ("restore", m.store, "nosuch"), ("create", m.store, "s"),
                     ("restore", m.store, "s", "missing")):
            one_line_error(maiffs("snapshot", *args, check=False))
        assert [i["name"] for i in json.loads(maiffs("snapshot", "list", "--json", m.store).stdout)] == ["s"]
    missing = tmp_path / "no-such-store"
    for args in (("list", missing), ("create", missing, "x"), ("delete", missing, "x"),
                 ("diff", missing, "x"), ("restore", missing, "x")):
        one_line_error(maiffs("snapshot", *args, check=False), str(missing))
    assert not missing.exists()
    not_a_store = tmp_path / "plain-dir"
    not_a_store.mkdir()
    one_line_error(maiffs("snapshot", "list", not_a_store, check=False), "not a maiffs store")
    a_file = tmp_path / "a-file"
    write_file(a_file, b"x")
    one_line_error(maiffs("snapshot", "list", a_file, check=False))


# -- 11. space -----------------------------------------------------------------------------------
def test_deleting_a_snapshot_frees_its_space(mounted):
    mnt = mounted.path
    data = os.urandom(20 * MiB)
    write_file(mnt / "big", data)
    with_file = store_stat(mnt)["stored_bytes"]
    assert with_file >= 20 * MiB
    take(mounted, "holds-big")
    assert store_stat(mnt)["stored_bytes"] == with_file
    os.unlink(mnt / "big")
    time.sleep(0.2)
    assert store_stat(mnt)["stored_bytes"] >= 20 * MiB, "the snapshot's data went with the live file"
    assert read_file(mnt / ".snapshots" / "holds-big" / "big") == data
    os.rmdir(mnt / ".snapshots" / "holds-big")
    wait_for(lambda: store_stat(mnt)["stored_bytes"] < 64 * 1024,
             "stored_bytes back near zero once the snapshot was deleted")
    numbers = store_stat(mnt)
    assert numbers["snapshots"] == 0 and numbers["chunks"] <= 1


def test_deleting_one_of_two_snapshots_keeps_the_shared_data(mounted):
    mnt = mounted.path
    data = os.urandom(4 * MiB)
    write_file(mnt / "shared", data)
    take(mounted, "a")
    take(mounted, "b")
    os.unlink(mnt / "shared")
    os.rmdir(mnt / ".snapshots" / "a")
    assert read_file(mnt / ".snapshots" / "b" / "shared") == data
    assert store_stat(mnt)["stored_bytes"] >= 4 * MiB
    maiffs("snapshot", "delete", mnt, "b")
    wait_for(lambda: store_stat(mnt)["stored_bytes"] < 64 * 1024, "space freed after both went")


def snapshot_then_delete_it(m) -> None:
    """Write files, snapshot them as "s", change the live tree, then delete "s" again."""
    write_file(m.path / "big", os.urandom(2 * MiB))
    write_file(m.path / "keep", b"kept")
    take(m, "s")
    os.unlink(m.path / "big")
    write_file(m.path / "keep", b"kept, changed")
    os.rmdir(m.path / ".snapshots" / "s")


def assert_fsck_passes(m) -> None:
    """Unmount m and run `maiffs fsck` on its store: it must exit 0."""
    m.unmount()
    done = maiffs("fsck", m.store, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_store_is_usable_after_snapshots_were_deleted(mounted):
    """What a deleted snapshot leaves is still a working store (remount, read, snapshot again)."""
    mnt = mounted.path
    snapshot_then_delete_it(mounted)
    mounted.remount()
    assert read_file(mnt / "keep") == b"kept, changed"
    assert os.listdir(mnt / ".snapshots") == []
    assert read_file(take(mounted, "again") / "keep") == b"kept, changed"


def test_fsck_after_snapshots_were_deleted(mounted):
    """The store passes fsck (unmounted) once its snapshots were taken and deleted."""
    snapshot_then_delete_it(mounted)
    assert_fsck_passes(mounted)


def test_fsck_accepts_a_store_with_snapshots(mounted):
    mnt = mounted.path
    populate(mnt / "tree")
    take(mounted, "a")
    mutate(mnt / "tree")
    take(mounted, "b")
    write_file(mnt / "tree" / "after", b"after")
    assert_fsck_passes(mounted)


# -- other users -----------------------------------------------------------------------------------
def test_snapshots_keep_permissions_for_other_users(mounted_shared):
    mnt = mounted_shared.path
    write_file(mnt / "secret", b"root only")
    os.chmod(mnt / "secret", 0o600)
    write_file(mnt / "public", b"for everyone")
    os.chmod(mnt / "public", 0o644)
    take(mounted_shared, "s")
    secret_id = content_id(mnt / "secret")

    def attempt(action):
        """action(dir_fd of MNT) as uid/gid 1000 (paths relative to MNT: /tmp/pytest-of-root is 0700)."""
        fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return as_user(fd, 1000, 1000, action)
        finally:
            os.close(fd)

    def read(rel: str):
        def action(dfd):
            with open(os.open(rel, os.O_RDONLY, dir_fd=dfd), "rb") as fh:
                return fh.read().decode()
        return action

    assert attempt(read(".snapshots/s/public")) == "for everyone"
    assert failed_with(attempt(read(".snapshots/s/secret"))) == errno.EACCES
    assert failed_with(attempt(read(f".maiffs/by-id/{secret_id}"))) == errno.EACCES
    assert failed_with(attempt(lambda dfd: os.mkdir(".snapshots/mine", dir_fd=dfd))) == errno.EACCES
    assert failed_with(attempt(lambda dfd: os.rmdir(".snapshots/s", dir_fd=dfd))) == errno.EACCES
    assert failed_with(attempt(lambda dfd: os.close(os.open(".maiffs/control", os.O_RDWR, dir_fd=dfd)))) \
        == errno.EACCES
    assert os.listdir(mnt / ".snapshots") == ["s"]
    assert read_file(mnt / ".snapshots" / "s" / "secret") == b"root only"


# -- bugs found ---------------------------------------------------------------------------------
def test_full_restore_gives_the_root_its_mtime(mounted):
    mnt = mounted.path
    write_file(mnt / "f", b"x")
    os.utime(mnt, ns=(BASE_NS, BASE_NS))
    snap = take(mounted, "S")
    want = os.stat(snap).st_mtime_ns
    assert want == BASE_NS
    write_file(mnt / "g", b"after")
    maiffs("snapshot", "restore", mnt, "S")
    time.sleep(1.2)  # past the kernel's attribute cache
    assert os.listdir(mnt) == ["f"]
    assert os.stat(mnt).st_mtime_ns == want


def test_full_restore_shows_the_roots_mode_at_once(mounted):
    mnt = mounted.path
    write_file(mnt / "f", b"x")
    os.chmod(mnt, 0o755)
    take(mounted, "S")
    stale = []
    for i in range(3):
        os.chmod(mnt, 0o711)
        assert stat.S_IMODE(os.stat(mnt).st_mode) == 0o711
        # the same request the CLI sends, without its start-up time
        answer = commands.via_mount(str(mnt), {"op": "snapshot.restore", "name": "S", "path": ""})
        assert answer["ok"], answer
        mode = stat.S_IMODE(os.stat(mnt).st_mode)
        if mode != 0o755:
            stale.append(oct(mode))
    time.sleep(1.2)
    assert stat.S_IMODE(os.stat(mnt).st_mode) == 0o755  # right once the cache expires
    assert not stale, f"stat showed the pre-restore mode right after the restore: {stale}"


def test_cli_on_a_plain_directory_leaves_it_untouched(tmp_path):
    plain = tmp_path / "documents"
    plain.mkdir()
    write_file(plain / "letter.txt", b"dear")
    one_line_error(maiffs("snapshot", "list", plain, check=False), "not a maiffs store")
    one_line_error(maiffs("snapshot", "create", plain, "x", check=False), "not a maiffs store")
    assert os.listdir(plain) == ["letter.txt"]


def getdents(fd: int, size: int = 256) -> list[str]:
    """One getdents64(2) call with a small buffer: the names it returned (none at the end)."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(size)
    n = libc.syscall(217, fd, buf, size)  # SYS_getdents64 on x86_64
    if n < 0:
        raise OSError(ctypes.get_errno(), "getdents64")
    names, pos, raw = [], 0, buf.raw[:n]
    while pos < n:
        reclen = struct.unpack_from("<H", raw, pos + 16)[0]
        names.append(os.fsdecode(raw[pos + 19:pos + reclen].split(b"\0", 1)[0]))
        pos += reclen
    return names


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="uses the x86_64 getdents64 number")
def test_listing_snapshots_while_one_is_deleted_returns_every_survivor(mounted):
    write_file(mounted.path / "f", b"x")
    names = [f"snap{i:02d}" for i in range(30)]
    for name in names:
        take(mounted, name)
    # the same listing of a live directory, as a reference: survivors all come back
    live = mounted.path / "dir"
    live.mkdir()
    for name in names:
        write_file(live / name, b"")
    for directory, remove in ((live, os.unlink), (mounted.path / ".snapshots", os.rmdir)):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            seen = getdents(fd)
            assert 2 < len(seen) < len(names)  # the listing is only part way through
            remove(directory / names[0])
            while batch := getdents(fd):
                seen += batch
        finally:
            os.close(fd)
        survivors = set(names[1:])
        assert survivors <= set(seen), f"{directory.name}: missing {sorted(survivors - set(seen))}"
        assert len([n for n in seen if n in survivors]) == len(survivors), "repeated entries"


def test_by_id_file_open_while_its_last_snapshot_is_deleted(mounted):
    mnt = mounted.path
    data = os.urandom(300_000)
    write_file(mnt / "f", data)
    cid = content_id(mnt / "f")
    take(mounted, "only")
    write_file(mnt / "f", b"something else")  # the live file no longer holds the old chunks
    fd = os.open(mnt / ".maiffs" / "by-id" / cid, os.O_RDONLY)
    snap_fd = os.open(mnt / ".snapshots" / "only" / "f", os.O_RDONLY)
    try:
        assert os.pread(fd, 1000, 0) == data[:1000]
        assert os.pread(snap_fd, 1000, 0) == data[:1000]
        os.rmdir(mnt / ".snapshots" / "only")
        # a snapshot file whose snapshot went: a clean ESTALE
        assert errno_of(os.pread, snap_fd, 1000, 200_000) == errno.ESTALE
        # a by-id file: its data (as an open unlinked file keeps it), or a clean error, never EIO
        try:
            got = os.pread(fd, 1000, 200_000)
        except OSError as exc:
            assert exc.errno in (errno.ESTALE, errno.ENOENT), os.strerror(exc.errno)
        else:
            assert got == data[200_000:201_000]
    finally:
        os.close(fd)
        os.close(snap_fd)
    assert not log_problems(mounted), log_problems(mounted)
