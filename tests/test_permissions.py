"""Permissions between users, proven through real mounts with `-o allow_other,default_permissions`
and real users (created here, removed after), running ordinary tools via setpriv: another user
is refused exactly as on ext4 (the same operations run on a plain directory in /tmp, ext4 here,
and must give the same exit status and message), in snapshots and `.maiffs/` too; the daemon's
controls are the mounting user's alone; a store is private to its owner whatever the umask.

tmp_path is 0700 (root's), so the users' tools run with the mount (or the ext4 twin) as their
working directory and use relative paths.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import maiffs, mount_session
from fsutil import read_file, run, write_file

#: the owner of the files in play, and another user
OWNER, OTHER = "maiffs-t1", "maiffs-t2"
OPTIONS = ["allow_other", "default_permissions"]
DENIED, NOT_PERMITTED = "Permission denied", "Operation not permitted"


# -- users -------------------------------------------------------------------------------------
def remove_user(name: str) -> None:
    subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["groupdel", name], capture_output=True)  # if userdel left the group


@pytest.fixture(scope="module")
def users() -> Iterator[dict[str, tuple[int, int]]]:
    """OWNER and OTHER as real users (uid, gid), removed afterwards. The names are fixed, so
    concurrent test runs on this machine take turns (a lock file) instead of sharing them."""
    with open("/tmp/maiffs-t-users.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            ids = {}
            for name in (OWNER, OTHER):
                remove_user(name)  # left over by a run that was killed
                run("useradd", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", name)
                entry = pwd.getpwnam(name)
                ids[name] = (entry.pw_uid, entry.pw_gid)
            yield ids
        finally:
            for name in (OWNER, OTHER):
                remove_user(name)


def as_user(user: str, where: Path, *command: str | os.PathLike) -> tuple[int, str, str]:
    """Run a tool as user (no supplementary groups) in directory where:
    (exit status, stdout, stderr), messages in the C locale."""
    done = subprocess.run(["setpriv", "--reuid", user, "--regid", user, "--clear-groups", "--",
                           *map(str, command)], cwd=where, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "LC_ALL": "C"})
    return done.returncode, done.stdout, done.stderr.strip()


def refused(result: tuple[int, str, str], message: str) -> None:
    status, _out, err = result
    assert status != 0 and err.endswith(message), f"expected '{message}', got {result}"


@pytest.fixture
def shared(tmp_path: Path, users) -> Iterator:
    """A fresh store mounted with -o allow_other,default_permissions."""
    with mount_session(tmp_path, OPTIONS) as m:
        yield m


# -- the same refusals as ext4 -------------------------------------------------------------------
def build(root: Path, users: dict[str, tuple[int, int]]) -> None:
    """OWNER's home (0755) with a 0600 secret, a 0755 directory of root's, a sticky 1777
    directory with a file of OWNER's."""
    owner = users[OWNER]
    (root / "home").mkdir(mode=0o755)
    write_file(root / "home" / "secret", b"the owner's secret\n")
    os.chmod(root / "home" / "secret", 0o600)
    for path in (root / "home", root / "home" / "secret"):
        os.chown(path, *owner)
    (root / "rootdir").mkdir()
    os.chmod(root / "rootdir", 0o755)
    write_file(root / "rootdir" / "file", b"root's\n")
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)
    write_file(root / "tmp" / "owners", b"in the sticky dir\n")
    os.chown(root / "tmp" / "owners", *owner)

#: (user, command, what must come of it: a message that ends stderr, or None for success)
STEPS = [
    (OTHER, ["cat", "home/secret"], DENIED),
    (OTHER, ["sh", "-c", "echo x >> home/secret"], DENIED),
    (OTHER, ["chmod", "666", "home/secret"], NOT_PERMITTED),
    (OTHER, ["touch", "rootdir/new"], DENIED),
    (OTHER, ["mkdir", "rootdir/dir"], DENIED),
    (OTHER, ["rm", "-f", "rootdir/file"], DENIED),
    (OTHER, ["mv", "rootdir/file", "rootdir/moved"], DENIED),
    (OTHER, ["mv", "tmp/owners", "tmp/mine"], NOT_PERMITTED),
    (OTHER, ["rm", "-f", "tmp/owners"], NOT_PERMITTED),
    (OTHER, ["touch", "tmp/others"], None),
    (OTHER, ["mv", "-f", "tmp/others", "tmp/owners"], NOT_PERMITTED),  # replacing it is renaming
    (OTHER, ["mv", "tmp/others", "tmp/others2"], None),                 # their own: allowed
    (OTHER, ["cat", "rootdir/file"], None),
    (OWNER, ["cat", "home/secret"], None),
    (OWNER, ["mv", "tmp/owners", "tmp/owners2"], None),
]


def test_other_user_is_refused_as_on_ext4(shared, users, tmp_path):
    """Each step gives the same exit status, output and message on the mount as on ext4,
    and that is the expected refusal (or success); what was refused is unchanged."""
    twin = tmp_path / "ext4"
    twin.mkdir()
    assert subprocess.run(["stat", "-f", "-c", "%T", twin], capture_output=True,
                          text=True).stdout.strip() == "ext2/ext3", "the twin is not on ext4"
    for root in (shared.path, twin):
        build(root, users)
    for user, command, expected in STEPS:
        on_maiffs, on_ext4 = (as_user(user, root, *command) for root in (shared.path, twin))
        assert on_maiffs == on_ext4, f"{user} {command}: maiffs {on_maiffs}, ext4 {on_ext4}"
        if expected is None:
            assert on_maiffs[0] == 0, f"{user} {command}: {on_maiffs}"
        else:
            refused(on_maiffs, expected)
    assert read_file(shared.path / "home" / "secret") == b"the owner's secret\n"
    assert sorted(os.listdir(shared.path / "rootdir")) == ["file"]
    assert sorted(os.listdir(shared.path / "tmp")) == ["others2", "owners2"]
    assert stat.S_IMODE(os.stat(shared.path / "home" / "secret").st_mode) == 0o600


# -- snapshots and .maiffs ---------------------------------------------------------------------
def test_snapshots_and_by_id_keep_the_rules(shared, users):
    """A 0600 file stays unreadable to another user in a snapshot and as .maiffs/by-id/ID,
    and readable to its owner; a snapshot is read-only to its owner; .maiffs/stats is
    readable by everyone."""
    mnt = shared.path
    build(mnt, users)
    os.mkdir(mnt / ".snapshots" / "s")
    content = run("getfattr", "--only-values", "-n", "user.maiffs.id", mnt / "home" / "secret").stdout
    by_id = f".maiffs/by-id/{content.strip()}"
    for path in ("home/secret", ".snapshots/s/home/secret", by_id):
        refused(as_user(OTHER, mnt, "cat", path), DENIED)
        assert as_user(OWNER, mnt, "cat", path) == (0, "the owner's secret\n", "")
    refused(as_user(OWNER, mnt, "touch", ".snapshots/s/home/new"), "Read-only file system")
    refused(as_user(OWNER, mnt, "rm", "-f", ".snapshots/s/home/secret"), "Read-only file system")
    status, out, err = as_user(OTHER, mnt, "cat", ".maiffs/stats")
    assert status == 0 and "logical_bytes" in json.loads(out), err


def test_controls_are_the_mounting_users_alone(shared, users):
    """Snapshots and control requests act on the whole store with the daemon's rights: even
    the owner of the mount's root may not use them, only the user who mounted (root here).
    (Before, the owner of the mount's root could take and delete snapshots and send any
    control request, e.g. list names in directories closed to them with snapshot diff.)"""
    mnt = shared.path
    os.chown(mnt, *users[OWNER])
    os.mkdir(mnt / ".snapshots" / "by-root")
    for user in (OWNER, OTHER):
        refused(as_user(user, mnt, "mkdir", ".snapshots/mine"), DENIED)
        refused(as_user(user, mnt, "rmdir", ".snapshots/by-root"), DENIED)
        # the channel of every maiffs command (the CLI itself cannot run as these users
        # here: its interpreter is under root's 0700 home)
        refused(as_user(user, mnt, "sh", "-c", "echo '{\"op\": \"snapshot.list\"}' 1<> .maiffs/control"),
                DENIED)
    assert os.listdir(mnt / ".snapshots") == ["by-root"]
    assert as_user(OWNER, mnt, "ls", ".snapshots") == (0, "by-root\n", "")
    assert as_user(OWNER, mnt, "touch", "mine")[0] == 0  # the root directory is theirs
    maiffs("snapshot", "create", mnt, "by-root-again")
    assert sorted(os.listdir(mnt / ".snapshots")) == ["by-root", "by-root-again"]


def test_default_permissions_cannot_be_turned_off(tmp_path):
    (tmp_path / "mnt").mkdir()
    maiffs("mkfs", tmp_path / "store")
    done = maiffs("mount", tmp_path / "store", tmp_path / "mnt", "-o", "default_permissions=0",
                  check=False)
    assert done.returncode != 0 and "default_permissions cannot be turned off" in done.stderr
    assert os.listdir(tmp_path / "mnt") == []


# -- the store on disk ---------------------------------------------------------------------------
def too_open(store: Path) -> list[str]:
    """Paths in store (itself included) that anyone but the owner could use: directories
    beyond 0700, files beyond 0600."""
    found = []
    for path in [store, *store.rglob("*")]:
        st = os.lstat(path)
        limit = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        if stat.S_IMODE(st.st_mode) & ~limit:
            found.append(f"{oct(stat.S_IMODE(st.st_mode))} {path.relative_to(store.parent)}")
    return found


def test_store_is_private_whatever_the_umask(tmp_path):
    """Under umask 000, after mkfs (into a 0777 directory) and after a mount that wrote,
    took a snapshot, pushed it to a remote, pulled it back and unmounted, the store is 0700
    and everything in it 0600 (0700 for directories). A remote directory maiffs made is 0700;
    one made beforehand keeps its mode."""
    store = tmp_path / "store"
    store.mkdir()
    (tmp_path / "m").mkdir()
    os.chmod(store, 0o777)
    previous = os.umask(0)  # the commands below inherit it
    try:
        maiffs("mkfs", store)
        assert too_open(store) == []
        with mount_session(tmp_path / "m", OPTIONS) as m:  # its own store, also under umask 000
            write_file(m.path / "file", os.urandom(1 << 20), sync=True)
            maiffs("snapshot", "create", m.path, "s")
            maiffs("remote", "add", m.path, "r", tmp_path / "remote")
            maiffs("push", m.path, "r", "--quiet")
            maiffs("snapshot", "delete", m.path, "s")
            maiffs("pull", m.path, "r", "--quiet")
            assert os.listdir(m.path / ".snapshots") == ["s"]
            assert too_open(m.store) == []
            assert stat.S_IMODE(os.stat(tmp_path / "remote").st_mode) == 0o700
            shared = tmp_path / "shared-remote"
            shared.mkdir(mode=0o770)
            maiffs("remote", "add", m.path, "team", shared)
            maiffs("push", m.path, "team", "--quiet")
            assert stat.S_IMODE(shared.stat().st_mode) == 0o770  # made by its owners: kept
        assert too_open(m.store) == []
    finally:
        os.umask(previous)
