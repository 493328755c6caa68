"""`maiffs prefetch PATH...`: read files of a follower mount through it, so that its store (a
cache of the remote: follower.py) holds their data and later reads are local, even with the
remote away. `-o prefetch` does this for a whole snapshot as it arrives; this is for the files
one names, whenever. Reading through the mount is all it takes: a chunk the store lacks is
fetched by the read, kept, and written to the store at the next commit; the kernel's page cache
is told to drop each file first, so that the reads reach the daemon.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

from maiffs.errors import StoreError
from maiffs.mounts import path_in_mount
from maiffs.progress import Progress, human_size
from maiffs.report import daemon_stats

BLOCK = 1 << 20


@dataclass
class Plan:
    """The regular files to read, with their sizes, and what the user should know first."""

    files: list[tuple[str, int]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _files_under(path: str) -> Iterator[tuple[str, int]]:
    """Regular files at or under path (symlinks not followed), with their sizes."""
    st = os.lstat(path)
    if stat.S_ISREG(st.st_mode):
        yield path, st.st_size
    elif stat.S_ISDIR(st.st_mode):
        for parent, dirs, names in os.walk(path):
            dirs.sort()
            for name in sorted(names):
                full = os.path.join(parent, name)
                st = os.lstat(full)
                if stat.S_ISREG(st.st_mode):
                    yield full, st.st_size


def plan(paths: list[str]) -> Plan:
    """What to read; StoreError for a path not in a follower mount (another store holds all its
    data already); a warning where more is asked for than the store's bound keeps."""
    todo = Plan()
    wanted: dict[str, int] = {}
    limits: dict[str, int] = {}
    for path in paths:
        entry, _ = path_in_mount(path)
        if entry.mountpoint not in limits:
            follow = daemon_stats(entry.mountpoint).get("follow")
            if not follow:
                raise StoreError(f"{path} is not in a follower mount (`mount --follow`): its "
                                 f"store holds all its data already")
            limits[entry.mountpoint] = follow["cache_limit"]
        found = list(_files_under(path))
        todo.files += found
        wanted[entry.mountpoint] = wanted.get(entry.mountpoint, 0) + sum(size for _, size in found)
    for mountpoint, size in wanted.items():
        if limits[mountpoint] and size > limits[mountpoint]:
            todo.warnings.append(
                f"{human_size(size)} asked for in {mountpoint}, more than its store keeps "
                f"(cache_size={human_size(limits[mountpoint])}): what is read first is evicted again")
    return todo


def read_through(files: list[tuple[str, int]], progress: Progress) -> tuple[int, list[str]]:
    """Read every file whole (so the store fetches and keeps what it lacks): the bytes read,
    and why each file that could not be read failed (the others are read all the same)."""
    progress.start(sum(size for _, size in files), len(files))
    read = 0
    failed = []
    for path, size in files:
        done = 0
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                while block := os.read(fd, BLOCK):
                    done += len(block)
                    progress.advance(len(block), 0)
            finally:
                os.close(fd)
        except OSError as exc:
            failed.append(f"{path}: {exc.strerror}")
        read += done
        progress.advance(max(size - done, 0), 1)  # (a failed or shrunk file counts as done)
    return read, failed
