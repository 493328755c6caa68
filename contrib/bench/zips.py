"""The zip part: browsing a zip through maiffs's `X.zip#/` next to ratarmount and fuse-zip.

Two zips are made with Python's zipfile (deflated, level 6), like `zip -r` would make them
(Unix mode bits with the file type, which fuse-zip needs: without S_IFREG in the external
attributes, as `ZipFile.writestr(name, ...)` leaves them, fuse-zip answers every stat with EIO):

- small: `--zip-members` members (default 100,000) of 1-4 KiB of web-service log lines, each
  from a random place of one generated log and headed by a random token, in 100 directories;
- large: `--zip-large-members` members (default 4) of `--zip-large-mib` MiB (default 64),
  each alternating 1 MiB of log text with 1 MiB of random bytes.

Each zip is copied into a fresh maiffs store of this part's own (`WORKDIR/store-zip` mounted on
`WORKDIR/maiffs-zip`, after the other parts are unmounted) and browsed as `X.zip#/`; the same
file on the local disk (`WORKDIR/zip-plain/`) is mounted with `ratarmount ZIP MNT` and with
`fuse-zip -r ZIP MNT`, each with its default options, in the foreground (`-f`) so that the
harness owns the process and can kill it if the unmount fails.

Every timing is cold and starts from an archive nobody has opened: the page cache is dropped;
maiffs is unmounted and mounted again before the timer starts (maiffs is the filesystem the
zip lives in, mounted anyway; `X.zip#`'s central directory is parsed again on the first lookup,
inside the timing) and ratarmount and fuse-zip are unmounted, and their timing includes their mount
command (process start-up, opening the archive and, for ratarmount, reading or building its
index), since that is where they read the archive. The cases, per archive and repetition, each
on the three in turn:

- mount / enter: ratarmount or fuse-zip mounted, ready; maiffs: `stat X.zip#`;
- list, first time: then `find ROOT -type f`, its lines counted. Before it, ratarmount's
  index (`ZIP.index.sqlite`, written beside the archive for 1,000 members or more, else kept in
  memory) is deleted, so this time includes building it: what a user pays the first time;
- list again: the same with the index kept (only ratarmount differs from the first time);
- read 1 member: open and read the member in the middle of the central directory, CRC-32
  compared with the zip's;
- read all: walk the tree (directories sorted, so every reader goes through the archive in
  the same, central directory order) and read every file in 1 MiB reads, the CRC-32 and size of
  each compared with the zip's (the CRC costs ~0.04 s per 256 MiB, the same for all three).

Wrong data from maiffs is a PROBLEM (exit status 1). A baseline that is not installed, does
not mount, fails or returns wrong data is "n/a" with the reason, and the others still run.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import stat
import subprocess
import sys
import time
import zipfile
import zlib
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from contrib.bench.data import LogText, RandomData, generate_log_tile
from contrib.bench.measure import Sample, Summary
from contrib.bench.system import (cache_drops, cpu_seconds, drop_caches, is_mountpoint, lazy_unmount,
                                 unmount_and_stop)
from contrib.bench.targets import BenchError, MaiffsTarget

MIB = 1 << 20
#: Subjects, in the order they run and appear in the table.
SUBJECTS = ("maiffs", "ratarmount", "fuse-zip")
SMALL_DIRS = 100
#: Seconds a mount may take to appear (ratarmount builds its index before mounting).
MOUNT_TIMEOUT = 600.0
READ_BLOCK = MIB


@dataclass(frozen=True)
class Case:
    key: str
    label: str


ENTER = Case("enter", "mount / enter the archive")
LIST_FIRST = Case("list-first", "list all files, first time (ratarmount builds its index)")
LIST_AGAIN = Case("list-again", "list all files again (ratarmount's index kept)")
READ_ONE = Case("read-one", "open + read 1 member (middle of the central directory)")
READ_ALL = Case("read-all", "read all members (walk + read every file)")
#: The order of the table's rows.
CASES = (ENTER, LIST_FIRST, LIST_AGAIN, READ_ONE, READ_ALL)
#: The order they run in: the first listing first, so that nothing before it in a repetition
#: has built ratarmount's index.
RUN_ORDER = (LIST_FIRST, ENTER, LIST_AGAIN, READ_ONE, READ_ALL)


@dataclass
class Archive:
    """One zip on the local disk, and what its members must read back as."""

    key: str  # "small" or "large"
    description: str
    path: Path
    expected: dict[str, tuple[int, int]]  # member path -> (size, CRC-32)
    middle: str  # the member in the middle of the central directory
    zip_bytes: int
    logical_bytes: int
    make_seconds: float
    copy_seconds: float = 0.0

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class ZipResults:
    archives: list[Archive] = field(default_factory=list)
    #: samples[archive key][case key][subject] -> samples
    samples: dict[str, dict[str, dict[str, list[Sample]]]] = field(default_factory=dict)
    #: Why a subject has no numbers for an archive (not installed, failed to mount, ...).
    unavailable: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Per archive, case and subject: why the samples of that case were thrown away.
    failed: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    ratarmount_index: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, archive: Archive, case: Case, subject: str, sample: Sample) -> None:
        self.samples.setdefault(archive.key, {}).setdefault(case.key, {}).setdefault(
            subject, []).append(sample)

    def summary(self, archive: str, case: str, subject: str) -> Summary | None:
        if self.reason(archive, case, subject):
            return None
        samples = self.samples.get(archive, {}).get(case, {}).get(subject)
        return Summary.of(samples, "time") if samples else None

    def reason(self, archive: str, case: str, subject: str) -> str | None:
        """Why there is no number for this cell, if there is none on purpose."""
        return (self.unavailable.get(archive, {}).get(subject)
                or self.failed.get(archive, {}).get(case, {}).get(subject))


# -- making the zips ---------------------------------------------------------------------------
def _member_info(name: str) -> zipfile.ZipInfo:
    """What `zip` writes for a regular file: Unix mode with its type, deflated."""
    info = zipfile.ZipInfo(name, date_time=(2026, 1, 2, 3, 4, 6))
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _finish(key: str, description: str, path: Path, start: float) -> Archive:
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
    expected = {i.filename: (i.file_size, i.CRC) for i in infos}
    return Archive(key, description, path, expected, infos[len(infos) // 2].filename,
                   path.stat().st_size, sum(i.file_size for i in infos),
                   time.monotonic() - start)


def make_small_zip(path: Path, count: int, seed: int = 1) -> Archive:
    """count members of 1-4 KiB of log text with a random token each, in SMALL_DIRS dirs."""
    start = time.monotonic()
    rnd = random.Random(seed)
    pool = generate_log_tile(8 * MIB, seed=seed)
    dirs = min(SMALL_DIRS, count)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(count):
            size = rnd.randint(1024, 4096)
            head = f"member {i} token {rnd.getrandbits(64):016x}\n".encode()
            at = rnd.randrange(len(pool) - size)
            name = f"dir{i * dirs // count:03d}/member{i:06d}.log"
            z.writestr(_member_info(name), head + pool[at:at + size - len(head)])
    return _finish("small", f"{count:,} members of 1-4 KiB (log text), {dirs} directories",
                   path, start)


def make_large_zip(path: Path, count: int, size_mib: int, seed: int = 1) -> Archive:
    """count members of size_mib MiB, alternating 1 MiB of log text and 1 MiB of random bytes."""
    start = time.monotonic()
    half = count * size_mib * MIB // 2 + MIB
    text = LogText(f"zip-large-{seed}", half).make(0)
    noise = RandomData(f"zip-large-{seed}", half).make(0)
    text_at = noise_at = 0
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for k in range(count):
            with z.open(_member_info(f"large/part{k}.bin"), "w") as out:
                for block in range(size_mib):
                    if block % 2:
                        out.write(noise[noise_at:noise_at + MIB])
                        noise_at += MIB
                    else:
                        out.write(text[text_at:text_at + MIB])
                        text_at += MIB
    return _finish("large", f"{count} members of {size_mib} MiB (1 MiB log text / 1 MiB random)",
                   path, start)


# -- what is timed -----------------------------------------------------------------------------
class WrongData(Exception):
    """A subject listed or read something else than the zip holds."""


def read_crc(path: Path, buf: bytearray) -> tuple[int, int]:
    """(size, CRC-32) of a file read in len(buf)-sized reads."""
    view = memoryview(buf)
    crc = size = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            crc = zlib.crc32(view[:n], crc)
            size += n
    return size, crc


def list_files(root: Path, expected: int) -> float:
    """`find ROOT -type f`, its output read; its line count must be the member count."""
    done = subprocess.run(["find", str(root), "-type", "f"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, check=False)
    if done.returncode != 0:
        raise OSError(f"find failed: {done.stderr.decode(errors='replace').strip()[:300]}")
    if (lines := done.stdout.count(b"\n")) != expected:
        raise WrongData(f"find -type f listed {lines} files, expected {expected}")
    return lines


def read_one(root: Path, archive: Archive) -> float:
    size, crc = read_crc(root / archive.middle, bytearray(READ_BLOCK))
    if (size, crc) != archive.expected[archive.middle]:
        raise WrongData(f"{archive.middle} read back {size} bytes with CRC {crc:#010x}, "
                        f"expected {archive.expected[archive.middle]}")
    return size


def read_all(root: Path, archive: Archive) -> float:
    """Walk in sorted order, read every file; all must match the zip, none may be missing."""
    buf = bytearray(READ_BLOCK)
    seen, total, wrong = 0, 0, []
    for top, dirs, files in os.walk(root):
        dirs.sort()
        rel = os.path.relpath(top, root)
        for name in sorted(files):
            member = name if rel == "." else f"{rel}/{name}"
            got = read_crc(Path(top) / name, buf)
            seen += 1
            total += got[0]
            if archive.expected.get(member) != got:
                wrong.append(member)
    if wrong or seen != len(archive.expected):
        raise WrongData(f"read {seen} files of {len(archive.expected)}, {len(wrong)} with the wrong "
                        f"size or CRC{', e.g. ' + wrong[0] if wrong else ''}")
    return total


# -- the three subjects ------------------------------------------------------------------------
class Subject:
    """One way of browsing the archives. `root` is called inside the timed section: it mounts
    whatever needs mounting and returns the directory that shows the archive's members."""

    name = ""

    def cold(self) -> None:
        """Forget everything about the archive: unmount (or remount), drop the page cache."""
        raise NotImplementedError

    def root(self, archive: Archive) -> Path:
        raise NotImplementedError

    def pid(self) -> int | None:
        return None


class MaiffsSubject(Subject):
    name = "maiffs"

    def __init__(self, target: MaiffsTarget) -> None:
        self.target = target

    def cold(self) -> None:
        self.target.make_cold()

    def root(self, archive: Archive) -> Path:
        root = self.target.path / f"{archive.name}#"
        os.stat(root)  # the lookup that parses the central directory
        return root

    def pid(self) -> int | None:
        return self.target.daemon_pid()


class ProcessSubject(Subject):
    """A FUSE program run in the foreground on one archive at a time; stop() always unmounts
    and, if the program does not exit then, kills it (and lazily detaches a dead mount)."""

    tool = ""
    version_flag = ""
    install = ""

    def __init__(self, name: str, argv: list[str], mountpoint: Path, log: Path) -> None:
        self.name = name
        self.argv = argv
        self.mountpoint = mountpoint
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_start = 0  # where the output of the last start begins in the log
        mountpoint.mkdir()

    def __enter__(self) -> "ProcessSubject":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def cold(self) -> None:
        self.stop()
        drop_caches()

    def root(self, archive: Archive) -> Path:
        if self.proc is not None:
            return self.mountpoint
        with open(self.log, "ab") as log:
            log.write(f"--- {' '.join(self.argv)} {archive.path} {self.mountpoint}\n".encode())
            log.flush()
            self.log_start = log.tell()
            self.proc = subprocess.Popen([*self.argv, str(archive.path), str(self.mountpoint)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not is_mountpoint(self.mountpoint):
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited ({self.proc.returncode}) without mounting: "
                                 f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not mount in {MOUNT_TIMEOUT:.0f} s")
            time.sleep(0.002)
        return self.mountpoint

    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        try:
            unmount_and_stop(self.mountpoint, proc, 15)
        finally:
            lazy_unmount(self.mountpoint)

    def log_tail(self) -> str:
        """The last lines the program printed since it was last started."""
        try:
            with open(self.log, "rb") as log:
                log.seek(self.log_start)
                lines = log.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return " | ".join(lines[-3:])[-500:] or "no output"


class Ratarmount(ProcessSubject):
    tool = "ratarmount"
    version_flag = "--version"
    install = "pip install ratarmount"

    def __init__(self, command: str, workdir: Path) -> None:
        super().__init__(self.tool, [command, "-f"], workdir / "zip-ratarmount",
                         workdir / "ratarmount.log")

    @staticmethod
    def index_file(archive: Archive) -> Path:
        """Where ratarmount writes its index by default (the first of --index-folders)."""
        return archive.path.with_name(archive.path.name + ".index.sqlite")

    def forget_index(self, archive: Archive) -> None:
        self.index_file(archive).unlink(missing_ok=True)


class FuseZip(ProcessSubject):
    tool = "fuse-zip"
    version_flag = "-V"
    install = "apt-get install fuse-zip"

    def __init__(self, command: str, workdir: Path) -> None:
        super().__init__(self.tool, [command, "-f", "-r"], workdir / "zip-fuse-zip",
                         workdir / "fuse-zip.log")


def find_tool(command: str) -> str | None:
    """command as given if it has a '/', else from the venv's bin directory, else from PATH."""
    if os.sep in command:
        return command if os.access(command, os.X_OK) else None
    return shutil.which(command, path=os.pathsep.join([str(Path(sys.executable).parent),
                                                      os.environ.get("PATH", os.defpath)]))


def tool_version(argv: list[str], tool: str) -> str:
    """The first line of `TOOL --version` that names the tool (fuse-zip -V prints libfuse's
    and fusermount3's versions too, partly on stdout and partly on stderr)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = (done.stdout + "\n" + done.stderr).strip().splitlines()
    return next((line.strip() for line in lines if tool in line), lines[0] if lines else "unknown")


# -- the part ----------------------------------------------------------------------------------
def timed(subject: Subject, operation: Callable[[], float]) -> Sample:
    """Time operation and the CPU of the process serving the subject (for ratarmount and
    fuse-zip, started inside the operation: all of its CPU time so far is the operation's)."""
    pid = subject.pid()
    drops_before, cpu_before = cache_drops(), cpu_seconds(pid)
    start = time.perf_counter()
    amount = operation()
    seconds = time.perf_counter() - start
    after = subject.pid()
    if after != pid:
        cpu_before = 0.0
    cpu_after = cpu_seconds(after)
    cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
    return Sample(seconds, amount, cpu, cache_drops() - drops_before)


def _operation(case: Case, subject: Subject, archive: Archive) -> Callable[[], float]:
    def enter() -> float:
        subject.root(archive)
        return len(archive.expected)

    return {
        ENTER.key: enter,
        LIST_FIRST.key: lambda: list_files(subject.root(archive), len(archive.expected)),
        LIST_AGAIN.key: lambda: list_files(subject.root(archive), len(archive.expected)),
        READ_ONE.key: lambda: read_one(subject.root(archive), archive),
        READ_ALL.key: lambda: read_all(subject.root(archive), archive),
    }[case.key]


def measure(results: ZipResults, archive: Archive, case: Case, subject: Subject) -> None:
    """One cold sample. A baseline's failure makes its cell n/a; maiffs's is a PROBLEM."""
    if results.reason(archive.key, case.key, subject.name):
        return
    subject.cold()
    if isinstance(subject, Ratarmount) and case is LIST_FIRST:
        subject.forget_index(archive)
    try:
        sample = timed(subject, _operation(case, subject, archive))
    except (WrongData, OSError, BenchError) as exc:
        if isinstance(subject, MaiffsSubject) and isinstance(exc, BenchError):
            raise  # maiffs itself did not mount: the harness stops, as the other parts do
        why = f"{'wrong data' if isinstance(exc, WrongData) else 'failed'}: {exc}"
        results.failed.setdefault(archive.key, {}).setdefault(case.key, {})[subject.name] = why
        if isinstance(subject, MaiffsSubject):
            results.problems.append(f"maiffs: {archive.name}#: {case.label}: {why}")
        elif isinstance(exc, BenchError):  # it did not even mount: not tried again on this zip
            results.unavailable.setdefault(archive.key, {})[subject.name] = f"n/a: {exc}"
        else:
            results.notes.append(f"{subject.name}, {archive.key} zip, {case.label}: {why}")
        return
    results.add(archive, case, subject.name, sample)
    if isinstance(subject, Ratarmount) and case is LIST_FIRST:
        index = Ratarmount.index_file(archive)
        results.ratarmount_index[archive.key] = (
            f"{index.name} beside the archive, {index.stat().st_size / MIB:.1f} MiB"
            if index.exists() else "in memory (no index file written)")


def run(args: argparse.Namespace, workdir: Path, say: Callable[[str], None]) -> ZipResults:
    results = ZipResults()
    reps = args.zip_reps or args.reps
    plain = workdir / "zip-plain"
    plain.mkdir()
    say(f"zips: making the small zip ({args.zip_members:,} members)")
    archives = [make_small_zip(plain / "small.zip", args.zip_members)]
    say(f"zips: making the large zip ({args.zip_large_members} × {args.zip_large_mib} MiB)")
    archives.append(make_large_zip(plain / "large.zip", args.zip_large_members, args.zip_large_mib))
    results.archives = archives

    with ExitStack() as stack:
        maiffs = stack.enter_context(MaiffsTarget(workdir, args.maiffs_options, tag="zip"))
        subjects: list[Subject] = [MaiffsSubject(maiffs)]
        results.tools["maiffs"] = (f"X.zip# of this checkout, mount options: "
                                   f"{args.maiffs_options or 'the defaults'}")
        for cls, command in ((Ratarmount, args.ratarmount), (FuseZip, args.fuse_zip)):
            found = find_tool(command)
            if found is None:
                reason = f"n/a: {command} not found ({cls.install})"
                results.tools[cls.tool] = reason
                for archive in archives:
                    results.unavailable.setdefault(archive.key, {})[cls.tool] = reason
                say(f"zips: {cls.tool}: {reason}")
                continue
            results.tools[cls.tool] = f"{found}: {tool_version([found, cls.version_flag], cls.tool)}"
            subjects.append(stack.enter_context(cls(found, workdir)))

        for archive in archives:
            say(f"zips: copying {archive.name} ({archive.zip_bytes / MIB:,.1f} MiB) into maiffs")
            start = time.monotonic()
            shutil.copyfile(archive.path, maiffs.path / archive.name)
            archive.copy_seconds = time.monotonic() - start

        for archive in archives:
            say(f"zips: {archive.key} zip, {reps} × {len(CASES)} cold cases × {len(subjects)} subjects")
            for rep in range(reps):
                for case in RUN_ORDER:
                    for subject in subjects:
                        measure(results, archive, case, subject)
                say(f"zips: {archive.key} zip, repetition {rep + 1} of {reps} done")
        say("zips: unmounting")
    return results
