"""The timed workloads. Each repetition runs on every target in turn (memfs, plain, maiffs),
so a burst of load from elsewhere on this shared 2-core machine hits all three alike instead
of whichever target happened to be measured at the time.

Data is checked as well as timed (outside the timed sections, or at the cost of a 4 KiB
compare per small file): a fast filesystem that returns wrong bytes must not look good.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from contrib.bench.data import LogText, RandomData, small_file_contents
from contrib.bench.filetree import tree_paths
from contrib.bench.measure import Kind, Sample, Summary, timed
from contrib.bench.targets import Target

MIB = 1 << 20


def human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", MIB), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class Workload:
    """One row of the table. `goal` is design.md §7's bound on maiffs/ceiling: a lower bound
    for rates, an upper bound for times; None where §7 sets none."""

    key: str
    label: str
    unit: str
    kind: Kind
    goal: float | None = None


@dataclass
class Results:
    """Samples per workload and target, in the order workloads were first run."""

    workloads: dict[str, Workload] = field(default_factory=dict)
    samples: dict[str, dict[str, list[Sample]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, workload: Workload, target: Target, sample: Sample) -> None:
        self.workloads.setdefault(workload.key, workload)
        self.samples.setdefault(workload.key, {}).setdefault(target.name, []).append(sample)

    def summary(self, key: str, target: str) -> Summary | None:
        samples = self.samples.get(key, {}).get(target)
        return Summary.of(samples, self.workloads[key].kind) if samples else None


# -- file operations (the timed code: plain syscalls, nothing in between) --------------------
def write_file(path: Path, data: bytes, block: int) -> float:
    """Write data in `block`-sized writes, fsync, close; return MiB written."""
    view = memoryview(data)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        offset = 0
        while offset < len(view):
            offset += os.write(fd, view[offset:offset + block])
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(data) / MIB


def read_file(path: Path, block: int) -> float:
    """Read the whole file in `block`-sized reads into one buffer; return MiB read."""
    buf = bytearray(block)
    total = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    return total / MIB


def first_difference(path: Path, data: bytes, block: int) -> str | None:
    """None if the file holds exactly data, else where it first differs."""
    offset = 0
    with open(path, "rb", buffering=0) as f:
        while piece := f.read(block):
            expected = data[offset:offset + len(piece)]
            if piece != expected:
                at = next((i for i, (a, b) in enumerate(zip(piece, expected)) if a != b), len(expected))
                return f"content differs from byte {offset + at} on"
            offset += len(piece)
    return None if offset == len(data) else f"size is {offset}, expected {len(data)}"


def create_files(paths: Sequence[Path], contents: Sequence[bytes]) -> float:
    """mkdir the parents, then create+write+close every file; return the number of files."""
    for parent in dict.fromkeys(p.parent for p in paths):
        parent.mkdir(parents=True)
    for path, content in zip(paths, contents):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, content)
        finally:
            os.close(fd)
    return len(paths)


def read_files(paths: Sequence[Path], contents: Sequence[bytes], bad: list[Path]) -> float:
    """open+read+close every file, noting any whose content is wrong; return the count."""
    for path, content in zip(paths, contents):
        fd = os.open(path, os.O_RDONLY)
        try:
            if os.read(fd, len(content) + 1) != content:
                bad.append(path)
        finally:
            os.close(fd)
    return len(paths)


# -- workloads ---------------------------------------------------------------------------------
def cold_then_warm(target: Target, read: Callable[[], float]) -> tuple[Sample, Sample]:
    """Make the target cold, then time the same read twice: cold, then warm from the page cache.

    Another program dropping the caches during the cold read also un-warms the warm read, so
    such a drop is charged to both samples.
    """
    target.make_cold()
    cold = timed(target, read)
    warm = timed(target, read)
    warm.foreign_cache_drops += cold.foreign_cache_drops
    return cold, warm


def sequential(targets: Sequence[Target], dataset: RandomData | LogText, description: str,
               goal: float, reps: int, block: int, results: Results) -> None:
    """Write a large file (block-sized writes + fsync), read it cold, then warm; delete it."""
    size = human_bytes(dataset.size)
    write = Workload(f"write-{dataset.name}", f"seq write {size} {description}", "MiB/s", "rate", goal)
    cold = Workload(f"read-{dataset.name}-cold", f"seq read {description}, cold", "MiB/s", "rate", goal)
    warm = Workload(f"read-{dataset.name}-warm", f"seq read {description}, warm", "MiB/s", "rate", goal)
    for rep in range(reps):
        data = dataset.make(rep)
        for target in targets:
            path = target.path / f"seq-{dataset.name}-{rep}"
            results.add(write, target, timed(target, partial(write_file, path, data, block)))
            reads = cold_then_warm(target, partial(read_file, path, block))
            for workload, sample in zip((cold, warm), reads):
                results.add(workload, target, sample)
            if rep == 0 and (problem := first_difference(path, data, block)):
                results.problems.append(f"{target.name}: {path.name} reads back wrong: {problem}")
            path.unlink()
        del data


def small_files(targets: Sequence[Target], count: int, size: int, per_dir: int, reps: int,
                results: Results) -> None:
    """Create+write many small files, then read them back cold and warm (find and ls -lR are
    the tree part's, over the 100,000 files §7 names).

    Each repetition's files stay (in their own directory) until the targets are torn down:
    deleting 10,000 files through FUSE would cost more than the workload itself.
    """
    what = f"{count} × {human_bytes(size)} files"
    create = Workload("small-create", f"create+write {what}", "files/s", "rate", 0.5)
    cold = Workload("small-read-cold", f"read back {what}, cold", "files/s", "rate", 0.5)
    warm = Workload("small-read-warm", f"read back {what}, warm", "files/s", "rate", 0.5)
    for rep in range(reps):
        contents = small_file_contents(rep, count, size)
        for target in targets:
            root = target.path / f"small-{rep}"
            paths = tree_paths(root, count, per_dir)
            results.add(create, target, timed(target, partial(create_files, paths, contents)))
            bad: list[Path] = []
            reads = cold_then_warm(target, partial(read_files, paths, contents, bad))
            for workload, sample in zip((cold, warm), reads):
                results.add(workload, target, sample)
            if bad:
                results.problems.append(f"{target.name}: {len(bad)} small files read back wrong, "
                                        f"e.g. {bad[0]}")

