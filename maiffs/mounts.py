"""Finding maiffs mounts in the mount table, so commands can take a mount point for a store."""

from __future__ import annotations

import os
from dataclasses import dataclass

from maiffs.errors import StoreError

FSTYPE = "fuse.maiffs"


@dataclass(frozen=True)
class MountEntry:
    mountpoint: str
    store: str
    device: str = ""  # "major:minor" of the mount (its backing device info in /sys/class/bdi)


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape").encode("latin-1").decode(errors="surrogateescape")


def maiffs_mounts() -> list[MountEntry]:
    """Every maiffs mount of this mount namespace (the source field is the store's path)."""
    entries = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == FSTYPE:
                entries.append(MountEntry(_unescape(fields[4]), _unescape(fields[sep + 2]), fields[2]))
    return entries


def find_mount(path: str) -> MountEntry | None:
    """The maiffs mount whose mount point is path, if any."""
    real = os.path.realpath(path)
    for entry in maiffs_mounts():
        if entry.mountpoint == real:
            return entry
    return None


def is_mountpoint(path: str) -> bool:
    """True if anything at all is mounted on path (dead FUSE mounts included)."""
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(_unescape(line.split()[4]) == real for line in f)


def resolve_store(path: str) -> str:
    """A store directory, given either it or a mount point of it."""
    entry = find_mount(path)
    return entry.store if entry else os.path.abspath(path)


def path_in_mount(path: str) -> tuple[MountEntry, str]:
    """The maiffs mount holding path, and path relative to its root; StoreError if none does."""
    real = os.path.realpath(path)
    best = None
    for entry in maiffs_mounts():
        if real == entry.mountpoint or real.startswith(entry.mountpoint.rstrip("/") + "/"):
            if best is None or len(entry.mountpoint) > len(best.mountpoint):
                best = entry
    if best is None:
        raise StoreError(f"{path} is not inside a maiffs mount")
    return best, os.path.relpath(real, best.mountpoint)


def set_read_ahead(mountpoint: str, kib: int) -> bool:
    """Set the kernel's read-ahead of the maiffs mount on mountpoint to kib KiB, in sysfs (root
    only); False where it cannot be set. Found in the mount table, not with stat(): the daemon
    calls this before it answers requests, so mountpoint must be the absolute path the mount
    was made on (resolving it would look inside the mount)."""
    entry = next((e for e in maiffs_mounts() if e.mountpoint == mountpoint), None)
    if entry is None:
        return False
    try:
        with open(f"/sys/class/bdi/{entry.device}/read_ahead_kb", "w") as f:
            f.write(str(kib))
        return True
    except OSError:
        return False
