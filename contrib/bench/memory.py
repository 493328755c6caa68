"""The memory part: the maiffs daemon's RSS while a million files are created, then a remount.

design.md §7 (issue 7): "daemon RSS stays within its configured caches plus a fixed overhead
while 1,000,000 files are created ... nothing grows with the file count", and "1M files must
mount". So on a fresh store and mount of its own (default options plus --maiffs-options), two
threads create `--memory-files` files of a ~100-byte payload, `--memory-files-per-dir` per
directory, while a sampler thread reads the daemon's /proc/PID/status every second.

VmRSS is reported split as the kernel splits it: RssAnon (the daemon's own heap: Python
objects, caches, buffers; what must not grow with the file count) and RssFile (pages of the
LMDB file the daemon has mapped and touched: page cache that the kernel can take back, and
that tracks the store's size, not a leak). The bound is therefore checked on RssAnon: at most
the daemon's RssAnon right after mounting (the fixed overhead) plus its configured caches (the
decompressed-chunk cache, `cache_size`, and the tree-object decode cache).

Afterwards the store is unmounted and mounted again (both timed), and one directory is listed
and checked, with the RSS after that.
"""

from __future__ import annotations

import argparse
import inspect
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from maiffs.options import MountOptions
from maiffs.snapshots.objects import Objects

from contrib.bench.filetree import build_tree, dir_count, dir_name
from contrib.bench.targets import MaiffsTarget

#: Seconds between RSS samples.
INTERVAL = 1.0
#: The points of the creation the table shows (fractions of the files).
POINTS = (0.1, 0.5, 1.0)
ROOT = "many"


@dataclass(frozen=True)
class RssSample:
    """The daemon's memory at one moment (bytes), and how many files existed by then."""

    seconds: float
    files: int
    vm_rss: int
    rss_anon: int
    rss_file: int


def read_rss(pid: int | None) -> tuple[int, int, int] | None:
    """(VmRSS, RssAnon, RssFile) in bytes from /proc/PID/status; None if the process is gone."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS", "RssAnon", "RssFile")))
    except OSError:
        return None
    kib = [int(fields.get(k, "0 kB").split()[0]) for k in ("VmRSS", "RssAnon", "RssFile")]
    return kib[0] << 10, kib[1] << 10, kib[2] << 10


def sample_now(pid: int | None, files: int, seconds: float = 0.0) -> RssSample | None:
    rss = read_rss(pid)
    return RssSample(round(seconds, 2), files, *rss) if rss else None


class Sampler:
    """Samples a daemon's RSS every INTERVAL seconds in a thread, with a file count read from
    count(), from start to stop (and once more at stop, so a short run has its end point)."""

    def __init__(self, pid: int | None, count: Callable[[], int]) -> None:
        self.pid, self.count = pid, count
        self.samples: list[RssSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._start = time.monotonic()

    def sample(self) -> None:
        if (now := sample_now(self.pid, self.count(), time.monotonic() - self._start)) is not None:
            self.samples.append(now)

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            self.sample()

    def __enter__(self) -> "Sampler":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


@dataclass
class MemoryResults:
    files: int
    files_per_dir: int
    payload_bytes: int
    #: What the daemon may keep by configuration: the chunk cache and the tree-object cache.
    caches: dict[str, int]
    idle: RssSample | None = None
    samples: list[RssSample] = field(default_factory=list)
    create_seconds: float = 0.0
    unmount_seconds: float = 0.0
    mount_seconds: float = 0.0
    after_remount: RssSample | None = None
    problems: list[str] = field(default_factory=list)

    def peak(self, what: str) -> int:
        return max((getattr(s, what) for s in self.samples), default=0)

    def at(self, fraction: float) -> RssSample | None:
        """The first sample taken once `fraction` of the files existed."""
        return next((s for s in self.samples if s.files >= fraction * self.files), None)

    def anon_bound(self) -> int | None:
        """The bound on RssAnon: the idle daemon's, plus the configured caches."""
        return self.idle.rss_anon + sum(self.caches.values()) if self.idle else None


def configured_caches(options: str) -> dict[str, int]:
    """The daemon's memory caches under these mount options (read from maiffs, not copied)."""
    parsed = MountOptions.parse([options] if options else [])
    objects = inspect.signature(Objects).parameters["cache_bytes"].default
    return {"chunk cache (cache_size)": parsed.memory_cache, "tree-object cache": objects}


def payload(i: int) -> bytes:
    """About 100 distinct bytes per file."""
    return b"maiffs-bench memory file %07d\n" % i * 3


def run(args: argparse.Namespace, workdir: Path, say: Callable[[str], None]) -> MemoryResults:
    count, per_dir = args.memory_files, args.memory_files_per_dir
    results = MemoryResults(count, per_dir, len(payload(0)), configured_caches(args.maiffs_options))
    created = 0
    lock = threading.Lock()

    def done(n: int) -> None:
        nonlocal created
        with lock:
            created += n

    with MaiffsTarget(workdir, args.maiffs_options, tag="mem") as maiffs:
        time.sleep(INTERVAL)  # let the start-up settle before the idle sample
        results.idle = sample_now(maiffs.daemon_pid(), 0)
        say(f"memory: creating {count:,} files ({per_dir:,} per directory), RSS sampled every {INTERVAL:g} s")
        start = time.perf_counter()
        with Sampler(maiffs.daemon_pid(), lambda: created) as sampler:
            try:
                build_tree(maiffs.path / ROOT, count, per_dir, payload, done=done)
            finally:
                results.create_seconds = time.perf_counter() - start
                results.samples = sampler.samples
        say("memory: unmounting and mounting again")
        start = time.perf_counter()
        maiffs.stop()
        results.unmount_seconds = time.perf_counter() - start
        start = time.perf_counter()
        maiffs.start()
        results.mount_seconds = time.perf_counter() - start
        last = dir_count(count, per_dir) - 1
        listed = os.listdir(maiffs.path / ROOT / dir_name(last))
        expected = count - last * per_dir
        if len(listed) != expected:
            results.problems.append(f"maiffs-mem: ls of the last directory after the remount listed "
                                    f"{len(listed)} files, expected {expected}")
        if len(os.listdir(maiffs.path / ROOT)) != last + 1:
            results.problems.append(f"maiffs-mem: the remounted tree does not have {last + 1} directories")
        results.after_remount = sample_now(maiffs.daemon_pid(), count)
        say("memory: unmounting")
    return results
