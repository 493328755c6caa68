"""README's first Quickstart command (contrib/quickstart.sh) installs, creates the store and
mounts it on a mount point like the checkout's ./mount (which git keeps holding .gitkeep)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from conftest import maiffs
from maiffs.mounts import find_mount

REPO = Path(__file__).resolve().parent.parent


def test_quickstart_mounts_the_store_and_says_how_to_unmount(tmp_path):
    store, mnt = tmp_path / "store", tmp_path / "mount"
    shutil.copytree(REPO / "mount", mnt)  # as cloned: .gitkeep and nothing else
    env = dict(os.environ, MAIFFS_STORE=str(store), MAIFFS_MOUNT=str(mnt))
    try:
        done = subprocess.run(["bash", REPO / "contrib" / "quickstart.sh"], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert find_mount(str(mnt)) is not None
        assert f"mounted on {mnt}" in done.stdout and f"maiffs umount {mnt}" in done.stdout
        (mnt / "hello").write_text("hello")
        again = subprocess.run(["bash", REPO / "contrib" / "quickstart.sh"], env=env,
                               capture_output=True, text=True, timeout=600)
        assert again.returncode == 0 and "already mounted" in again.stdout, again.stderr[-3000:]
    finally:
        if find_mount(str(mnt)) is not None:
            maiffs("umount", mnt)
    assert sorted(os.listdir(mnt)) == sorted(os.listdir(REPO / "mount"))  # .gitkeep is back
    maiffs("mount", "-o", "nonempty", store, mnt)
    try:
        assert (mnt / "hello").read_text() == "hello"
    finally:
        maiffs("umount", mnt)
