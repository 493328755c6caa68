"""`python -m contrib.bench`: mount the three targets, run every workload on each, report.

One run measures memfs (the ceiling), a plain directory and maiffs side by side, because on a
shared 2-core machine only numbers taken together can be compared (design.md §7 states its
targets as ratios within one run). Whatever happens, every mount made here is unmounted and
the work directory removed before the command exits.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import signal
import sys
import sysconfig
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from contrib.bench import (follow, memory, randread, remotes, report, snapshots, storage, tree, versions,
                           workloads, zips)
from contrib.bench.data import LogText, RandomData
from contrib.bench.system import drop_caches, is_mountpoint, machine_info
from contrib.bench.targets import BenchError, MaiffsTarget, MemFsTarget, Target
from contrib.bench.workloads import MIB

RESULTS = Path(__file__).with_name("results") / "latest.json"
KIB = 1 << 10
PARTS = ("storage", "random", "text", "small", "tree", "randread", "snapshots", "zips", "remotes", "follow",
         "memory")
#: The parts that run on stores (and mounts) of their own, after the three targets are gone.
OWN_STORES = {"snapshots", "zips", "remotes", "follow", "memory"}
#: Left out of a full run unless asked for with --only (1,000,000 files take about 15 minutes);
#: --quick runs them too, at its tiny sizes, so that they keep working.
ON_REQUEST = {"memory"}
QUICK = {"seq_mib": 16, "text_mib": 16, "files": 200, "files_per_dir": 50, "reps": 1,
         "snap_files": 300, "log_sample_mib": 0, "versions_mib": 2, "randread_mib": 16,
         "randread_seconds": 0.1, "tree_files": 300, "versions": 3,
         "zip_members": 500, "zip_large_members": 2, "zip_large_mib": 2,
         "tree": str(Path(sysconfig.get_paths()["stdlib"]) / "json"), "remote_mib": 4, "remote_files": 200,
         "follow_mib": 4, "follow_files": 200, "follow_switches": 2, "follow_epochs": 2,
         "memory_files": 500, "memory_files_per_dir": 100}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m contrib.bench", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run of a few seconds (overrides the sizes: {QUICK})")
    p.add_argument("--reps", type=int, default=3, help="repetitions of every timing")
    p.add_argument("--seq-mib", type=int, default=1024, help="size of the incompressible file")
    p.add_argument("--text-mib", type=int, default=1024, help="size of the log-text file")
    p.add_argument("--block-kib", type=int, default=1024, help="size of each write() and read()")
    p.add_argument("--files", type=int, default=10_000, help="number of small files")
    p.add_argument("--file-size", type=int, default=4096, help="bytes per small file")
    p.add_argument("--files-per-dir", type=int, default=100, help="small files per directory")
    p.add_argument("--tree-files", type=int, default=100_000,
                   help="files of the tree find and ls -lR list (--files-per-dir per directory)")
    p.add_argument("--randread-mib", type=int, default=1024, help="size of the file fio reads at random")
    p.add_argument("--randread-seconds", type=float, default=15,
                   help="fio's runtime per randread sample (buffered and O_DIRECT each)")
    p.add_argument("--randread-reps", type=int, default=None,
                   help="repetitions of the fio runs (default: --reps)")
    p.add_argument("--fio", default="fio", help="fio command (the randread part; skipped without it)")
    p.add_argument("--snap-files", type=int, default=100_000,
                   help="files in the tree that is snapshotted (--files-per-dir per directory)")
    p.add_argument("--snap-file-size", type=int, default=1024, help="bytes per file of that tree")
    p.add_argument("--snap-reps", type=int, default=None,
                   help="repetitions of the snapshot and cp -a timings (default: --reps)")
    p.add_argument("--tree", default=sysconfig.get_paths()["stdlib"],
                   help="real tree for the bytes-stored comparison")
    p.add_argument("--tree-exclude", action="append", default=["site-packages", "__pycache__"],
                   help="tar --exclude pattern for --tree (repeatable)")
    p.add_argument("--log-sample-mib", type=int, default=1024,
                   help="size of the log text in the bytes-stored comparison (0: skip it)")
    p.add_argument("--versions-mib", type=int, default=200,
                   help="size of each version of the versioned dataset in the bytes-stored comparison")
    p.add_argument("--versions", type=int, default=10,
                   help="versions of that dataset, each with 1%% of it changed (0: skip it)")
    p.add_argument("--zip-members", type=int, default=100_000,
                   help="members of the small-member zip (1-4 KiB each, in 100 directories)")
    p.add_argument("--zip-large-members", type=int, default=4, help="members of the large-member zip")
    p.add_argument("--zip-large-mib", type=int, default=64, help="MiB per member of the large zip")
    p.add_argument("--zip-reps", type=int, default=None,
                   help="repetitions of the zip timings (default: --reps)")
    p.add_argument("--ratarmount", default="ratarmount",
                   help="ratarmount command (looked up beside this Python, then on PATH)")
    p.add_argument("--fuse-zip", default="fuse-zip", help="fuse-zip command")
    p.add_argument("--remote-mib", type=int, default=1024,
                   help="size of the incompressible file pushed and pulled by the remotes part")
    p.add_argument("--remote-files", type=int, default=10_000,
                   help="small files (--file-size bytes, --files-per-dir per directory) pushed and pulled")
    p.add_argument("--remote-reps", type=int, default=None,
                   help="repetitions of the push and pull timings (default: --reps)")
    p.add_argument("--rclone", default="rclone", help="rclone command (the remotes part's baseline)")
    p.add_argument("--follow-mib", type=int, default=1024,
                   help="size of the incompressible file the follow part's followers read")
    p.add_argument("--follow-files", type=int, default=10_000,
                   help="files of the follow part's dataset directory (--files-per-dir per directory)")
    p.add_argument("--follow-file-kib", type=int, default=64, help="KiB per file of that dataset")
    p.add_argument("--follow-reps", type=int, default=None,
                   help="repetitions of the follow part's big-file reads (default: --reps)")
    p.add_argument("--follow-switches", type=int, default=5,
                   help="snapshots timed from the writer's mkdir to the follower showing them")
    p.add_argument("--follow-epochs", type=int, default=3,
                   help="reads of the whole dataset, in random order, per follower cache size")
    p.add_argument("--memory-files", type=int, default=1_000_000,
                   help="files created while the memory part samples the daemon's RSS")
    p.add_argument("--memory-files-per-dir", type=int, default=1000, help="files per directory of those")
    p.add_argument("--only", action="append", choices=PARTS,
                   help=f"run only these parts (repeatable; default: all but {', '.join(sorted(ON_REQUEST))}, "
                        "which --quick runs too)")
    p.add_argument("--maiffs-options", default="", metavar="OPT[,OPT...]",
                   help="-o options for maiffs mount, e.g. compression=1")
    p.add_argument("--workdir", default=tempfile.gettempdir(),
                   help="where the plain dir, the mount points and the store go (local disk)")
    p.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    args = p.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
    return args


class Progress:
    """Progress lines on stderr, so a 5-minute run visibly moves and stdout stays the table."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.start:6.1f}s] {message}", file=sys.stderr, flush=True)


def measure_storage(args: argparse.Namespace, plain: Target, maiffs: MaiffsTarget,
                    say: Progress) -> list[storage.StorageItem]:
    """The bytes-stored comparison, on the fresh store; its copies are removed afterwards.

    Issue 7's goals, as maiffs's stored bytes over tar | zstd -3's: at most 1.10 for the
    source tree and the logs (compression alone), at most 0.2 (5× smaller) for the versions.
    """
    tree = Path(args.tree)
    fills = [(f"{tree.name} tree", partial(storage.copy_tree, tree, excludes=tuple(args.tree_exclude)), 1.10)]
    if args.log_sample_mib:
        log = LogText("log-sample", args.log_sample_mib * MIB)
        fills.append((f"log text {args.log_sample_mib} MiB",
                      lambda d: workloads.write_file(d / "service.log", log.make(0), args.block_kib * KIB), 1.10))
    if args.versions:
        fills.append((f"{args.versions} versions of {args.versions_mib} MiB, 1% changed each",
                      partial(versions.write_versions, size=args.versions_mib * MIB, versions=args.versions), 0.2))
    items = []
    for name, fill, goal in fills:
        say(f"bytes stored: {name}")
        items.append(storage.measure(name, fill, goal, plain, maiffs))
    for target in (plain, maiffs):
        for leftover in target.path.glob("storage-*"):
            shutil.rmtree(leftover)
    return items


@dataclass
class Outcome:
    """What the parts that ran measured (empty or None: the part did not run)."""

    results: workloads.Results = field(default_factory=workloads.Results)
    stored: list[storage.StorageItem] = field(default_factory=list)
    snaps: snapshots.SnapshotResults | None = None
    zipped: zips.ZipResults | None = None
    remoted: remotes.RemoteResults | None = None
    followed: follow.FollowResults | None = None
    memory: memory.MemoryResults | None = None
    #: Parts that were asked for but could not run, and why.
    skipped: dict[str, str] = field(default_factory=dict)


def selected_parts(args: argparse.Namespace) -> set[str]:
    """--only's parts; else all, but those run on request only outside --quick."""
    if args.only:
        return set(args.only)
    return set(PARTS) if args.quick else set(PARTS) - ON_REQUEST


def run_all(args: argparse.Namespace, workdir: Path, say: Progress) -> Outcome:
    parts = selected_parts(args)
    out = Outcome()
    if "randread" in parts and (why := randread.fio_missing(args.fio)):
        say(f"randread: skipped: {why}")
        out.skipped["randread"] = why
        parts.discard("randread")
    problems = out.results.problems
    if parts - OWN_STORES:
        out.stored = run_targets(args, workdir, parts, out.results, say)
    if "snapshots" in parts:  # on a maiffs mount and store of its own, after the others are gone
        out.snaps = snapshots.run(args, workdir, say)
        problems.extend(out.snaps.problems)
    if "zips" in parts:  # likewise, with ratarmount and fuse-zip mounts beside it
        out.zipped = zips.run(args, workdir, say)
        problems.extend(out.zipped.problems)
    if "remotes" in parts:  # likewise, with a Ceph RADOS Gateway started for it
        out.remoted = remotes.run(args, workdir, say)
        problems.extend(out.remoted.problems)
    if "follow" in parts:  # likewise: a writer, its followers, a gateway of its own
        out.followed = follow.run(args, workdir, say)
        problems.extend(out.followed.problems)
    if "memory" in parts:  # likewise: the daemon's RSS while a million files are created
        out.memory = memory.run(args, workdir, say)
        problems.extend(out.memory.problems)
    return out


def run_targets(args: argparse.Namespace, workdir: Path, parts: set[str], results: workloads.Results,
                say: Progress) -> list[storage.StorageItem]:
    """The parts that compare the three targets; returns the bytes-stored comparison, if run."""
    stored = []
    block = args.block_kib * KIB
    with ExitStack() as stack:
        say("mounting memfs and maiffs")
        memfs = stack.enter_context(MemFsTarget(workdir))
        plain = stack.enter_context(Target(workdir))
        maiffs = stack.enter_context(MaiffsTarget(workdir, args.maiffs_options))
        targets = [memfs, plain, maiffs]
        if "storage" in parts:
            stored = measure_storage(args, plain, maiffs, say)
        if "random" in parts:
            say(f"sequential, incompressible, {args.reps} × {args.seq_mib} MiB per target")
            workloads.sequential(targets, RandomData("random", args.seq_mib * MIB), "random data",
                                 0.7, args.reps, block, results)
        if "text" in parts:
            say(f"sequential, log text, {args.reps} × {args.text_mib} MiB per target")
            workloads.sequential(targets, LogText("text", args.text_mib * MIB), "log text",
                                 0.5, args.reps, block, results)
        if "small" in parts:
            say(f"small files, {args.reps} × {args.files} per target")
            workloads.small_files(targets, args.files, args.file_size, args.files_per_dir, args.reps,
                                  results)
        if "tree" in parts:
            say(f"find and ls -lR, {args.reps} × cold and warm over {args.tree_files} files per target")
            tree.tree(targets, args.tree_files, args.files_per_dir, args.reps, results, say)
        if "randread" in parts:
            reps = args.randread_reps or args.reps
            say(f"random reads, fio, {reps} × 2 × {args.randread_seconds:g} s per target "
                f"in a {args.randread_mib} MiB file")
            randread.randread(targets, args.fio, args.randread_mib * MIB, args.randread_seconds, reps, block,
                              results)
        say("unmounting")
    return stored


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (e.g. a CI timeout) unwinds like Ctrl-C, so every mount is still unmounted."""
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    say = Progress()
    workdir = Path(tempfile.mkdtemp(prefix="maiffs-bench-", dir=args.workdir))
    meta = {"started": dt.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(["python -m contrib.bench", *(sys.argv[1:] if argv is None else argv)]),
            "machine": machine_info(workdir),
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "caches_dropped": drop_caches()}
    if not meta["caches_dropped"]:
        say("warning: cannot write /proc/sys/vm/drop_caches (not root?): cold reads of the plain "
            "dir and memfs come from the page cache")
    try:
        out = run_all(args, workdir, say)
    except BenchError as exc:
        say(f"error: {exc}")
        return 2
    finally:
        if any(is_mountpoint(p) for p in workdir.iterdir()):  # never rm through a mount
            say(f"warning: something is still mounted in {workdir}; left in place")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    meta["seconds"] = round(time.monotonic() - say.start, 1)
    meta["skipped"] = out.skipped
    if printed := report.tables(out.results, out.stored, out.snaps, out.zipped, out.remoted, out.followed,
                                out.memory):
        print("\n\n".join(printed))
    for part, why in out.skipped.items():
        print(f"SKIPPED {part}: {why}")
    for problem in out.results.problems:
        print(f"PROBLEM: {problem}")
    report.write_json(args.json, report.to_json(out.results, out.stored, meta, out.snaps, out.zipped,
                                                out.remoted, out.followed, out.memory))
    say(f"results written to {args.json}")
    return 1 if out.results.problems else 0
