"""Mounting like any filesystem: `mount -t fuse.maiffs` and fstab lines (`mount -a -T FILE`)
through the mount.fuse.maiffs helper, `umount` and `maiffs umount` returning only once
everything is committed, and the systemd unit's commands run the way systemd runs them."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import maiffs as maiffs_package
from conftest import MaiffsMount, make_mount, maiffs
from fsutil import read_file, run, wait_for, write_file
from maiffs.mounts import find_mount, is_mountpoint
from maiffs.options import MountOptions
from maiffs.store.lock import is_locked
from test_bad_input import refused

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "contrib" / "systemd" / "maiffs@.service"
INSTALLED_MAIFFS = "/usr/local/bin/maiffs"  # where contrib/install.sh links the entry point
HELPERS = [Path("/sbin/mount.fuse.maiffs"), Path("/sbin/umount.fuse.maiffs")]
ENTRY_POINT = Path(sys.executable).parent / "maiffs"
#: the helpers mount(8) runs must run the code under test, wherever the venv's install points
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    filter(None, [str(Path(maiffs_package.__file__).parents[1]), os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="module")
def helpers() -> Iterator[None]:
    """/sbin/mount.fuse.maiffs and /sbin/umount.fuse.maiffs linked to the venv's `maiffs`
    entry point, as contrib/install.sh links them; whatever was there is put back after."""
    assert ENTRY_POINT.exists(), f"no maiffs entry point at {ENTRY_POINT}"
    saved = {}
    for path in HELPERS:
        if path.is_symlink() or path.exists():
            saved[path] = path.with_name(path.name + ".before-test")
            os.replace(path, saved[path])
        path.symlink_to(ENTRY_POINT)
    try:
        yield
    finally:
        for path in HELPERS:
            path.unlink()
            if path in saved:
                os.replace(saved[path], path)


def system(*args: str | os.PathLike, ok: bool = True) -> subprocess.CompletedProcess:
    """mount(8), umount(8) and friends, with the environment that runs this tree's maiffs."""
    return run(*args, ok=ok, env=ENV)


def mount_options(mnt: Path) -> set[str]:
    """The per-mount flags of the mount on mnt (mountinfo's sixth field)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == str(mnt):
                return set(fields[5].split(","))
    raise AssertionError(f"{mnt} is not mounted")


def mounts_on(mnt: Path) -> int:
    with open("/proc/self/mountinfo") as f:
        return sum(line.split()[4] == str(mnt) for line in f)


def fill(mnt: Path) -> dict[str, bytes]:
    """Files written and closed but neither fsynced nor committed yet (with a long
    commit_interval only an unmount commits them)."""
    files = {f"small-{i}": os.urandom(1000 + i) for i in range(50)}
    files["big"] = os.urandom(6 << 20)
    for name, data in files.items():
        write_file(mnt / name, data)
    return files


def assert_kept(m: MaiffsMount, files: dict[str, bytes]) -> None:
    """After a fresh mount the files are all there, byte for byte."""
    m.mount()
    try:
        for name, data in files.items():
            assert read_file(m.path / name) == data, name
    finally:
        m.unmount()


# -- mount(8) and umount(8) ---------------------------------------------------------------------
def test_mount_t_fuse_maiffs_drops_mounts_own_options_and_passes_kernel_flags(tmp_path, helpers):
    m = make_mount(tmp_path)
    try:
        done = system("mount", "-t", "fuse.maiffs", m.store, m.path, "-o",
                      "rw,nofail,_netdev,x-systemd.automount,comment=x,noexec,noatime,"
                      "commit_interval=3600,compression=9")
        assert done.stdout == done.stderr == ""  # silent, as mount(8) is
        assert find_mount(str(m.path)).store == str(m.store)
        assert {"rw", "noexec", "noatime"} <= mount_options(m.path)
        write_file(m.path / "tool", b"#!/bin/sh\necho ran\n")
        os.chmod(m.path / "tool", 0o755)
        with pytest.raises(PermissionError):  # noexec reached the kernel
            subprocess.run([str(m.path / "tool")])
        files = fill(m.path)
        system("umount", m.path)
        assert not is_mountpoint(str(m.path))
        assert_kept(m, files)
    finally:
        m.cleanup()


def test_ro_mount_flag_makes_the_mount_read_only(tmp_path, helpers):
    m = make_mount(tmp_path)
    m.mount()
    write_file(m.path / "kept", b"before\n")
    m.unmount()
    try:
        system("mount", "-t", "fuse.maiffs", "-o", "ro", m.store, m.path)
        assert "ro" in mount_options(m.path)
        assert read_file(m.path / "kept") == b"before\n"
        with pytest.raises(OSError, match="Read-only file system"):
            write_file(m.path / "kept", b"after\n")
        system("umount", m.path)
        assert_kept(m, {"kept": b"before\n"})
    finally:
        m.cleanup()


def test_mount_refuses_an_unknown_option_unless_sloppy(tmp_path, helpers):
    m = make_mount(tmp_path)
    try:
        err = refused(system("mount", "-t", "fuse.maiffs", "-o", "compresion=3", m.store, m.path,
                             ok=False), "compresion")
        assert err.startswith("maiffs: unknown mount option")
        assert not is_mountpoint(str(m.path))
        system("mount", "-s", "-t", "fuse.maiffs", "-o", "compresion=3,commit_interval=1",
               m.store, m.path)
        assert find_mount(str(m.path)).store == str(m.store)
    finally:
        m.cleanup()


def test_mount_f_only_checks_and_mount_v_tells(tmp_path, helpers):
    m = make_mount(tmp_path)
    try:
        system("mount", "-f", "-t", "fuse.maiffs", "-o", "commit_interval=5,noexec", m.store, m.path)
        assert not is_mountpoint(str(m.path)) and not is_locked(str(m.store))
        refused(system("mount", "-f", "-t", "fuse.maiffs", "-o", "commit_interval=soon", m.store,
                       m.path, ok=False), "commit_interval")
        done = system("mount", "-v", "-t", "fuse.maiffs", m.store, m.path)
        assert f"mounted {m.store} on {m.path}" in done.stdout
        assert find_mount(str(m.path)).store == str(m.store)
    finally:
        m.cleanup()


def test_kernel_flags_are_options_of_their_own_after_a_list():
    """In 'replicate=a,b,noexec' noexec is a flag, not a third remote; of ro and rw the last wins."""
    opts = MountOptions.parse(["replicate=a,b,noexec,ro", "rw,keep=hourly:2,daily:1,nosuid"])
    assert opts.replicate == ("a", "b")
    assert opts.kernel_flags == ("noexec", "rw", "nosuid")


def test_fstab_lines_mount_with_mount_a_and_unmount_both_ways(tmp_path, helpers):
    stores = {}
    for name in ("auto", "manual"):
        (tmp_path / name).mkdir()
        stores[name] = make_mount(tmp_path / name)
    auto, manual = stores["auto"], stores["manual"]
    fstab = tmp_path / "fstab"
    fstab.write_text(
        "# maiffs stores\n"
        f"{auto.store} {auto.path} fuse.maiffs defaults,noatime,nofail,_netdev,"
        f"x-systemd.requires=network-online.target,commit_interval=3600,keep=hourly:24,daily:7 0 0\n"
        f"{manual.store} {manual.path} fuse.maiffs noauto,commit_interval=3600 0 0\n")
    try:
        system("mount", "-a", "-T", fstab)
        assert find_mount(str(auto.path)).store == str(auto.store)
        assert "noatime" in mount_options(auto.path)
        assert not is_mountpoint(str(manual.path)), "a noauto line was mounted"
        system("mount", "-a", "-T", fstab)  # again: what is mounted stays as it is
        assert mounts_on(auto.path) == 1 and not is_mountpoint(str(manual.path))
        system("mount", "-T", fstab, manual.path)  # a noauto line, by its mount point
        assert find_mount(str(manual.path)).store == str(manual.store)
        files = {m.store: fill(m.path) for m in (auto, manual)}

        system("umount", auto.path)
        maiffs("umount", manual.path)
        for m in (auto, manual):
            assert not is_mountpoint(str(m.path)) and not is_locked(str(m.store))

        system("mount", "-a", "-T", fstab)
        system("mount", "-T", fstab, manual.path)
        for m in (auto, manual):
            for name, data in files[m.store].items():
                assert read_file(m.path / name) == data, (m.path, name)
        system("umount", auto.path, manual.path)
    finally:
        for m in (auto, manual):
            m.cleanup()


def test_umount_l_detaches_at_once_and_commits_when_the_last_file_closes(tmp_path, helpers):
    m = make_mount(tmp_path, ["commit_interval=3600"])
    m.mount()
    try:
        pid = m.daemon_pid()
        fd = os.open(m.path / "open", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"written before the unmount\n")
            refused(maiffs("umount", m.path, check=False), "busy", f"fuser -vm {m.path}")
            system("umount", "-l", m.path)
            assert not is_mountpoint(str(m.path))
            os.write(fd, b"and after it\n")
            assert os.path.exists(f"/proc/{pid}"), "the daemon left with a file still open"
        finally:
            os.close(fd)
        wait_for(lambda: not is_locked(str(m.store)), "the daemon commits and ends", limit=60)
        assert_kept(m, {"open": b"written before the unmount\nand after it\n"})
    finally:
        m.cleanup()


@pytest.mark.parametrize("command", [["maiffs", "umount"], ["umount", "-c"]])
def test_umount_returns_once_everything_is_committed(tmp_path, helpers, command):
    """With commit_interval=3600 only the unmount commits: when the command returns the daemon
    has committed everything and exited (the store's lock is free), with no polling after.
    umount(8) runs umount.fuse.maiffs when it reads the type from the mount table, as with -c
    (what systemd runs), -l, or a relative path; `umount /abs/path` takes the kernel's
    word "fuse" instead and unmounts without a helper (the next test)."""
    m = make_mount(tmp_path, ["commit_interval=3600"])
    m.mount()
    try:
        files = fill(m.path)
        if command[0] == "maiffs":
            assert maiffs("umount", m.path).stdout == f"unmounted {m.path}\n"
        else:
            system(*command, m.path)
        assert not is_locked(str(m.store))
        assert_kept(m, files)
    finally:
        m.cleanup()


def test_a_mount_right_after_a_plain_umount_waits_for_the_last_commit(tmp_path, helpers):
    """The daemon is held (SIGSTOP) between the kernel's unmount and its last commit: the next
    mount says it waits, and mounts once the daemon has committed and exited. (`umount -i -c`
    is `umount /abs/path` without its statfs(), which a stopped daemon would never answer.)"""
    m = make_mount(tmp_path, ["commit_interval=3600"])
    m.mount()
    pid = m.daemon_pid()
    remount = None
    try:
        files = fill(m.path)
        os.kill(pid, signal.SIGSTOP)
        try:
            system("umount", "-i", "-c", m.path)
            assert not is_mountpoint(str(m.path)) and is_locked(str(m.store))
            remount = subprocess.Popen(["mount", "-t", "fuse.maiffs", m.store, m.path],
                                       env=ENV, stderr=subprocess.PIPE, text=True)
            assert remount.stderr.readline() == (f"maiffs: waiting for pid {pid} to finish committing "
                                                 f"{m.store} after its unmount from {m.path}\n")
        finally:
            os.kill(pid, signal.SIGCONT)
        assert remount.wait(timeout=120) == 0, remount.stderr.read()
        assert find_mount(str(m.path)).store == str(m.store) and m.daemon_pid() != pid
        for name, data in files.items():
            assert read_file(m.path / name) == data, name
    finally:
        if remount is not None and remount.poll() is None:
            remount.kill()
        m.cleanup()


# -- the systemd unit ---------------------------------------------------------------------------
def unit_settings() -> dict[str, list[str]]:
    """The unit file's Key=Value lines (a key may repeat), comments and sections aside."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def escape_path(path: Path) -> str:
    return run("systemd-escape", "--path", path).stdout.strip()


def unescape_path(instance: str) -> str:
    return run("systemd-escape", "--unescape", "--path", instance).stdout.strip()


def command_line(line: str, instance: str, env: dict[str, str]) -> list[str]:
    """An Exec line as systemd runs it: %i and %f are the instance and the path it names, a
    word ${VAR} is exactly one argument (empty or not), and the installed maiffs is this one."""
    words = []
    for word in shlex.split(line.replace("%f", unescape_path(instance)).replace("%i", instance)):
        if word.startswith("${") and word.endswith("}"):
            words.append(env.get(word[2:-1], ""))
        else:
            words.append(word)
    assert words[0] == INSTALLED_MAIFFS
    return [sys.executable, "-m", "maiffs", *words[1:]]


def environment(settings: dict[str, list[str]], conf: Path) -> dict[str, str]:
    """Environment= defaults, then the EnvironmentFile (this test's stand-in for /etc/maiffs)."""
    assert settings["EnvironmentFile"] == ["/etc/maiffs/%i.conf"]
    env = dict(setting.split("=", 1) for setting in settings.get("Environment", []))
    for line in conf.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    return env


@pytest.fixture
def unit_run(tmp_path: Path) -> Iterator[tuple[MaiffsMount, subprocess.Popen, socket.socket, list[str]]]:
    """The unit started as systemd starts it: ExecStart under $NOTIFY_SOCKET, until READY=1.
    Yields the mount, the main process, the notify socket and ExecStop's command line."""
    if shutil.which("systemd-escape") is None:
        pytest.skip("systemd-escape is not installed (Debian package systemd)")
    settings = unit_settings()
    assert settings["Type"] == ["notify"]
    m = make_mount(tmp_path)
    conf = tmp_path / "instance.conf"
    conf.write_text(f"MAIFFS_STORE={m.store}\nMAIFFS_OPTIONS=commit_interval=3600\n")
    instance = escape_path(m.path)
    env = environment(settings, conf)
    start, stop = (command_line(settings[k][0], instance, env) for k in ("ExecStart", "ExecStop"))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(120)
    main = subprocess.Popen(start, env={**ENV, "NOTIFY_SOCKET": str(tmp_path / "notify")})
    try:
        assert notify.recv(4096).decode().splitlines()[0] == "READY=1"
        assert find_mount(str(m.path)).store == str(m.store), "READY=1 before the mount was up"
        yield m, main, notify, stop
    finally:
        notify.close()
        m.cleanup()
        if main.poll() is None:
            main.kill()
        main.wait()


def test_unit_starts_ready_and_stops_after_committing(unit_run):
    m, main, notify, stop = unit_run
    files = fill(m.path)
    run(*stop, env=ENV)  # ExecStop
    assert not is_mountpoint(str(m.path)) and not is_locked(str(m.store))
    assert main.wait(timeout=120) == 0
    assert notify.recv(4096) == b"STOPPING=1"
    assert_kept(m, files)


def test_unit_stop_with_files_open_falls_back_to_sigterm_and_still_commits(unit_run):
    """ExecStop fails on a busy mount; systemd then sends SIGTERM, which detaches the mount
    and commits all the daemon was given: files closed, and a file still open but fsynced
    (what it holds beyond that is lost, as in a crash)."""
    m, main, notify, stop = unit_run
    files = fill(m.path)
    fd = os.open(m.path / "open", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"still open at shutdown\n")
        os.fsync(fd)
        err = refused(run(*stop, ok=False, env=ENV), f"fuser -vm {m.path}")
        assert "busy" in err
        main.send_signal(signal.SIGTERM)
        assert main.wait(timeout=120) == 0
        assert notify.recv(4096) == b"STOPPING=1"
        assert not is_mountpoint(str(m.path)) and not is_locked(str(m.store))
    finally:
        with contextlib.suppress(OSError):  # ENOTCONN: the daemon has gone
            os.close(fd)
    assert_kept(m, {**files, "open": b"still open at shutdown\n"})


def test_unit_file_verifies(tmp_path):
    """systemd-analyze verify, on an instance of the template; if /usr/local/bin/maiffs is not
    installed here, on a copy naming this venv's entry point instead (verify checks that the
    commands exist)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    text = UNIT.read_text()
    assert all(unit_settings()[key][0].startswith(f"{INSTALLED_MAIFFS} ") for key in ("ExecStart", "ExecStop"))
    assert f'"$PWD/.venv/bin/maiffs" {INSTALLED_MAIFFS}' in (REPO / "contrib" / "install.sh").read_text()
    if not os.access(INSTALLED_MAIFFS, os.X_OK):
        text = text.replace(INSTALLED_MAIFFS, str(ENTRY_POINT))
    instance = tmp_path / "maiffs@srv-data.service"
    instance.write_text(text)
    done = run("systemd-analyze", "verify", instance, ok=False)
    assert done.returncode == 0 and done.stdout == done.stderr == "", done.stdout + done.stderr
