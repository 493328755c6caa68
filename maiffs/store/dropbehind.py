"""Dropping the store file's pages of chunks a sequential reader has already been served.

A chunk read in sequence sits in the page cache twice: in the kernel's pages of the FUSE file,
which answer every later read of those bytes, and in the pages of the store's file that LMDB
read it from, which that reader never reads again. So a cold read of a 1 GiB file filled
2 GiB of page cache and pushed twice what it needed out of it. And on this VM, whose balloon
device takes free memory back from the guest (free page reporting), a page cache page filled
from the disk in memory the host has taken back costs a host fault when first read: a cold
`dd` of a 1 GiB plain file here took 0.36-0.44 s some minutes and 0.95-1.54 s (1.4 s of it
system time) in others. Pages dropped behind a reader are free again at once and are what its
next reads are given, so the read stays in memory the guest still has.

The decoders (chunks.py) `note` where each chunk they decoded for a sequential reader lies in
the file. Once the reader has gone past a run of such chunks (readahead.py), `drop` unmaps the
run's whole pages from LMDB's map (MADV_DONTNEED on a shared file mapping only unmaps: the
bytes stay in the file and in the page cache; done inside a read transaction, so that the map
cannot move meanwhile) and asks the kernel to drop them from the page cache
(POSIX_FADV_DONTNEED drops clean pages only, and skips any page still mapped). One madvise
per run, not per chunk: each one makes the kernel flush the other core's TLB. Only ever a
hint: a dropped page is read from disk again if anything wants it, and the run's pages hold
nothing but those chunks.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager

from maiffs.store.readaround import madvise

KEPT = 4096  # decoded chunks whose place in the file is remembered until the reader passes them
#: at most this far apart, two values lie back to back: the rest of the first one's last page
#: and the header of the second one's first (LMDB's overflow pages)
GAP = mmap.PAGESIZE + 64


class _Py_buffer(ctypes.Structure):
    """CPython's Py_buffer, to learn where in memory a read-only memoryview points."""

    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p), ("len", ctypes.c_ssize_t),
                ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p),
                ("strides", ctypes.c_void_p), ("suboffsets", ctypes.c_void_p),
                ("internal", ctypes.c_void_p)]


def view_address(view: memoryview) -> int:
    """The address of a buffer's first byte (ctypes' from_buffer wants a writable one)."""
    buf = _Py_buffer()
    ctypes.pythonapi.PyObject_GetBuffer(ctypes.py_object(view), ctypes.byref(buf), 0)
    try:
        return buf.buf
    finally:
        ctypes.pythonapi.PyBuffer_Release(ctypes.byref(buf))


class DropBehind:
    """Where decoded chunks lie in the store's file, and the dropping of their pages."""

    def __init__(self, data_path: str, mapping: Callable[[], tuple[int, int] | None],
                 open_read: Callable[[], AbstractContextManager[object]]) -> None:
        self.data_path = data_path
        self.mapping = mapping  # (address, length) of LMDB's map of the file, or None
        self.open_read = open_read  # a worker thread's read transaction (Store.read_in_worker)
        self.spans: OrderedDict[bytes, tuple[int, int]] = OrderedDict()  # cid -> (offset, length)
        self._fd: int | None = None
        self._lock = threading.Lock()

    def note(self, cid: bytes, value: memoryview) -> None:
        """Remember where a chunk's stored value lies in the file (value: a view into LMDB's
        map, from the read transaction that decoded it)."""
        mapping = self.mapping()
        if mapping is None or not len(value):
            return
        start = view_address(value)
        if not mapping[0] <= start <= start + len(value) <= mapping[0] + mapping[1]:
            return  # not in the map (a copy): nothing to drop
        with self._lock:
            self.spans[cid] = (start - mapping[0], len(value))
            if len(self.spans) > KEPT:
                self.spans.popitem(last=False)

    def drop(self, cids: list[bytes]) -> None:
        """The reader has gone past these chunks, given in the order it read them: drop the
        pages of each run of them lying back to back in the file. The last one's place is
        kept, for the reader to give it again first in the next batch: the page cache's
        folios can be larger than a page, and one across the border of two runs is dropped
        only by a call that covers it whole."""
        with self._lock:
            spans = [self.spans.pop(cid) for cid in cids[:-1] if cid in self.spans]
            if cids and cids[-1] in self.spans:  # kept: the next run starts with it
                spans.append(self.spans[cids[-1]])
        runs: list[tuple[int, int]] = []
        for offset, length in spans:
            if runs and runs[-1][1] <= offset <= runs[-1][1] + GAP:
                runs[-1] = (runs[-1][0], offset + length)
            else:
                runs.append((offset, offset + length))
        with self.open_read():  # (the map is not moved while a worker's transaction is open)
            for start, end in runs:
                self._drop_pages(start, end)

    def _drop_pages(self, start: int, end: int) -> None:
        """Unmap [start, end) of the file (whole pages) from LMDB's map, then drop them from
        the page cache: a page still mapped is not dropped."""
        lo, hi = _pages_inside(start, end)
        mapping = self.mapping()
        if hi <= lo or mapping is None or hi > mapping[1]:
            return
        madvise(mapping[0] + lo, hi - lo, mmap.MADV_DONTNEED)
        try:
            if self._fd is None:
                self._fd = os.open(self.data_path, os.O_RDONLY | os.O_CLOEXEC)
            os.posix_fadvise(self._fd, lo, hi - lo, os.POSIX_FADV_DONTNEED)
        except OSError:
            return  # only a hint

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _pages_inside(start: int, end: int) -> tuple[int, int]:
    """[start, end) shrunk to whole pages (the partial ones hold a neighbour's bytes)."""
    page = mmap.PAGESIZE
    return (start + page - 1) // page * page, end // page * page
