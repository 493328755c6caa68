"""Stored zip files browsed as directories through a real mount: `X.zip#/` (design.md §5)."""

from __future__ import annotations

import errno
import io
import os
import random
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from fsutil import errno_of, read_file


def make_zip(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED,
             **kw) -> None:
    with zipfile.ZipFile(path, "w", method, **kw) as z:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 5, 6, 7, 8, 10))
            info.compress_type = method
            info.external_attr = 0o640 << 16
            z.writestr(info, data)


def sample_members(n: int = 40) -> dict[str, bytes]:
    rng = random.Random(n)
    members = {f"train/{i:04d}.bin": rng.randbytes(rng.randrange(0, 300_000)) for i in range(n)}
    members["docs/a/b/readme.txt"] = b"hello from a nested member\n" * 100
    members["empty"] = b""
    return members


def test_browse_a_deflated_zip(mounted):
    members = sample_members()
    make_zip(mounted.path / "data.zip", members)
    root = mounted.path / "data.zip#"
    assert sorted(os.listdir(root)) == ["docs", "empty", "train"]
    assert sorted(os.listdir(root / "train")) == sorted(n.split("/")[1] for n in members if n.startswith("train/"))
    for name, data in members.items():
        st = os.stat(root / name)
        assert st.st_size == len(data), name
        assert st.st_mode & 0o777 == 0o640
        assert st.st_mtime == time.mktime((2024, 5, 6, 7, 8, 10, 0, 0, -1))
        assert read_file(root / name) == data, name
    assert "data.zip#" not in os.listdir(mounted.path)  # not listed, but it can be entered
    out = mounted.path.parent / "copied"
    shutil.copytree(root / "train", out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == \
        {n.split("/")[1]: d for n, d in members.items() if n.startswith("train/")}


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_members_read_at_random_offsets(mounted, method):
    data = random.Random(1).randbytes(3 << 20)
    make_zip(mounted.path / "big.zip", {"big": data, "small": b"x"}, method)
    rng = random.Random(2)
    fd = os.open(mounted.path / "big.zip#" / "big", os.O_RDONLY)
    try:
        for _ in range(60):
            off = rng.randrange(0, len(data))
            size = rng.randrange(1, 200_000)
            assert os.pread(fd, size, off) == data[off:off + size]
    finally:
        os.close(fd)


def test_zip64_archive(mounted):
    members = {f"m{i}": bytes([i]) * (i * 1000) for i in range(20)}
    with zipfile.ZipFile(mounted.path / "z64.zip", "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            with z.open(name, "w", force_zip64=True) as f:
                f.write(data)
    for name, data in members.items():
        assert read_file(mounted.path / "z64.zip#" / name) == data


def test_the_view_is_read_only_and_its_inodes_are_its_own(mounted):
    make_zip(mounted.path / "d.zip", {"a/b": b"1", "c": b"2"})
    root = mounted.path / "d.zip#"
    assert errno_of(open, root / "c", "wb") == errno.EROFS
    assert errno_of(os.mkdir, root / "new") == errno.EROFS
    assert errno_of(os.unlink, root / "c") == errno.EROFS
    assert errno_of(os.rename, root / "c", root / "d") == errno.EROFS
    assert errno_of(os.chmod, root / "c", 0o777) == errno.EROFS
    live = {os.lstat(p).st_ino for p in mounted.path.rglob("*")} | {os.lstat(mounted.path).st_ino}
    inside = [os.lstat(root / p).st_ino for p in ("", "a", "a/b", "c")]
    assert len(set(inside)) == 4 and not set(inside) & live
    assert read_file(root / "c") == b"2"


def test_a_changed_zip_is_read_again(mounted):
    path = mounted.path / "v.zip"
    make_zip(path, {"f": b"first"})
    assert read_file(mounted.path / "v.zip#" / "f") == b"first"
    make_zip(path, {"f": b"second version", "g": b"new"})  # at once: X.zip# is never cached
    assert read_file(mounted.path / "v.zip#" / "f") == b"second version"
    assert sorted(os.listdir(mounted.path / "v.zip#")) == ["f", "g"]


def test_only_zips_and_real_names_enter(mounted):
    (mounted.path / "text.txt").write_text("not a zip")
    assert errno_of(os.listdir, mounted.path / "text.txt#") == errno.ENOENT
    (mounted.path / "broken.zip").write_bytes(b"PK\x05\x06" + b"\x00" * 10)  # truncated end record
    assert errno_of(os.listdir, mounted.path / "broken.zip#") == errno.EIO
    assert errno_of(os.listdir, mounted.path / "missing.zip#") == errno.ENOENT
    os.mkdir(mounted.path / "dir.zip")
    assert errno_of(os.listdir, mounted.path / "dir.zip#") == errno.ENOENT
    (mounted.path / "real#").write_bytes(b"a real name ending in #")
    assert read_file(mounted.path / "real#") == b"a real name ending in #"


def test_hostile_members_never_escape_or_crash_the_daemon(mounted):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("../evil", b"escape")
        z.writestr("/abs/path", b"absolute")
        z.writestr("ok/../../x", b"sneaky")
        z.writestr("good", b"good content")
        z.writestr("bad-crc", b"payload that will be corrupted")
    raw = bytearray(buf.getvalue())
    at = raw.index(b"payload that will be corrupted")
    raw[at] ^= 0xFF  # the stored bytes no longer match their CRC-32
    (mounted.path / "hostile.zip").write_bytes(bytes(raw))
    root = mounted.path / "hostile.zip#"
    assert sorted(os.listdir(root)) == ["abs", "bad-crc", "good"]
    assert read_file(root / "abs" / "path") == b"absolute"
    assert read_file(root / "good") == b"good content"
    assert errno_of(read_file, root / "bad-crc") == errno.EIO
    assert not (mounted.path / "evil").exists() and not (mounted.path.parent / "evil").exists()
    (mounted.path / "after").write_bytes(b"the daemon still answers")
    assert read_file(mounted.path / "after") == b"the daemon still answers"


def test_unzip_agrees_with_the_view(mounted, tmp_path):
    members = sample_members(15)
    make_zip(mounted.path / "u.zip", members)
    out = tmp_path / "unzipped"
    subprocess.run(["unzip", "-q", mounted.path / "u.zip", "-d", out], check=True)
    done = subprocess.run(["diff", "-r", out, mounted.path / "u.zip#"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
