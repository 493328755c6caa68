"""Archive directories through a real mount: `mkdir X.zip#`, write into it, read `X.zip` as a zip
that unzip, zipfile and bsdtar accept (design.md §5)."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from conftest import mount_session
from fsutil import errno_of, read_file, run, wait_for, write_file

WRITERS = 8
FILES_PER_WRITER = 2000


def content(tag: str) -> bytes:
    return hashlib.sha256(tag.encode()).digest() * (1 + len(tag) % 5)


def fill_archive(root: Path) -> dict[str, bytes]:
    files = {"a.txt": b"alpha\n", "sub/b.bin": os.urandom(300_000), "sub/deeper/c": b"",
             "ünïcode name.txt": "ü".encode() * 1000}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        write_file(root / rel, data)
    os.chmod(root / "a.txt", 0o600)
    return files


def test_an_archive_directory_reads_as_a_standard_zip(mounted, tmp_path):
    mnt = mounted.path
    os.mkdir(mnt / "run42.zip#")
    files = fill_archive(mnt / "run42.zip#")
    assert sorted(os.listdir(mnt)) == ["run42.zip"]  # the face stands for the directory
    face = mnt / "run42.zip"
    assert os.stat(face).st_size == len(read_file(face))
    with zipfile.ZipFile(face) as z:
        assert z.testzip() is None
        assert {n: z.read(n) for n in z.namelist() if not n.endswith("/")} == files
        assert z.getinfo("a.txt").external_attr >> 16 & 0o777 == 0o600
    run("unzip", "-tq", face)
    listed = run("bsdtar", "-tf", face).stdout.split("\n")
    assert set(files) <= set(listed)
    out = tmp_path / "bsdtar-out"
    out.mkdir()
    run("bsdtar", "-xf", face, "-C", out)
    assert {rel: (out / rel).read_bytes() for rel in files} == files
    handed_off = tmp_path / "copy.zip"
    run("cp", face, handed_off)
    run("unzip", "-tq", handed_off)


def test_the_face_follows_the_directory_and_is_read_only(mounted):
    mnt = mounted.path
    os.mkdir(mnt / "a.zip#")
    write_file(mnt / "a.zip#" / "one", b"1")
    with zipfile.ZipFile(mnt / "a.zip") as z:
        assert z.namelist() == ["one"]
    write_file(mnt / "a.zip#" / "two", b"22")
    with zipfile.ZipFile(mnt / "a.zip") as z:  # opening takes the directory as it is now
        assert sorted(z.namelist()) == ["one", "two"] and z.read("two") == b"22"
    assert errno_of(open, mnt / "a.zip", "wb") == errno.EROFS
    assert errno_of(open, mnt / "a.zip", "ab") == errno.EROFS
    assert errno_of(os.truncate, mnt / "a.zip", 0) == errno.EROFS


def test_stat_and_cp_see_a_member_written_a_moment_ago(mounted, tmp_path):
    """Tools that take the size from stat (unzip seeks to the end, cp copies st_size bytes of
    a file whose blocks say it is sparse) see the face as it is after each change."""
    mnt = mounted.path
    os.mkdir(mnt / "r.zip#")
    for i in range(6):
        write_file(mnt / "r.zip#" / f"a{i}", b"a%d\n" % i)
    for i in range(5):
        assert os.stat(mnt / "r.zip").st_size == len(read_file(mnt / "r.zip"))  # cached now
        write_file(mnt / "r.zip#" / f"p{i}", b"p" * (100 + i))
        st = os.stat(mnt / "r.zip")
        assert st.st_size == len(read_file(mnt / "r.zip")) and st.st_blocks * 512 >= st.st_size
        copy = tmp_path / f"copy{i}.zip"
        run("cp", mnt / "r.zip", copy)
        run("unzip", "-tq", copy)
        run("unzip", "-tq", mnt / "r.zip")
        with zipfile.ZipFile(copy) as z:
            assert z.read(f"p{i}") == b"p" * (100 + i)


def test_rm_and_mv_act_on_both_faces(mounted, tmp_path):
    mnt = mounted.path
    os.mkdir(mnt / "x.zip#")
    write_file(mnt / "x.zip#" / "f", b"data")
    os.rename(mnt / "x.zip", mnt / "y.zip")
    assert sorted(os.listdir(mnt)) == ["y.zip"]
    assert read_file(mnt / "y.zip#" / "f") == b"data"
    run("mv", mnt / "y.zip", mnt / "plain-copy")  # not *.zip: EXDEV, so mv copies the zip
    assert sorted(os.listdir(mnt)) == ["plain-copy"]
    with zipfile.ZipFile(mnt / "plain-copy") as z:
        assert z.read("f") == b"data"
    os.mkdir(mnt / "gone.zip#")
    write_file(mnt / "gone.zip#" / "g", b"g")
    os.unlink(mnt / "gone.zip")
    assert sorted(os.listdir(mnt)) == ["plain-copy"]
    # the kernel's cached entry for the directory goes with a notification the daemon sends
    # once the unlink has returned
    wait_for(lambda: not os.path.lexists(mnt / "gone.zip#"), "gone.zip# disappears", limit=5)
    assert errno_of(os.stat, mnt / "gone.zip#") == errno.ENOENT


def _writer(archive: str, worker: int) -> None:
    for i in range(FILES_PER_WRITER):
        name = f"w{worker}/f{i:05d}"
        with open(os.path.join(archive, name), "wb") as f:
            f.write(content(name))


def test_many_writers_make_one_valid_zip(mounted):
    archive = mounted.path / "many.zip#"
    os.mkdir(archive)
    for w in range(WRITERS):
        os.mkdir(archive / f"w{w}")
    procs = [subprocess.Popen([sys.executable, __file__, "writer", str(archive), str(w)])
             for w in range(WRITERS)]
    assert [p.wait(timeout=600) for p in procs] == [0] * WRITERS
    face = mounted.path / "many.zip"
    run("unzip", "-tq", face, timeout=600)
    with zipfile.ZipFile(face) as z:
        names = [n for n in z.namelist() if not n.endswith("/")]
        assert len(names) == WRITERS * FILES_PER_WRITER
        for name in names[::97]:
            assert z.read(name) == content(name)


def test_kill_9_while_writers_are_busy_never_breaks_the_zip(tmp_path):
    with mount_session(tmp_path) as m:
        archive = m.path / "crash.zip#"
        os.mkdir(archive)
        for w in range(2):
            os.mkdir(archive / f"w{w}")
        procs = [subprocess.Popen([sys.executable, __file__, "writer", str(archive), str(w)],
                                  stderr=subprocess.DEVNULL) for w in range(2)]
        time.sleep(1.5)
        m.kill()
        for p in procs:
            p.wait(timeout=60)
        m.mount()
        face = m.path / "crash.zip"
        run("unzip", "-tq", face, timeout=600)
        with zipfile.ZipFile(face) as z:
            names = [n for n in z.namelist() if not n.endswith("/")]
            assert names, "the writers had closed files before the kill"
            closed = [n for n in names if z.getinfo(n).file_size == len(content(n))]
            assert len(closed) >= len(names) - 2  # at most the file each writer had open
            for name in closed:
                assert z.read(name) == content(name)


if __name__ == "__main__" and sys.argv[1:2] == ["writer"]:
    _writer(sys.argv[2], int(sys.argv[3]))
