"""One daemon per store: an exclusive flock on STORE/maiffs.lock holding the owner's pid and
mount point, so a second mount (or an fsck --repair) is refused with a message naming both.
The kernel drops the lock when the owner dies, even by kill -9.
"""

from __future__ import annotations

import fcntl
import os

from maiffs.errors import StoreError

LOCK_NAME = "maiffs.lock"


class StoreLock:
    """Hold the store's lock for the life of this object (or until release)."""

    def __init__(self, store_path: str, purpose: str, refusal: str | None = None) -> None:
        self.path = os.path.join(store_path, LOCK_NAME)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(store_path)
            os.close(self.fd)
            if refusal is not None:
                raise StoreError(f"{refusal} ({holder}); wait for it to finish") from None
            raise StoreError(f"store {store_path} is in use by {holder}; "
                             f"unmount it first (`maiffs umount MOUNTPOINT`)") from None
        self.describe(purpose)

    def describe(self, purpose: str) -> None:
        """Record who holds the lock (shown to anyone refused by it)."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()} ({purpose})\n".encode(), 0)

    def release(self) -> None:
        if self.fd >= 0:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


def read_holder(store_path: str) -> str:
    try:
        with open(os.path.join(store_path, LOCK_NAME)) as f:
            return f.read().strip() or "another process"
    except OSError:
        return "another process"


def holder_pid(store_path: str) -> int | None:
    """The pid written by the lock's current holder, if any."""
    text = read_holder(store_path)
    parts = text.split()
    return int(parts[1]) if len(parts) > 1 and parts[0] == "pid" and parts[1].isdigit() else None


def is_locked(store_path: str) -> bool:
    path = os.path.join(store_path, LOCK_NAME)
    if not os.path.exists(path):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
