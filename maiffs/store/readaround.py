"""Switching the kernel's read-around off for the LMDB map while scattered metadata is read.

A page fault on a file mapping makes the kernel read `read_ahead_kb` around the faulting page
(8 MiB on this machine's disk). That is what sequential chunk reads want, so the map keeps it.
But a listing touches a few hundred B-tree pages of inodes and entries spread over the whole
file, between chunk data: each fault then read 8 MiB of chunks nobody asked for, and a cold
`find` over 10,000 files read the whole 1 GiB store (0.9-1.0 s; 0.24 s without read-around,
with 2% of the bytes read). `off()` marks the map MADV_RANDOM (one page per fault) while such
a read lasts and gives it MADV_NORMAL back afterwards: two madvise calls, a few µs.

Only where it pays: in a store of mostly small files the records are dense enough that
read-around brings in many needed pages per fault (10,000 files of 4 KiB: 455 listing pages
in an 85 MiB file; find took 0.18-0.22 s with read-around, 0.26-0.31 s without). Measured
here, a random 4 KiB fault costs ~0.4 ms and an 8 MiB read-around ~5.6 ms, so read-around
wins while the records read make up more than ~1/150 of the file's pages; it is switched off
below 1/SPARSE_RATIO of them (the file's size and the B-trees' page counts are LMDB stats,
looked at again every RECHECK_S seconds).

LMDB does not tell where it mapped the file, so the mapping is looked up in /proc/self/maps
(again whenever the map size changed, as growing the map maps it anew). Where that or madvise
is unavailable, nothing is switched and reads just keep the kernel's read-around.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import lmdb

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_RANDOM = getattr(mmap, "MADV_RANDOM", None)
_NORMAL = getattr(mmap, "MADV_NORMAL", None)
#: Read-around goes off when the file has more than this many pages per page of the records.
SPARSE_RATIO = 128
RECHECK_S = 10.0


def find_mapping(path: str) -> tuple[int, int] | None:
    """(address, length) of this process's mapping of the file at path, or None."""
    try:
        st = os.stat(path)
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) < 5 or int(fields[4]) != st.st_ino:
                    continue
                major, minor = (int(x, 16) for x in fields[3].split(":"))
                if os.makedev(major, minor) != st.st_dev:
                    continue
                start, end = (int(x, 16) for x in fields[0].split("-"))
                return start, end - start
    except (OSError, ValueError):
        return None
    return None


class ReadAround:
    """The read-around switch of one LMDB environment's map."""

    def __init__(self, env: lmdb.Environment, data_path: str) -> None:
        self.env = env
        self.data_path = data_path
        self._map_size = -1
        self._mapping: tuple[int, int] | None = None
        self._sparse: dict[tuple[object, ...], tuple[float, bool]] = {}
        #: blocks running with read-around off (nested, or on other threads): the last one
        #: to leave switches it back on
        self._users = 0
        self._lock = threading.Lock()

    def _current(self) -> tuple[int, int] | None:
        size = self.env.info()["map_size"]
        if size != self._map_size:
            self._map_size = size
            self._mapping = find_mapping(self.data_path)
        return self._mapping

    def _is_sparse(self, raw: lmdb.Transaction, dbs: tuple[object, ...]) -> bool:
        """Do the pages of dbs make up less than 1/SPARSE_RATIO of the file?"""
        now = time.monotonic()
        checked = self._sparse.get(dbs)
        if checked is not None and now - checked[0] < RECHECK_S:
            return checked[1]
        pages = sum(st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
                    for st in (raw.stat(db) for db in dbs))
        sparse = self.env.info()["last_pgno"] + 1 > SPARSE_RATIO * max(pages, 1)
        self._sparse[dbs] = (now, sparse)
        return sparse

    @contextmanager
    def off(self, raw: lmdb.Transaction, dbs: Iterable[object]) -> Iterator[None]:
        """Fault in one page at a time while the block runs, if the records of dbs (which
        the block reads here and there) are sparse in the file."""
        if _RANDOM is None or not self._is_sparse(raw, tuple(dbs)):
            yield
            return
        with self._lock:
            mapping = self._current()
            if mapping is None:
                switched = False
            elif self._users:
                switched = True
            else:
                switched = _libc.madvise(mapping[0], mapping[1], _RANDOM) == 0
            self._users += switched
        try:
            yield
        finally:
            if switched:
                with self._lock:
                    self._users -= 1
                    if not self._users:
                        _libc.madvise(mapping[0], mapping[1], _NORMAL)
