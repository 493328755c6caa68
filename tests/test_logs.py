"""The daemon's log: one line per event with time and level, nothing but the mount and the
unmount at the default level, every FUSE request under --debug or -o debug, and the lines
going to the store's maiffs.log, another file (-o log=FILE) or syslog (-o log=syslog[:SOCKET])."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_mount, maiffs, mount_session
from fsutil import read_file, write_file
from maiffs.logs import OneLineFormatter
from maiffs.mounts import is_mountpoint
from test_bad_input import refused

#: time (ISO 8601, milliseconds, UTC offset), level, logger: message; nothing after a newline
LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d "
                  r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: [^\n]+")
#: what syslog receives: priority <facility daemon * 8 + severity>, tag with pid, level, message
SYSLOG_LINE = re.compile(r"<(\d+)>maiffs\[(\d+)\]: (DEBUG|INFO|WARNING|ERROR) [\w.]+: ([^\n\x00]+)\x00?")


def lines(path: Path) -> list[str]:
    text = path.read_text()
    assert text.endswith("\n"), "a partial line"
    found = text.splitlines()
    for line in found:
        assert LINE.fullmatch(line), f"not one event line: {line!r}"
    return found


def normal_life(mnt: Path) -> None:
    """What a user does in a mount: files and directories made, read, renamed, removed, a
    snapshot, the stats."""
    os.mkdir(mnt / "dir")
    write_file(mnt / "dir" / "a", os.urandom(300_000))
    write_file(mnt / "b", b"SECRET-CONTENT-4711\n", sync=True)
    os.rename(mnt / "b", mnt / "dir" / "c")
    assert read_file(mnt / "dir" / "c") == b"SECRET-CONTENT-4711\n"
    os.mkdir(mnt / ".snapshots" / "s1")
    assert sorted(os.listdir(mnt / ".snapshots" / "s1" / "dir")) == ["a", "c"]
    read_file(mnt / ".maiffs" / "stats")
    os.unlink(mnt / "dir" / "a")
    assert not (mnt / "missing").exists()  # a failed lookup is no event either


def test_default_level_logs_the_mount_and_the_unmount_only(tmp_path):
    with mount_session(tmp_path) as m:
        normal_life(m.path)
        m.unmount()
        log = lines(m.store / "maiffs.log")
    assert [line.split(" ", 1)[1] for line in log] == [
        f"INFO maiffs.daemon: mounted {m.store} on {m.path}",
        f"INFO maiffs.daemon: unmounted {m.path}"]
    assert stat.S_IMODE(os.stat(m.store / "maiffs.log").st_mode) == 0o600


@pytest.mark.parametrize("switch", [["--debug"], ["-o", "debug"]])
def test_debug_logs_every_request_on_its_own_line(tmp_path, switch):
    m = make_mount(tmp_path)
    maiffs("mount", *switch, m.store, m.path)
    try:
        write_file(m.path / "probe-name", b"SECRET-CONTENT-4711\n", sync=True)
        assert read_file(m.path / "probe-name") == b"SECRET-CONTENT-4711\n"
        m.unmount()
    finally:
        m.cleanup()
    log = lines(m.store / "maiffs.log")
    requests = [line.split(": ", 1)[1] for line in log if " DEBUG maiffs.fuse.operations: " in line]
    assert "create(1, b'probe-name')" in requests
    assert any(r.startswith("write(") for r in requests) and any(r.startswith("fsync(") for r in requests)
    assert "SECRET-CONTENT" not in "\n".join(log)  # requests, never data
    assert f"INFO maiffs.daemon: unmounted {m.path}" in log[-1]


def test_log_to_a_file_of_ones_choice(tmp_path):
    target = tmp_path / "logs" / "data.log"
    target.parent.mkdir()
    with mount_session(tmp_path, [f"log={target}"]) as m:
        normal_life(m.path)
        m.unmount()
    log = lines(target)
    assert [line.split(" ", 2)[2] for line in log] == [
        f"maiffs.daemon: mounted {m.store} on {m.path}", f"maiffs.daemon: unmounted {m.path}"]
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert not (m.store / "maiffs.log").exists()


def test_sigusr1_writes_every_threads_stack_to_the_log_and_the_mount_goes_on(tmp_path):
    with mount_session(tmp_path) as m:
        write_file(m.path / "a", os.urandom(300_000), sync=True)
        before = (m.store / "maiffs.log").read_text()
        os.kill(m.daemon_pid(), signal.SIGUSR1)
        deadline = time.monotonic() + 30
        while "trio" not in (m.store / "maiffs.log").read_text()[len(before):]:
            assert time.monotonic() < deadline, "no stacks in the log"
            time.sleep(0.05)
        dump = (m.store / "maiffs.log").read_text()[len(before):]
        write_file(m.path / "b", b"still answering", sync=True)
        assert read_file(m.path / "b") == b"still answering"
        m.unmount()
    assert re.search(r"^Thread 0x[0-9a-f]+ \(most recent call first\):$", dump, re.M)
    frames = re.findall(r'^  File "([^"]+)", line \d+ in (\w+)$', dump, re.M)
    assert any(path.endswith("maiffs/daemon.py") for path, _fn in frames), dump
    last = (m.store / "maiffs.log").read_text().splitlines()[-1]
    assert LINE.fullmatch(last) and last.endswith(f"unmounted {m.path}")  # and logging went on


def test_log_to_syslog(tmp_path):
    """A socket of the test's own stands in for /dev/log: the datagrams a syslog daemon would get."""
    address = str(tmp_path / "log.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as syslog:
        syslog.bind(address)
        syslog.settimeout(60)
        with mount_session(tmp_path, [f"log=syslog:{address}"]) as m:
            pid = m.daemon_pid()
            normal_life(m.path)
            m.unmount()
        received = [syslog.recv(65536).decode() for _ in range(2)]
        syslog.setblocking(False)
        with pytest.raises(BlockingIOError):  # and nothing more
            syslog.recv(65536)
    events = [SYSLOG_LINE.fullmatch(text) for text in received]
    assert all(events), received
    assert [(int(e[1]), int(e[2]), e[3], e[4]) for e in events] == [
        (3 * 8 + 6, pid, "INFO", f"mounted {m.store} on {m.path}"),  # facility daemon, severity info
        (3 * 8 + 6, pid, "INFO", f"unmounted {m.path}")]
    assert not (m.store / "maiffs.log").exists()


@pytest.mark.parametrize("target, needle", [
    ("syslog:/nonexistent/log.sock", "-o log=FILE"),
    ("/nonexistent/dir/maiffs.log", "/nonexistent/dir/maiffs.log"),
])
def test_a_log_that_cannot_be_written_refuses_the_mount(tmp_path, target, needle):
    m = make_mount(tmp_path)
    try:
        refused(maiffs("mount", m.store, m.path, "-o", f"log={target}", check=False), needle)
        assert not is_mountpoint(str(m.path))
    finally:
        m.cleanup()


def test_foreground_logs_to_stderr_unless_told_otherwise(tmp_path):
    """maiffs mount -f (as under systemd, whose journal keeps stderr) logs there."""
    m = make_mount(tmp_path)
    daemon = subprocess.Popen([sys.executable, "-m", "maiffs", "mount", "-f", m.store, m.path],
                              stderr=subprocess.PIPE, text=True)
    try:
        first = daemon.stderr.readline()
        assert LINE.fullmatch(first.rstrip("\n")) and f"mounted {m.store} on {m.path}" in first
        normal_life(m.path)
        m.unmount()
        rest = daemon.stderr.read()
        assert daemon.wait(timeout=60) == 0
    finally:
        m.cleanup()
        if daemon.poll() is None:
            daemon.kill()
    assert len(rest.splitlines()) == 1 and LINE.fullmatch(rest.rstrip("\n"))
    assert f"unmounted {m.path}" in rest
    assert not (m.store / "maiffs.log").exists()


def test_a_traceback_is_one_line():
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord("maiffs.x", logging.ERROR, __file__, 1, "failed %s", ("here",),
                                   sys.exc_info())
    line = OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s").format(record)
    assert LINE.fullmatch(line)
    assert "failed here | Traceback (most recent call last): | " in line
    assert line.endswith("ValueError: bad | thing")
