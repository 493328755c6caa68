"""The common refusals of mount and umount: one line, non-zero exit, and the command to run
next named in it (the store's data untouched, nothing left mounted)."""

from __future__ import annotations

import os
import sys

from conftest import make_mount, maiffs
from fsutil import run, write_file
from maiffs.mounts import find_mount, is_mountpoint
from test_bad_input import refused, unmount_if_mounted


def test_a_mounted_store_names_its_mount_point_and_the_umount(mounted, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    try:
        err = refused(maiffs("mount", mounted.store, other, check=False),
                      f"mounted on {mounted.path} by pid {mounted.daemon_pid()}",
                      f"run `maiffs umount {mounted.path}` first")
    finally:
        unmount_if_mounted(other)
    assert err.startswith(f"maiffs: store {mounted.store} ")
    write_file(mounted.path / "f", b"still served\n")


def test_a_busy_mount_point_names_the_right_unmount(mounted, tmp_path):
    second = tmp_path / "second"
    maiffs("mkfs", second)
    refused(maiffs("mount", second, mounted.path, check=False),
            f"{mounted.path} is already a maiffs mount", f"run `maiffs umount {mounted.path}` first")
    assert find_mount(str(mounted.path)).store == str(mounted.store)

    other = tmp_path / "tmpfs"
    other.mkdir()
    run("mount", "-t", "tmpfs", "maiffs-test", other)
    try:
        refused(maiffs("mount", second, other, check=False), f"`umount {other}`")
        refused(maiffs("umount", other, check=False),
                f"{other} is not a maiffs mount", f"unmount it with `umount {other}`")
        assert is_mountpoint(str(other))
    finally:
        run("umount", other)


def test_umount_of_what_is_not_mounted_says_how_to_list_maiffs_mounts(tmp_path):
    refused(maiffs("umount", tmp_path, check=False), f"{tmp_path} is not mounted",
            "`findmnt -t fuse.maiffs`")


def test_not_a_store_names_mkfs(tmp_path):
    (tmp_path / "mnt").mkdir()
    refused(maiffs("mount", tmp_path / "nothing", tmp_path / "mnt", check=False),
            f"`maiffs mkfs {tmp_path / 'nothing'}`")
    assert not (tmp_path / "nothing").exists()


def test_a_missing_fuse_device_names_modprobe(tmp_path):
    """In a mount namespace of its own whose /dev has only null in it."""
    m = make_mount(tmp_path)
    keep = tmp_path / "dev"
    keep.mkdir()
    hide_dev = (f"mount --rbind /dev {keep} && mount -t tmpfs none /dev && touch /dev/null && "
                f"mount --bind {keep}/null /dev/null && exec \"$@\"")
    done = run("unshare", "--mount", "--propagation", "private", "sh", "-c", hide_dev, "sh",
               sys.executable, "-m", "maiffs", "mount", m.store, m.path, ok=False)
    refused(done, "/dev/fuse is missing", "`modprobe fuse`", "--device /dev/fuse")
    assert not is_mountpoint(str(m.path))


def test_umount_without_fusermount3_names_the_package(mounted):
    write_file(mounted.path / "kept", b"kept\n")
    done = maiffs("umount", mounted.path, check=False, env={**os.environ, "PATH": "/nonexistent"})
    refused(done, "fusermount3 is not installed", "`apt-get install fuse3`")
    assert (mounted.path / "kept").read_bytes() == b"kept\n"  # still mounted, still served
    mounted.remount()
    assert (mounted.path / "kept").read_bytes() == b"kept\n"
