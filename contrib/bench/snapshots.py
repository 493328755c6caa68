"""The snapshot part: what taking, deleting and CLI-creating a snapshot of a big tree costs.

Only maiffs has snapshots, so this part runs on a maiffs mount of its own (a fresh store, so
the tree is exactly the N files built here and nothing the other parts left behind); its
baseline is what one does without snapshots: `cp -a` of the tree, from the maiffs mount to a
plain directory and from a plain directory to another, timed in the same run.

design.md §7 (and issue 3): on a tree of 100,000 files a snapshot after 0 changes takes under
10 ms, after 10 changed files under 100 ms, because taking one costs time proportional to
what changed since the previous one, not to the tree. The first snapshot builds the objects
of the whole tree, so it is proportional to the tree; it is reported, without a target.

Steps: build the tree (setup, timed but not a measurement); `mkdir .snapshots/base`; then per
repetition: a snapshot after 0 changes; `maiffs snapshot create` through the CLI after 0
changes (process start-up included, so the start-up of `maiffs --help` is timed beside it);
10 files rewritten in 10 directories and a snapshot; 10 more rewritten, `rmdir` of that
snapshot (now held by nothing else, so its objects are freed), and a snapshot after those 10
changes (a second sample of "after 10 changes"). Then the two `cp -a` baselines (see
below why after an untimed first copy), and a snapshot right after that first copy.
Snapshot contents are checked outside the timed sections: a changed file must read back old
in `base` and new in the snapshot taken after the change.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from contrib.bench.data import small_file_contents
from contrib.bench.filetree import build_tree, tree_paths
from contrib.bench.measure import Sample, Summary, timed
from contrib.bench.targets import MAIFFS, BenchError, MaiffsTarget, Target

#: Names of the tree inside the mount and of the snapshot directory.
TREE = "snap-tree"
SNAPDIR = ".snapshots"
#: How many files are rewritten before the "after 10 changes" snapshot.
CHANGES = 10
#: design.md §7 / issue 3 speak of a tree of this many files.
TARGET_FILES = 100_000


@dataclass(frozen=True)
class Case:
    """One row of the snapshot table. `target_ms` is §7's bound on the median, if it sets one."""

    key: str
    label: str
    target_ms: float | None = None
    #: Set for the snapshot rows that are compared with cp -a.
    vs_cp: bool = True


@dataclass
class SnapshotResults:
    files: int
    files_per_dir: int
    file_size: int
    cases: dict[str, Case] = field(default_factory=dict)
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, case: Case, sample: Sample) -> None:
        self.cases.setdefault(case.key, case)
        self.samples.setdefault(case.key, []).append(sample)

    def summary(self, key: str) -> Summary | None:
        samples = self.samples.get(key)
        return Summary.of(samples, "time") if samples else None

    def median_ms(self, key: str) -> float | None:
        summary = self.summary(key)
        return summary.median * 1000 if summary else None


BUILD = Case("snap-build", "build the tree (setup)", vs_cp=False)
CP_MAIFFS = Case("snap-cp-maiffs", "cp -a of the tree, maiffs → plain dir", vs_cp=False)
CP_PLAIN = Case("snap-cp-plain", "cp -a of the tree, plain dir → plain dir", vs_cp=False)
FIRST = Case("snap-first", "first snapshot (mkdir .snapshots/base)")
ZERO = Case("snap-0", "snapshot after 0 changes (mkdir)", target_ms=10.0)
TEN = Case("snap-10", f"snapshot after {CHANGES} changed files (mkdir)", target_ms=100.0)
DELETE = Case("snap-rmdir", f"delete a snapshot held alone, {CHANGES} files behind (rmdir)")
CLI = Case("snap-cli", "maiffs snapshot create, 0 changes (CLI)")
CLI_STARTUP = Case("snap-cli-startup", "CLI start-up alone (maiffs --help)", vs_cp=False)
AFTER_READ = Case("snap-after-read", "snapshot after cp -a read the tree (atimes moved)")
#: The order of the table's rows: setup and baselines first, then the snapshot cases.
ORDER = (BUILD, CP_MAIFFS, CP_PLAIN, FIRST, ZERO, TEN, DELETE, CLI, CLI_STARTUP, AFTER_READ)


# -- the tree ----------------------------------------------------------------------------------
def rewrite(paths: Sequence[Path], contents: Sequence[bytes]) -> None:
    for path, content in zip(paths, contents):
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, content)
        finally:
            os.close(fd)


def changed_indices(count: int, per_dir: int, changes: int, rep: int) -> list[int]:
    """`changes` files in as many different directories, spread over the tree, different ones in
    every repetition (as far as the tree allows)."""
    dirs = -(-count // per_dir)
    picked = []
    for k in range(changes):
        d = (k * dirs // changes + rep) % dirs
        in_dir = min(per_dir, count - d * per_dir)
        picked.append(d * per_dir + (rep * 7 + k) % in_dir)
    return list(dict.fromkeys(picked))


def count_files(root: Path) -> int:
    return sum(len(files) for _dir, _dirs, files in os.walk(root))


# -- timed operations ------------------------------------------------------------------------
def run_quiet(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise BenchError(f"{what} failed ({done.returncode}): {done.stderr.strip()[:500]}")


def _op(action: Callable[[], object], amount: float) -> Callable[[], float]:
    def operation() -> float:
        action()
        return amount
    return operation


def read_back(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


# -- the part -------------------------------------------------------------------------------
def run(args: argparse.Namespace, workdir: Path, say: Callable[[str], None]) -> SnapshotResults:
    count, per_dir, size = args.snap_files, args.files_per_dir, args.snap_file_size
    reps = args.snap_reps or args.reps
    results = SnapshotResults(count, per_dir, size)
    plain_dir = workdir / "plain-snap"
    plain_dir.mkdir()
    contents = small_file_contents(1_000_003, count, size)  # a variant no other part writes
    with MaiffsTarget(workdir, args.maiffs_options, tag="snap") as maiffs:
        mnt, snaps = maiffs.path, maiffs.path / SNAPDIR
        root = mnt / TREE
        paths = tree_paths(root, count, per_dir)
        say(f"snapshots: building a tree of {count} × {size} B files in maiffs")
        results.add(BUILD, timed(maiffs, _op(lambda: build_tree(root, count, per_dir, contents.__getitem__), count)))
        time.sleep(2.5)  # let the group commit (2 s) make the tree durable before the first snapshot
        say("snapshots: first snapshot")
        results.add(FIRST, timed(maiffs, _op(lambda: os.mkdir(snaps / "base"), count)))

        say(f"snapshots: {reps} × (snapshots after 0 changes, CLI, after {CHANGES} changes ×2, rmdir)")
        original = list(contents)

        def change(batch: int) -> tuple[list[int], list[bytes]]:
            picked = changed_indices(count, per_dir, CHANGES, batch)
            new = small_file_contents(2_000_003 + batch, len(picked), size)
            rewrite([paths[i] for i in picked], new)
            return picked, new

        def snapshot_after(name: str, picked: list[int], new: list[bytes]) -> None:
            results.add(TEN, timed(maiffs, _op(lambda: os.mkdir(snaps / name), count)))
            check_snapshots(results, root, snaps, paths[picked[0]], original[picked[0]], new[0], name)

        for rep in range(reps):
            results.add(ZERO, timed(maiffs, _op(lambda: os.mkdir(snaps / f"r{rep}-0"), count)))
            cli = [*MAIFFS, "snapshot", "create", str(mnt), f"r{rep}-cli"]
            results.add(CLI, timed(maiffs, _op(lambda: run_quiet(cli, "maiffs snapshot create"), count)))
            results.add(CLI_STARTUP, timed(maiffs, _op(lambda: run_quiet([*MAIFFS, "--help"],
                                                                          "maiffs --help"), count)))
            victim = f"r{rep}-{CHANGES}"
            snapshot_after(victim, *change(2 * rep))
            # 10 more changes, so that the live tree no longer holds the victim's root: the
            # rmdir frees its root and snap-tree objects and drops one reference to each of
            # the 1,000 directory objects; then a snapshot of those changes, which the next
            # repetition's "0 changes" follows.
            second = change(2 * rep + 1)
            results.add(DELETE, timed(maiffs, _op(lambda: os.rmdir(snaps / victim), count)))
            if (snaps / victim).exists():
                results.problems.append(f"maiffs: snapshot {victim} still there after rmdir")
            snapshot_after(f"r{rep}-{CHANGES}b", *second)

        # cp -a reads every file, and reading a file for the first time since it was written
        # moves its atime (relatime), which is a change to snapshot: so the baselines run after
        # the snapshot cases, and the snapshot right after the first cp -a is a case of its own.
        # On this VM's ext4, creating files where many were just deleted costs up to 10-20x
        # the CPU time (cp -a plain→plain 4 s fresh, 25-75 s right after an rm -rf of a copy),
        # so no copy is deleted before the last timing, and an untimed first copy (which is
        # also the plain dir's copy of the tree) takes whatever space earlier runs freed.
        say(f"snapshots: cp -a of the tree, 1 untimed + {reps} × (maiffs → plain dir, plain → plain)")
        plain_copy = plain_dir / "tree"
        run_quiet(["cp", "-a", str(root), str(plain_copy)], "cp -a from maiffs")
        if (copied := count_files(plain_copy)) != count:
            results.problems.append(f"cp -a from maiffs copied {copied} files, expected {count}")
        results.add(AFTER_READ, timed(maiffs, _op(lambda: os.mkdir(snaps / "after-cp"), count)))
        for rep in range(reps):
            os.sync()  # the copies before are written back, not charged to this one
            results.add(CP_MAIFFS, timed(maiffs, _op(lambda: run_quiet(
                ["cp", "-a", str(root), str(plain_dir / f"from-maiffs-{rep}")], "cp -a from maiffs"),
                count)))
            os.sync()
            results.add(CP_PLAIN, timed(Target(workdir), _op(lambda: run_quiet(
                ["cp", "-a", str(plain_copy), str(plain_dir / f"from-plain-{rep}")],
                "cp -a plain to plain"), count)))
        say("snapshots: unmounting")
    say("snapshots: removing the copies")
    shutil.rmtree(plain_dir)
    return results


def check_snapshots(results: SnapshotResults, root: Path, snaps: Path, path: Path,
                    old: bytes, new: bytes, after: str) -> None:
    """A changed file reads back new in the snapshot taken after the change and as built in
    `base`. (Only snapshots are read: reading the live file would move its atime, a change.)"""
    rel = path.relative_to(root.parent)
    if read_back(snaps / after / rel) != new:
        results.problems.append(f"maiffs: {rel} in snapshot {after} is not its new content")
    if read_back(snaps / "base" / rel) != old:
        results.problems.append(f"maiffs: {rel} in snapshot base is not its first content")
