"""The tree part: `find` and `ls -lR` over a tree of 100,000 files, cold and warm, on each target.

design.md §7 (issue 7): "`find` and `ls -lR` over 100,000 files: within 3× of the ceiling".
The tree (`--tree-files` files of a few bytes, `--files-per-dir` per directory) is built once
per target by filetree's threads, untimed. Then per repetition and target, for each tool: the
target is made cold (page cache, dentries and inodes dropped; maiffs remounted, so LMDB's pages
come from the disk) and the tool is timed, then timed again warm. "Warm" lasts only as long as
the kernel's attribute and entry timeouts (1 s on memfs and maiffs): an `ls -lR` that takes
longer revalidates what it lists, which is what a user running it twice sees.

The output is read through a pipe, as a terminal or `| wc -l` would, and counted: find prints
one line per entry, `ls -lR` one line starting with `-` or `d` per file or directory, so a
readdir that lost entries cannot look fast.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from functools import partial

from contrib.bench.filetree import build_tree, dir_count
from contrib.bench.targets import Target
from contrib.bench.workloads import Results, Workload, cold_then_warm

ROOT = "tree"


def find_entries(out: bytes) -> int:
    return out.count(b"\n")


def ls_entries(out: bytes) -> int:
    """Files and directories in `ls -lR` output (headers, totals and blank lines not counted)."""
    return sum(1 for line in out.split(b"\n") if line[:1] in (b"-", b"d"))


def list_tree(argv: list[str], expected: int, count: Callable[[bytes], int], problems: list[str]) -> float:
    """Run find or ls -lR with its output read from a pipe; check count(output) == expected;
    return the entries listed."""
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if done.returncode != 0:
        raise OSError(f"{' '.join(argv)} failed: {done.stderr.decode(errors='replace').strip()}")
    if (listed := count(done.stdout)) != expected:
        problems.append(f"{' '.join(argv)} listed {listed} entries, expected {expected}")
    return expected


def payload(i: int) -> bytes:
    return b"%d\n" % i


def tree(targets: Sequence[Target], count: int, per_dir: int, reps: int, results: Results,
         say: Callable[[str], None]) -> None:
    """Build the tree on every target, then time find and ls -lR over it, cold then warm."""
    dirs = dir_count(count, per_dir)
    what = f"{count:,} files ({per_dir}/dir)"
    tools = [("find", ["find"], count + dirs + 1, find_entries),  # the root is listed too
             ("ls-lR", ["ls", "-lR"], count + dirs, ls_entries)]
    for target in targets:
        say(f"tree: building {count:,} files on {target.name}")
        build_tree(target.path / ROOT, count, per_dir, payload)
    for _rep in range(reps):
        for target in targets:
            for key, argv, expected, counter in tools:
                listing = partial(list_tree, [*argv, str(target.path / ROOT)], expected, counter, results.problems)
                for state, sample in zip(("cold", "warm"), cold_then_warm(target, listing)):
                    workload = Workload(f"tree-{key}-{state}", f"{' '.join(argv)} over {what}, {state}", "s",
                                        "time", 3.0)
                    results.add(workload, target, sample)
