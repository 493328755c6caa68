"""The follow part: follower mounts (issue 6, `maiffs mount --follow URL STORE MNT`) next to
the writer they follow, measured in the same run on stores of this part's own.

The writer (`WORKDIR/store-follow` on `WORKDIR/maiffs-follow`) holds one file of
`--follow-mib` MiB of incompressible bytes, a dataset directory of `--follow-files` files of
`--follow-file-kib` KiB (distinct random content, `--files-per-dir` per directory) and a small
marker file; its first snapshot is v1. For each destination in turn (a directory on the local
disk; a bucket of a Ceph RADOS Gateway started for the run, as in the remotes part, n/a without
Ceph) the writer is remounted with `-o replicate=NAME`, so it pushes what the remote lacks,
and this runs:

1. Each repetition (`--follow-reps`): the writer's own read of the big file, cold (remounted,
   page cache dropped) and again (page cache dropped); then a follower on a fresh store
   (`maiffs mount --follow URL STORE MNT -o follow_every=1s`): the time from the mount command
   until it shows the newest snapshot, a cold read of the big file (every chunk fetched from
   the remote) and three reads again (page cache dropped before each, once the follower's
   commits have stored the chunks the cold read fetched; the writer's likewise three);
   then a follower with `-o prefetch` on a fresh store: the time from the mount command until
   every chunk of the shown tree is held (`stored_bytes` ≥ `unique_bytes` in
   `MNT/.maiffs/stats`: the data is incompressible, so a held chunk is never smaller than its
   raw length), and a read of the big file (page cache dropped).
2. `--follow-switches` times, with a fresh follower: after a random pause of up to
   `follow_every` (so that the change falls anywhere in the follower's cycle, not always just
   after its last look), the marker rewritten on the writer and a snapshot taken (`mkdir
   .snapshots/vN`); from that mkdir, the time until the writer's
   replication has pushed it (`pending` in its stats), until the follower shows it (`follow`
   `showing` in its stats) and until the marker reads the new text on the follower.
3. The dataset read like a training job: every file in a random order (another one each
   epoch), `--follow-epochs` epochs with the page cache dropped before each, on the writer (a
   cold epoch and one again) and on a follower bounded by `-o cache_size=` at 60% of the
   dataset and at 125% of it, with the hit rate of each epoch from `follow` in its stats.

A follower's rows are divided by the writer's matching row of the same destination: the time
ratio, so 1.2 is 20% slower than the writer (issue 6's target for a follower's warm read).
Every mount is unmounted, every follower store removed, and the gateway stopped, whatever
happens; a failure makes the destination's cells n/a and is a PROBLEM.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import blake3

from contrib import ceph_rgw
from contrib.bench.data import RandomData, small_file_contents
from contrib.bench.filetree import tree_paths
from contrib.bench.measure import Kind, Sample, Summary, timed, timed_cpu
from contrib.bench.remotes import S3, FAILURES, DirPlace, Place, ceph_version, one_line, open_gateway
from contrib.bench.snapshots import SNAPDIR
from contrib.bench.system import cpu_seconds, drop_caches, is_mountpoint
from contrib.bench.targets import MAIFFS, BenchError, MaiffsTarget
from contrib.bench.targets import run as run_command
from contrib.bench.workloads import MIB, create_files, human_bytes, read_file, read_files, write_file

BIG = "big.bin"
DATASET = "dataset"
MARKER = "marker.txt"
#: The sub-directory or prefix of a destination that the writer replicates to.
KEY = "follow"
#: Seconds between a follower's looks for a newer snapshot (-o follow_every).
FOLLOW_EVERY = 1.0
#: Warm reads of the big file per repetition, writer and follower alike (their median counts).
WARM_READS = 3
#: Polling of stats and files while waiting: fine enough for second-scale latencies.
POLL = 0.02
#: The longest wait for a push, a switch or a prefetch before the destination counts as failed.
WAIT_LIMIT = 1800.0
#: Follower cache bounds, as shares of the dataset: smaller than it, and larger.
CACHE_SHARES = (0.6, 1.25)


@dataclass(frozen=True)
class Case:
    """One row: `baseline` is the key of the writer's row it is divided by (None: none);
    `rate` says whether MiB/s means something (not for latencies)."""

    key: str
    label: str
    baseline: str | None = None
    rate: bool = True


@dataclass
class FollowData:
    """What the writer holds, kept to check what followers read."""

    big_bytes: int
    big_digest: bytes
    files: list[Path]  # relative to the mount
    contents: list[bytes]

    @property
    def dataset_bytes(self) -> int:
        return sum(map(len, self.contents))

    def describe(self) -> str:
        return (f"big file: {human_bytes(self.big_bytes)} of random bytes; dataset: {len(self.files):,} files "
                f"of {human_bytes(len(self.contents[0]))} ({self.dataset_bytes / MIB:,.1f} MiB, random) "
                f"in {len({p.parent for p in self.files}):,} directories")


@dataclass
class FollowResults:
    #: Every row, in the order of the table (per destination the same rows).
    cases: dict[str, Case] = field(default_factory=dict)
    #: samples[destination][case] (amount: MiB, or 1 for a latency)
    samples: dict[str, dict[str, list[Sample]]] = field(default_factory=dict)
    #: notes[destination][case]: the hit rate of an epoch.
    notes: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Why a destination has no numbers (no gateway, or a failure).
    unavailable: dict[str, str] = field(default_factory=dict)
    data: str = ""
    setup: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, dest: str, case: Case, sample: Sample, note: str = "") -> None:
        self.cases.setdefault(case.key, case)
        self.samples.setdefault(dest, {}).setdefault(case.key, []).append(sample)
        if note:
            self.notes.setdefault(dest, {})[case.key] = note

    def summary(self, dest: str, key: str, kind: Kind = "time") -> Summary | None:
        samples = self.samples.get(dest, {}).get(key)
        return Summary.of(samples, kind) if samples and dest not in self.unavailable else None


# -- the rows --------------------------------------------------------------------------------
def big_cases(size: str) -> tuple[Case, ...]:
    """The rows of step 1, in their order: writer cold, writer again, and the followers'."""
    cold = Case("writer-cold", f"writer: {size} file, cold (remounted, page cache dropped)")
    again = Case("writer-again", f"writer: {size} file again (page cache dropped)")
    return (cold, again,
            Case("mount-shown", "follower: mount → newest snapshot shown (tree objects only)", rate=False),
            Case("follower-cold", f"follower: {size} file, cold (fresh store: every chunk fetched)", cold.key),
            Case("follower-again", f"follower: {size} file again (page cache dropped, chunks local)", again.key),
            Case("prefetch-local", "follower -o prefetch: mount → every chunk local (MiB/s of the tree)"),
            Case("prefetch-read", f"follower -o prefetch: {size} file, first read (page cache dropped)",
                 again.key))


SWITCH_CASES = (Case("switch-pushed", "mkdir .snapshots/vN → pushed (writer's replication)", rate=False),
                Case("switch-shown", "mkdir .snapshots/vN → follower shows vN (follow_every=1s)", rate=False),
                Case("switch-read", "mkdir .snapshots/vN → the changed file reads new on the follower",
                     rate=False))
WRITER_DATA_COLD = Case("writer-data-cold", "writer: dataset epoch, cold (remounted, page cache dropped)")
WRITER_DATA_AGAIN = Case("writer-data-again", "writer: dataset epoch again (page cache dropped)")


def epoch_case(share: float, cache_bytes: int, epoch: int) -> Case:
    baseline = WRITER_DATA_COLD if epoch == 1 else WRITER_DATA_AGAIN
    return Case(f"epoch-{share:g}-{epoch}", f"follower, cache_size {cache_bytes / MIB:,.0f} MiB "
                f"({share:.0%} of the dataset): epoch {epoch}", baseline.key)


# -- the mounts ------------------------------------------------------------------------------
class FollowWriter(MaiffsTarget):
    """The writer: this part's own store and mount, replicating to one destination at a time."""

    name = "maiffs-follow"

    def __init__(self, workdir: Path, options: str) -> None:
        super().__init__(workdir, options)
        self.store = workdir / "store-follow"
        self.own_options = options
        self.taken = 0
        self.latest = ""

    def snapshot(self) -> str:
        """mkdir .snapshots/vN (the next N); its name."""
        self.taken += 1
        self.latest = f"v{self.taken}"
        os.mkdir(self.path / SNAPDIR / self.latest)
        return self.latest

    def replicate_to(self, place: Place, name: str) -> None:
        """Remount with -o replicate=name only (so one destination's pushes never compete with
        another's), name being place's remote; at mount it pushes what that remote lacks."""
        self.stop()
        run_command([*MAIFFS, "remote", "add", str(self.store), name, *place.maiffs_url(KEY)],
                    "maiffs remote add", env={**os.environ, **place.env})
        self.options = ",".join(filter(None, [self.own_options, f"replicate={name}"]))
        self.env = {**os.environ, **place.env}
        self.start()


class Follower(MaiffsTarget):
    """A follower mount on a store of its own, made by the mount (as a user's first one is)."""

    def __init__(self, workdir: Path, tag: str, place: Place, options: str) -> None:
        super().__init__(workdir, options)
        self.store = workdir / f"store-follower-{tag}"
        self.path = workdir / f"maiffs-follower-{tag}"
        self.url = place.clone_url(KEY)
        self.env = {**os.environ, **place.env}

    def create(self) -> None:
        """Nothing: `maiffs mount --follow` makes the store."""

    def mount_argv(self) -> list[str]:
        opts = ["-o", self.options] if self.options else []
        return [*MAIFFS, "mount", "--follow", self.url, str(self.store), str(self.path), *opts]


def stats(target: MaiffsTarget) -> dict[str, Any]:
    """The daemon's own numbers (MNT/.maiffs/stats): a FUSE read, cheap enough to poll."""
    return json.loads((target.path / ".maiffs" / "stats").read_text())


def wait_until(condition: Callable[[], bool], what: str, target: MaiffsTarget) -> None:
    """Poll condition; past WAIT_LIMIT a BenchError with the follower's last error, if any."""
    deadline = time.monotonic() + WAIT_LIMIT
    while not condition():
        if time.monotonic() > deadline:
            error = stats(target).get("follow", {}).get("last_error")
            raise BenchError(f"{what}: not after {WAIT_LIMIT:.0f} s (last error: {error})")
        time.sleep(POLL)


def daemon_cpu(target: MaiffsTarget) -> float | None:
    """The daemon's CPU seconds, 0 before it exists: for samples that start with the mount."""
    pid = target.daemon_pid()
    return 0.0 if pid is None else cpu_seconds(pid)


def follower_options(args: argparse.Namespace, *more: str) -> str:
    """-o of a follower: the run's --maiffs-options, follow_every, then more."""
    return ",".join(filter(None, [args.maiffs_options, f"follow_every={FOLLOW_EVERY:g}s", *more]))


@contextmanager
def following(workdir: Path, tag: str, place: Place, options: str) -> Iterator[Follower]:
    """A follower (not mounted yet: the caller times its mount with mount_follower), unmounted
    and its store removed afterwards, whatever happens (a store still mounted stays)."""
    follower = Follower(workdir, tag, place, options)
    try:
        yield follower
    finally:
        follower.stop()
        if not is_mountpoint(follower.path):
            shutil.rmtree(follower.store, ignore_errors=True)
            shutil.rmtree(follower.path, ignore_errors=True)


def mount_follower(follower: Follower, until: Callable[[], bool], what: str) -> Sample:
    """Mount follower and wait until `until()`, timed from the mount command's start (the
    daemon's CPU over its whole life); the amount is the MiB its store holds then."""
    def operation() -> float:
        follower.path.mkdir()
        follower.start()
        wait_until(until, what, follower)
        return stats(follower)["stored_bytes"] / MIB
    return timed_cpu(partial(daemon_cpu, follower), operation)


def shows(target: MaiffsTarget, snapshot: str) -> bool:
    return stats(target).get("follow", {}).get("showing") == snapshot


def all_local(target: MaiffsTarget, snapshot: str) -> bool:
    """The snapshot is shown and every chunk recorded is held (incompressible data: a held
    chunk's stored bytes are at least its raw bytes)."""
    numbers = stats(target)
    return (numbers["follow"]["showing"] == snapshot
            and numbers["stored_bytes"] >= numbers["unique_bytes"] > 0)


# -- the steps -------------------------------------------------------------------------------
def fill_writer(writer: FollowWriter, args: argparse.Namespace) -> FollowData:
    """Write the big file, the dataset and the marker; snapshot v1. The big file's bytes are
    not kept (a GiB), only their BLAKE3."""
    size = args.follow_mib * MIB
    big = RandomData("follow-big", size).make(0)
    write_file(writer.path / BIG, big, MIB)
    data = FollowData(size, blake3.blake3(big, max_threads=blake3.blake3.AUTO).digest(),
                      tree_paths(Path(DATASET), args.follow_files, args.files_per_dir),
                      small_file_contents(6_000_003, args.follow_files, args.follow_file_kib << 10))
    del big
    create_files([writer.path / p for p in data.files], data.contents)
    (writer.path / MARKER).write_text("v1\n")
    writer.snapshot()
    return data


def connect(results: FollowResults, writer: FollowWriter, place: Place, say: Callable[[str], None]) -> None:
    """Replicate the writer to place and wait until its newest snapshot is there."""
    dest = place.destination
    say(f"follow: {dest.key}: replicating the writer's snapshots")
    start = time.monotonic()
    writer.replicate_to(place, dest.key)
    wait_until(lambda: place.has_ref(KEY, writer.latest), f"replication of {writer.latest} to {dest.key}",
               writer)
    results.setup.append(f"{dest.label}: the writer's snapshots (up to {writer.latest}) replicated in "
                         f"{time.monotonic() - start:.1f} s, remount included")


def read_big(results: FollowResults, dest: str, case: Case, target: MaiffsTarget, remount: bool) -> None:
    """Time a read of the big file after dropping the page cache (and remounting: a cold writer,
    whose daemon then holds nothing in memory, like a fresh follower)."""
    if remount:
        target.restart()
    drop_caches()
    results.add(dest, case, timed(target, partial(read_file, target.path / BIG, MIB)))


def check_big(results: FollowResults, dest: str, follower: Follower, data: FollowData) -> None:
    """The follower's big file must be the writer's (untimed: one more read, hashed)."""
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    with open(follower.path / BIG, "rb") as f:
        while piece := f.read(16 * MIB):
            hasher.update(piece)
    if hasher.digest() != data.big_digest:
        results.problems.append(f"follow, {dest}: the follower's {BIG} differs from the writer's")


def big_file_rep(results: FollowResults, args: argparse.Namespace, writer: FollowWriter, place: Place,
                 data: FollowData, rep: int) -> None:
    """Step 1, one repetition: the writer's reads, a follower's, a prefetching follower's."""
    dest = place.destination.key
    w_cold, w_again, shown, f_cold, f_again, p_local, p_read = big_cases(human_bytes(data.big_bytes))
    read_big(results, dest, w_cold, writer, remount=True)
    for _ in range(WARM_READS):
        read_big(results, dest, w_again, writer, remount=False)
    options = follower_options(args)
    with following(writer.workdir, f"{dest}-r{rep}", place, options) as follower:
        results.add(dest, shown, mount_follower(follower, partial(shows, follower, writer.latest),
                                                f"a follower showing {writer.latest}"))
        read_big(results, dest, f_cold, follower, remount=False)
        # what the cold read fetched is stored by the follower's next commits: timing the read
        # again before they end measured the storing (1 GiB written and synced) too
        wait_until(lambda: stats(follower)["stored_bytes"] >= data.big_bytes,
                   "the fetched chunks stored", follower)
        for _ in range(WARM_READS):  # the first read after the store took the data is slower
            read_big(results, dest, f_again, follower, remount=False)
        if rep == 0:
            check_big(results, dest, follower, data)
    with following(writer.workdir, f"{dest}-p{rep}", place, f"{options},prefetch") as follower:
        results.add(dest, p_local, mount_follower(follower, partial(all_local, follower, writer.latest),
                                                  "a prefetching follower holding every chunk"))
        read_big(results, dest, p_read, follower, remount=False)


def reads(path: Path, text: str) -> bool:
    """path holds text (a follower switching may answer ENOENT for a moment)."""
    try:
        return path.read_text() == text
    except OSError:
        return False


def first_seen(checks: dict[str, Callable[[], bool]], start: float, what: str,
               target: MaiffsTarget) -> dict[str, float]:
    """Poll every check until all have been true once; the seconds from start to each's first."""
    seen: dict[str, float] = {}

    def all_seen() -> bool:
        for key, check in checks.items():
            if key not in seen and check():
                seen[key] = time.perf_counter() - start
        return len(seen) == len(checks)
    wait_until(all_seen, what, target)
    return seen


def switch(results: FollowResults, dest: str, writer: FollowWriter, follower: Follower, pause: float) -> None:
    """Step 2, once: after pause seconds, change the marker, snapshot, and note when each of
    the three is seen."""
    time.sleep(pause)
    name = f"v{writer.taken + 1}"
    text = f"{name}\n"
    (writer.path / MARKER).write_text(text)
    checks = (lambda: name not in stats(writer)["replication"][dest]["pending"],
              partial(shows, follower, name), partial(reads, follower.path / MARKER, text))
    start = time.perf_counter()
    writer.snapshot()
    seen = first_seen({case.key: check for case, check in zip(SWITCH_CASES, checks)}, start,
                      f"{name} seen on the follower", follower)
    for case in SWITCH_CASES:
        results.add(dest, case, Sample(seen[case.key], 1.0, None))


def read_dataset(target: MaiffsTarget, data: FollowData, order: list[int], bad: list[Path]) -> float:
    """Every file of the dataset in the given order, checked; the MiB read."""
    read_files([target.path / data.files[i] for i in order], [data.contents[i] for i in order], bad)
    return data.dataset_bytes / MIB


def epoch(results: FollowResults, dest: str, case: Case, target: MaiffsTarget, data: FollowData,
          rng: random.Random) -> None:
    """One epoch: a new random order, the page cache dropped, every file read (and checked);
    on a follower, the epoch's hits and misses beside it."""
    order = list(range(len(data.files)))
    rng.shuffle(order)
    before = stats(target).get("follow")
    drop_caches()
    bad: list[Path] = []
    sample = timed(target, partial(read_dataset, target, data, order, bad))
    if bad:
        results.problems.append(f"follow, {dest}, {case.label}: {len(bad)} files read back wrong, e.g. {bad[0]}")
    after = stats(target).get("follow")
    results.add(dest, case, sample, hit_note(before, after) if before and after else "")


def hit_note(before: dict[str, Any], after: dict[str, Any]) -> str:
    """The epoch's hits, misses and hit rate (chunk reads from the store or the daemon's memory
    cache, and from the remote), and the evictions during it."""
    hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
    rate = f"{hits / (hits + misses):.2f}" if hits + misses else "-"
    return (f"hit rate {rate} ({hits:,} hits, {misses:,} misses), "
            f"{after['evictions'] - before['evictions']:,} evictions")


def dataset_epochs(results: FollowResults, args: argparse.Namespace, writer: FollowWriter, place: Place,
                   data: FollowData, say: Callable[[str], None]) -> None:
    """Step 3: the writer's epochs, then a follower's at each cache bound (the same orders)."""
    dest = place.destination.key
    writer.restart()
    epoch(results, dest, WRITER_DATA_COLD, writer, data, random.Random(1))
    epoch(results, dest, WRITER_DATA_AGAIN, writer, data, random.Random(2))
    for share in CACHE_SHARES:
        cache = int(data.dataset_bytes * share)
        say(f"follow: {dest}: {args.follow_epochs} epochs of the dataset, cache_size={cache}")
        options = follower_options(args, f"cache_size={cache}")
        with following(writer.workdir, f"{dest}-c{share:g}", place, options) as follower:
            mount_follower(follower, partial(shows, follower, writer.latest), f"a follower showing {writer.latest}")
            rng = random.Random(1)
            for n in range(1, args.follow_epochs + 1):
                epoch(results, dest, epoch_case(share, cache, n), follower, data, rng)


def follow_destination(results: FollowResults, args: argparse.Namespace, writer: FollowWriter,
                       place: Place, data: FollowData, say: Callable[[str], None]) -> None:
    """The three steps on one destination."""
    dest = place.destination.key
    connect(results, writer, place, say)
    reps = args.follow_reps or args.reps
    for rep in range(reps):
        say(f"follow: {dest}: repetition {rep + 1} of {reps}: the {human_bytes(data.big_bytes)} "
            "file on the writer, a follower, a prefetching follower")
        big_file_rep(results, args, writer, place, data, rep)
    say(f"follow: {dest}: {args.follow_switches} snapshots from the writer to a follower")
    with following(writer.workdir, f"{dest}-s", place, follower_options(args)) as follower:
        mount_follower(follower, partial(shows, follower, writer.latest), f"a follower showing {writer.latest}")
        pauses = random.Random(3)
        for _ in range(args.follow_switches):
            switch(results, dest, writer, follower, pauses.uniform(0, FOLLOW_EVERY))
    dataset_epochs(results, args, writer, place, data, say)


def run(args: argparse.Namespace, workdir: Path, say: Callable[[str], None]) -> FollowResults:
    results = FollowResults()
    say(f"follow: filling the writer ({args.follow_mib} MiB file, {args.follow_files:,} files of "
        f"{args.follow_file_kib} KiB)")
    start = time.monotonic()
    with ExitStack() as stack:
        writer = stack.enter_context(FollowWriter(workdir, args.maiffs_options))
        data = fill_writer(writer, args)
        results.data = data.describe()
        results.setup.append(f"writer filled in {time.monotonic() - start:.1f} s (generated, written through "
                             "its mount, snapshot v1)")
        local = DirPlace(workdir / "follow-dir")
        places: list[Place] = [local]
        memstore = max(ceph_rgw.MEMSTORE_BYTES, 2 * (data.big_bytes + data.dataset_bytes) + (1 << 30))
        s3, line = open_gateway(stack, memstore, say, "follow")
        if s3 is None:
            results.unavailable[S3.key] = line
            say(f"follow: S3: {line}")
        else:
            places.append(s3)
            results.setup.append(f"{line}; {ceph_version()}")
        for place in places:
            try:
                follow_destination(results, args, writer, place, data, say)
            except FAILURES as exc:
                why = f"failed: {one_line(exc)}"
                results.unavailable[place.destination.key] = why
                results.problems.append(f"follow, {place.destination.label}: {why}")
        say("follow: unmounting, stopping the gateway")
    shutil.rmtree(local.root, ignore_errors=True)
    return results
