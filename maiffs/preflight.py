"""Checks before mounting and unmounting, each refusal one line naming the command that
clears the way: a missing FUSE device or fusermount3, a store another daemon holds."""

from __future__ import annotations

import os
import re
import shutil
import sys
import time

from maiffs.errors import StoreError
from maiffs.mounts import find_mount
from maiffs.store.lock import is_locked, read_holder

FUSE_DEVICE = "/dev/fuse"
FUSERMOUNT = "fusermount3"
DEPARTURE_WAIT = 300.0  # seconds, as long as `maiffs umount` waits for the last commit
#: what daemon.serve writes into the store's lock: "pid 1234 (mounted on /mnt)"
_MOUNT_HOLDER = re.compile(r"pid (\d+) \(mounted on (.+)\)")


def fusermount() -> str:
    """The fusermount3 program (unmounts, and mounts by users other than root)."""
    path = shutil.which(FUSERMOUNT)
    if path is None:
        raise StoreError(f"{FUSERMOUNT} is not installed (or not on PATH); "
                         f"install it with `apt-get install fuse3`")
    return path


def check_fuse() -> None:
    """FUSE is usable here: the device exists and opens, and a user's mount has fusermount3."""
    if not os.path.exists(FUSE_DEVICE):
        raise StoreError(f"{FUSE_DEVICE} is missing: load the FUSE module with `modprobe fuse` "
                         f"(in a container, start it with `--device /dev/fuse`)")
    try:
        os.close(os.open(FUSE_DEVICE, os.O_RDWR))
    except OSError as exc:
        raise StoreError(f"cannot open {FUSE_DEVICE} ({exc.strerror}); it should be "
                         f"crw-rw-rw- (`chmod 666 {FUSE_DEVICE}` as root)") from None
    if os.geteuid() != 0:
        fusermount()


def check_store_free(store: str, wait: float = DEPARTURE_WAIT) -> None:
    """Refuse a store another process holds, saying what frees it; but wait (up to wait
    seconds) for a daemon whose mount is gone and that is still committing: plain `umount
    /path` returns before that, and a mount right after it should just work."""
    deadline = time.monotonic() + wait
    waiting = False
    while is_locked(store):
        holder = read_holder(store)
        mount = _MOUNT_HOLDER.fullmatch(holder)
        if mount is None:
            raise StoreError(f"store {store} is in use by {holder}; wait for it to finish")
        pid, mountpoint = mount.groups()
        if find_mount(mountpoint) is not None:
            raise StoreError(f"store {store} is mounted on {mountpoint} by pid {pid}; "
                             f"run `maiffs umount {mountpoint}` first")
        if time.monotonic() > deadline:
            raise StoreError(f"store {store} is still being committed by pid {pid} after its "
                             f"unmount from {mountpoint}; mount it again once pid {pid} has exited")
        if not waiting:
            print(f"maiffs: waiting for pid {pid} to finish committing {store} after its unmount "
                  f"from {mountpoint}", file=sys.stderr, flush=True)
            waiting = True
        time.sleep(0.05)
