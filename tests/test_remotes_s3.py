"""What only an S3 remote has: credentials. Against a real Ceph RADOS Gateway (no mock); the
tests every remote must pass run against S3 too, in test_remotes.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import rgw
from conftest import maiffs, make_mount, mount_session
from fsutil import wait_for


def test_wrong_credentials_are_one_clear_error(tmp_path, s3_env, monkeypatch):
    (tmp_path / "a").mkdir()
    with mount_session(tmp_path / "a") as a:
        (a.path / "f").write_text("x")
        os.mkdir(a.path / ".snapshots" / "s")
        maiffs("remote", "add", a.store, "s3", "s3://maiffs-test/three", "--endpoint", s3_env)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        done = maiffs("push", a.store, "s3", check=False)
        assert done.returncode == 1
        assert done.stderr.startswith("maiffs: remote s3://maiffs-test/three:")
        assert len(done.stderr.strip().splitlines()) == 1
        assert "not-the-secret" not in done.stderr + done.stdout


def test_credentials_never_show(tmp_path: Path, s3_env):
    """Not in the store's files, the daemon's log, `maiffs stat`, `ps`, or any CLI output,
    while replication pushes in the background and by hand."""
    base = tmp_path / "a"
    base.mkdir()
    m = make_mount(base, ["replicate=s3", "debug"])
    maiffs("remote", "add", m.store, "s3", "s3://maiffs-test/secret", "--endpoint", s3_env)
    m.mount()
    seen: list[str] = []
    try:
        for i in range(30):
            (m.path / f"f{i}").write_bytes(os.urandom(1 << 20))
        os.mkdir(m.path / ".snapshots" / "s1")
        push = subprocess.Popen([sys.executable, "-m", "maiffs", "push", m.store, "s3"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while push.poll() is None:
            seen.append(subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True,
                                       text=True).stdout)
        seen += push.communicate()
        wait_for(lambda: not maiffs("stat", "--json", m.path).stdout.count('"s1"'),
                 "replication catches up")
        seen.append(maiffs("stat", m.path).stdout)
        seen.append(maiffs("remote", "list", m.store).stdout)
        seen.append(maiffs("verify", m.store, "--remote", "s3").stdout)
    finally:
        m.cleanup()
    seen += [p.read_text(errors="replace") for p in m.store.rglob("*")
             if p.is_file() and p.suffix in ("", ".json", ".log")]
    assert any("maiffs push" in s or "-m maiffs push" in s for s in seen)  # ps was looked at
    for text in seen:
        assert rgw.SECRET_KEY not in text
        assert rgw.ACCESS_KEY not in text
