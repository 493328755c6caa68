"""The randread part: fio's random 4 KiB reads in a 1 GiB file, on each target.

design.md §7 (issue 7): "Random 4 KiB reads in a 1 GiB file (fio randread): within 2× of the
ceiling's IOPS". The file is laid out by the harness's own writer (incompressible data, 1 MiB
writes, fsync), not by fio, so every target holds the same bytes written the same way. Then,
per repetition and target, the target is made cold (page cache dropped; maiffs remounted) and
fio runs one job, bs=4k, psync, iodepth 1, time-based, twice:

- buffered (`--direct=0 --invalidate=1`): what applications do; the page cache serves repeats
  and the kernel's readahead decides what reaches the filesystem. This is the §7 line.
- O_DIRECT (`--direct=1`): every 4 KiB read is a FUSE request; shown as information.

IOPS is fio's own count over its own runtime (parsed from `--output-format=json`); the
daemon's CPU is measured around the whole fio process. fio is needed only by this part: when it
is missing, the part is skipped with the reason printed (cli.py asks `fio_missing` first).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from contrib.bench.data import RandomData
from contrib.bench.measure import Sample, timed
from contrib.bench.targets import BenchError, Target
from contrib.bench.workloads import Results, Workload, human_bytes, write_file

BLOCK = 4096
#: Random blocks compared with the data written, after the timings (outside them).
CHECKED_BLOCKS = 64


def fio_missing(fio: str) -> str | None:
    """Why fio cannot run (None if it can)."""
    return None if shutil.which(fio) else f"{fio} not found (install fio to measure random reads)"


def fio_randread(fio: str, path: Path, size: int, seconds: float, direct: bool) -> tuple[int, float]:
    """One fio randread job on an existing file; returns (reads done, fio's runtime in s)."""
    argv = [fio, "--name=randread", f"--filename={path}", "--rw=randread", f"--bs={BLOCK}",
            "--ioengine=psync", "--iodepth=1", "--numjobs=1", f"--size={size}", "--allow_file_create=0",
            "--time_based", f"--runtime={max(1, round(seconds * 1000))}ms", f"--direct={int(direct)}",
            "--invalidate=1", "--output-format=json"]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"fio failed ({done.returncode}) on {path}: {(done.stderr or done.stdout).strip()[:500]}")
    job = json.loads(done.stdout[done.stdout.index("{"):])["jobs"][0]
    if job["error"] or not job["read"]["runtime"]:
        raise BenchError(f"fio on {path}: error {job['error']}, runtime {job['read']['runtime']} ms")
    return job["read"]["total_ios"], job["read"]["runtime"] / 1000


def fio_sample(target: Target, fio: str, path: Path, size: int, seconds: float, direct: bool) -> Sample:
    """fio's reads over fio's runtime, with the daemon's CPU over the fio process."""
    runtime = 0.0

    def job() -> float:
        nonlocal runtime
        ios, runtime = fio_randread(fio, path, size, seconds, direct)
        return ios

    sample = timed(target, job)
    return replace(sample, seconds=runtime)


def wrong_blocks(path: Path, data: bytes) -> int:
    """How many of CHECKED_BLOCKS random 4 KiB blocks read back different from data."""
    rnd = random.Random(len(data))
    fd = os.open(path, os.O_RDONLY)
    try:
        offsets = [rnd.randrange(len(data) // BLOCK) * BLOCK for _ in range(CHECKED_BLOCKS)]
        return sum(os.pread(fd, BLOCK, o) != data[o:o + BLOCK] for o in offsets)
    finally:
        os.close(fd)


def randread(targets: Sequence[Target], fio: str, size: int, seconds: float, reps: int, block: int,
             results: Results) -> None:
    """Lay the file out on every target, then per repetition and target: cold, fio buffered;
    cold, fio O_DIRECT. The files are checked and deleted at the end."""
    what = human_bytes(size)
    buffered = Workload("randread", f"fio randread 4 KiB in {what}, buffered", "IOPS", "rate", 0.5)
    direct = Workload("randread-direct", f"fio randread 4 KiB in {what}, O_DIRECT", "IOPS", "rate")
    data = RandomData("randread", size).make(0)
    paths = {target.name: target.path / "randread.bin" for target in targets}
    for target in targets:
        write_file(paths[target.name], data, block)
    for _rep in range(reps):
        for target in targets:
            for workload, is_direct in ((buffered, False), (direct, True)):
                target.make_cold()
                results.add(workload, target, fio_sample(target, fio, paths[target.name], size, seconds, is_direct))
    for target in targets:
        if bad := wrong_blocks(paths[target.name], data):
            results.problems.append(f"{target.name}: {bad} of {CHECKED_BLOCKS} random 4 KiB blocks of "
                                    "randread.bin read back wrong")
        paths[target.name].unlink()
