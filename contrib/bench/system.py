"""Machine-level helpers: dropping the page cache, a process's CPU time, facts about the machine.

Kept apart from the workloads because they touch /proc and /sys, which is where the harness
depends on Linux and on running as root; everything here degrades to "unknown" instead of
failing, so a run without root still produces numbers (with `caches_dropped: false`).
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
from importlib import metadata
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def drop_caches() -> bool:
    """Write back and drop the page, dentry and inode caches; False if not permitted.

    This is what makes a read "cold" on the plain directory and on memfs (whose data lives in
    its process, so only the kernel's copy can be dropped). It is global: other programs on
    the machine lose their caches too.
    """
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


def cache_drops() -> int:
    """How many times anyone has dropped the page cache since boot (/proc/vmstat).

    The harness never drops caches inside a timed section, so a change across one means
    another program on this shared machine did, and a "warm" sample may really be cold.
    """
    try:
        with open("/proc/vmstat") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("drop_pagecache ")), 0)
    except OSError:
        return 0


def cpu_seconds(pid: int | None) -> float | None:
    """User+system CPU time of a process, all its threads included (None if it is gone)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "; field 3 is fields[0]
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def is_mountpoint(path: Path) -> bool:
    """True if anything (a dead FUSE mount included) is mounted on path."""
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == real for line in f)


def lazy_unmount(path: Path) -> None:
    """Last resort for a FUSE mount whose daemon is stuck or dead: detach it, ignore errors."""
    if is_mountpoint(path):
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True)


def unmount_and_stop(mountpoint: Path, proc: subprocess.Popen | None, grace: float) -> None:
    """Unmount a FUSE daemon's mount point and wait for its process; SIGTERM, then SIGKILL, if
    it does not end within grace seconds each."""
    if is_mountpoint(mountpoint):
        subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True)
    if proc is None:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def filesystem_type(path: Path) -> str:
    """The fs type of the mount holding path (e.g. ext4, tmpfs): says what "plain dir" was."""
    real, best, kind = os.path.realpath(path), "", "unknown"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mnt = fields[4]
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, kind = mnt, fields[fields.index("-") + 1]
    return kind


def _first_line(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    out = (done.stdout or done.stderr).strip()
    return out.splitlines()[0] if out else "unknown"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(workdir: Path) -> dict[str, object]:
    """What the numbers depend on, recorded with them."""
    with open("/proc/meminfo") as f:
        mem_kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": round(mem_kib / (1 << 20), 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "pyfuse3": metadata.version("pyfuse3"),
        "fuse": _first_line(["fusermount3", "--version"]),
        "zstd_cli": _first_line(["zstd", "--version"]),
        "workdir": str(workdir),
        "workdir_fs": filesystem_type(workdir),
        "loadavg_at_start": os.getloadavg(),
    }
