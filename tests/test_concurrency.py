"""16 processes at once (issue 8, concurrency): stress-ng's filesystem stressors on one mount.

stress-ng checks its own data (`--verify`: the hdd and seek stressors read back what they
wrote) and exits non-zero on any failure. After the run the mount must still answer, the tree
must be walkable and removable, the daemon's log must hold no error and fsck must be clean:
no error, no wrong byte, no deadlock (the run has a hard timeout), no daemon crash.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import MaiffsMount, maiffs
from fsutil import log_problems

SHORT_SECONDS = 20
LONG_SECONDS = 300
#: 16 workers: data with verification, directory and name churn, links, locks, seeks
STRESSORS = ["--hdd", "3", "--hdd-bytes", "8M", "--verify", "--dir", "2", "--dentry", "2",
             "--rename", "2", "--link", "2", "--symlink", "2", "--filename", "1",
             "--lockf", "1", "--seek", "1", "--seek-size", "16M"]


@pytest.mark.skipif(shutil.which("stress-ng") is None, reason="stress-ng is not installed")
def test_sixteen_stress_ng_workers(mounted: MaiffsMount, long_run: bool):
    seconds = LONG_SECONDS if long_run else SHORT_SECONDS
    work = mounted.path / "stress"
    work.mkdir()
    run = subprocess.run(["stress-ng", "--temp-path", str(work), *STRESSORS,
                          "--timeout", f"{seconds}s", "--metrics-brief"],
                         capture_output=True, text=True, timeout=seconds * 3 + 120, cwd=work)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert "successful run completed" in out, out[-4000:]
    assert "fail:" not in out, out[-4000:]
    walked = subprocess.run(["find", str(mounted.path)], capture_output=True, text=True, timeout=120)
    assert walked.returncode == 0, walked.stderr
    subprocess.run(["rm", "-rf", str(work)], check=True, timeout=300)
    assert not work.exists()
    assert not log_problems(mounted), "\n".join(log_problems(mounted)[:20])
    mounted.unmount()
    maiffs("fsck", mounted.store)
    mounted.mount()
