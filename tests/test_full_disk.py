"""A full disk, proven through real mounts: the writing program gets ENOSPC, earlier files stay
whole, the daemon lives, freeing space makes writes work again, fsck is clean, a remount has
everything; and LMDB's map-full never reaches a user.

Each mount test puts the store on a small tmpfs of its own (unmounted in a finalizer after the
daemon is gone); the map tests drive the store layer itself, since the daemon's 1 GiB initial
map cannot be outgrown by a small test.
"""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import MaiffsMount, maiffs
from fsutil import read_file, run, wait_for
from maiffs.errors import FsError
from maiffs.store import Store
from maiffs.store import env as store_env

DISK_MB = 64
MiB = 1 << 20


# -- the small disk ----------------------------------------------------------------------------
def unmount_disk(disk: Path) -> None:
    """Unmount the tmpfs; a daemon that just let go of the store may hold its log a moment."""
    for _ in range(100):
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode == 0:
            return
        time.sleep(0.05)
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A DISK_MB tmpfs of its own, always unmounted afterwards."""
    path = tmp_path / "disk"
    path.mkdir()
    run("mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", path)
    try:
        yield path
    finally:
        unmount_disk(path)


@pytest.fixture
def small(disk: Path, tmp_path: Path) -> Iterator[MaiffsMount]:
    """A store on the small disk, mounted (commit_interval 0.5 s, so a test waits little);
    unmounted, or its daemon killed, whatever happens."""
    (tmp_path / "mnt").mkdir()
    m = MaiffsMount(disk / "store", tmp_path / "mnt", ["commit_interval=0.5"])
    maiffs("mkfs", m.store)
    m.mount()
    try:
        yield m
    finally:
        pid = holder_pid_or_none(m)
        m.cleanup()
        if pid:
            wait_for(lambda: not os.path.exists(f"/proc/{pid}"), "the daemon exits")


def holder_pid_or_none(m: MaiffsMount) -> int | None:
    try:
        return m.daemon_pid()
    except AssertionError:
        return None


def fill_disk(disk: Path) -> Path:
    """Take every free byte of the disk with a file beside the store (another program
    filling the disk); return it, to delete when room is wanted again."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        for block in (MiB, 4096):
            try:
                while True:
                    f.write(bytes(block))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


def alive(m: MaiffsMount) -> None:
    """The daemon still runs and the mount answers."""
    os.kill(m.daemon_pid(), 0)
    os.listdir(m.path)
    json.loads(read_file(m.path / ".maiffs" / "stats"))


# -- LMDB's map, at the store layer --------------------------------------------------------------
def vm_size() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmSize:\s+(\d+) kB", status).group(1)) * 1024


def in_child(fn) -> dict:
    """Run fn() in a forked child (it may limit its own address space); return its JSON result."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - the parent reports it
                result = {"exception": repr(exc)}
            os.write(write_end, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        out = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"child failed: {out!r}"
    result = json.loads(out)
    assert "exception" not in result, f"child raised {result['exception']}"
    return result


def put_until_refused(store: Store, value: bytes, limit: int = 10_000) -> tuple[int, FsError | None]:
    """Commit records 0, 1, ... (value each) until a write fails; (how many committed, error)."""
    for i in range(limit):
        try:
            store.write(lambda txn: txn.put("chunks", i.to_bytes(8, "big"), value),
                        expected_bytes=len(value))
        except FsError as exc:
            return i, exc
    return limit, None


def committed(store: Store, count: int, value: bytes) -> bool:
    with store.read() as txn:
        return all(txn.get("chunks", i.to_bytes(8, "big")) == value for i in range(count))


def small_map(monkeypatch) -> None:
    """Start stores with a 4 MiB map and grow it when 1 MiB is left, so tests reach growth."""
    monkeypatch.setattr(store_env, "INITIAL_MAP_SIZE", 4 * MiB)
    monkeypatch.setattr(store_env, "HEADROOM", 1 * MiB)


def test_map_growth_on_a_full_disk_gives_enospc(disk, monkeypatch):
    """The map grows several times as the store fills a 64 MiB disk; what ends it is the disk,
    reported as ENOSPC, never MapFullError, and every earlier record reopens intact."""
    small_map(monkeypatch)
    value = os.urandom(256 << 10)
    store = Store.create(str(disk / "store"))
    count, error = put_until_refused(store, value)
    grown_to = store.env.info()["map_size"]
    assert error is not None and error.errno == errno.ENOSPC, f"the full disk gave {error!r}"
    assert grown_to >= 32 * MiB, f"the map never grew ({grown_to} bytes)"
    assert count * len(value) > (DISK_MB - 16) * MiB, f"only {count} records fitted"
    assert committed(store, count, value)
    store.close()
    store = Store.open(str(disk / "store"))
    assert committed(store, count, value), "records lost after reopening"
    store.close()


def test_map_that_cannot_grow_gives_enospc_and_the_store_goes_on(tmp_path, monkeypatch):
    """With too little address space to grow the map (ulimit -v), the write that needed it
    fails with ENOSPC, the store keeps serving, grows once address space is there again, and
    reopens whole.
    (Before: set_mapsize's MemoryError escaped as EIO and py-lmdb had closed the environment,
    so every later request of the mount failed.)"""
    small_map(monkeypatch)
    path = str(tmp_path / "store")
    value = os.urandom(256 << 10)

    def limited() -> dict:
        store = Store.create(path)
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (vm_size() + 48 * MiB, hard))
        count, error = put_until_refused(store, value)
        out = {"count": count, "errno": error and error.errno, "map": store.env.info()["map_size"],
               "readable": committed(store, count, value)}
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))  # address space again: it grows
        for i in range(count, count + 8):
            store.write(lambda txn: txn.put("chunks", i.to_bytes(8, "big"), value))
        out["after"] = committed(store, count + 8, value)
        store.close()
        return out

    result = in_child(limited)
    assert result["errno"] == errno.ENOSPC, result
    assert result["map"] < 64 * MiB and result["count"] >= 8, result
    assert result["readable"] and result["after"], result
    store = Store.open(path)
    assert committed(store, result["count"] + 8, value), "records lost after reopening"
    store.close()


# -- through a mount ---------------------------------------------------------------------------
def write_synced(path: Path, data: bytes) -> OSError | None:
    """Write, fsync and close path as a careful program does; the error it met, if any."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError as exc:
        try:
            os.close(fd)
        except OSError:
            pass
        return exc
    try:
        os.close(fd)
    except OSError as exc:
        return exc
    return None


def refused_for_space(*command: str | os.PathLike) -> None:
    """An ordinary tool writing into the full mount exits non-zero saying so."""
    done = run(*command, ok=False)
    assert done.returncode != 0, f"{command[0]} succeeded on a full disk"
    assert "No space left on device" in done.stderr, done.stderr


def assert_files(m: MaiffsMount, files: dict[str, bytes], what: str) -> None:
    for name, data in files.items():
        assert read_file(m.path / name) == data, f"{name} damaged {what}"


def test_filling_the_store(small, disk, tmp_path):
    """Fill the store with fsynced files until the disk is full: the program gets ENOSPC,
    everything fsynced before is intact, cp and dd say "No space left on device", the mount
    lives. With the rest of the disk taken by another file, only the store's own reclaim can
    help: deleting files held by a snapshot frees nothing until the snapshot is deleted,
    then writes work again (LMDB reuses the pages; its file does not shrink). fsck is clean
    and a remount has everything."""
    m = small
    kept: dict[str, bytes] = {}
    failure = None
    for i in range(DISK_MB):  # 2 MiB each: the disk is full long before the end
        name, data = f"f{i:03d}", os.urandom(2 * MiB)
        failure = write_synced(m.path / name, data)
        if failure is not None:
            break
        kept[name] = data
        if i == 9:
            os.mkdir(m.path / ".snapshots" / "early")  # holds f000-f009: 20 MiB
    assert failure is not None and failure.errno == errno.ENOSPC, f"the full disk gave {failure!r}"
    assert len(kept) >= 20, f"only {len(kept)} files of 2 MiB fitted on {DISK_MB} MiB"
    alive(m)
    assert_files(m, kept, "by the full disk")

    source = tmp_path / "source"
    source.write_bytes(os.urandom(16 * MiB))
    refused_for_space("cp", source, m.path / "copy")
    refused_for_space("dd", f"if={source}", f"of={m.path / 'dd'}", "bs=1M", "conv=fsync")
    alive(m)

    fill_disk(disk)
    early = sorted(kept)[:10]
    run("rm", *(m.path / name for name in early))
    for name in early:
        del kept[name]
    refused_for_space("dd", f"if={source}", f"of={m.path / 'dd'}", "bs=1M", "count=8", "conv=fsync")
    os.rmdir(m.path / ".snapshots" / "early")  # now 20 MiB of the store's file are free
    run("dd", f"if={source}", f"of={m.path / 'dd'}", "bs=1M", "count=4", "conv=fsync")
    kept["dd"] = source.read_bytes()[:4 * MiB]
    kept["copy"] = os.urandom(4 * MiB)
    source.write_bytes(kept["copy"])
    run("cp", source, m.path / "copy")
    assert_files(m, kept, "after space was freed")

    m.unmount()
    assert "is clean" in maiffs("fsck", m.store).stdout
    m.mount()
    names = set(os.listdir(m.path))
    assert set(kept) <= names and not names & set(early), f"after remounting: {sorted(names)}"
    assert_files(m, kept, "after remounting")


def rewrite_first_byte_until_refused(fd: int, first: bytes) -> None:
    """Rewrite byte 0 with what it holds until a write fails (changing nothing): the failure
    the background commit met is handed to the program at its next write."""
    deadline = time.monotonic() + 20
    while True:
        try:
            os.pwrite(fd, first, 0)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, f"the failed commit gave {exc!r}"
            return
        assert time.monotonic() < deadline, "the failed background commit was never reported"
        time.sleep(0.3)


@pytest.mark.parametrize("freed", [False, True], ids=["still-full", "space-freed"])
def test_disk_fills_before_group_commit(small, disk, freed):
    """Data written without fsync waits for the group commit; when the disk fills first, that
    commit fails and nothing is reported as stored that is not. The next write() gets ENOSPC
    (its data not taken); the data accepted before stays buffered; fsync and close then report
    ENOSPC while the disk is full, and succeed with every accepted byte stored once space is
    freed (as ext4 reports ENOSPC at write or at fsync/close, never losing data silently).
    Meanwhile `cat` of the file succeeds. (Before, a reader's close committed the writer's
    data too, and failed with ENOSPC.)"""
    m = small
    early = os.urandom(4 * MiB)
    assert write_synced(m.path / "early", early) is None
    late = os.urandom(8 * MiB)
    fd = os.open(m.path / "late", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        assert os.write(fd, late) == len(late)
        filler = fill_disk(disk)
        rewrite_first_byte_until_refused(fd, late[:1])
        # a reader sees the buffered bytes, and its close is not failed by the writer's data
        done = subprocess.run(["cat", m.path / "late"], capture_output=True)
        assert (done.returncode, done.stderr) == (0, b""), done.stderr
        assert done.stdout == late, "cat showed other bytes than the program wrote"
        if freed:
            filler.unlink()
            os.fsync(fd)
        else:
            with pytest.raises(OSError) as info:
                os.fsync(fd)
            assert info.value.errno == errno.ENOSPC, info.value
    finally:
        if freed:
            os.close(fd)
        else:
            with pytest.raises(OSError) as info:
                os.close(fd)
            assert info.value.errno == errno.ENOSPC, info.value
    alive(m)
    assert read_file(m.path / "early") == early
    if freed:
        assert read_file(m.path / "late") == late, "accepted data lost although fsync succeeded"
    else:
        filler.unlink()
    m.remount()
    assert read_file(m.path / "early") == early
    stored = read_file(m.path / "late")
    if freed:
        assert stored == late, "accepted data lost after remounting"
    else:  # what the failed commits left: some of what was written, nothing else
        assert stored == late[:len(stored)], "the failed file holds data never written"
