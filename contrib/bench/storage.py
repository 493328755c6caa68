"""Bytes stored for real data: maiffs next to `tar -c | zstd -3` of exactly the same files.

design.md §7 asks for dedup and compression "measured on realistic data ... against tar | zstd
of the same data". Each item is first materialized in the plain directory, then measured three
ways: its plain-directory allocation (du), the size of `tar -c | zstd -3` of it, and what
maiffs's `stat --json` says it added after the item was copied in with tar and the store was
remounted (so everything is committed). Runs on the fresh store, before the timed workloads,
so that the growth of the LMDB file is not hidden by pages those workloads freed.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from contrib.bench.targets import BenchError, MaiffsTarget, Target


@dataclass
class StorageItem:
    """One measured item; `*_bytes` are absolute, ratios are taken against logical_bytes."""

    name: str
    files: int
    logical_bytes: int
    plain_allocated_bytes: int
    tar_zstd3_bytes: int
    maiffs_logical_bytes: int
    maiffs_unique_bytes: int
    maiffs_stored_bytes: int
    maiffs_store_file_growth_bytes: int
    maiffs_copy_seconds: float
    #: Issue 7's upper bound on maiffs_stored_bytes / tar_zstd3_bytes for this item.
    goal: float

    @property
    def to_tar_zstd(self) -> float | None:
        return self.maiffs_stored_bytes / self.tar_zstd3_bytes if self.tar_zstd3_bytes else None

    @property
    def goal_met(self) -> bool | None:
        return None if self.to_tar_zstd is None else self.to_tar_zstd <= self.goal

    def ratio(self, field_name: str) -> float:
        return getattr(self, field_name) / self.logical_bytes if self.logical_bytes else 0.0


def pipe(producer: list[str], consumer: list[str]) -> int:
    """Run `producer | consumer`; return how many bytes the consumer wrote (counted, not kept)."""
    first = subprocess.Popen(producer, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    second = subprocess.Popen(consumer, stdin=first.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert first.stdout is not None and second.stdout is not None
    first.stdout.close()  # so the producer sees EPIPE if the consumer dies
    total = 0
    while chunk := second.stdout.read(1 << 20):
        total += len(chunk)
    for proc, argv in ((second, consumer), (first, producer)):
        if proc.wait() != 0:
            assert proc.stderr is not None
            reason = proc.stderr.read().decode(errors="replace").strip()
            raise BenchError(f"{' '.join(argv)} failed: {reason}")
    return total


def tar_create(src: Path, excludes: tuple[str, ...] = ()) -> list[str]:
    return ["tar", "-cf", "-", *(f"--exclude={e}" for e in excludes), "-C", str(src), "."]


def copy_tree(src: Path, dest: Path, excludes: tuple[str, ...] = ()) -> None:
    """Copy a tree with tar (keeps modes, times, symlinks and hard links, like cp -a)."""
    dest.mkdir(parents=True, exist_ok=True)
    pipe(tar_create(src, excludes), ["tar", "-xf", "-", "-C", str(dest)])


def tree_usage(root: Path) -> tuple[int, int, int]:
    """(files, bytes in files, bytes allocated on disk for everything) under root."""
    files = logical = allocated = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            allocated += st.st_blocks * 512
            if name in filenames:
                files += 1
                logical += st.st_size
    return files, logical, allocated


def measure(name: str, fill: Callable[[Path], None], goal: float, plain: Target,
            maiffs: MaiffsTarget) -> StorageItem:
    """Materialize an item with fill() in the plain dir, then measure it three ways; `goal`
    bounds maiffs's stored bytes over tar | zstd -3's."""
    source = plain.path / f"storage-{name}"
    source.mkdir()
    fill(source)
    files, logical, allocated = tree_usage(source)
    tar_zstd = pipe(tar_create(source), ["zstd", "-3", "-c", "-q"])
    before = maiffs.stat()
    start = time.perf_counter()
    copy_tree(source, maiffs.path / f"storage-{name}")
    seconds = time.perf_counter() - start
    maiffs.make_cold()  # unmounting commits everything the copy buffered
    after = maiffs.stat()

    def grew(key: str) -> int:
        return int(after[key] - before[key])

    return StorageItem(name=name, files=files, logical_bytes=logical, plain_allocated_bytes=allocated,
                       tar_zstd3_bytes=tar_zstd, maiffs_logical_bytes=grew("logical_bytes"),
                       maiffs_unique_bytes=grew("unique_bytes"), maiffs_stored_bytes=grew("stored_bytes"),
                       maiffs_store_file_growth_bytes=grew("store_file_bytes"),
                       maiffs_copy_seconds=seconds, goal=goal)
