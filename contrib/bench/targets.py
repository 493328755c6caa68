"""The three places the workloads run in: memfs (the ceiling), a plain directory, and maiffs.

Each target is a context manager: entering mounts it (if it is a mount), leaving always
unmounts it, also when a workload failed half-way or the run was interrupted. A target can
also make itself "cold" between writing and reading, so that reads come from where the
filesystem keeps its data rather than from the kernel's page cache:

- plain directory: drop the page cache (the data comes from the disk);
- memfs: drop the page cache (its data lives in its process, which is all a RAM fs has);
- maiffs: unmount (which commits everything), mount again, then drop the page cache, so the
  daemon starts without its chunk cache and LMDB's pages come from the disk.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from contrib.bench.system import drop_caches, lazy_unmount, unmount_and_stop

MEMFS_SCRIPT = Path(__file__).with_name("memfs.py")
MAIFFS = [sys.executable, "-m", "maiffs"]


class BenchError(RuntimeError):
    """A target could not be set up or torn down; the message says which and why."""


def run(cmd: list[str], what: str, **kw: object) -> subprocess.CompletedProcess:
    """Run a command, raising BenchError with its stderr if it fails."""
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise BenchError(f"{what} failed ({done.returncode}): {done.stderr.strip()}")
    return done


class Target:
    """A directory the workloads run in. Subclasses that mount override the hooks."""

    #: Short name used in the table and JSON.
    name = "plain"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.path = workdir / self.name

    def __enter__(self) -> "Target":
        self.path.mkdir(parents=True)
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Mount (nothing to do for a plain directory)."""

    def stop(self) -> None:
        """Unmount, whatever state the mount is in (nothing to do for a plain directory)."""

    def restart(self) -> None:
        """Lose whatever the filesystem caches in its own process (only maiffs has such)."""

    def make_cold(self) -> None:
        self.restart()
        drop_caches()

    def daemon_pid(self) -> int | None:
        """The process serving the mount, whose CPU time is reported; None for a plain dir."""
        return None


class MemFsTarget(Target):
    """contrib/bench/memfs.py as a subprocess, mounted on WORKDIR/memfs."""

    name = "memfs"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        log = self.workdir / "memfs.log"  # a file, not a pipe nobody reads that could fill up
        with open(log, "w") as stderr:
            self.proc = subprocess.Popen([sys.executable, str(MEMFS_SCRIPT), str(self.path)],
                                         stdout=subprocess.PIPE, stderr=stderr, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline().strip() if ready and self.proc.stdout else ""
        if line != "ready":
            reason = log.read_text().strip() or "no answer in 30 s"
            raise BenchError(f"memfs did not mount on {self.path}: {reason}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            unmount_and_stop(self.path, proc, 10)  # memfs unmounts itself on SIGTERM
        finally:
            if proc.stdout:
                proc.stdout.close()
            lazy_unmount(self.path)

    def daemon_pid(self) -> int | None:
        return self.proc.pid if self.proc else None


class MaiffsTarget(Target):
    """A fresh maiffs store in WORKDIR/store, mounted on WORKDIR/maiffs with the CLI; with a
    tag, WORKDIR/store-TAG on WORKDIR/maiffs-TAG (a part's own, beside the others')."""

    name = "maiffs"
    #: The environment of `maiffs mount`, so of its daemon (None: this process's): a mount that
    #: talks to an S3 remote needs the credentials there.
    env: dict[str, str] | None = None

    def __init__(self, workdir: Path, options: str = "", tag: str = "") -> None:
        if tag:
            self.name = f"maiffs-{tag}"
        super().__init__(workdir)
        self.store = workdir / (f"store-{tag}" if tag else "store")
        self.options = options
        self.mounted = False

    def __enter__(self) -> "Target":
        self.create()
        return super().__enter__()

    def create(self) -> None:
        """Make the store (before the first mount)."""
        run([*MAIFFS, "mkfs", str(self.store)], "maiffs mkfs")

    def mount_argv(self) -> list[str]:
        """The mount command (a follower's differs)."""
        opts = ["-o", self.options] if self.options else []
        return [*MAIFFS, "mount", str(self.store), str(self.path), *opts]

    def start(self) -> None:
        self.mounted = True  # even a failed mount may leave something for stop() to clean up
        run(self.mount_argv(), "maiffs mount", env=self.env)

    def stop(self) -> None:
        if not self.mounted:
            return
        self.mounted = False
        pid = self.daemon_pid()
        if subprocess.run([*MAIFFS, "umount", str(self.path)], capture_output=True).returncode == 0:
            return
        lazy_unmount(self.path)
        if pid is not None:  # a daemon that cannot unmount cleanly is killed, as a crash would
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            _wait_gone(pid, 10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def daemon_pid(self) -> int | None:
        """From STORE/maiffs.lock, which the daemon fills with "pid N (mounted on ...)"."""
        try:
            words = (self.store / "maiffs.lock").read_text().split()
        except OSError:
            return None
        return int(words[1]) if len(words) > 1 and words[0] == "pid" and words[1].isdigit() else None

    def stat(self) -> dict[str, float]:
        """`maiffs stat --json` of the store (its committed state)."""
        return json.loads(run([*MAIFFS, "stat", "--json", str(self.store)], "maiffs stat").stdout)


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
