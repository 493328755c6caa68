"""Real tools through a real mount (design.md §1): rsync -aHAX, tar, git, sqlite3, editors that
save by rename, mmap, cp -a and stress-ng behave as on ext4, also after a remount.

Needs the Debian packages rsync, tar, git, sqlite3, stress-ng, attr and diffutils (contrib/test.sh
installs them). Every comparison is of real outcomes: file bytes, modes, owners, nanosecond
mtimes, xattrs, hard-link structure, symlink targets, and the tools' own verdicts (diff -r,
tar --compare, git fsck, PRAGMA integrity_check, stress-ng --verify).
"""

from __future__ import annotations

import json
import mmap
import os
import random
import re
import shutil
import sqlite3
import stat
import struct
import sysconfig
from pathlib import Path

import pytest

from conftest import maiffs
from fsutil import assert_same_tree, log_problems, run, set_times, sha256, tree_state

STDLIB = Path(sysconfig.get_paths()["stdlib"])
#: Subfolders of the standard library used as "a real tree" (about 360 entries, 6 MB).
STDLIB_PARTS = ("json", "email", "logging", "importlib", "xml")


# -- helpers ---------------------------------------------------------------------------------
def assert_clean_log(mounted) -> None:
    problems = log_problems(mounted)
    assert not problems, "the daemon logged errors:\n" + "\n".join(problems[:20])


def posix_acl(entries: list[tuple[int, int, int]]) -> bytes:
    """The kernel's binary form of a POSIX ACL (what setfacl writes into system.posix_acl_*)."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def make_source_tree(base: Path, parts: tuple[str, ...] = STDLIB_PARTS, big: bool = True) -> Path:
    """A real tree (stdlib folders) plus hard links, symlinks, xattrs, odd modes and owners,
    special files, odd names, a sparse file and multi-chunk files."""
    src = base / "src"
    src.mkdir()
    for part in parts:
        shutil.copytree(STDLIB / part, src / part, symlinks=True)
    ex = src / "extras"
    (ex / "h" / "sub").mkdir(parents=True)
    # Hard links: three names in two directories, and one into the stdlib copy.
    (ex / "h" / "a").write_bytes(b"hard linked\n" * 100)
    os.link(ex / "h" / "a", ex / "h" / "b")
    os.link(ex / "h" / "a", ex / "h" / "sub" / "c")
    os.link(src / parts[0] / "__init__.py", ex / "linked_init.py")
    # Symlinks: relative file and directory links, absolute, dangling, long target.
    os.symlink("h/a", ex / "rel_link")
    os.symlink(f"../{parts[0]}", ex / "dir_link")
    os.symlink("/etc/hostname", ex / "abs_link")
    os.symlink("does/not/exist", ex / "dangling")
    os.symlink("x" * 1000, ex / "long_target")
    # Xattrs: text, binary with NULs, empty, large, on a directory, in the trusted namespace.
    (ex / "x").write_text("has xattrs\n")
    os.setxattr(ex / "x", "user.comment", b"a comment")
    os.setxattr(ex / "x", "user.binary", bytes(range(256)))
    os.setxattr(ex / "x", "user.empty", b"")
    os.setxattr(ex / "x", "user.large", os.urandom(2000))
    os.setxattr(ex / "x", "trusted.secret", b"root only")
    os.setxattr(ex / "h", "user.dir_attr", b"on a directory")
    os.setxattr(ex / "h" / "a", "user.on_hardlink", b"shared by all names")
    # Modes and owners.
    for name, mode in (("setuid", 0o4755), ("none", 0o000), ("readonly", 0o444), ("private", 0o600)):
        (ex / name).write_text(name + "\n")
        os.chmod(ex / name, mode)
    (ex / "sticky").mkdir()
    os.chmod(ex / "sticky", 0o1777)
    (ex / "setgid").mkdir()
    os.chmod(ex / "setgid", 0o2775)
    (ex / "owned").write_text("owned by someone else\n")
    os.chown(ex / "owned", 1234, 5678)
    os.lchown(ex / "rel_link", 4321, 8765)
    # Special files (rsync -a / tar / cp -a copy them as root).
    (ex / "special").mkdir()
    os.mkfifo(ex / "special" / "fifo")
    os.mknod(ex / "special" / "null", 0o644 | stat.S_IFCHR, os.makedev(1, 3))
    # Names and emptiness.
    (ex / "empty_dir").mkdir()
    (ex / "empty_file").touch()
    (ex / "with space & ümlaut").write_text("odd name\n")
    (ex / ("n" * 255)).write_text("longest name\n")
    if big:
        rng = random.Random(7)
        (ex / "random.bin").write_bytes(rng.randbytes(5 << 20) + b"tail")
        (ex / "text.txt").write_bytes(b"".join(b"line %d of a compressible file\n" % i
                                              for i in range(100_000)))
        with open(ex / "sparse", "wb") as f:
            f.write(b"head")
            f.seek(16 << 20)
            f.write(rng.randbytes(70_000))
            f.truncate(24 << 20)
    set_times(src, step_ns=1_000_003_001, atime_offset_ns=-7)
    return src


def diff_r(a: Path, b: Path) -> None:
    """GNU diff's verdict on the trees (special files are compared by snapshot instead)."""
    run("diff", "-r", "--no-dereference", "-x", "special", a, b)


# -- rsync -----------------------------------------------------------------------------------
def test_rsync_aHAX_stdlib_tree(mounted, tmp_path):
    src = make_source_tree(tmp_path)
    expected = tree_state(src, dir_nlink=True)
    dst = mounted.path / "copy"
    run("rsync", "-aHAX", f"{src}/", f"{dst}/")
    diff_r(src, dst)
    assert_same_tree(expected, tree_state(dst, dir_nlink=True), "rsync -aHAX copy on the mount")
    # rsync's own judgement: a second run finds nothing to transfer.
    again = run("rsync", "-aHAX", "-i", f"{src}/", f"{dst}/")
    assert again.stdout.strip() == "", f"second rsync still transfers:\n{again.stdout[:2000]}"
    st = os.stat(dst / "extras" / "h" / "a")
    assert st.st_nlink == 3
    assert os.stat(dst / "extras" / "h" / "sub" / "c").st_ino == st.st_ino
    assert os.getxattr(dst / "extras" / "x", "user.binary") == bytes(range(256))

    mounted.remount()
    diff_r(src, dst)
    assert_same_tree(expected, tree_state(dst, dir_nlink=True), "rsync copy after remount")
    # And back out again, the mount being the source.
    back = tmp_path / "back"
    run("rsync", "-aHAX", f"{dst}/", f"{back}/")
    assert_same_tree(expected, tree_state(back, dir_nlink=True), "rsync -aHAX copy out of the mount")
    assert_clean_log(mounted)


def test_rsync_aHAX_keeps_posix_acls(mounted, tmp_path):
    """-A: POSIX ACLs (system.posix_acl_access/default, as setfacl writes them) are copied as
    on ext4; here the source tree has an access ACL on a file and a default ACL on a directory."""
    src = tmp_path / "src"
    (src / "shared").mkdir(parents=True)
    (src / "shared" / "f").write_text("acl'd\n")
    access = posix_acl([(0x01, 6, 0xFFFFFFFF), (0x02, 6, 1234), (0x04, 4, 0xFFFFFFFF),
                        (0x10, 6, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF)])
    default = posix_acl([(0x01, 7, 0xFFFFFFFF), (0x04, 5, 0xFFFFFFFF), (0x08, 5, 5678),
                         (0x10, 7, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF)])
    os.setxattr(src / "shared" / "f", "system.posix_acl_access", access)
    os.setxattr(src / "shared", "system.posix_acl_default", default)
    set_times(src, step_ns=1_000_003_001, atime_offset_ns=-7)
    dst = mounted.path / "copy"
    done = run("rsync", "-aHAX", f"{src}/", f"{dst}/", ok=False)
    assert done.returncode == 0, f"rsync -aHAX exited {done.returncode}: {done.stderr.strip()}"
    assert os.getxattr(dst / "shared" / "f", "system.posix_acl_access") == access
    assert os.getxattr(dst / "shared", "system.posix_acl_default") == default
    assert_same_tree(tree_state(src, dir_nlink=True), tree_state(dst, dir_nlink=True),
                     "rsync -aHAX copy with ACLs")
    mounted.remount()
    assert_same_tree(tree_state(src, dir_nlink=True), tree_state(dst, dir_nlink=True),
                     "rsync -aHAX copy with ACLs after remount")


# -- tar -------------------------------------------------------------------------------------
TAR_CREATE = ["tar", "--xattrs", "--sort=name", "--pax-option=delete=atime,delete=ctime"]
TAR_EXTRACT = ["tar", "--xattrs", "--xattrs-include=*", "-p"]
TAR_NO_XATTRS = ["tar", "--format=posix", "--sort=name", "--pax-option=delete=atime,delete=ctime"]


def test_tar_round_trip(mounted, tmp_path):
    src = make_source_tree(tmp_path, parts=("json", "logging", "email"))
    expected = tree_state(src, dir_nlink=True)
    # The archive tar writes onto the mount is byte for byte the one it writes to local disk
    # (without -S: GNU tar names sparse members after its pid).
    plain, reference = mounted.path / "plain.tar", tmp_path / "reference.tar"
    run(*TAR_CREATE, "-cf", plain, "-C", src, ".")
    run(*TAR_CREATE, "-cf", reference, "-C", src, ".")
    assert sha256(plain) == sha256(reference), "the archive written to the mount differs"

    archive = mounted.path / "sparse.tar"
    run(*TAR_CREATE, "-S", "-cf", archive, "-C", src, ".")
    inside, outside = mounted.path / "x", tmp_path / "out"
    inside.mkdir()
    outside.mkdir()
    run(*TAR_EXTRACT, "-xf", archive, "-C", inside)
    run(*TAR_EXTRACT, "-xf", archive, "-C", outside)
    assert_same_tree(expected, tree_state(outside, dir_nlink=True), "tar -x out of the mount")
    assert_same_tree(expected, tree_state(inside, dir_nlink=True), "tar -x inside the mount")
    run("tar", "--xattrs", "-df", archive, "-C", inside)  # tar's own compare: no differences
    diff_r(inside, outside)

    # Archiving the extracted tree again gives the very same bytes as archiving the source
    # (without xattrs here: their order is listxattr's, which differs between filesystems).
    again, again_ref = tmp_path / "again.tar", tmp_path / "again_reference.tar"
    run(*TAR_NO_XATTRS, "-cf", again, "-C", inside, ".")
    run(*TAR_NO_XATTRS, "-cf", again_ref, "-C", src, ".")
    assert sha256(again) == sha256(again_ref), "tar of the extracted tree differs from tar of the source"

    # The sparse member came back sparse (holes are not stored).
    sparse = os.stat(inside / "extras" / "sparse")
    assert sparse.st_size == 24 << 20
    assert sparse.st_blocks * 512 < sparse.st_size // 4, f"{sparse.st_blocks} blocks allocated"

    mounted.remount()
    assert_same_tree(expected, tree_state(inside, dir_nlink=True), "tar -x inside the mount, after remount")
    run("tar", "--xattrs", "-df", archive, "-C", inside)
    assert sha256(plain) == sha256(reference)
    assert_clean_log(mounted)


# -- git -------------------------------------------------------------------------------------
def git_env(home: Path) -> dict[str, str]:
    env = dict(os.environ, HOME=str(home), GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="T",
               GIT_AUTHOR_EMAIL="t@example.org", GIT_COMMITTER_NAME="T",
               GIT_COMMITTER_EMAIL="t@example.org")
    env.pop("GIT_DIR", None)
    return env


def test_git_workflow(mounted, tmp_path):
    env = git_env(tmp_path)

    def git(*args, cwd=None, ok=True):
        return run("git", *args, cwd=cwd, env=env, ok=ok, timeout=300)

    repo = mounted.path / "repo"
    git("init", "-q", "-b", "main", repo)
    ignore = shutil.ignore_patterns("__pycache__")
    # Commit 1: two stdlib packages.
    for part in ("json", "email"):
        shutil.copytree(STDLIB / part, repo / part, ignore=ignore)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "one", cwd=repo)
    # Commit 2: modify many files, add a package and a multi-chunk binary.
    for i, path in enumerate(sorted((repo / "email").rglob("*.py"))):
        with open(path, "a") as f:
            f.write(f"# change {i}\n")
    shutil.copytree(STDLIB / "logging", repo / "logging", ignore=ignore)
    (repo / "blob.bin").write_bytes(random.Random(1).randbytes(3 << 20))
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "two", cwd=repo)
    # Commit 3: renames and deletions.
    git("mv", "json", "json2", cwd=repo)
    git("rm", "-q", "-r", "email/mime", cwd=repo)
    git("commit", "-q", "-m", "three", cwd=repo)
    # Commit 4: many small files; commit 5: rewrite of the binary.
    small = repo / "small"
    small.mkdir()
    for i in range(200):
        (small / f"f{i:03d}.txt").write_text(f"small file {i}\n" * (i % 7 + 1))
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "four", cwd=repo)
    (repo / "blob.bin").write_bytes(random.Random(2).randbytes(3 << 20))
    git("commit", "-q", "-am", "five", cwd=repo)
    head = git("rev-parse", "HEAD", cwd=repo).stdout.strip()

    git("gc", "--aggressive", "-q", cwd=repo)
    counts = git("count-objects", "-v", cwd=repo).stdout
    assert re.search(r"^count: 0$", counts, re.M), counts
    assert re.search(r"^packs: 1$", counts, re.M), counts

    clones = {"local (hard links)": mounted.path / "clone_local",
              "--no-local": mounted.path / "clone_packed",
              "to /tmp": tmp_path / "clone_tmp"}
    git("clone", "-q", repo, clones["local (hard links)"])
    git("clone", "-q", "--no-local", repo, clones["--no-local"])
    git("clone", "-q", repo, clones["to /tmp"])

    def check_all(when: str) -> None:
        for name, path in [("repo", repo), *clones.items()]:
            fsck = git("fsck", "--full", "--strict", cwd=path, ok=False)
            assert fsck.returncode == 0 and not fsck.stdout.strip(), \
                f"git fsck of {name} {when}: {fsck.stdout}{fsck.stderr}"
            assert git("rev-parse", "HEAD", cwd=path).stdout.strip() == head, f"{name} {when}"
            status = git("status", "--porcelain", cwd=path).stdout
            assert status == "", f"{name} is not clean {when}:\n{status[:2000]}"
            assert len(git("log", "--format=%H", cwd=path).stdout.split()) == 5
            run("diff", "-r", "-x", ".git", repo, path)

    check_all("after cloning")
    mounted.remount()
    check_all("after remount")
    assert_clean_log(mounted)


# -- sqlite ----------------------------------------------------------------------------------
def _sqlite_workload(db: Path, journal_mode: str) -> dict[int, tuple[str, bytes]]:
    """2,000 inserts in 200 transactions, updates, deletes, VACUUM; returns the expected rows."""
    rng = random.Random(journal_mode)
    con = sqlite3.connect(db, isolation_level=None)
    try:
        assert con.execute(f"PRAGMA journal_mode={journal_mode}").fetchone()[0] == journal_mode.lower()
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL, b BLOB)")
        con.execute("CREATE INDEX t_v ON t (v)")
        rows: dict[int, tuple[str, bytes]] = {}
        for tx in range(200):
            con.execute("BEGIN")
            for i in range(10):
                n = tx * 10 + i
                rows[n] = (f"value {n}", rng.randbytes(rng.randrange(10, 600)))
                con.execute("INSERT INTO t VALUES (?, ?, ?)", (n, *rows[n]))
            con.execute("COMMIT")
        for tx in range(20):
            con.execute("BEGIN")
            for n in rng.sample(sorted(rows), 20):
                rows[n] = (rows[n][0] + " updated", rng.randbytes(rng.randrange(10, 1200)))
                con.execute("UPDATE t SET v = ?, b = ? WHERE id = ?", (*rows[n], n))
            con.execute("COMMIT")
        con.execute("BEGIN")
        for n in [n for n in rows if n % 7 == 0]:
            del rows[n]
            con.execute("DELETE FROM t WHERE id = ?", (n,))
        con.execute("COMMIT")
        con.execute("BEGIN")  # a rolled back transaction leaves no trace
        con.execute("DELETE FROM t")
        con.execute("ROLLBACK")
        con.execute("VACUUM")
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        con.close()
    return rows


def _check_db(db: Path, rows: dict[int, tuple[str, bytes]]) -> None:
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        got = {n: (v, b) for n, v, b in con.execute("SELECT id, v, b FROM t ORDER BY id")}
    finally:
        con.close()
    assert got.keys() == rows.keys()
    assert got == rows
    cli = run("sqlite3", db, "PRAGMA integrity_check; SELECT count(*) FROM t;").stdout.split()
    assert cli == ["ok", str(len(rows))]


@pytest.mark.parametrize("journal_mode", ["DELETE", "WAL"])
def test_sqlite_transactions(mounted, journal_mode):
    db = mounted.path / "data" / "test.db"
    db.parent.mkdir()
    rows = _sqlite_workload(db, journal_mode)
    _check_db(db, rows)
    leftovers = sorted(p.name for p in db.parent.iterdir())
    assert leftovers == ["test.db"], leftovers  # journal/WAL files are gone after a clean close
    mounted.remount()
    _check_db(db, rows)
    assert_clean_log(mounted)


def test_sqlite3_cli_script_matches_local_disk(mounted, tmp_path):
    """The same SQL script run by the sqlite3 CLI on the mount and on local disk gives the same
    database (compared by .dump), in rollback-journal mode."""
    rng = random.Random(3)
    lines = ["PRAGMA journal_mode=DELETE;", "CREATE TABLE k (id INTEGER PRIMARY KEY, name TEXT, n REAL);"]
    for tx in range(100):
        lines.append("BEGIN;")
        for i in range(10):
            n = tx * 10 + i
            lines.append(f"INSERT INTO k VALUES ({n}, 'name {n} {rng.random()}', {rng.random()});")
        if tx % 10 == 9:
            lines.append(f"DELETE FROM k WHERE id % 13 = {tx % 13};")
            lines.append(f"UPDATE k SET n = n * 2 WHERE id % 5 = {tx % 5};")
        lines.append("COMMIT;")
    lines.append("VACUUM;")
    script = "\n".join(lines) + "\n"
    on_mount, on_disk = mounted.path / "cli.db", tmp_path / "cli.db"
    for db in (on_mount, on_disk):
        run("sqlite3", db, input=script)
    dump_disk = run("sqlite3", on_disk, ".dump").stdout
    assert run("sqlite3", on_mount, ".dump").stdout == dump_disk
    assert run("sqlite3", on_mount, "PRAGMA integrity_check;").stdout.strip() == "ok"
    mounted.remount()
    assert run("sqlite3", on_mount, "PRAGMA integrity_check;").stdout.strip() == "ok"
    assert run("sqlite3", on_mount, ".dump").stdout == dump_disk


# -- editors, mmap, cp -a ----------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_editor_save_by_rename(mounted):
    d = mounted.path / "docs"
    d.mkdir()
    target = d / "notes.txt"
    target.write_text("version 0\n")
    os.chmod(target, 0o640)
    old_reader = open(target, "rb")  # a program still reading the old version
    inodes = [os.stat(target).st_ino]
    content = ""
    for i in range(1, 21):
        # emacs/gedit style: write a temporary file, fsync it, rename it over the target.
        content = f"version {i}\n" + "text of the document\n" * (i * 500)
        tmp = d / f".notes.txt.{i}.tmp"
        with open(tmp, "w") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o640)
        new_ino = os.stat(tmp).st_ino
        os.rename(tmp, target)
        _fsync_dir(d)
        st = os.stat(target)
        assert st.st_ino == new_ino and new_ino not in inodes, "the target must be the new inode"
        assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_nlink == 1
        assert target.read_text() == content
        assert not tmp.exists()
        inodes.append(new_ino)
    # vim style (backupcopy=no): rename the original to a backup, write anew, delete the backup.
    backup = d / "notes.txt~"
    os.rename(target, backup)
    content = "saved by vim\n" * 1000
    with open(target, "w") as f:
        f.write(content)
        os.fsync(f.fileno())
    os.chmod(target, 0o640)
    os.unlink(backup)
    assert old_reader.read() == b"version 0\n", "an open reader keeps the version it opened"
    old_reader.close()
    assert sorted(os.listdir(d)) == ["notes.txt"]
    assert target.read_text() == content

    mounted.remount()
    assert sorted(os.listdir(d)) == ["notes.txt"]
    assert target.read_text() == content
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    report = json.loads(maiffs("stat", "--json", mounted.path).stdout)
    assert report["inodes"] == 3, report  # root, docs, notes.txt: the replaced versions are freed
    assert report["logical_bytes"] == len(content), report
    assert_clean_log(mounted)


def test_mmap_shared_writes_survive_remount(mounted):
    rng = random.Random(11)
    path = mounted.path / "mapped.bin"
    size = (6 << 20) + 123
    expected = bytearray(rng.randbytes(size))
    path.write_bytes(expected)
    patches = [(0, 4096), (4095, 3), ((3 << 20) + 5, 10_000), (size - 100, 100), (1 << 20, 1 << 20)]
    with open(path, "r+b") as f:
        with mmap.mmap(f.fileno(), size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as mm:
            for off, n in patches:
                data = rng.randbytes(n)
                mm[off:off + n] = data
                expected[off:off + n] = data
            mm.flush()  # msync(MS_SYNC)
            assert mm[:] == expected
    assert path.read_bytes() == expected
    # Grow the file and write the new part through a second mapping.
    grown = size + (2 << 20)
    with open(path, "r+b") as f:
        f.truncate(grown)
        expected += bytes(grown - size)
        with mmap.mmap(f.fileno(), grown) as mm:
            tail = rng.randbytes(50_000)
            mm[grown - 50_000:] = tail
            expected[grown - 50_000:] = tail
            mm.flush()
    # write() and a reading mapping agree (one page cache).
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
        os.pwrite(f.fileno(), b"written by pwrite", 12345)
        expected[12345:12345 + 17] = b"written by pwrite"
        assert mm[12345:12345 + 17] == b"written by pwrite"
    assert path.read_bytes() == expected

    mounted.remount()
    assert os.path.getsize(path) == grown
    assert path.read_bytes() == expected
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
        assert mm[:] == expected
    assert_clean_log(mounted)


def test_cp_a_preserves_tree(mounted, tmp_path):
    src = make_source_tree(tmp_path, parts=("json", "logging"))
    expected = tree_state(src, dir_nlink=True)
    dst = mounted.path / "cpa"
    run("cp", "-a", src, dst)
    assert_same_tree(expected, tree_state(dst, dir_nlink=True), "cp -a onto the mount")
    diff_r(src, dst)
    back = tmp_path / "back"
    run("cp", "-a", dst, back)
    assert_same_tree(expected, tree_state(back, dir_nlink=True), "cp -a out of the mount")
    # cp -a within the mount, then remount.
    dst2 = mounted.path / "cpa2"
    run("cp", "-a", dst, dst2)
    mounted.remount()
    assert_same_tree(expected, tree_state(dst, dir_nlink=True), "cp -a copy after remount")
    assert_same_tree(expected, tree_state(dst2, dir_nlink=True), "cp -a copy within the mount after remount")
    assert_clean_log(mounted)


# -- stress-ng -------------------------------------------------------------------------------
STRESSORS = {
    "hdd-seq": "--hdd 2 --hdd-ops 2000 --hdd-opts wr-seq,rd-rnd --hdd-bytes 16M",
    "hdd-rnd-fsync": "--hdd 1 --hdd-ops 800 --hdd-opts wr-rnd,rd-seq,fsync --hdd-bytes 8M",
    "namespace": "--dir 1 --dir-ops 100 --dentry 1 --dentry-ops 50 --rename 1 --rename-ops 1000 "
                 "--dirdeep 1 --dirdeep-ops 50 --mknod 1 --mknod-ops 50 --getdent 1 --getdent-ops 300 "
                 "--filename 1 --filename-ops 50 --dirmany 1 --dirmany-ops 300",
    "mixed": "--iomix 1 --iomix-ops 200 --iomix-bytes 8M --lease 1 --lease-ops 300 --flock 1 "
             "--flock-ops 300 --fcntl 1 --fcntl-ops 200 --madvise 1 --madvise-ops 20 "
             "--file-ioctl 1 --file-ioctl-ops 20",
    "io": "--seek 1 --seek-ops 1000 --msync 1 --msync-ops 50 --copy-file 1 --copy-file-ops 20 "
          "--sendfile 1 --sendfile-ops 20 --open 1 --open-ops 1000",
    "attrs": "--chmod 1 --chmod-ops 20 --utime 1 --utime-ops 200 --chown 1 --chown-ops 50 "
             "--fstat 1 --fstat-ops 200",
}


def _walk_inodes(root: Path) -> tuple[int, int]:
    """(distinct inodes, logical bytes of regular files) of the tree, the root included."""
    seen: dict[int, int] = {os.lstat(root).st_ino: 0}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            seen[st.st_ino] = st.st_size if stat.S_ISREG(st.st_mode) else 0
    return len(seen), sum(seen.values())


@pytest.mark.parametrize("group", sorted(STRESSORS))
def test_stress_ng(mounted, tmp_path, group):
    temp = mounted.path / "stress"
    temp.mkdir()
    yaml = tmp_path / "metrics.yaml"
    args = STRESSORS[group].split()
    done = run("stress-ng", "--temp-path", temp, *args, "--verify", "--timeout", "20s",
               "--metrics", "--yaml", yaml, ok=False, timeout=180)
    assert done.returncode == 0, f"stress-ng {group} exited {done.returncode}:\n{done.stderr[-3000:]}"
    ops = dict(re.findall(r"- stressor: (\S+)\n\s+bogo-ops: (\d+)", yaml.read_text()))
    wanted = {a.removeprefix("--") for a in args[::2] if not a.endswith(("-ops", "-opts", "-bytes"))}
    assert wanted <= ops.keys(), f"stressors that did not report: {wanted - ops.keys()}"
    assert all(int(ops[s]) > 0 for s in wanted), f"stressors without a single operation: {ops}"
    # The mount still answers, and stress-ng removed everything it created.
    assert os.listdir(temp) == []
    (mounted.path / "after").write_bytes(b"still alive\n" * 1000)
    assert (mounted.path / "after").read_bytes() == b"still alive\n" * 1000
    assert_clean_log(mounted)
    mounted.remount()
    assert (mounted.path / "after").read_bytes() == b"still alive\n" * 1000
    report = json.loads(maiffs("stat", "--json", mounted.path).stdout)
    assert (report["inodes"], report["logical_bytes"]) == _walk_inodes(mounted.path), report
