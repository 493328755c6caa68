"""Trees of many small files (`ROOT/dNNNN/fNNNNNN`), built fast, the same way by every part.

The snapshot, tree and memory parts all need 100,000 to 1,000,000 files, so the tree is built
by a few threads (two keep the FUSE queue busier than one: about 1.2× on 2 cores), one
directory per task, with each file's content asked for by its index: a million-file tree
never needs a list of a million paths or contents in the harness's memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

#: Threads creating a tree.
BUILD_WORKERS = 2


def dir_name(d: int) -> str:
    return f"d{d:04d}"


def tree_paths(root: Path, count: int, per_dir: int) -> list[Path]:
    """The paths build_tree creates, in index order."""
    return [root / dir_name(i // per_dir) / f"f{i:06d}" for i in range(count)]


def dir_count(count: int, per_dir: int) -> int:
    return -(-count // per_dir)


def build_tree(root: Path, count: int, per_dir: int, content: Callable[[int], bytes],
               workers: int = BUILD_WORKERS, done: Callable[[int], None] | None = None) -> float:
    """mkdir root, then per directory: mkdir, create+write+close its files (file i holds
    content(i)); done(n) is called after each directory with its n files. Returns the count."""
    root.mkdir()

    def fill(d: int) -> None:
        parent = root / dir_name(d)
        os.mkdir(parent)
        indices = range(d * per_dir, min(count, (d + 1) * per_dir))
        for i in indices:
            fd = os.open(parent / f"f{i:06d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, content(i))
            finally:
                os.close(fd)
        if done is not None:
            done(len(indices))

    pool = ThreadPoolExecutor(workers)
    try:
        for _done in pool.map(fill, range(dir_count(count, per_dir))):  # re-raises the first error
            pass
    finally:  # on an error or SIGTERM, only the directories being filled are finished
        pool.shutdown(cancel_futures=True)
    return count
