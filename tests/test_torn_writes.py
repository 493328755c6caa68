"""A power cut in the middle of an LMDB write (issue 8: torn writes).

While writers create, append, rename and fsync on the mount, the daemon is frozen with SIGSTOP
at random moments, possibly in the middle of a commit; the store directory is copied as it is
on disk at that instant (what a machine that lost power there would have), and the daemon
resumes. Every copy must then open as it is: `maiffs fsck` finds nothing, it mounts, and every
change the writers had fsynced before the freeze is there, whole.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

from conftest import MaiffsMount, maiffs
from test_durability import check_against_manifest, read_everything, start_writers, wait_for_changes

SHORT_FREEZES = 6
LONG_FREEZES = 25


def freeze_and_copy(m: MaiffsMount, dest: Path, manifest: Path) -> None:
    """Copy the store's files with the daemon stopped, and the manifest as it was then."""
    pid = m.daemon_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        shutil.copytree(m.store, dest, ignore=shutil.ignore_patterns("maiffs.lock"))
        shutil.copyfile(manifest, dest.with_suffix(".manifest"))
    finally:
        os.kill(pid, signal.SIGCONT)


def test_store_copied_mid_write_opens_consistent(mounted: MaiffsMount, tmp_path: Path, long_run: bool):
    manifest = tmp_path / "manifest"
    manifest.touch()
    rng = random.Random(int(os.environ.get("MAIFFS_FREEZE_SEED", "7")))
    copies = []
    writers = start_writers(mounted.path, manifest, 0, 2)
    try:
        wait_for_changes(writers, manifest, 0, 3)
        for n in range(LONG_FREEZES if long_run else SHORT_FREEZES):
            time.sleep(rng.uniform(0.0, 0.7))
            copy = tmp_path / f"copy{n}"
            freeze_and_copy(mounted, copy, manifest)
            copies.append(copy)
    finally:
        for writer in writers:
            writer.kill()
            writer.communicate()

    checked = 0
    for copy in copies:
        fsck = maiffs("fsck", copy, check=False)
        assert fsck.returncode == 0, f"{copy.name}: {fsck.stdout}{fsck.stderr}"
        mnt = tmp_path / f"{copy.name}-mnt"
        mnt.mkdir()
        maiffs("mount", copy, mnt)
        try:
            checked += check_against_manifest(mnt, copy.with_suffix(".manifest"))
            read_everything(mnt)
        finally:
            maiffs("umount", mnt, check=False)
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
    assert checked > len(copies), "the writers made too few changes durable to check"
