"""Helpers shared by the test modules: files, tools, store numbers and whole-tree comparisons.

The mount fixtures live in conftest.py; these are plain functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import lmdb
import pytest

from conftest import maiffs


def seeded_bytes(seed: int, n: int) -> bytes:
    """Random (incompressible) bytes, the same every run. Content-defined chunking cuts random
    data where its content says, so a test that needs a file of several chunks, or a chunk
    boundary past some offset, takes a seed that gives them (and checks it does) rather than a
    draw of os.urandom that breaks it now and then: 1% of 3 MiB draws are one chunk."""
    return random.Random(seed).randbytes(n)


#: A fixed old timestamp with nanoseconds, so preserved times are told apart from "now".
BASE_NS = 1_234_567_890_123_456_789


# -- running things ----------------------------------------------------------------------------
def run(*args: str | os.PathLike, ok: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run a tool (text output unless text=False); with ok, fail with its output unless it exits 0."""
    kw.setdefault("text", True)
    done = subprocess.run([str(a) for a in args], capture_output=True, timeout=timeout, **kw)
    if ok and done.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {done.returncode}\n"
                             f"stdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}")
    return done


def killed_once_arrived(command: list, arrived: Callable[[], object]) -> None:
    """Run a maiffs command and SIGKILL it as soon as arrived() holds."""
    process = subprocess.Popen([sys.executable, "-m", "maiffs", *command, "--quiet"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(arrived, "the first pack arrives", limit=60)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()


def errno_of(fn: Callable, *args, **kw) -> int:
    """Call fn and return the errno it fails with (the test fails if it succeeds)."""
    with pytest.raises(OSError) as info:
        fn(*args, **kw)
    return info.value.errno


def wait_for(cond: Callable[[], object], what: str, limit: float = 15.0) -> None:
    """Poll cond until it holds (work the daemon does asynchronously, e.g. after a FORGET);
    fail after limit seconds."""
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


# -- files -------------------------------------------------------------------------------------
def write_file(path: str | os.PathLike, data: bytes, sync: bool = False) -> None:
    """Create or truncate path and write all of data with os.write; with sync, fsync it too."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def read_file(path: str | os.PathLike) -> bytes:
    """The whole content of path."""
    with open(path, "rb") as f:
        return f.read()


def sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's content, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def xattrs(path: str | os.PathLike) -> tuple[tuple[str, bytes], ...]:
    """All extended attributes of path itself (not a symlink's target), sorted by name."""
    names = sorted(os.listxattr(path, follow_symlinks=False))
    return tuple((n, os.getxattr(path, n, follow_symlinks=False)) for n in names)


def set_times(root: Path, step_ns: int = 1_000_003, atime_offset_ns: int = 0) -> None:
    """Give every path below root (root included, symlinks too) its own fixed old nanosecond
    mtime, BASE_NS + i * step_ns, deepest first; atime is that plus atime_offset_ns."""
    paths = [root] + sorted(root.rglob("*"))
    for i, path in enumerate(sorted(paths, key=lambda p: -len(p.parts))):
        t = BASE_NS + i * step_ns
        os.utime(path, ns=(t + atime_offset_ns, t), follow_symlinks=False)


# -- the store ---------------------------------------------------------------------------------
def store_stat(target: str | os.PathLike) -> dict:
    """`maiffs stat --json TARGET` (a mount point or a path in it), parsed."""
    return json.loads(maiffs("stat", "--json", target).stdout)


def flip_a_byte_of_every_chunk(store: Path) -> int:
    """Damage every chunk of an unmounted store (a byte in the middle of each); how many."""
    env = lmdb.open(str(store), max_dbs=32, map_size=4 << 30)
    chunks = env.open_db(b"chunks")
    with env.begin(write=True) as txn:
        items = [(bytes(k), bytearray(v)) for k, v in txn.cursor(db=chunks)]
        for key, value in items:
            value[len(value) // 2] ^= 0x55
            txn.put(key, bytes(value), db=chunks)
    env.close()
    return len(items)


def log_problems(m) -> list[str]:
    """ERROR and CRITICAL lines and tracebacks in the daemon's log (STORE/maiffs.log) of mount m."""
    log = m.store / "maiffs.log"
    if not log.exists():
        return []
    return [line for line in log.read_text(errors="replace").splitlines()
            if " ERROR " in line or "Traceback" in line or " CRITICAL " in line]


# -- whole trees -------------------------------------------------------------------------------
def tree_state(root: Path, dir_nlink: bool = False) -> dict[str, dict]:
    """Everything a snapshot or a careful copy must preserve, per relative path ('.' is root):
    mode, owner, mtime_ns, xattrs and link count; size and sha256 of files, symlink targets,
    device numbers, and for files the names that are hard links of each other. Directories'
    link counts only with dir_nlink."""
    out: dict[str, dict] = {}
    links: dict[tuple[int, int], list[str]] = {}

    def visit(path: Path, rel: str) -> None:
        st = os.lstat(path)
        kind = stat.S_IFMT(st.st_mode)
        info = {"mode": oct(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
                "mtime_ns": st.st_mtime_ns, "xattrs": xattrs(path)}
        if kind != stat.S_IFDIR or dir_nlink:
            info["nlink"] = st.st_nlink
        if kind == stat.S_IFREG:
            info["size"] = st.st_size
            info["sha256"] = sha256(path)
            links.setdefault((st.st_dev, st.st_ino), []).append(rel)
        elif kind == stat.S_IFLNK:
            info["target"] = os.readlink(path)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK):
            info["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
        out[rel] = info
        if kind == stat.S_IFDIR:
            for entry in sorted(os.listdir(path)):
                visit(path / entry, entry if rel == "." else f"{rel}/{entry}")

    visit(root, ".")
    for names in links.values():
        for name in names:
            out[name]["hardlinks"] = tuple(sorted(names))
    return out


def assert_same_tree(expected: dict[str, dict], actual: dict[str, dict], what: str) -> None:
    """Fail listing every path and attribute where two tree_state() results differ."""
    problems = []
    for rel in sorted(expected.keys() - actual.keys()):
        problems.append(f"missing in {what}: {rel}")
    for rel in sorted(actual.keys() - expected.keys()):
        problems.append(f"unexpected in {what}: {rel}")
    for rel in sorted(expected.keys() & actual.keys()):
        a, b = expected[rel], actual[rel]
        for key in sorted(a.keys() | b.keys()):
            if a.get(key) != b.get(key):
                problems.append(f"{rel}: {key} is {b.get(key)!r}, expected {a.get(key)!r}")
    assert not problems, f"{what} differs from what was expected ({len(problems)} differences):\n" + \
        "\n".join(problems[:40])
