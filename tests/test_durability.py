"""The durability contract (design.md §3, docs/architecture.md "Durability") against kill -9.

- What fsync/fdatasync/msync returned for survives kill -9 of the daemon, byte for byte.
- close() commits too: a closed file survives kill -9 without fsync.
- Data written more than a commit interval ago survives kill -9 without close or fsync.
- Unmounting (maiffs umount, or SIGTERM to the daemon) keeps everything written.
- After a crash the store mounts as it is (no fsck first), is consistent and keeps working.

The kill -9 test runs a writer in its own process (this file run as a script); it appends to a
manifest outside the mount, fsynced, what it has made durable, and an intent line before each
change, so the check knows for every file which states are allowed after the crash.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from conftest import MaiffsMount, maiffs, make_mount

MiB = 1 << 20


# -- content that the checker can regenerate -----------------------------------------------------
def gen_data(spec: str) -> bytes:
    """Bytes named by spec 'kind:seed:size': random, compressible text, or a shared (dedup) blob."""
    kind, seed, size = spec.split(":")
    n = int(size)
    if kind == "rand":
        return hashlib.shake_256(f"rand{seed}".encode()).digest(n)
    if kind == "text":
        line = f"line of compressible text from seed {seed} ".encode()
        return (line * (n // len(line) + 1))[:n]
    if kind == "pool":  # few seeds: many files share content (and chunks)
        return hashlib.shake_256(f"pool{seed}".encode()).digest(n)
    raise ValueError(spec)


def log_stream(seed: str, n: int) -> bytes:
    """The first n bytes of an append-only log's content (prefix-stable)."""
    return hashlib.shake_256(f"log{seed}".encode()).digest(n)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the writer (runs in its own process) ----------------------------------------------------------
def writer_main(mnt: str, manifest: str, seed: str, prefix: str) -> None:
    rng = random.Random(seed)
    man = open(manifest, "a")

    def note(*fields: str) -> None:
        man.write(" ".join(fields) + "\n")
        man.flush()
        os.fsync(man.fileno())

    def fsync_dir() -> None:
        fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(fd)
        os.close(fd)

    def new_spec() -> str:
        kind = rng.choices(["rand", "text", "pool"], [5, 2, 2])[0]
        size = rng.choice([0, 1, 100, 4095, 4096, 65_537, 300_000, MiB + 3, 3 * MiB, 5 * MiB + 11])
        if rng.random() < 0.04:  # past FLUSH_AT: flushed in the background while being written
            size = 34 * MiB + 5
        if kind == "pool":
            return f"pool:{rng.randrange(4)}:{size}"
        return f"{kind}:{prefix}{rng.random()}:{size}"

    def write_all(fd: int, data: bytes) -> None:
        view, off = memoryview(data), 0
        while off < len(data):
            n = rng.choice([1, 4096, 65_536, MiB, 4 * MiB])
            off += os.write(fd, view[off:off + n])

    durable: dict[str, bytes] = {}  # this cycle's files with their durable content
    unsynced_open: list[tuple[int, str]] = []
    log_name, log_size = f"{prefix}log", 0
    log_fd = os.open(os.path.join(mnt, log_name), os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
    for i in range(100_000):
        op = rng.choices(["new", "unsynced", "append", "overwrite", "replace", "delete"],
                         [6, 3, 3, 2, 2, 1])[0]
        if op in ("overwrite", "replace", "delete") and not durable:
            op = "new"
        if op == "new":
            name, spec = f"{prefix}f{i:05d}", new_spec()
            data = gen_data(spec)
            note("I", name, "new", spec)
            fd = os.open(os.path.join(mnt, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            write_all(fd, data)
            (os.fdatasync if i % 2 else os.fsync)(fd)
            os.close(fd)
            note("D", name)
            durable[name] = data
        elif op == "unsynced":  # written without fsync; closed a few steps later, or never
            name, spec = f"{prefix}u{i:05d}", new_spec()
            note("I", name, "new", spec)
            fd = os.open(os.path.join(mnt, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            write_all(fd, gen_data(spec))
            unsynced_open.append((fd, name))
            if len(unsynced_open) > 3:
                fd, name = unsynced_open.pop(0)
                os.close(fd)
                note("D", name)  # close() commits (docs/architecture.md, Durability)
        elif op == "append":
            n = rng.choice([1, 17, 4096, 50_000, 200_000])
            os.write(log_fd, log_stream(prefix, log_size + n)[log_size:])
            os.fsync(log_fd)
            log_size += n
            note("A", log_name, str(log_size))
        elif op == "overwrite":  # one 4 KiB block in place: old or new after a crash, never a mix
            candidates = sorted(n for n, d in durable.items() if len(d) >= 8192)
            if not candidates:
                continue
            name = rng.choice(candidates)
            data = bytearray(durable[name])
            off = rng.randrange(len(data) // 4096) * 4096
            block = rng.randbytes(4096)
            data[off:off + 4096] = block
            data = bytes(data)
            note("I", name, "change", sha(data), str(len(data)))
            fd = os.open(os.path.join(mnt, name), os.O_WRONLY)
            os.pwrite(fd, block, off)
            os.fsync(fd)
            os.close(fd)
            note("D", name)
            durable[name] = data
        elif op == "replace":  # an editor's save: temporary file, fsync, rename over, fsync dir
            name = rng.choice(sorted(durable))
            data = gen_data(new_spec())
            tmp = os.path.join(mnt, f"tmp-{prefix}{i}")
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            write_all(fd, data)
            os.fsync(fd)
            os.close(fd)
            note("I", name, "change", sha(data), str(len(data)))
            os.rename(tmp, os.path.join(mnt, name))
            fsync_dir()
            note("D", name)
            durable[name] = data
        elif op == "delete":
            name = rng.choice(sorted(durable))
            note("I", name, "delete")
            os.unlink(os.path.join(mnt, name))
            fsync_dir()
            note("D", name)
            del durable[name]


# -- the checker ----------------------------------------------------------------------------------
def check_against_manifest(mnt: Path, manifest: Path) -> int:
    """Check every file the manifest names; return how many were checked."""
    committed: dict[str, tuple] = {}  # name -> ("absent",) | ("spec", spec) | ("sha", sha, size)
    pending: dict[str, tuple] = {}
    logs: dict[str, int] = {}
    for line in manifest.read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "I":
            name, what = fields[1], fields[2]
            pending[name] = {"new": ("spec", *fields[3:]), "change": ("sha", *fields[3:]),
                             "delete": ("absent",)}[what]
            committed.setdefault(name, ("absent",))
        elif fields[0] == "D":
            committed[fields[1]] = pending.pop(fields[1])
        elif fields[0] == "A":
            logs[fields[1]] = int(fields[2])

    def matches(state: tuple, content: bytes | None, prefix_ok: bool) -> bool:
        if state[0] == "absent":
            return content is None
        if content is None:
            return False
        if state[0] == "sha":
            return sha(content) == state[1] and len(content) == int(state[2])
        want = gen_data(state[1])
        return content == want or (prefix_ok and want.startswith(content))

    problems = []
    for name, state in committed.items():
        path = mnt / name
        content = path.read_bytes() if os.path.lexists(path) else None
        allowed = [state]
        if name in pending:
            allowed.append(pending[name])
        # A change not yet confirmed may be absent or cut short only for a file being created.
        ok = any(matches(s, content, prefix_ok=(s is pending.get(name) and s[0] == "spec"))
                 for s in allowed)
        if not ok:
            got = "absent" if content is None else f"{len(content)} bytes sha {sha(content)[:12]}"
            problems.append(f"{name}: {got}; allowed {allowed}")
    for name, size in logs.items():
        content = (mnt / name).read_bytes()
        prefix = name.removesuffix("log")
        if len(content) < size or content != log_stream(prefix, len(content)):
            problems.append(f"{name}: {len(content)} bytes, fsynced {size}; "
                            f"content matches the log stream: {content == log_stream(prefix, len(content))}")
    assert not problems, f"{len(problems)} files broke the durability contract:\n" + "\n".join(problems[:30])
    return len(committed) + len(logs)


def read_everything(mnt: Path) -> tuple[int, int]:
    """Read every file and list every directory (no EIO anywhere); (inodes, logical bytes)."""
    seen: dict[int, int] = {os.lstat(mnt).st_ino: 0}
    for dirpath, dirnames, filenames in os.walk(mnt):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    assert len(f.read()) == st.st_size, path
            seen[st.st_ino] = st.st_size if stat.S_ISREG(st.st_mode) else 0
    return len(seen), sum(seen.values())


def assert_consistent(m: MaiffsMount) -> None:
    """The store's counters agree with the tree (nothing leaked, nothing counted twice)."""
    inodes, logical = read_everything(m.path)
    report = json.loads(maiffs("stat", "--json", m.path).stdout)
    assert (report["inodes"], report["logical_bytes"]) == (inodes, logical), report


def assert_still_works(m: MaiffsMount, tag: str) -> None:
    data = os.urandom(MiB + 5)
    path = m.path / f"alive-{tag}"
    path.write_bytes(data)
    assert path.read_bytes() == data
    path.unlink()


def log_problems(m: MaiffsMount) -> list[str]:
    log = m.store / "maiffs.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return [line for line in text.splitlines() if " ERROR " in line or "Traceback" in line]


# -- the tests ---------------------------------------------------------------------------------
#: (durable writes to wait for, then seconds to sleep) before each kill -9.
#: (fsynced changes to wait for, then seconds more) before each kill of the short run
KILL_TIMINGS = [(3, 0.0), (10, 0.6), (1, 2.3), (25, 0.05), (6, 1.3)]
LONG_CYCLES = 20


def kill_plan(long_run: bool) -> list[tuple[int, float, int]]:
    """(changes to wait for, seconds more, writers) per cycle: the fixed short run for CI, or
    20 random moments with two writers each under --long (seeded: a failure can be rerun)."""
    if not long_run:
        return [(wait_for, sleep, 1) for wait_for, sleep in KILL_TIMINGS]
    rng = random.Random(int(os.environ.get("MAIFFS_KILL_SEED", "20261129")))
    return [(rng.randrange(1, 30), rng.choice([0.0, rng.uniform(0, 0.2), rng.uniform(0, 3)]), 2)
            for _ in range(LONG_CYCLES)]


def start_writers(mnt: Path, manifest: Path, cycle: int, count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, __file__, "writer", str(mnt), str(manifest),
                              f"seed{cycle}.{w}", f"c{cycle}w{w}-"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for w in range(count)]


def wait_for_changes(writers: list[subprocess.Popen], manifest: Path, cycle: int, wanted: int) -> None:
    """Until the writers of cycle have made wanted changes durable between them."""
    deadline = time.monotonic() + 120
    while sum(1 for line in manifest.read_text().splitlines()
              if line.startswith((f"D c{cycle}w", f"A c{cycle}w"))) < wanted:
        for writer in writers:
            assert writer.poll() is None, \
                f"cycle {cycle}: a writer died before the kill:\n{writer.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"cycle {cycle}: the writers make no progress"
        time.sleep(0.02)


def test_kill_9_keeps_everything_fsynced(mounted, tmp_path, long_run):
    """Writers create, append, rename and fsync; the daemon is killed at a moment of each cycle;
    after each remount (no fsck first) every fsynced change is there and the store works."""
    manifest = tmp_path / "manifest"
    manifest.touch()
    checked = 0
    for cycle, (wait_for, sleep, count) in enumerate(kill_plan(long_run)):
        writers = start_writers(mounted.path, manifest, cycle, count)
        try:
            wait_for_changes(writers, manifest, cycle, wait_for)
            time.sleep(sleep)
            for writer in writers:
                assert writer.poll() is None, f"a writer died:\n{writer.communicate()[1][-3000:]}"
            mounted.kill()
            for writer in writers:
                try:
                    writer.wait(timeout=30)  # it fails on the dead mount
                except subprocess.TimeoutExpired:
                    pass
        finally:
            for writer in writers:
                if writer.poll() is None:
                    writer.kill()
                writer.communicate()
        mounted.mount()  # as it is: no fsck first
        checked = check_against_manifest(mounted.path, manifest)
        assert_consistent(mounted)
        assert_still_works(mounted, str(cycle))
    assert checked > 20
    assert not log_problems(mounted), "\n".join(log_problems(mounted)[:20])


def _mount_with(tmp_path: Path, options: list[str]) -> MaiffsMount:
    """A fresh store mounted with options; the caller unmounts it (try/finally cleanup())."""
    m = make_mount(tmp_path, options)
    m.mount()
    return m


def test_closed_files_survive_kill_9_without_fsync(tmp_path):
    m = _mount_with(tmp_path, ["commit_interval=3600"])  # no timed commit can help here
    try:
        expected: dict[str, bytes] = {}
        sizes = [0, 1, 4097, MiB + 1, 9 * MiB + 7, 300_000]
        for i, size in enumerate(sizes):
            expected[f"f{i}"] = gen_data(f"{'rand' if i % 2 else 'text'}:{i}:{size}")
            (m.path / f"f{i}").write_bytes(expected[f"f{i}"])  # open, write, close; no fsync
        (m.path / "d" / "e").mkdir(parents=True)
        expected["d/e/inner"] = b"inner\n"
        (m.path / "d" / "e" / "inner").write_bytes(b"inner\n")
        # Changes to closed files: overwrite in the middle, append, truncate, rename, delete.
        data = bytearray(expected["f4"])
        with open(m.path / "f4", "r+b") as f:
            f.seek(5 * MiB + 3)
            f.write(b"X" * 70_000)
        data[5 * MiB + 3:5 * MiB + 3 + 70_000] = b"X" * 70_000
        expected["f4"] = bytes(data)
        with open(m.path / "f3", "ab") as f:
            f.write(b"appended")
        expected["f3"] += b"appended"
        os.truncate(m.path / "f5", 1000)
        expected["f5"] = expected["f5"][:1000]
        os.rename(m.path / "f1", m.path / "d" / "moved")
        expected["d/moved"] = expected.pop("f1")
        os.unlink(m.path / "f2")
        del expected["f2"]
        os.symlink("d/moved", m.path / "sym")
        os.link(m.path / "f3", m.path / "d" / "hard")
        expected["d/hard"] = expected["f3"]
        os.chmod(m.path / "f0", 0o600)
        os.setxattr(m.path / "f3", "user.tag", b"value")

        m.kill()
        m.mount()
        for name, content in expected.items():
            assert (m.path / name).read_bytes() == content, name
        assert not (m.path / "f2").exists() and not (m.path / "f1").exists()
        assert os.readlink(m.path / "sym") == "d/moved"
        assert os.stat(m.path / "f3").st_ino == os.stat(m.path / "d" / "hard").st_ino
        assert os.stat(m.path / "f3").st_nlink == 2
        assert stat.S_IMODE(os.stat(m.path / "f0").st_mode) == 0o600
        assert os.getxattr(m.path / "f3", "user.tag") == b"value"
        assert_consistent(m)
        assert_still_works(m, "closed")
    finally:
        m.cleanup()


def test_unclosed_writes_older_than_commit_interval_survive_kill_9(tmp_path):
    m = _mount_with(tmp_path, ["commit_interval=1"])
    fds = []
    try:
        old = gen_data("rand:old:3000000")
        (m.path / "old").write_bytes(old)
        (m.path / "appended").write_bytes(b"start\n")
        expected = {}

        def keep_open(name: str, flags: int) -> int:
            fd = os.open(m.path / name, flags, 0o644)
            fds.append(fd)
            return fd

        big = gen_data("rand:big:5242891")
        os.write(keep_open("big", os.O_CREAT | os.O_WRONLY), big)
        expected["big"] = big
        os.write(keep_open("tiny", os.O_CREAT | os.O_WRONLY), b"tiny\n")
        expected["tiny"] = b"tiny\n"
        os.pwrite(keep_open("old", os.O_WRONLY), b"N" * 1000, 1_500_000)
        expected["old"] = old[:1_500_000] + b"N" * 1000 + old[1_501_000:]
        os.pwrite(keep_open("holey", os.O_CREAT | os.O_WRONLY), b"after a hole", 3 * MiB)
        expected["holey"] = bytes(3 * MiB) + b"after a hole"
        os.write(keep_open("appended", os.O_WRONLY | os.O_APPEND), b"more\n" * 10_000)
        expected["appended"] = b"start\n" + b"more\n" * 10_000

        time.sleep(3.5)  # more than a commit interval (1 s) plus the flush that follows it
        m.kill()  # with every file still open and never fsynced
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        fds.clear()
        m.mount()
        for name, content in expected.items():
            got = (m.path / name).read_bytes()
            assert got == content, f"{name}: {len(got)} bytes, expected {len(content)}"
        assert_consistent(m)
        assert_still_works(m, "interval")
    finally:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        m.cleanup()


def test_msync_survives_kill_9_with_the_map_open(tmp_path):
    m = _mount_with(tmp_path, ["commit_interval=3600"])
    try:
        size = 3 * MiB + 100
        expected = bytearray(gen_data(f"rand:mm:{size}"))
        (m.path / "mapped").write_bytes(expected)
        f = open(m.path / "mapped", "r+b")
        mm = mmap.mmap(f.fileno(), size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        for off in (0, 4096 * 100, 2 * MiB + 17, size - 50):
            mm[off:off + 50] = b"M" * 50
            expected[off:off + 50] = b"M" * 50
        mm.flush()  # msync(MS_SYNC): the fsync of mapped writes
        m.kill()
        mm.close()
        try:
            f.close()
        except OSError:
            pass
        m.mount()
        assert (m.path / "mapped").read_bytes() == expected
        assert_still_works(m, "mmap")
    finally:
        m.cleanup()


def test_umount_keeps_unsynced_writes(tmp_path):
    m = _mount_with(tmp_path, ["commit_interval=3600"])
    try:
        expected = {f"f{i}": gen_data(f"rand:um{i}:{size}")
                    for i, size in enumerate([10, 70_000, 2 * MiB + 1, 8 * MiB])}
        for name, data in expected.items():
            with open(m.path / name, "wb") as f:
                f.write(data)
        with open(m.path / "f3", "r+b") as f:  # an in-place change, never fsynced
            f.seek(MiB)
            f.write(b"changed")
        expected["f3"] = expected["f3"][:MiB] + b"changed" + expected["f3"][MiB + 7:]
        m.unmount()
        m.mount()
        for name, content in expected.items():
            assert (m.path / name).read_bytes() == content, name
        assert_consistent(m)
    finally:
        m.cleanup()


def test_sigterm_flushes_files_still_open(tmp_path):
    """SIGTERM (e.g. at shutdown) unmounts and commits what open files hold unflushed."""
    m = _mount_with(tmp_path, ["commit_interval=3600"])
    fd = -1
    try:
        data = gen_data(f"rand:term:{3 * MiB + 3}")
        fd = os.open(m.path / "open", os.O_CREAT | os.O_WRONLY, 0o644)
        os.write(fd, data)
        pid = m.daemon_pid()
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{pid}"), "the daemon did not exit on SIGTERM"
        try:
            os.close(fd)
        except OSError:
            pass
        fd = -1
        m.cleanup()  # clears the mount point if the daemon left a dead mount behind
        m.mount()
        assert (m.path / "open").read_bytes() == data
    finally:
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
        m.cleanup()


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "writer":
    writer_main(*sys.argv[2:])
