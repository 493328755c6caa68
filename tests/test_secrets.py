"""Secrets and core dumps (issue 8): a maiffs process never leaves a core file.

The CLI and the daemon it becomes may hold a remote's credentials (boto3 reads them from the
environment); a core dump would write them to disk. maiffs sets its core-size limit to 0 at
start, even when started with an unlimited one. (Credentials in logs, `ps`, `maiffs stat` and
the store's files are tested against a real S3 gateway in test_remotes_s3.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import maiffs

SECRET = "maiffs-test-secret-Zq8vK2"


def core_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            return line.split()[4]
    raise AssertionError("no core limit line")


def test_a_crashing_daemon_leaves_no_core_with_credentials(tmp_path: Path):
    store, mnt, cwd = tmp_path / "store", tmp_path / "mnt", tmp_path / "cwd"
    mnt.mkdir()
    cwd.mkdir()
    maiffs("mkfs", store)
    env = dict(os.environ, AWS_SECRET_ACCESS_KEY=SECRET, AWS_ACCESS_KEY_ID="maiffs-test-id")
    daemon = subprocess.Popen(["prlimit", "--core=unlimited", "--", sys.executable, "-m", "maiffs",
                               "mount", "-f", str(store), str(mnt)],
                              cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mnt):
            assert daemon.poll() is None, daemon.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the daemon did not mount"
            time.sleep(0.05)
        assert core_limit(daemon.pid) == "0"
        daemon.send_signal(signal.SIGSEGV)  # a crash
        daemon.wait(timeout=30)
        assert daemon.returncode == -signal.SIGSEGV
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
    pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    if not pattern.startswith("|"):  # cores land as files: none may be there
        leftovers = [p for p in list(cwd.iterdir()) + list(tmp_path.iterdir()) if p.name.startswith("core")]
        assert leftovers == [], leftovers
