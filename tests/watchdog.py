"""A test that hangs fails, with the stacks that show where, instead of stalling the whole run.

A test blocks forever when a mount daemon stops answering (the test's file call waits in the
kernel for a reply that never comes) or when a maiffs command waits on one. After --hang-limit
seconds of one test, the watchdog prints the test's name and the Python stacks of pytest and
of every maiffs process of the run (each dumps its own on SIGUSR1: maiffs/logs.py; a daemon
into its log, whose new lines are printed here), then kills those processes and lazily unmounts
the run's maiffs mounts. The blocked call then fails (ECONNABORTED), and the test fails and
tears down as usual; if it is still stuck GRACE_S later, the run ends with exit code 1.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext

import pytest

from maiffs.mounts import maiffs_mounts

LIMIT_S = 600.0  # the slowest test of a CI run took 82 s here, on a loaded machine (--durations)
LONG_LIMIT_S = 3600.0  # under --long, one test runs for up to ~10 minutes (docs/reliability.md)
GRACE_S = 60.0
DUMP_WAIT_S = 2.0
COMMAND_NAMES = {"maiffs", "mount.fuse.maiffs", "umount.fuse.maiffs"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--hang-limit", type=float, metavar="SECONDS",
                     help=f"fail a test that runs longer than this, printing where it and the "
                          f"maiffs processes are stuck (default {LIMIT_S:.0f}, {LONG_LIMIT_S:.0f} "
                          f"under --long)")


class Watchdog:
    """One timer per test; what the test is stuck on is dumped and then ended when it fires."""

    def __init__(self, limit_s: float, basetemp: str) -> None:
        self.limit_s = limit_s
        self.basetemp = basetemp  # (processes of other test runs on the machine are left alone)
        self.running: str | None = None

    def start(self, nodeid: str, capture: object | None) -> threading.Timer:
        self.running = nodeid
        timer = threading.Timer(self.limit_s, self.fire, args=(nodeid, capture))
        timer.daemon = True
        timer.start()
        return timer

    def fire(self, nodeid: str, capture: object | None) -> None:
        # straight to the terminal (out of pytest's capture): seen even if the run is killed
        with capture.global_and_fixture_disabled() if capture is not None else nullcontext():
            self.unstick(nodeid)
        time.sleep(GRACE_S)
        if self.running == nodeid:
            print(f"=== watchdog: {nodeid} is still stuck; ending the run ===", file=sys.stderr,
                  flush=True)
            os._exit(1)

    def unstick(self, nodeid: str) -> None:
        print(f"\n\n=== watchdog: {nodeid} still running after {self.limit_s:.0f}s ===\n"
              f"--- pytest (pid {os.getpid()}):", file=sys.stderr, flush=True)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        pids = maiffs_processes(self.basetemp)
        for text in dump_stacks(pids):
            print(f"--- {text}", file=sys.stderr, flush=True)
        for pid in pids:
            _kill(pid)
        for entry in maiffs_mounts():
            if entry.mountpoint.startswith(self.basetemp):
                subprocess.run(["fusermount3", "-u", "-z", entry.mountpoint], capture_output=True)
        print(f"=== watchdog: killed {len(pids)} maiffs processes; {nodeid} should now fail ===",
              file=sys.stderr, flush=True)


def maiffs_processes(basetemp: str) -> list[int]:
    """This run's maiffs commands and mount daemons (`python -m maiffs ...`, or run by one of
    its names; a child of this process, or one whose command line names a path of this run)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        names = {os.path.basename(arg) for arg in argv[:2]}
        ours = _parent(entry) == os.getpid() or any(basetemp in arg for arg in argv)
        if ours and (names & COMMAND_NAMES or argv[1:3] == ["-m", "maiffs"]):
            found.append(int(entry))
    return found


def _parent(pid: str) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _log_files(pid: int) -> list[str]:
    """The log files a process has open (a daemon's maiffs.log or -o log=FILE)."""
    paths = []
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.endswith(".log") and os.path.isfile(target):
                paths.append(target)
    except OSError:
        pass
    return paths


def dump_stacks(pids: list[int]) -> list[str]:
    """Each process's command line and what it wrote to its log files on SIGUSR1 (its stacks;
    a command's go to its stderr, which the test that ran it has)."""
    logs = {pid: {path: os.path.getsize(path) for path in _log_files(pid)} for pid in pids}
    for pid in pids:
        _kill(pid, signal.SIGUSR1)
    time.sleep(DUMP_WAIT_S)
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                text = f"pid {pid}: {f.read().decode(errors='replace').replace(chr(0), ' ')}\n"
        except OSError:
            text = f"pid {pid} (gone)\n"
        for path, size in logs[pid].items():
            with open(path, errors="replace") as f:
                f.seek(size)
                text += f"{path}, new lines:\n{f.read()}"
        out.append(text)
    return out


def _kill(pid: int, signum: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


WATCHDOG = pytest.StashKey[Watchdog]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    watchdog = item.config.stash.get(WATCHDOG, None)
    if watchdog is None:
        basetemp = str(item.config._tmp_path_factory.getbasetemp())  # (as tmp_path has it)
        limit = item.config.getoption("--hang-limit") or (
            LONG_LIMIT_S if item.config.getoption("--long", default=False) else LIMIT_S)
        watchdog = item.config.stash[WATCHDOG] = Watchdog(limit, basetemp)
    timer = watchdog.start(item.nodeid, item.config.pluginmanager.getplugin("capturemanager"))
    try:
        yield
    finally:
        timer.cancel()
        watchdog.running = None
