"""The remotes part: `maiffs push`, `maiffs clone` and a second push after a 1% change, to a
directory remote and to an S3 bucket, next to rclone and a plain copy of the same files.

Two datasets, each a plain directory on the local disk (`WORKDIR/remote-data/v0/KEY`) and a
copy of it with 1% changed (`.../v1/KEY`, made with `cp -a`, so unchanged files keep their
mtimes):

- big: one file of `--remote-mib` MiB (default 1024) of incompressible bytes; its change is
  PLACES in-place writes spread over the file, 1% of its size in all;
- small: `--remote-files` files (default 10,000) of `--file-size` bytes (4 KiB, distinct
  random content), `--files-per-dir` per directory; its change rewrites 1% of the files, in
  as many directories.

A maiffs store of this part's own (`WORKDIR/store-remote`) gets each dataset with `cp -a`
through its mount and a snapshot `KEY-0`; the same writes as in the plain copy, and a
snapshot `KEY-1`; then the tree is removed, so that each snapshot holds one dataset. The
store is unmounted before anything is timed: push and clone open it themselves.

Destinations: a directory on the local disk (`WORKDIR/remote-dir/`) and a bucket of a Ceph
RADOS Gateway started for the run on 127.0.0.1 (contrib/ceph_rgw.py; memstore, so in RAM) and
stopped by PID at the end whatever happens. Without the Ceph packages, or if the gateway does
not start, the S3 rows are n/a with the reason, and the directory rows still run.

Subjects, on each destination, each with a fresh place there per repetition:

- maiffs: `maiffs push STORE NAME KEY-0` (the store unmounted; NAME added with `maiffs
  remote add` beforehand, untimed); pull: `maiffs clone URL NEWSTORE`; then
  `maiffs push STORE NAME KEY-1`, which sends only what the remote lacks. The clone's
  snapshot must have the same root id as the store's (a Merkle root: same id, same
  content); another one is a PROBLEM.
- rclone (if installed, else n/a): `rclone copy SRC DEST` with its defaults (4 transfers),
  DEST a local path or the s3 backend (a config file in the work directory); pull: `rclone
  copy DEST NEWDIR`; second push: `rclone copy` of the changed copy, which compares sizes and
  mtimes and sends the changed files whole.
- cp -a (directory remote): `cp -a SRC/. DEST`; pull: `cp -a DEST/. NEWDIR`; second push:
  `cp -au` (the files whose mtime is newer than the copy's, whole).
- boto3 (S3): `upload_file` of every file, one file at a time (like `aws s3 cp
  --recursive`: boto3's defaults, so a file over 8 MiB goes up in 8 MiB parts on 10
  threads); pull: list the prefix and `download_file` each key; second push: `upload_file` of
  the changed files, whose list is made before the timer starts.

A pulled copy must hold the dataset's number of files and bytes, or that cell is n/a. What a
cycle put in the bucket is deleted after it (memstore is RAM); the local copies stay until the
part ends (see run). Every step runs after an `os.sync()` (nothing written before is charged to it); caches are not
dropped: the sources (the store's LMDB file, the plain files) were just written and stay in
the page cache for all subjects alike. The CPU time of a sample is that of the client: this
process and the commands it ran (getrusage), not the gateway's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import boto3.exceptions
import botocore.exceptions
from boto3.s3.transfer import S3Transfer

from contrib import ceph_rgw
from contrib.bench.data import RandomData, small_file_contents
from contrib.bench.filetree import tree_paths
from contrib.bench.measure import Kind, Sample, Summary, timed_cpu
from contrib.bench.snapshots import SNAPDIR, changed_indices, run_quiet
from contrib.bench.storage import tree_usage
from contrib.bench.targets import MAIFFS, BenchError, MaiffsTarget
from contrib.bench.targets import run as run_command
from contrib.bench.workloads import MIB, create_files, human_bytes, write_file
from contrib.bench.zips import Case as Step
from contrib.bench.zips import find_tool, read_crc, tool_version

#: In-place writes that make the big file's 1% change.
PLACES = 4
#: Per command: a hung transfer (a full memstore makes S3 writes hang) ends as a failure.
COMMAND_TIMEOUT = 3600
BUCKET = "maiffs-bench"
#: The rclone remote name of the gateway in the work directory's rclone.conf.
RCLONE_S3 = "rgw"
#: Where a remote keeps the refs of the snapshots of its default volume (docs/architecture.md).
REFS = "volumes/default/refs"
#: What a step may fail with; anything else is a bug of the harness and stops the run.
FAILURES = (BenchError, OSError, subprocess.SubprocessError, botocore.exceptions.BotoCoreError,
            botocore.exceptions.ClientError, boto3.exceptions.Boto3Error)


#: The steps of a cycle, in the order they run and appear in the table (a key and a label,
#: like the zip part's cases).
PUSH = Step("push", "push")
PULL = Step("pull", "pull (maiffs clone)")
REPUSH = Step("repush", "push after 1% changed")
STEPS = (PUSH, PULL, REPUSH)


@dataclass(frozen=True)
class Destination:
    """A kind of remote: its rows in the table, and the subjects measured on it."""

    key: str
    label: str
    subjects: tuple[str, ...]

    @property
    def baseline(self) -> str:
        """The plain-copy subject (cp -a or boto3): the last column."""
        return self.subjects[-1]


DIR = Destination("dir", "directory remote (local disk)", ("maiffs", "rclone", "cp -a"))
S3 = Destination("s3", "S3 bucket (Ceph RGW on 127.0.0.1)", ("maiffs", "rclone", "boto3"))
DESTINATIONS = (DIR, S3)


# -- the data ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Write:
    """One write of the 1% change: data at offset of a file (relative to the dataset's root)."""

    path: str
    offset: int
    data: bytes


@dataclass
class Dataset:
    key: str
    label: str
    root: Path  # WORKDIR/remote-data: holds v0/KEY and v1/KEY
    files: int
    logical_bytes: int
    writes: list[Write]
    #: Bytes of the files the change touches (set with version 1).
    changed_bytes: int = 0
    make_seconds: float = 0.0

    def source(self, version: int) -> Path:
        return self.root / f"v{version}" / self.key

    def snapshot(self, version: int) -> str:
        return f"{self.key}-{version}"

    @property
    def changed(self) -> list[str]:
        """The files the change touches, which a tool that copies whole files sends again."""
        return list(dict.fromkeys(w.path for w in self.writes))

    def describe(self) -> str:
        written = sum(len(w.data) for w in self.writes)
        return (f"{self.label}: {self.logical_bytes / MIB:,.1f} MiB of random bytes in {self.files:,} "
                f"file(s); the 1% change: {len(self.writes):,} in-place write(s), {written / MIB:,.2f} MiB "
                f"in all, to {len(self.changed):,} file(s) of {self.changed_bytes / MIB:,.2f} MiB "
                f"(made in {self.make_seconds:.1f} s)")


def apply_writes(writes: list[Write], root: Path) -> None:
    """Overwrite in place (same size, new mtime), as an editor or a database would."""
    for w in writes:
        with open(root / w.path, "r+b") as f:
            f.seek(w.offset)
            f.write(w.data)


def make_version_1(data: Dataset) -> None:
    """v1 = a cp -a of v0 (unchanged files keep their mtimes, as after a sync) plus the writes."""
    data.source(1).parent.mkdir(exist_ok=True)
    run_quiet(["cp", "-a", str(data.source(0)), str(data.source(1))], "cp -a of the data")
    apply_writes(data.writes, data.source(1))
    data.changed_bytes = sum((data.source(1) / path).stat().st_size for path in data.changed)


def make_big(root: Path, size: int) -> Dataset:
    """One incompressible file; PLACES writes of 1%/PLACES of it, spread evenly, 4 KiB aligned."""
    start = time.monotonic()
    name = "big.bin"
    data = Dataset("big", f"{human_bytes(size)} file", root, 1, size, [])
    data.source(0).mkdir(parents=True)
    write_file(data.source(0) / name, RandomData("remote-big", size).make(0), MIB)
    piece = max(1, size // 100 // PLACES)
    noise = RandomData("remote-big-change", piece * PLACES).make(0)
    data.writes = [Write(name, min(size - piece, (2 * k + 1) * size // (2 * PLACES) // 4096 * 4096),
                         noise[k * piece:(k + 1) * piece]) for k in range(PLACES)]
    make_version_1(data)
    data.make_seconds = time.monotonic() - start
    return data


def make_small(root: Path, count: int, size: int, per_dir: int) -> Dataset:
    """count distinct files; the change rewrites 1% of them (at least one), in as many dirs."""
    start = time.monotonic()
    data = Dataset("small", f"{count:,} × {human_bytes(size)} files", root, count, count * size, [])
    create_files(tree_paths(data.source(0), count, per_dir), small_file_contents(4_000_003, count, size))
    picked = changed_indices(count, per_dir, max(1, count // 100), 0)
    relative = tree_paths(Path(), count, per_dir)
    new = small_file_contents(5_000_003, len(picked), size)
    data.writes = [Write(str(relative[i]), 0, content) for i, content in zip(picked, new)]
    make_version_1(data)
    data.make_seconds = time.monotonic() - start
    return data


def tree_digest(root: Path) -> dict[str, tuple[int, int]]:
    """(size, CRC-32) of every file under root, by relative path: equal trees, equal dicts."""
    buf = bytearray(MIB)
    return {str((Path(top) / name).relative_to(root)): read_crc(Path(top) / name, buf)
            for top, _dirs, files in os.walk(root) for name in files}


# -- the maiffs store --------------------------------------------------------------------------
def snapshot_roots(store: Path) -> dict[str, str]:
    """Snapshot name -> root id, from `maiffs snapshot list --json`."""
    listed = run_command([*MAIFFS, "snapshot", "list", "--json", str(store)], "maiffs snapshot list").stdout
    return {info["name"]: info["root"] for info in json.loads(listed)}


def fill_store(target: MaiffsTarget, datasets: list[Dataset], problems: list[str]) -> None:
    """Each dataset in turn: cp -a into the mount, snapshot KEY-0, the change, snapshot KEY-1,
    the tree removed (so the next dataset's snapshots hold only that one)."""
    with target:
        for data in datasets:
            tree = target.path / data.key
            run_quiet(["cp", "-a", str(data.source(0)), str(tree)], "cp -a into maiffs")
            os.mkdir(target.path / SNAPDIR / data.snapshot(0))
            apply_writes(data.writes, tree)
            os.mkdir(target.path / SNAPDIR / data.snapshot(1))
            if tree_digest(tree) != tree_digest(data.source(1)):
                problems.append(f"maiffs: {data.label} after the change differs from the plain copy")
            shutil.rmtree(tree)


# -- destinations ----------------------------------------------------------------------------
class Place:
    """Where one destination's subjects write: a fresh key (sub-directory or prefix) per cycle."""

    destination: Destination
    #: What the maiffs commands need in their environment (the S3 credentials).
    env: dict[str, str] = {}

    def maiffs_url(self, key: str) -> list[str]:
        """The URL (and options) of `maiffs remote add`."""
        raise NotImplementedError

    def clone_url(self, key: str) -> str:
        raise NotImplementedError

    def rclone_path(self, key: str) -> str:
        raise NotImplementedError

    def clear(self, key: str) -> None:
        """Remove what a cycle left at key, if it cannot wait for the end of the part."""
        raise NotImplementedError

    def has_ref(self, key: str, snapshot: str) -> bool:
        """Whether the default volume at key holds snapshot (its ref is written last of a push)."""
        raise NotImplementedError


class DirPlace(Place):
    destination = DIR

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()  # maiffs wants an absolute path
        self.root.mkdir()

    def maiffs_url(self, key: str) -> list[str]:
        return [str(self.root / key)]

    def clone_url(self, key: str) -> str:
        return str(self.root / key)

    def rclone_path(self, key: str) -> str:
        return str(self.root / key)

    def clear(self, key: str) -> None:
        """Nothing: local copies stay until the part ends (see run)."""

    def has_ref(self, key: str, snapshot: str) -> bool:
        return (self.root / key / REFS / snapshot).is_file()


class S3Place(Place):
    """A bucket of the run's gateway. Clearing a key also runs the gateway's garbage
    collection, so that memstore (RAM) holds one cycle's data, not the whole run's."""

    destination = S3

    def __init__(self, gateway: ceph_rgw.Gateway) -> None:
        self.gateway = gateway
        self.env = {"AWS_ACCESS_KEY_ID": ceph_rgw.ACCESS_KEY,
                    "AWS_SECRET_ACCESS_KEY": ceph_rgw.SECRET_KEY}
        self.client = boto3.client("s3", endpoint_url=gateway.endpoint, region_name="us-east-1",
                                   aws_access_key_id=ceph_rgw.ACCESS_KEY,
                                   aws_secret_access_key=ceph_rgw.SECRET_KEY)
        self.client.create_bucket(Bucket=BUCKET)

    def maiffs_url(self, key: str) -> list[str]:
        return [f"s3://{BUCKET}/{key}", "--endpoint", self.gateway.endpoint]

    def clone_url(self, key: str) -> str:
        return f"s3://{BUCKET}/{key}?endpoint={self.gateway.endpoint}"

    def rclone_path(self, key: str) -> str:
        return f"{RCLONE_S3}:{BUCKET}/{key}"

    def keys(self, key: str) -> Iterator[dict]:
        """Every object under key/ (Key, Size, ...)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{key}/")
        for page in pages:
            yield from page.get("Contents", [])

    def clear(self, key: str) -> None:
        batch: list[dict[str, str]] = []
        for item in [*self.keys(key), None]:
            if item is not None:
                batch.append({"Key": item["Key"]})
            if batch and (item is None or len(batch) == 1000):
                self.client.delete_objects(Bucket=BUCKET, Delete={"Objects": batch, "Quiet": True})
                batch = []
        self.gateway.collect_garbage()

    def has_ref(self, key: str, snapshot: str) -> bool:
        listed = self.client.list_objects_v2(Bucket=BUCKET, Prefix=f"{key}/{REFS}/{snapshot}")
        return any(item["Key"] == f"{key}/{REFS}/{snapshot}" for item in listed.get("Contents", []))

    def rclone_config(self) -> str:
        return (f"[{RCLONE_S3}]\ntype = s3\nprovider = Ceph\nendpoint = {self.gateway.endpoint}\n"
                f"access_key_id = {ceph_rgw.ACCESS_KEY}\nsecret_access_key = {ceph_rgw.SECRET_KEY}\n"
                "region = us-east-1\n")


# -- subjects --------------------------------------------------------------------------------
class Subject:
    """One way of pushing and pulling. push and pull return the bytes they moved (None if
    the tool does not say); prepare and forget are the untimed setup and cleanup of a cycle."""

    name = ""
    slug = ""

    def __init__(self, place: Place) -> None:
        self.place = place

    def prepare(self, key: str) -> None:
        """Before the first push to key."""

    def forget(self, key: str) -> None:
        """After the cycle on key, whether it succeeded or not."""

    def push(self, data: Dataset, version: int, key: str) -> int | None:
        raise NotImplementedError

    def pull(self, data: Dataset, key: str, into: Path) -> int | None:
        raise NotImplementedError

    def check_pull(self, data: Dataset, into: Path) -> str | None:
        """Why the pulled copy is not the dataset (None if it is): the number of files and bytes."""
        files, logical, _allocated = tree_usage(into)
        if (files, logical) != (data.files, data.logical_bytes):
            return f"pulled {files} files of {logical} bytes, expected {data.files} of {data.logical_bytes}"
        return None


def transfer_flags() -> dict[str, list[str]]:
    """Per transfer command, the flags this maiffs offers of --json (the counts as JSON rather
    than as the human line) and --quiet (no progress display: a terminal's cost, not a transfer's)."""
    flags = {}
    for command in ("push", "clone"):
        offered = run_command([*MAIFFS, command, "--help"], f"maiffs {command} --help").stdout
        flags[command] = [flag for flag in ("--json", "--quiet") if flag in offered]
    return flags


def moved_bytes(stdout: str) -> int | None:
    """Bytes sent or received: "bytes" of the --json object, or "(N bytes)" of the human line."""
    text = stdout.strip()
    if text.startswith("{"):
        return int(json.loads(text)["bytes"])
    found = re.search(r"\((\d+) bytes\)", text)
    return int(found.group(1)) if found else None


class MaiffsSubject(Subject):
    name = slug = "maiffs"

    def __init__(self, place: Place, store: Path, roots: dict[str, str], flags: dict[str, list[str]]) -> None:
        super().__init__(place)
        self.store = store
        self.roots = roots
        self.flags = flags

    def maiffs(self, *args: str) -> str:
        command = args[0]
        flags = self.flags.get(command, [])
        return run_command([*MAIFFS, *args, *flags], f"maiffs {command}", env={**os.environ, **self.place.env},
                   timeout=COMMAND_TIMEOUT).stdout

    def prepare(self, key: str) -> None:
        self.maiffs("remote", "add", str(self.store), key, *self.place.maiffs_url(key))

    def forget(self, key: str) -> None:
        self.maiffs("remote", "remove", str(self.store), key)

    def push(self, data: Dataset, version: int, key: str) -> int | None:
        return moved_bytes(self.maiffs("push", str(self.store), key, data.snapshot(version)))

    def pull(self, data: Dataset, key: str, into: Path) -> int | None:
        return moved_bytes(self.maiffs("clone", self.place.clone_url(key), str(into)))

    def check_pull(self, data: Dataset, into: Path) -> str | None:
        name = data.snapshot(0)
        got, want = snapshot_roots(into).get(name), self.roots[name]
        return None if got == want else f"the clone's snapshot {name} has root {got}, the store's {want}"


class RcloneSubject(Subject):
    name = slug = "rclone"

    def __init__(self, place: Place, command: str, config: Path) -> None:
        super().__init__(place)
        self.argv = [command, "--config", str(config), "copy", "--use-json-log", "--stats", "1h",
                     "--stats-log-level", "NOTICE"]
        # rclone 1.60 cannot make its s3 backend at all when AWS_CA_BUNDLE is set
        # (LoadCustomCABundleError); the gateway speaks plain HTTP, so no CA is needed.
        self.env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}

    def copy(self, source: str, dest: str) -> int | None:
        """rclone copy; the bytes from its final stats line (JSON, on stderr)."""
        done = run_command([*self.argv, source, dest], "rclone copy", env=self.env, timeout=COMMAND_TIMEOUT)
        stats = [json.loads(line)["stats"] for line in done.stderr.splitlines()
                 if line.startswith("{") and '"stats"' in line]
        return int(stats[-1]["bytes"]) if stats else None

    def push(self, data: Dataset, version: int, key: str) -> int | None:
        return self.copy(str(data.source(version)), self.place.rclone_path(key))

    def pull(self, data: Dataset, key: str, into: Path) -> int | None:
        return self.copy(self.place.rclone_path(key), str(into))


class CpSubject(Subject):
    """cp -a to the directory remote; the second push is cp -au (changed files, whole)."""

    name, slug = "cp -a", "cp"

    def __init__(self, place: DirPlace) -> None:
        super().__init__(place)
        self.root = place.root

    def prepare(self, key: str) -> None:
        (self.root / key).mkdir()

    def push(self, data: Dataset, version: int, key: str) -> int | None:
        flags = "-au" if version else "-a"
        run_quiet(["cp", flags, f"{data.source(version)}/.", str(self.root / key)], f"cp {flags}")
        return data.changed_bytes if version else data.logical_bytes

    def pull(self, data: Dataset, key: str, into: Path) -> int | None:
        into.mkdir()
        run_quiet(["cp", "-a", f"{self.root / key}/.", str(into)], "cp -a")
        return data.logical_bytes


class Boto3Subject(Subject):
    """upload_file / download_file, one file at a time, through one S3Transfer per step (as one
    `aws s3 cp --recursive` has one), with boto3's default TransferConfig."""

    name = slug = "boto3"

    def __init__(self, place: S3Place) -> None:
        super().__init__(place)
        self.s3 = place

    def push(self, data: Dataset, version: int, key: str) -> int | None:
        root = data.source(version)
        if version:
            paths = data.changed
        else:
            paths = [str((Path(top) / name).relative_to(root))
                     for top, _dirs, files in os.walk(root) for name in files]
        sent = 0
        with S3Transfer(self.s3.client) as transfer:
            for path in paths:
                transfer.upload_file(str(root / path), BUCKET, f"{key}/{path}")
                sent += (root / path).stat().st_size
        return sent

    def pull(self, data: Dataset, key: str, into: Path) -> int | None:
        received = 0
        with S3Transfer(self.s3.client) as transfer:
            for item in list(self.s3.keys(key)):
                path = into / item["Key"][len(key) + 1:]
                path.parent.mkdir(parents=True, exist_ok=True)
                transfer.download_file(BUCKET, item["Key"], str(path))
                received += item["Size"]
        return received


# -- results ---------------------------------------------------------------------------------
@dataclass
class RemoteResults:
    datasets: list[Dataset] = field(default_factory=list)
    #: samples[destination][dataset][step][subject] -> samples (amount: MiB of the dataset,
    #: or of the changed files for the second push)
    samples: dict[str, dict[str, dict[str, dict[str, list[Sample]]]]] = field(default_factory=dict)
    #: moved[...same keys...] -> bytes each sample sent or received (None: not reported)
    moved: dict[str, dict[str, dict[str, dict[str, list[int | None]]]]] = field(default_factory=dict)
    #: Why a subject has no numbers on a destination (not installed, no gateway).
    unavailable: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Why a subject's cycle on a dataset failed (its cells are n/a).
    failed: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, dest: str, data: str, step: str, subject: str, sample: Sample, moved: int | None) -> None:
        self.samples.setdefault(dest, {}).setdefault(data, {}).setdefault(step, {}).setdefault(
            subject, []).append(sample)
        self.moved.setdefault(dest, {}).setdefault(data, {}).setdefault(step, {}).setdefault(
            subject, []).append(moved)

    def reason(self, dest: str, data: str, subject: str) -> str | None:
        """Why a subject has no numbers here, if there are none on purpose."""
        return self.unavailable.get(dest, {}).get(subject) or self.failed.get(dest, {}).get(data, {}).get(subject)

    def summary(self, dest: str, data: str, step: str, subject: str, kind: Kind = "time") -> Summary | None:
        if self.reason(dest, data, subject):
            return None
        samples = self.samples.get(dest, {}).get(data, {}).get(step, {}).get(subject)
        return Summary.of(samples, kind) if samples else None

    def bytes_moved(self, dest: str, data: str, step: str, subject: str) -> int | None:
        """The median of the bytes reported (they are the same in every repetition)."""
        if self.reason(dest, data, subject):
            return None
        values = sorted(v for v in self.moved.get(dest, {}).get(data, {}).get(step, {}).get(subject, [])
                        if v is not None)
        return values[len(values) // 2] if values else None


# -- the part ----------------------------------------------------------------------------------
def one_line(exc: BaseException) -> str:
    """An error for a line under the table: its lines joined, the end (where tools say why) kept."""
    text = " | ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text if len(text) <= 400 else "…" + text[-400:]


def client_cpu() -> float:
    """CPU seconds of this process and of the commands it has waited for: the client side."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def step_operation(step: Step, subject: Subject, data: Dataset, key: str, into: Path,
                   moved: list[int | None]) -> Callable[[], float]:
    """The timed call of a step; it returns the MiB it stands for and notes the bytes moved."""
    def operation() -> float:
        if step is PUSH:
            moved.append(subject.push(data, 0, key))
            return data.logical_bytes / MIB
        if step is PULL:
            moved.append(subject.pull(data, key, into))
            return data.logical_bytes / MIB
        moved.append(subject.push(data, 1, key))
        return data.changed_bytes / MIB
    return operation


def cycle(results: RemoteResults, subject: Subject, data: Dataset, rep: int, pulled: Path) -> None:
    """Push, pull, push after the change, on a fresh key; whatever happens, the key and the pulled
    copy are removed afterwards. A failure makes the subject's cells of this dataset n/a (and,
    for maiffs, is a PROBLEM); the run goes on."""
    dest = subject.place.destination.key
    if results.reason(dest, data.key, subject.name):
        return
    key = f"{dest}-{subject.slug}-r{rep}-{data.key}"
    into = pulled / key
    try:
        subject.prepare(key)
        for step in STEPS:
            os.sync()
            moved: list[int | None] = []
            sample = timed_cpu(client_cpu, step_operation(step, subject, data, key, into, moved))
            if step is PULL and (wrong := subject.check_pull(data, into)):
                raise BenchError(f"wrong data: {wrong}")
            results.add(dest, data.key, step.key, subject.name, sample, moved[0])
    except FAILURES as exc:
        why = f"failed: {one_line(exc)}"
        results.failed.setdefault(dest, {}).setdefault(data.key, {})[subject.name] = why
        if isinstance(subject, MaiffsSubject):
            results.problems.append(f"maiffs, {subject.place.destination.label}, {data.label}: {why}")
    finally:
        clean_up(results, subject, key)


def clean_up(results: RemoteResults, subject: Subject, key: str) -> None:
    """Forget the remote and clear what must go now, also after a failure half-way (a note,
    not an exception, if that fails too: the next cycle uses another key)."""
    for action in (subject.forget, subject.place.clear):
        try:
            action(key)
        except FAILURES as exc:
            results.notes.append(f"cleaning up {key} on {subject.place.destination.label}: {one_line(exc)}")


def open_gateway(stack: ExitStack, memstore_bytes: int, say: Callable[[str], None],
                 part: str) -> tuple[S3Place | None, str]:
    """A gateway for a part's run as a place with a bucket, stopped when stack closes; and a
    line saying how it started, or, without a place, why its cells are n/a (Ceph missing or the
    gateway failed: neither is a problem of maiffs, so the part's other cells still run)."""
    if missing := ceph_rgw.missing_commands():
        return None, f"n/a (Ceph not installed: no {', '.join(missing)}; contrib/test.sh installs it)"
    say(f"{part}: starting a Ceph RADOS Gateway (memstore {memstore_bytes / (1 << 30):.1f} GiB)")
    start = time.monotonic()
    try:
        gateway = ceph_rgw.start(memstore_bytes)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return None, f"n/a (the gateway did not start: {one_line(exc)})"
    stack.callback(gateway.stop)
    return S3Place(gateway), (f"gateway started in {time.monotonic() - start:.1f} s, memstore "
                              f"{memstore_bytes / (1 << 30):.1f} GiB, {gateway.endpoint}")


def ceph_version() -> str:
    return tool_version(["radosgw", "--version"], "ceph")


def start_gateway(stack: ExitStack, results: RemoteResults, memstore_bytes: int,
                  say: Callable[[str], None]) -> S3Place | None:
    """The run's gateway, stopped when stack closes; None (and the S3 cells n/a) without it."""
    place, line = open_gateway(stack, memstore_bytes, say, "remotes")
    if place is None:
        results.unavailable[S3.key] = {name: line for name in S3.subjects}
        say(f"remotes: S3: {line}")
    else:
        results.setup.append(line)
        results.tools["ceph"] = ceph_version()
    return place


def make_subjects(args: argparse.Namespace, workdir: Path, results: RemoteResults, places: list[Place],
                  store: Path) -> list[Subject]:
    """maiffs, rclone (if installed) and the plain copy, on every place there is."""
    rclone = find_tool(args.rclone)
    config = workdir / "rclone.conf"
    config.touch(mode=0o600)
    if rclone is None:
        for dest in DESTINATIONS:
            results.unavailable.setdefault(dest.key, {}).setdefault("rclone", "n/a (rclone not installed)")
        results.tools["rclone"] = "n/a (rclone not installed: apt-get install rclone)"
    else:
        results.tools["rclone"] = f"{rclone}: {tool_version([rclone, 'version'], 'rclone')}, defaults"
    flags = transfer_flags()
    results.tools["maiffs"] = "this checkout; " + ", ".join(
        f"maiffs {command} {' '.join(used) or '(no --json: counts from the human output)'}"
        for command, used in flags.items())
    results.tools["boto3"] = f"boto3 {boto3.__version__}, default TransferConfig, one file at a time"
    roots = snapshot_roots(store)
    subjects: list[Subject] = []
    for place in places:
        if isinstance(place, S3Place):
            config.write_text(place.rclone_config())
        subjects.append(MaiffsSubject(place, store, roots, flags))
        if rclone is not None:
            subjects.append(RcloneSubject(place, rclone, config))
        if isinstance(place, DirPlace):
            subjects.append(CpSubject(place))
        elif isinstance(place, S3Place):
            subjects.append(Boto3Subject(place))
    return subjects


def run(args: argparse.Namespace, workdir: Path, say: Callable[[str], None]) -> RemoteResults:
    results = RemoteResults()
    reps = args.remote_reps or args.reps
    data_root = workdir / "remote-data"
    say(f"remotes: making the data ({args.remote_mib} MiB file, {args.remote_files:,} small files, "
        f"each also with 1% changed)")
    results.datasets = [make_big(data_root, args.remote_mib * MIB),
                        make_small(data_root, args.remote_files, args.file_size, args.files_per_dir)]
    say("remotes: filling a maiffs store of its own (cp -a into the mount, snapshots before and after the change)")
    start = time.monotonic()
    target = MaiffsTarget(workdir, args.maiffs_options, tag="remote")
    fill_store(target, results.datasets, results.problems)
    results.setup.append(f"maiffs store filled in {time.monotonic() - start:.1f} s (cp -a into the "
                         f"mount, {2 * len(results.datasets)} snapshots, unmounted)")
    pulled = workdir / "remote-pulled"
    pulled.mkdir()
    with ExitStack() as stack:
        local = DirPlace(workdir / "remote-dir")
        places: list[Place] = [local]
        biggest = max(d.logical_bytes for d in results.datasets)
        if s3 := start_gateway(stack, results, max(ceph_rgw.MEMSTORE_BYTES, 3 * biggest + (1 << 30)), say):
            places.append(s3)
        subjects = make_subjects(args, workdir, results, places, target.store)
        for rep in range(reps):
            for subject in subjects:
                for data in results.datasets:
                    say(f"remotes: repetition {rep + 1} of {reps}: {subject.name} → "
                        f"{subject.place.destination.key}, {data.label}")
                    cycle(results, subject, data, rep, pulled)
        say("remotes: stopping the gateway")
    # The local copies (pushed to the directory remote, pulled from either) are removed only
    # now: on this VM's ext4, creating many files where many were just deleted costs up to
    # 10 times the CPU (see the snapshots part), which would slow down every next copy of the
    # small files by cp and rclone, and not maiffs's (its remote and its store hold few files).
    say("remotes: removing the copies")
    for leftover in (pulled, local.root, data_root):
        shutil.rmtree(leftover)
    return results
