"""The suite's watchdog (tests/watchdog.py): a test stuck on a mount that stopped answering
fails with the stacks that show where, and the run goes on to the next test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from maiffs.mounts import maiffs_mounts

STUCK = '''
import os, signal, subprocess, sys
from maiffs.store.lock import holder_pid

def test_stuck(tmp_path):
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    mnt.mkdir()
    for args in (["mkfs", store], ["mount", store, mnt]):
        subprocess.run([sys.executable, "-m", "maiffs", *map(str, args)], check=True)
    os.kill(holder_pid(str(store)), signal.SIGSTOP)  # the daemon stops answering
    os.listdir(mnt)

def test_after_it():
    pass
'''


def test_a_stuck_test_fails_with_stacks_and_the_run_goes_on(tmp_path: Path) -> None:
    (tmp_path / "test_stuck.py").write_text(STUCK)
    tests = Path(__file__).parent
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "watchdog", "--hang-limit=3",
                           "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'tmp'}",
                           "--rootdir", str(tmp_path), str(tmp_path / "test_stuck.py")],
                          capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": f"{tests}:{tests.parent}", "PATH": "/usr/bin:/bin"})
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "=== watchdog: test_stuck.py::test_stuck still running after 3s ===" in out
    assert 'test_stuck.py", line 11 in test_stuck' in out  # where it was stuck: os.listdir
    assert "killed 1 maiffs processes" in out
    assert "1 failed, 1 passed" in out
    assert "ConnectionAbortedError" in out  # what the stuck call then raised
    assert not [m for m in maiffs_mounts() if m.mountpoint.startswith(str(tmp_path))]
