"""Model-based test: the same random operations on a maiffs mount and on a plain directory.

A Hypothesis RuleBasedStateMachine (as JuiceFS does it) applies every operation to both trees:
the reference is an ordinary directory on the local disk (ext4 here), the other is the mount.
After each step the return value or errno of that operation must agree, and an invariant
compares the whole trees: names, types, modes, nlink, sizes, contents, symlink targets, user.*
xattrs, which paths share an inode, open descriptors (size, nlink, position, and the contents
of unlinked-but-open files), and mtimes wherever they were set explicitly.

Attributes are read with statx(AT_STATX_FORCE_SYNC), which makes the kernel ask the daemon
instead of answering from its attribute cache; file data is read after
posix_fadvise(DONTNEED), so it comes from maiffs and not from the page cache.

One mount serves all examples (the tree is emptied between them); the `remount` rule closes
every descriptor and remounts, so stored state is compared too, not just in-memory state.

    MAIFFS_MODEL_EXAMPLES=300 .venv/bin/python -m pytest -q tests/test_model.py   # longer run
    MAIFFS_MODEL_SEED=123 ...     # explore other sequences (the default is derandomized)
    MAIFFS_MODEL_STEPS=80 ...     # longer programs
    MAIFFS_MODEL_OPTIONS=commit_interval=0.05 ...   # mount options (here: constant flushing)
"""

from __future__ import annotations

import ctypes
import errno
import os
import random
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import blake3
from hypothesis import HealthCheck, note, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition, rule,
                                 run_state_machine_as_test)

from conftest import MaiffsMount, make_mount

EXAMPLES = int(os.environ.get("MAIFFS_MODEL_EXAMPLES", "25"))
STEPS = int(os.environ.get("MAIFFS_MODEL_STEPS", "40"))
SEED = os.environ.get("MAIFFS_MODEL_SEED")
#: e.g. "commit_interval=0.05": the background commit then flushes between most steps.
OPTIONS = [o for o in os.environ.get("MAIFFS_MODEL_OPTIONS", "").split(",") if o]

SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    derandomize=SEED is None,  # reproducible in CI; MAIFFS_MODEL_SEED explores other runs
    database=None,
    suppress_health_check=list(HealthCheck),
)

MAX_FDS = 6
#: A remount costs ~0.7 s (two maiffs processes): allow one at most every this many steps.
#: Hypothesis favours argument-less rules, so it comes about that often.
REMOUNT_EVERY = int(os.environ.get("MAIFFS_MODEL_REMOUNT_EVERY", "12"))
ID_XATTR = "user.maiffs.id"

# -- libc: statx (to bypass the FUSE attribute cache) and renameat2 ------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
AT_STATX_FORCE_SYNC = 0x2000
STATX_BASIC_STATS = 0x7FF
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


class _StatxTimestamp(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_uint32),
                ("_reserved", ctypes.c_int32)]


class _Statx(ctypes.Structure):
    _fields_ = [("mask", ctypes.c_uint32), ("blksize", ctypes.c_uint32),
                ("attributes", ctypes.c_uint64), ("nlink", ctypes.c_uint32),
                ("uid", ctypes.c_uint32), ("gid", ctypes.c_uint32), ("mode", ctypes.c_uint16),
                ("_spare0", ctypes.c_uint16), ("ino", ctypes.c_uint64), ("size", ctypes.c_uint64),
                ("blocks", ctypes.c_uint64), ("attributes_mask", ctypes.c_uint64),
                ("atime", _StatxTimestamp), ("btime", _StatxTimestamp),
                ("ctime", _StatxTimestamp), ("mtime", _StatxTimestamp),
                ("rdev_major", ctypes.c_uint32), ("rdev_minor", ctypes.c_uint32),
                ("dev_major", ctypes.c_uint32), ("dev_minor", ctypes.c_uint32),
                ("_spare", ctypes.c_uint64 * 14)]


assert ctypes.sizeof(_Statx) == 256


@dataclass(frozen=True)
class Attr:
    mode: int
    nlink: int
    uid: int
    gid: int
    ino: int
    size: int
    mtime_ns: int


def fresh_stat(target: str | int, follow: bool = False) -> Attr:
    """statx with AT_STATX_FORCE_SYNC: for FUSE, a real GETATTR rather than cached attributes."""
    buf = _Statx()
    flags = AT_STATX_FORCE_SYNC
    if isinstance(target, int):
        dirfd, path, flags = target, b"", flags | AT_EMPTY_PATH
    else:
        dirfd, path = AT_FDCWD, os.fsencode(target)
        if not follow:
            flags |= AT_SYMLINK_NOFOLLOW
    if _libc.statx(dirfd, path, flags, STATX_BASIC_STATS, ctypes.byref(buf)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target)
    return Attr(buf.mode, buf.nlink, buf.uid, buf.gid, buf.ino, buf.size,
                buf.mtime.tv_sec * 10**9 + buf.mtime.tv_nsec)


def renameat2(old: str, new: str, flags: int) -> None:
    if _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), old, new)


# -- strategies --------------------------------------------------------------------------------------
NAMES = ("a", "b", "c")
_POOL = ([x for x in NAMES] + [f"{x}/{y}" for x in NAMES for y in NAMES]
         + [f"{x}/{y}/{z}" for x in NAMES for y in NAMES for z in NAMES])
MAX_DEPTH = 4
#: A path is drawn as a number and chosen from the tree as it is when the rule runs
#: (MaiffsModel.path): mostly an existing entry or a new name in an existing directory, so
#: that operations collide; sometimes any path of a small pool (ENOENT, ENOTDIR, ELOOP...).
PATHS = st.integers(0, 999)
#: Relative targets only, never "." or "..": a link resolving above the root would reach the
#: same directory (the test's tmp dir) from both sides, and the two trees would share state.
SYMLINK_TARGETS = st.sampled_from(["a", "b", "c", "a/b", "b/c", "a/b/c", "x", "c/../a",
                                   "a/../b"])
XATTR_NAMES = st.sampled_from(["user.a", "user.b", "user.longer.name"])
XATTR_VALUES = st.one_of(st.binary(max_size=16), st.binary(max_size=512))
XATTR_FLAGS = st.sampled_from([0, 0, os.XATTR_CREATE, os.XATTR_REPLACE])
FILE_MODES = st.one_of(st.sampled_from([0o644, 0o600, 0o755, 0o444, 0o000, 0o666]),
                       st.integers(0, 0o7777))
DIR_MODES = st.one_of(st.sampled_from([0o755, 0o700, 0o777, 0o2755, 0o1777]),
                      st.integers(0, 0o7777))
ACCESS = st.sampled_from([os.O_RDWR, os.O_RDWR, os.O_WRONLY, os.O_RDONLY])
EXTRA_FLAGS = st.sampled_from([0, 0, os.O_APPEND, os.O_TRUNC, os.O_APPEND | os.O_TRUNC])
KB, MB = 1 << 10, 1 << 20
BOUNDARIES = [0, 1, 4095, 4096, 4097, 128 * KB, 256 * KB - 1, 256 * KB, 256 * KB + 1, MB,
              4 * MB, 4 * MB + 1]
_SMALL_SIZES = st.one_of(st.integers(0, 64), st.integers(0, 8 * KB), st.integers(0, 200 * KB),
                         st.sampled_from(BOUNDARIES[:9]))
_BIG_SIZES = st.integers(MB, 6 * MB)
#: Mostly bytes..200 KiB; one write in twenty is 1-6 MiB (several chunks).
SIZES = st.integers(0, 19).flatmap(lambda r: _BIG_SIZES if r == 19 else _SMALL_SIZES)
#: Mostly near the start; sometimes on chunk-ish boundaries; sometimes far past EOF (holes).
OFFSETS = st.integers(0, 9).flatmap(
    lambda r: st.integers(0, 300 * KB) if r < 6
    else st.sampled_from(BOUNDARIES) if r < 8
    else st.integers(0, 12 * MB))
READ_SIZES = st.one_of(st.integers(0, 4 * KB), st.integers(0, 300 * KB), st.sampled_from([MB, 8 * MB]))
#: Explicit times, including before 1970 (tar archives have those) and past 2038, within what
#: ext4 keeps exactly (it clamps below -2**31 s) and what fits maiffs' signed 64-bit ns.
TIMES_NS = st.one_of(st.integers(0, 2**31 * 10**9),
                     st.integers(-(2**31 - 1) * 10**9, 2**33 * 10**9),
                     st.integers(0, 2**31).map(lambda s: s * 10**9))


@dataclass(frozen=True)
class Payload:
    """Written bytes, described compactly (Hypothesis cannot draw MiBs byte by byte)."""

    kind: str
    size: int
    seed: int

    def make(self) -> bytes:
        rng = random.Random(self.seed)
        if self.kind == "zeros":
            return bytes(self.size)
        if self.kind == "text":
            unit = rng.randbytes(rng.randint(1, 64))
            return (unit * (self.size // len(unit) + 1))[:self.size]
        data = bytearray(rng.randbytes(self.size))
        if self.kind == "holey" and self.size:
            for _ in range(rng.randint(1, 4)):
                start = rng.randrange(self.size)
                length = rng.randrange(self.size - start + 1)
                data[start:start + length] = bytes(length)
        return bytes(data)

    def __repr__(self) -> str:
        return f"<{self.kind} {self.size} B seed={self.seed}>"


PAYLOADS = st.builds(Payload, st.sampled_from(["random", "random", "zeros", "holey", "text"]),
                     SIZES, st.integers(0, 2**32 - 1))


def flag_names(flags: int) -> str:
    acc = {os.O_RDONLY: "O_RDONLY", os.O_WRONLY: "O_WRONLY", os.O_RDWR: "O_RDWR"}[flags & 3]
    names = [acc] + [n for n in ("O_CREAT", "O_EXCL", "O_TRUNC", "O_APPEND")
                     if flags & getattr(os, n)]
    return "|".join(names)


def _clear(root: Path) -> None:
    for name in os.listdir(root):
        path = root / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _read_all(fd: int) -> bytes:
    parts, off = [], 0
    while chunk := os.pread(fd, 4 * MB, off):
        parts.append(chunk)
        off += len(chunk)
    return b"".join(parts)


class Harness:
    """The reference directory and one maiffs mount, shared by all examples."""

    def __init__(self, base: Path) -> None:
        self.ref = base / "ref"  # a sibling of mnt: "../x" symlinks resolve alike on both sides
        self.ref.mkdir()
        os.chmod(self.ref, 0o755)
        self.mount: MaiffsMount = make_mount(base, OPTIONS)
        self.mount.mount()
        self.remounts = 0

    def reset(self) -> None:
        """Empty both trees for the next example (remount first if the mount is unwell)."""
        _clear(self.ref)
        try:
            _clear(self.mount.path)
        except OSError:
            self.mount.cleanup()
            self.mount.mount()
            _clear(self.mount.path)

    def remount(self) -> None:
        self.mount.remount()
        self.remounts += 1

    def close(self) -> None:
        self.mount.cleanup()


@dataclass
class OpenFile:
    """The same open(2) done on both sides, kept across steps."""

    name: str
    fds: tuple[int, int]
    flags: int

    @property
    def readable(self) -> bool:
        return self.flags & 3 != os.O_WRONLY


Outcome = tuple[str, object]


class MaiffsModel(RuleBasedStateMachine):
    """Every rule runs one operation on the reference tree and on the mount; all must agree."""

    harness: Harness  # set by the test before the machine runs

    def __init__(self) -> None:
        super().__init__()
        self.harness.reset()
        self.roots = (str(self.harness.ref), str(self.harness.mount.path))
        self.fds: list[OpenFile] = []
        self.fd_counter = 0
        #: reference inode -> mtime set by utime. While the reference still shows that time,
        #: maiffs must too; once the reference moved it (a write, a new entry...), maiffs must
        #: have moved it as well, and the time is no longer compared (both sides say "now").
        self.pinned: dict[int, int] = {}
        self.steps_since_remount = 0

    # -- running one operation on both sides ----------------------------------------------------
    def p(self, side: int, rel: str) -> str:
        return os.path.join(self.roots[side], rel)

    def path(self, n: int, new: bool = False) -> str:
        """The path a drawn number stands for, given the reference tree as it is now.

        Mostly an existing entry (or, with new, a free name in an existing directory), less
        often the other kind, and sometimes any path of the pool (ENOENT, ENOTDIR, ELOOP...).
        """
        entries = self._walk(0)
        existing = sorted(rel for rel, _ in entries if rel)
        taken = set(existing)
        dirs = [rel for rel, a in entries if stat.S_ISDIR(a.mode) and rel.count("/") < MAX_DEPTH - 1]
        free = sorted({os.path.join(d, x) if d else x for d in dirs for x in NAMES} - taken)
        others = [p for p in _POOL if p not in taken and p not in free]
        first, second = (free, existing) if new else (existing, free)
        for choices in ((first, second, others) if n < 700 else
                        (second, first, others) if n < 900 else (others, first, second)):
            if choices:
                return choices[n % len(choices)]
        raise AssertionError("unreachable: the root always has free names")

    def both(self, desc: str, fn, compare: bool = True) -> tuple[Outcome, Outcome]:
        outs: list[Outcome] = []
        for side in (0, 1):
            try:
                outs.append(("ok", fn(side)))
            except OSError as exc:
                outs.append(("err", errno.errorcode.get(exc.errno, exc.errno)))
        ref, mnt = outs
        if compare:
            note(f"{desc} -> {self._show(ref)}"
                 + ("" if ref == mnt else f"   BUT maiffs -> {self._show(mnt)}"))
            assert ref == mnt, f"{desc}: reference gave {self._show(ref)}, maiffs gave {self._show(mnt)}"
        return ref, mnt

    @staticmethod
    def _show(out: Outcome) -> str:
        kind, value = out
        if kind == "err":
            return str(value)
        if isinstance(value, bytes) and len(value) > 48:
            return f"<{len(value)} bytes, blake3 {blake3.blake3(value).hexdigest()[:12]}>"
        return repr(value)

    def _open(self, desc: str, rel: str, flags: int, mode: int = 0o644) -> OpenFile | None:
        """open(2) on both sides; the pair of descriptors, or None when both failed alike."""
        ref, mnt = self.both(desc, lambda s: os.open(self.p(s, rel), flags, mode), compare=False)
        if ref[0] != mnt[0] or ref[0] == "err" and ref != mnt:
            for kind, value in (ref, mnt):
                if kind == "ok":
                    os.close(value)
            note(f"{desc} -> reference {self._show(ref)}, maiffs {self._show(mnt)}")
            raise AssertionError(f"{desc}: reference gave {self._show(ref)}, "
                                 f"maiffs gave {self._show(mnt)}")
        if ref[0] == "err":
            note(f"{desc} -> {ref[1]}")
            return None
        of = OpenFile(f"fd{self.fd_counter}", (ref[1], mnt[1]), flags)
        self.fd_counter += 1
        note(f"{of.name} = {desc}")
        kinds = [stat.S_IFMT(os.fstat(fd).st_mode) for fd in of.fds]
        assert kinds[0] == kinds[1], f"{desc}: opened different file types {kinds}"
        return of

    def _keep_or_close(self, of: OpenFile, keep: bool) -> None:
        """Keep a regular file's descriptors for later steps, or close them now."""
        if keep and len(self.fds) < MAX_FDS and stat.S_ISREG(os.fstat(of.fds[0]).st_mode):
            self.fds.append(of)
        else:
            self.both(f"os.close({of.name})", lambda s: os.close(of.fds[s]))

    def _fd(self, i: int) -> OpenFile:
        return self.fds[i % len(self.fds)]

    # -- creating and opening -----------------------------------------------------------------
    @initialize(specs=st.lists(st.tuples(st.sampled_from(["dir", "file", "open", "symlink"]),
                                          PATHS, PAYLOADS), max_size=8))
    def populate(self, specs):
        """Start from a small random tree (some files kept open), so that most steps meet
        something to work on."""
        for kind, n, payload in specs:
            path = self.path(n, new=True)
            if kind == "dir":
                self.both(f"os.mkdir({path!r})", lambda s: os.mkdir(self.p(s, path)))
            elif kind == "symlink":
                dest = NAMES[payload.seed % len(NAMES)]
                self.both(f"os.symlink({dest!r}, {path!r})",
                          lambda s: os.symlink(dest, self.p(s, path)))
            else:
                flags = os.O_CREAT | os.O_RDWR
                desc = f"os.open({path!r}, {flag_names(flags)}, 0o644)"
                of = self._open(desc, path, flags)
                if of is None:
                    continue
                data = payload.make()
                self.both(f"os.write({of.name}, {payload!r})", lambda s: os.write(of.fds[s], data))
                self._keep_or_close(of, keep=kind == "open")

    @rule(path=PATHS, create=st.booleans(), excl=st.booleans(), acc=ACCESS, extra=EXTRA_FLAGS,
          mode=FILE_MODES, keep=st.booleans())
    def open(self, path, create, excl, acc, extra, mode, keep):
        """open(2), with or without O_CREAT/O_EXCL; the fd is often kept for later steps."""
        path = self.path(path, new=create)
        flags = acc | extra | (os.O_CREAT if create else 0) | (os.O_EXCL if create and excl else 0)
        desc = (f"os.open({path!r}, {flag_names(flags)}, {mode:#o})" if create
                else f"os.open({path!r}, {flag_names(flags)})")
        of = self._open(desc, path, flags, mode)
        if of is not None:
            self._keep_or_close(of, keep)

    @rule(path=PATHS, mode=DIR_MODES)
    def mkdir(self, path, mode):
        path = self.path(path, new=True)
        self.both(f"os.mkdir({path!r}, {mode:#o})", lambda s: os.mkdir(self.p(s, path), mode))

    @rule(dest=SYMLINK_TARGETS, path=PATHS)
    def symlink(self, dest, path):
        path = self.path(path, new=True)
        self.both(f"os.symlink({dest!r}, {path!r})",
                  lambda s: os.symlink(dest, self.p(s, path)))

    @rule(src=PATHS, dst=PATHS, follow=st.booleans())
    def link(self, src, dst, follow):
        src = self.path(src)
        dst = self.path(dst, new=True)
        self.both(f"os.link({src!r}, {dst!r}, follow_symlinks={follow})",
                  lambda s: os.link(self.p(s, src), self.p(s, dst), follow_symlinks=follow))

    # -- removing and renaming ------------------------------------------------------------------
    @rule(path=PATHS)
    def unlink(self, path):
        path = self.path(path)
        self.both(f"os.unlink({path!r})", lambda s: os.unlink(self.p(s, path)))

    @rule(path=PATHS)
    def rmdir(self, path):
        path = self.path(path)
        self.both(f"os.rmdir({path!r})", lambda s: os.rmdir(self.p(s, path)))

    @rule(src=PATHS, dst=PATHS, flags=st.sampled_from([0, 0, RENAME_NOREPLACE, RENAME_EXCHANGE]))
    def rename(self, src, dst, flags):
        src = self.path(src)
        dst = self.path(dst, new=True)
        if flags:
            name = {RENAME_NOREPLACE: "RENAME_NOREPLACE", RENAME_EXCHANGE: "RENAME_EXCHANGE"}[flags]
            self.both(f"renameat2({src!r}, {dst!r}, {name})",
                      lambda s: renameat2(self.p(s, src), self.p(s, dst), flags))
        else:
            self.both(f"os.rename({src!r}, {dst!r})",
                      lambda s: os.rename(self.p(s, src), self.p(s, dst)))

    @precondition(lambda self: self.fds)
    @rule(i=st.integers(0, MAX_FDS - 1))
    def unlink_open(self, i):
        """Remove a name of a file that is open (possibly its last: keep using the fd after)."""
        of = self._fd(i)
        ino = os.fstat(of.fds[0]).st_ino
        names = sorted(rel for rel, attr in self._walk(0) if attr.ino == ino)
        if not names:
            note(f"# {of.name} has no name left")
            return
        self.both(f"os.unlink({names[0]!r})  # a name of {of.name}",
                  lambda s: os.unlink(self.p(s, names[0])))

    # -- data through paths ------------------------------------------------------------------------
    @rule(path=PATHS, offset=OFFSETS, payload=PAYLOADS)
    def write_path(self, path, offset, payload):
        path = self.path(path)
        data = payload.make()

        def fn(s):
            fd = os.open(self.p(s, path), os.O_WRONLY)
            try:
                return os.pwrite(fd, data, offset)
            finally:
                os.close(fd)
        self.both(f"fd = os.open({path!r}, O_WRONLY); os.pwrite(fd, {payload!r}, {offset}); "
                  f"os.close(fd)", fn)

    @rule(path=PATHS, offset=OFFSETS, size=READ_SIZES)
    def read_path(self, path, offset, size):
        path = self.path(path)
        def fn(s):
            fd = os.open(self.p(s, path), os.O_RDONLY)
            try:
                if s == 1:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                return os.pread(fd, size, offset)
            finally:
                os.close(fd)
        self.both(f"fd = os.open({path!r}, O_RDONLY); os.pread(fd, {size}, {offset}); "
                  f"os.close(fd)", fn)

    @rule(path=PATHS, size=OFFSETS)
    def truncate(self, path, size):
        path = self.path(path)
        self.both(f"os.truncate({path!r}, {size})", lambda s: os.truncate(self.p(s, path), size))

    # -- data through kept descriptors --------------------------------------------------------------
    @precondition(lambda self: self.fds)
    @rule(i=st.integers(0, MAX_FDS - 1), offset=OFFSETS, payload=PAYLOADS)
    def fd_pwrite(self, i, offset, payload):
        of, data = self._fd(i), payload.make()
        self.both(f"os.pwrite({of.name}, {payload!r}, {offset})",
                  lambda s: os.pwrite(of.fds[s], data, offset))

    @precondition(lambda self: self.fds)
    @rule(i=st.integers(0, MAX_FDS - 1), payload=PAYLOADS)
    def fd_write(self, i, payload):
        """Write at the descriptor's position (the end, with O_APPEND)."""
        of, data = self._fd(i), payload.make()
        self.both(f"os.write({of.name}, {payload!r})", lambda s: os.write(of.fds[s], data))

    @precondition(lambda self: self.fds)
    @rule(i=st.integers(0, MAX_FDS - 1), offset=OFFSETS,
          whence=st.sampled_from([os.SEEK_SET, os.SEEK_END, os.SEEK_CUR]))
    def fd_seek(self, i, offset, whence):
        of = self._fd(i)
        if whence != os.SEEK_SET:
            offset = offset % (64 * KB) - 32 * KB
        self.both(f"os.lseek({of.name}, {offset}, {whence})",
                  lambda s: os.lseek(of.fds[s], offset, whence))

    @precondition(lambda self: self.fds)
    @rule(i=st.integers(0, MAX_FDS - 1), offset=OFFSETS, size=READ_SIZES)
    def fd_pread(self, i, offset, size):
        of = self._fd(i)

        def fn(s):
            if s == 1:
                os.posix_fadvise(of.fds[s], 0, 0, os.POSIX_FADV_DONTNEED)
            return os.pread(of.fds[s], size, offset)
        self.both(f"os.pread({of.name}, {size}, {offset})", fn)

    @precondition(lambda self: self.fds)
    @rule(i=st.integers(0, MAX_FDS - 1), size=READ_SIZES)
    def fd_read(self, i, size):
        of = self._fd(i)
        self.both(f"os.read({of.name}, {size})", lambda s: os.read(of.fds[s], size))

    @precondition(lambda self: self.fds)
    @rule(i=st.integers(0, MAX_FDS - 1), size=OFFSETS)
    def fd_truncate(self, i, size):
        of = self._fd(i)
        self.both(f"os.ftruncate({of.name}, {size})", lambda s: os.ftruncate(of.fds[s], size))

    @precondition(lambda self: self.fds)
    @rule(i=st.integers(0, MAX_FDS - 1), data_only=st.booleans())
    def fd_fsync(self, i, data_only):
        of = self._fd(i)
        call = os.fdatasync if data_only else os.fsync
        self.both(f"os.{call.__name__}({of.name})", lambda s: call(of.fds[s]))

    @precondition(lambda self: self.fds)
    @rule(i=st.integers(0, MAX_FDS - 1))
    def fd_close(self, i):
        of = self.fds.pop(i % len(self.fds))
        self.both(f"os.close({of.name})", lambda s: os.close(of.fds[s]))

    # -- attributes ---------------------------------------------------------------------------------
    @rule(path=PATHS, mode=FILE_MODES)
    def chmod(self, path, mode):
        path = self.path(path)
        self.both(f"os.chmod({path!r}, {mode:#o})", lambda s: os.chmod(self.p(s, path), mode))

    @precondition(lambda self: self.fds)
    @rule(i=st.integers(0, MAX_FDS - 1), mode=FILE_MODES)
    def fd_chmod(self, i, mode):
        of = self._fd(i)
        self.both(f"os.fchmod({of.name}, {mode:#o})", lambda s: os.fchmod(of.fds[s], mode))

    def _check_utime(self, desc: str, target, mtime: int, follow: bool) -> None:
        """Right after utime, both sides report exactly the time that was set."""
        ref, mnt = (fresh_stat(target(s), follow) for s in (0, 1))
        note(f"# mtime after {desc}: reference {ref.mtime_ns}, maiffs {mnt.mtime_ns}")
        assert ref.mtime_ns == mtime, f"model error: ext4 did not keep mtime {mtime}"
        assert mnt.mtime_ns == mtime, (f"after {desc} maiffs reports mtime {mnt.mtime_ns}, "
                                       f"not {mtime}")
        self.pinned[ref.ino] = mtime

    @rule(path=PATHS, atime=TIMES_NS, mtime=TIMES_NS, follow=st.booleans())
    def utime(self, path, atime, mtime, follow):
        path = self.path(path)
        desc = f"os.utime({path!r}, ns=({atime}, {mtime}), follow_symlinks={follow})"
        ref, _ = self.both(desc, lambda s: os.utime(self.p(s, path), ns=(atime, mtime),
                                                     follow_symlinks=follow))
        if ref[0] == "ok":
            self._check_utime(desc, lambda s: self.p(s, path), mtime, follow)

    @precondition(lambda self: self.fds)
    @rule(i=st.integers(0, MAX_FDS - 1), atime=TIMES_NS, mtime=TIMES_NS)
    def fd_utime(self, i, atime, mtime):
        of = self._fd(i)
        desc = f"os.utime({of.name}, ns=({atime}, {mtime}))"
        ref, _ = self.both(desc, lambda s: os.utime(of.fds[s], ns=(atime, mtime)))
        if ref[0] == "ok":
            self._check_utime(desc, lambda s: of.fds[s], mtime, True)

    @rule(path=PATHS, follow=st.booleans())
    def stat_path(self, path, follow):
        path = self.path(path)
        def fn(s):
            a = fresh_stat(self.p(s, path), follow)
            return (a.mode, a.nlink, None if stat.S_ISDIR(a.mode) else a.size)
        self.both(f"os.stat({path!r}, follow_symlinks={follow})", fn)

    @rule(path=PATHS)
    def listdir(self, path):
        path = self.path(path)
        self.both(f"os.listdir({path!r})", lambda s: sorted(os.listdir(self.p(s, path))))

    @rule(path=PATHS)
    def readlink(self, path):
        path = self.path(path)
        self.both(f"os.readlink({path!r})", lambda s: os.readlink(self.p(s, path)))

    # -- xattrs --------------------------------------------------------------------------------------
    @rule(path=PATHS, name=XATTR_NAMES, value=XATTR_VALUES, flags=XATTR_FLAGS,
          follow=st.booleans())
    def setxattr(self, path, name, value, flags, follow):
        path = self.path(path)
        self.both(f"os.setxattr({path!r}, {name!r}, {value!r}, {flags}, follow_symlinks={follow})",
                  lambda s: os.setxattr(self.p(s, path), name, value, flags,
                                        follow_symlinks=follow))

    @precondition(lambda self: self.fds)
    @rule(i=st.integers(0, MAX_FDS - 1), name=XATTR_NAMES, value=XATTR_VALUES, flags=XATTR_FLAGS)
    def fd_setxattr(self, i, name, value, flags):
        of = self._fd(i)
        self.both(f"os.setxattr({of.name}, {name!r}, {value!r}, {flags})",
                  lambda s: os.setxattr(of.fds[s], name, value, flags))

    @rule(path=PATHS, name=XATTR_NAMES)
    def getxattr(self, path, name):
        path = self.path(path)
        self.both(f"os.getxattr({path!r}, {name!r})",
                  lambda s: os.getxattr(self.p(s, path), name))

    @rule(path=PATHS, name=XATTR_NAMES, follow=st.booleans())
    def removexattr(self, path, name, follow):
        path = self.path(path)
        self.both(f"os.removexattr({path!r}, {name!r}, follow_symlinks={follow})",
                  lambda s: os.removexattr(self.p(s, path), name, follow_symlinks=follow))

    # -- the mount -----------------------------------------------------------------------------------
    def _close_all(self) -> None:
        while self.fds:
            of = self.fds.pop()
            for fd in of.fds:
                os.close(fd)
            note(f"os.close({of.name})")

    @precondition(lambda self: self.steps_since_remount >= REMOUNT_EVERY)
    @rule()
    def remount(self):
        """Close everything, unmount and mount again: what was stored must be what is seen."""
        self.steps_since_remount = 0
        self._close_all()
        note("# unmount and mount maiffs again")
        self.harness.remount()

    def teardown(self):
        self._close_all()

    # -- the whole tree --------------------------------------------------------------------------------
    def _walk(self, side: int) -> list[tuple[str, Attr]]:
        """(relative path, fresh attributes) of every entry below the root, root first as ''."""
        out, stack = [], [""]
        while stack:
            rel = stack.pop()
            attr = fresh_stat(self.p(side, rel) if rel else self.roots[side])
            out.append((rel, attr))
            if stat.S_ISDIR(attr.mode):
                base = self.p(side, rel) if rel else self.roots[side]
                stack.extend(os.path.join(rel, n) if rel else n for n in os.listdir(base))
        return out

    def _contents(self, side: int, path: str | None, fd: int | None) -> bytes:
        """A file's bytes from the daemon: through a kept descriptor if one can read it (opening
        and closing would flush its unflushed writes), else through a fresh one."""
        own = fd is None
        if own:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            if side == 1:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            return _read_all(fd)
        finally:
            if own:
                os.close(fd)

    def _snapshot(self, side: int) -> tuple[dict, dict[str, int], dict[str, int]]:
        """{path: description}, {path: inode} and {path: mtime} of one side's tree and fds."""
        readers: dict[int, int] = {}
        fd_attrs: dict[str, Attr] = {}
        for of in self.fds:
            fd_attrs[of.name] = a = fresh_stat(of.fds[side])
            if of.readable:
                readers.setdefault(a.ino, of.fds[side])
        tree: dict[str, dict] = {}
        inodes: dict[str, int] = {}
        mtimes: dict[str, int] = {}
        for rel, a in self._walk(side):
            full = self.p(side, rel) if rel else self.roots[side]
            d: dict[str, object] = {"mode": oct(a.mode), "nlink": a.nlink, "uid": a.uid,
                                    "gid": a.gid}
            mtimes[rel or "."] = a.mtime_ns
            if stat.S_ISDIR(a.mode):
                d["names"] = sorted(os.listdir(full))
            else:
                d["size"] = a.size
            if stat.S_ISREG(a.mode):
                data = self._contents(side, full, readers.get(a.ino))
                d["data"] = data
                d["content id"] = (blake3.blake3(data).hexdigest() if side == 0 else
                                   os.getxattr(full, ID_XATTR, follow_symlinks=False).decode())
            if stat.S_ISLNK(a.mode):
                d["target"] = os.readlink(full)
            names = [n for n in os.listxattr(full, follow_symlinks=False) if n.startswith("user.")]
            d["xattrs"] = sorted((n, os.getxattr(full, n, follow_symlinks=False)) for n in names)
            tree[rel or "."] = d
            inodes[rel or "."] = a.ino
        for of in self.fds:
            a = fd_attrs[of.name]
            d = {"mode": oct(a.mode), "nlink": a.nlink, "size": a.size,
                 "position": os.lseek(of.fds[side], 0, os.SEEK_CUR)}
            if a.nlink == 0 and of.readable:  # unlinked: reachable through the fd only
                d["data"] = self._contents(side, None, of.fds[side])
            tree[of.name] = d
            inodes[of.name] = a.ino
            mtimes[of.name] = a.mtime_ns
        return tree, inodes, mtimes

    @staticmethod
    def _diff(ref: dict, mnt: dict) -> str:
        lines = []
        for path in sorted(set(ref) | set(mnt)):
            if path not in mnt:
                lines.append(f"{path}: missing on maiffs")
            elif path not in ref:
                lines.append(f"{path}: only on maiffs")
            elif ref[path] != mnt[path]:
                for key in sorted(set(ref[path]) | set(mnt[path])):
                    r, m = ref[path].get(key), mnt[path].get(key)
                    if r == m:
                        continue
                    if isinstance(r, bytes) and isinstance(m, bytes):
                        first = next((i for i, (x, y) in enumerate(zip(r, m)) if x != y),
                                     min(len(r), len(m)))
                        lines.append(f"{path}: data differ: reference {len(r)} bytes, maiffs "
                                     f"{len(m)} bytes, first difference at offset {first} "
                                     f"(ref {r[first:first + 8]!r}, maiffs {m[first:first + 8]!r})")
                    else:
                        lines.append(f"{path}: {key}: reference {r!r}, maiffs {m!r}")
        return "\n".join(lines)

    @staticmethod
    def _groups(inodes: dict[str, int]) -> list[list[str]]:
        by_ino: dict[int, list[str]] = {}
        for path, ino in inodes.items():
            by_ino.setdefault(ino, []).append(path)
        return sorted(sorted(paths) for paths in by_ino.values())

    @invariant()
    def trees_match(self):
        self.steps_since_remount += 1  # invariants run once after every step
        (ref, ref_inodes, ref_mtimes), (mnt, mnt_inodes, mnt_mtimes) = (
            self._snapshot(0), self._snapshot(1))
        diff = self._diff(ref, mnt)
        assert not diff, "trees differ:\n" + diff
        for ino in set(self.pinned) - set(ref_inodes.values()):
            del self.pinned[ino]  # gone: ext4 may give the number to a new file
        ref_groups, mnt_groups = self._groups(ref_inodes), self._groups(mnt_inodes)
        assert ref_groups == mnt_groups, (f"paths sharing an inode differ: reference "
                                          f"{ref_groups}, maiffs {mnt_groups}")
        moved = set()
        for path, ino in sorted(ref_inodes.items()):
            want = self.pinned.get(ino)
            if want is None:
                continue
            if ref_mtimes[path] == want:
                assert mnt_mtimes[path] == want, (
                    f"{path}: mtime was set to {want} and the reference still has it, "
                    f"but maiffs now reports {mnt_mtimes[path]}")
            else:
                assert mnt_mtimes[path] != want, (
                    f"{path}: the reference moved the mtime set earlier ({want}) to "
                    f"{ref_mtimes[path]}, maiffs kept it")
                moved.add(ino)
        for ino in moved:
            del self.pinned[ino]

def test_model(tmp_path_factory):
    """Random programs give the same results and trees on maiffs as on the local disk."""
    harness = Harness(tmp_path_factory.mktemp("model"))
    old_umask = os.umask(0o022)

    def maiffs_model() -> MaiffsModel:
        return MaiffsModel()

    MaiffsModel.harness = harness
    if SEED is not None:
        seed(int(SEED))(maiffs_model)
    try:
        run_state_machine_as_test(maiffs_model, settings=SETTINGS)
    finally:
        os.umask(old_umask)
        harness.close()
