"""Fixtures that mount a fresh store for real and always unmount it, even when a test fails."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from maiffs.mounts import find_mount, is_mountpoint
from maiffs.store.lock import holder_pid

MAIFFS = [sys.executable, "-m", "maiffs"]


def maiffs(*args: str | os.PathLike, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run the maiffs command; with check, fail the test with its stderr if it fails."""
    done = subprocess.run([*MAIFFS, *map(str, args)], capture_output=True, text=True, **kw)
    if check and done.returncode != 0:
        raise AssertionError(f"maiffs {' '.join(map(str, args))} failed ({done.returncode}): "
                             f"{done.stderr.strip()}")
    return done


class MaiffsMount:
    """A store and its mount point; mount/unmount/remount/kill it like a user would."""

    def __init__(self, store: Path, path: Path, options: list[str]) -> None:
        self.store = store
        self.path = path
        self.options = options

    def mount(self) -> None:
        opts = ["-o", ",".join(self.options)] if self.options else []
        maiffs("mount", self.store, self.path, *opts)

    def unmount(self) -> None:
        maiffs("umount", self.path)

    def remount(self) -> None:
        self.unmount()
        self.mount()

    def daemon_pid(self) -> int:
        pid = holder_pid(str(self.store))
        assert pid is not None, "no daemon holds the store"
        return pid

    def kill(self) -> None:
        """SIGKILL the daemon (a crash), then clear the dead mount as an admin would."""
        pid = self.daemon_pid()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.02)
        subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)

    def cleanup(self) -> None:
        if find_mount(str(self.path)) is not None:
            if maiffs("umount", self.path, check=False).returncode == 0:
                return
        if is_mountpoint(str(self.path)):
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)
            pid = holder_pid(str(self.store))
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def make_mount(base: Path, options: list[str] | None = None) -> MaiffsMount:
    store, mnt = base / "store", base / "mnt"
    mnt.mkdir()
    maiffs("mkfs", store)
    return MaiffsMount(store, mnt, list(options or []))


@contextmanager
def mount_session(base: Path, options: list[str] | None = None) -> Iterator[MaiffsMount]:
    """A fresh store mounted under base; unmounted (or killed) afterwards whatever happens."""
    m = make_mount(base, options)
    m.mount()
    try:
        yield m
    finally:
        m.cleanup()


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[MaiffsMount]:
    """A fresh store mounted on tmp_path/mnt for one test."""
    with mount_session(tmp_path) as m:
        yield m


@pytest.fixture
def remount(tmp_path: Path) -> Iterator[Callable[[Path], MaiffsMount]]:
    """remount(store) mounts an existing (e.g. repaired) store on a fresh mount point; every
    one is unmounted afterwards."""
    mounts: list[MaiffsMount] = []

    def mount(store: Path) -> MaiffsMount:
        mnt = tmp_path / f"mnt{len(mounts)}"
        mnt.mkdir()
        m = MaiffsMount(store, mnt, [])
        mounts.append(m)
        m.mount()
        return m

    try:
        yield mount
    finally:
        for m in mounts:
            m.cleanup()


@pytest.fixture
def mounted_shared(tmp_path: Path) -> Iterator[MaiffsMount]:
    """Like `mounted`, with -o allow_other for tests that switch to other users."""
    with mount_session(tmp_path, ["allow_other"]) as m:
        yield m


def as_user(dir_fd: int, uid: int, gid: int, action) -> object:
    """Run action(dir_fd) in a child with uid/gid and no groups; return its result or errno."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            try:
                result = action(dir_fd)
            except OSError as exc:
                result = {"errno": exc.errno}
            os.write(write_end, json.dumps(result).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        out = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "child failed"
    return json.loads(out)


def failed_with(result) -> int | None:
    return result.get("errno") if isinstance(result, dict) else None


pytest_plugins = ["remote_spots",  # the remote fixtures (a directory, a Ceph RGW bucket)
                  "watchdog"]  # a hung test fails with stacks instead of stalling the run


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true",
                     help="run the long versions of the crash and stress tests (docs/reliability.md); "
                          "CI runs the short ones")


@pytest.fixture
def long_run(request: pytest.FixtureRequest) -> bool:
    """True under `pytest --long`: tests with a short and a full length run the full one."""
    return bool(request.config.getoption("--long"))
