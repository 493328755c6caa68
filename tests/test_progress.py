"""Progress of the long commands (issue 9): push, pull, clone, verify, fsck show a bar redrawn
in place on a terminal, plain lines elsewhere, nothing with --quiet; --json puts one JSON
document on stdout. (prefetch: tests/test_prefetch.py.)"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import maiffs, mount_session
from remote_spots import DirSpot

MiB = 1 << 20
#: One state of a bar: label, 24 cells, share, [bytes done/total], items done/total, rate, ETA.
LINE = (r"{label} \[[#.]{{24}}\] +\d+% (?:[\d.]+ (?:B|KiB|MiB|GiB)/[\d.]+ (?:B|KiB|MiB|GiB) )?"
        r"[\d,]+/[\d,]+ {items} (?:[\d.]+ (?:B|KiB|MiB|GiB)|[\d,]+ {items})/s "
        r"ETA (?:\d+:\d\d:\d\d|-:--:--)")


def bar_line(label: str, items: str) -> re.Pattern[str]:
    return re.compile(LINE.format(label=re.escape(label), items=re.escape(items)))


@pytest.fixture
def store_with_data(tmp_path: Path) -> Path:
    """An unmounted store with a snapshot of 6 MiB of data, pushed to remote r."""
    with mount_session(tmp_path) as m:
        (m.path / "d").mkdir()
        for i in range(3):
            (m.path / "d" / f"f{i}").write_bytes(os.urandom(2 * MiB))
        os.mkdir(m.path / ".snapshots" / "one")
    DirSpot(tmp_path / "remote").add(m.store, "r")
    maiffs("push", "--quiet", m.store, "r")
    return m.store


def plain_lines(stderr: str, label: str, items: str) -> list[str]:
    """stderr as plain progress lines of one bar (no carriage returns, no escapes); the last
    at 100%."""
    assert "\r" not in stderr and "\x1b" not in stderr, repr(stderr)
    lines = [line for line in stderr.splitlines() if line.startswith(f"{label} [")]
    assert lines, stderr
    for line in lines:
        assert bar_line(label, items).fullmatch(line), line
    assert " 100% " in lines[-1] and "[" + "#" * 24 + "]" in lines[-1], lines[-1]
    return lines


def test_verify_and_fsck_show_plain_lines_off_a_terminal(store_with_data):
    done = maiffs("verify", "--remote", "r", store_with_data)
    plain_lines(done.stderr, "verify local", "chunks+objects")
    last = plain_lines(done.stderr, "verify r", "chunks")[-1]
    assert "6.0 MiB/6.0 MiB" in last  # the remote's packed chunks (random data: raw)
    assert done.stdout.endswith(" problems\n") and done.stdout.startswith("verify: ")

    done = maiffs("fsck", store_with_data)
    last = plain_lines(done.stderr, "fsck", "chunks")[-1]
    assert "6.0 MiB/6.0 MiB" in last
    assert "is clean" in done.stdout


@pytest.mark.parametrize("command", [
    ["verify", "{store}"], ["verify", "--remote", "r", "{store}"], ["fsck", "{store}"],
    ["push", "{store}", "r"], ["pull", "{store}", "r"], ["clone", "{remote}", "{clone}"]])
def test_quiet_says_nothing_on_stderr_and_json_is_one_document(store_with_data, command):
    tmp = store_with_data.parent

    def run(*flags: str, n: int) -> subprocess.CompletedProcess:
        fill = {"store": store_with_data, "remote": tmp / "remote", "clone": tmp / f"clone{n}"}
        return maiffs(*[part.format(**fill) for part in command], *flags)

    quiet = run("--quiet", n=1)
    assert quiet.stderr == "" and quiet.stdout
    shown = run("--json", n=2)
    assert json.loads(shown.stdout)  # all of stdout is the document
    assert re.search(r"\[#{24}\] 100% ", shown.stderr), shown.stderr  # progress kept to stderr
    both = run("--json", "-q", n=3)
    assert both.stderr == "" and json.loads(both.stdout)


def test_on_a_terminal_the_bar_redraws_in_place(store_with_data):
    """stderr a pseudo-terminal: each bar is drawn with a carriage return and an erase to the
    end of the line, at least at its start and its end, then the line is ended."""
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen([sys.executable, "-m", "maiffs", "verify", "--remote", "r",
                                    str(store_with_data)], stdout=subprocess.DEVNULL,
                                   stderr=follower)
        os.close(follower)
        out = b""
        while True:  # read as it comes, so that a full terminal buffer never blocks the command
            try:
                block = os.read(leader, 65536)
            except OSError:  # EIO: the command has closed the terminal (it has ended)
                break
            if not block:
                break
            out += block
        assert process.wait(timeout=300) == 0, out
    finally:
        os.close(leader)
    screen = out.decode()
    for label, items in (("verify local", "chunks+objects"), ("verify r", "chunks")):
        draws = re.findall(r"\r(" + LINE.format(label=re.escape(label), items=re.escape(items))
                           + r")\x1b\[K", screen)
        assert len(draws) >= 2, repr(screen)
        assert " 100% " in draws[-1] and " ETA 0:00:00" in draws[-1] and "/s ETA" in draws[-1]
        assert re.search(re.escape(draws[-1]) + r"\x1b\[K\r?\n", screen), repr(screen)
