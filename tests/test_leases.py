"""One writer per remote volume (issue 6): the lease at volumes/VOLUME/lease, taken by a mount
with -o replicate=, renewed, released at unmount, taken over after a crash.

The mount tests take `spot`: each runs against a directory remote and a Ceph RGW bucket. The
unit tests drive remotes/lease.py over a directory remote with a fake clock.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import MaiffsMount, maiffs, make_mount
from fsutil import wait_for
from maiffs.errors import StoreError
from maiffs.remotes.dirremote import DirRemote, create_new
from maiffs.remotes.lease import Holder, Lease, LeaseHeld, VolumeLease

LEASE_KEY = "volumes/default/lease"


# -- through real mounts -----------------------------------------------------------------------
@contextmanager
def writers(tmp_path: Path, spot, *names: str, ttl: str = "3") -> Iterator[list[MaiffsMount]]:
    """Stores (not mounted yet) that replicate to remote r at spot; all unmounted afterwards."""
    made = []
    try:
        for name in names:
            (tmp_path / name).mkdir()
            made.append(make_mount(tmp_path / name, ["replicate=r", f"lease={ttl}"]))
            spot.add(made[-1].store, "r")
        yield made
    finally:
        for m in made:
            m.cleanup()


def store_id(m: MaiffsMount) -> str:
    return (m.store / "store-id").read_text().strip()


def refused(done: subprocess.CompletedProcess, holder: MaiffsMount, pid: int) -> bool:
    """done failed with the one-line lease refusal naming holder."""
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.startswith(f"maiffs: remote r volume default is written by store "
                                  f"{store_id(holder)} on host {socket.gethostname()} (pid {pid}, "
                                  f"mounted on {holder.path}) until "), done.stderr
    assert "`maiffs remote takeover STORE r`" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    return True


def mount(m: MaiffsMount) -> subprocess.CompletedProcess:
    return maiffs("mount", m.store, m.path, "-o", ",".join(m.options), check=False)


def refs(spot) -> list[str]:
    return [k.rsplit("/", 1)[1] for k in spot.keys("volumes/default/refs")]


def replicated(m: MaiffsMount, snapshot: str, spot) -> None:
    """A new snapshot of m reaches the remote through m's replication."""
    os.mkdir(m.path / ".snapshots" / snapshot)
    wait_for(lambda: snapshot in refs(spot), f"{snapshot} replicated")


def replication(m: MaiffsMount) -> dict:
    return json.loads(maiffs("stat", "--json", m.path).stdout)["replication"]["r"]


def test_a_second_writer_is_refused_until_the_first_unmounts(tmp_path, spot):
    with writers(tmp_path, spot, "a", "b") as (a, b):
        a.mount()
        assert refused(mount(b), a, a.daemon_pid())
        assert refused(maiffs("push", b.store, "r", check=False), a, a.daemon_pid())
        replicated(a, "from-a", spot)  # the holder's own pushes pass
        maiffs("push", a.store, "r")
        assert replication(a)["lease"].startswith("held until ")
        assert json.loads(spot.read(LEASE_KEY))["holder"] == store_id(a)
        a.unmount()
        assert LEASE_KEY not in spot.keys("volumes/")  # released: b need not wait
        b.mount()
        replicated(b, "from-b", spot)


def test_a_crashed_writer_is_taken_over_once_its_lease_expires(tmp_path, spot):
    with writers(tmp_path, spot, "a", "b", ttl="2") as (a, b):
        a.mount()
        pid = a.daemon_pid()
        a.kill()
        pushes: list[subprocess.CompletedProcess] = []
        wait_for(lambda: pushes.append(maiffs("push", b.store, "r", check=False))
                 or pushes[-1].returncode == 0 or not refused(pushes[-1], a, pid), "a's lease expires")
        assert f"the lease of store {store_id(a)} on host" in pushes[-1].stderr
        assert "expired at" in pushes[-1].stderr
        b.mount()  # the stale lease is taken over
        assert f"took over the lease of store {store_id(a)}" in (b.store / "maiffs.log").read_text()
        replicated(b, "from-b", spot)
        assert json.loads(spot.read(LEASE_KEY))["holder"] == store_id(b)


def test_takeover_before_expiry_names_the_lease_it_replaced(tmp_path, spot):
    with writers(tmp_path, spot, "a", "b", ttl="60") as (a, b):
        a.mount()
        pid = a.daemon_pid()
        a.kill()
        assert refused(mount(b), a, pid)
        done = maiffs("remote", "takeover", b.store, "r")
        assert f"replaced the lease of store {store_id(a)} on host" in done.stdout
        assert f"store {store_id(b)} holds it until" in done.stdout
        b.mount()
        replicated(b, "from-b", spot)
        assert refused(mount(a), b, b.daemon_pid())  # a, restarted, is now the second writer


def test_a_writer_whose_lease_is_taken_stops_replicating(tmp_path, spot):
    with writers(tmp_path, spot, "a", "b") as (a, b):
        a.mount()
        replicated(a, "before", spot)
        maiffs("remote", "takeover", b.store, "r")
        wait_for(lambda: replication(a)["lease"].startswith("not held: remote r volume default is "
                                                            f"written by store {store_id(b)}"),
                 "a sees its lease taken at its next renewal")
        os.mkdir(a.path / ".snapshots" / "after")
        wait_for(lambda: (replication(a)["last_error"] or "").startswith("no lease"), "a waits")
        assert "after" in replication(a)["pending"] and "after" not in refs(spot)


def test_an_unreachable_remote_does_not_stop_the_mount(tmp_path):
    (tmp_path / "a").mkdir()
    m = make_mount(tmp_path / "a", ["replicate=r", "lease=1"])
    remote = tmp_path / "remote"
    remote.write_text("a file, not a directory: the remote cannot be written")
    maiffs("remote", "add", m.store, "r", remote)
    m.mount()
    try:
        assert replication(m)["lease"].startswith("not held: remote unreachable")
        remote.unlink()  # the remote comes back: the lease is taken, replication goes on
        wait_for(lambda: replication(m)["lease"].startswith("held"), "the lease is taken later")
        os.mkdir(m.path / ".snapshots" / "s")
        wait_for(lambda: (remote / "volumes/default/refs/s").exists(), "s replicated")
    finally:
        m.cleanup()


# -- remotes/lease.py with a fake clock --------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.ns = 1_000_000 * 10**9

    def __call__(self) -> int:
        return self.ns

    def sleep(self, seconds: float) -> None:
        self.ns += int(seconds * 1e9)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def lease_of(tmp_path: Path, who: str, clock: Clock, ttl: float = 10) -> VolumeLease:
    return VolumeLease(DirRemote(str(tmp_path / "remote")), "r", Holder(who, "host", 1, f"/mnt/{who}"),
                       ttl, clock=clock, sleep=clock.sleep)


def test_lease_refuses_a_second_holder_until_it_expires(tmp_path, clock):
    a, b = lease_of(tmp_path, "a", clock), lease_of(tmp_path, "b", clock)
    assert a.acquire() is None and a.check() is None
    with pytest.raises(LeaseHeld, match=r"^remote r volume default is written by store a on host "
                                         r"host \(pid 1, mounted on /mnt/a\) until "):
        b.acquire()
    with pytest.raises(LeaseHeld):
        b.check()
    clock.sleep(9)
    a.renew()  # pushes the expiry on
    clock.sleep(9)
    with pytest.raises(LeaseHeld):
        b.acquire()
    clock.sleep(2)
    assert b.check() == a.current()  # expired: a push may go on (with a warning)
    previous = b.acquire()
    assert previous is not None and previous.holder == "a"
    with pytest.raises(LeaseHeld):
        a.renew()  # a learns it lost the lease


def test_lease_force_release_and_unreadable(tmp_path, clock):
    a, b = lease_of(tmp_path, "a", clock), lease_of(tmp_path, "b", clock)
    a.acquire()
    taken = b.acquire(force=True)
    assert taken is not None and taken.holder == "a"
    a.release()  # not a's any more: left alone
    assert b.current() is not None and b.current().holder == "b"
    b.release()
    assert b.current() is None and a.acquire() is None
    (tmp_path / "remote" / LEASE_KEY).write_text("garbage")
    assert b.check() == Lease("(unreadable lease)", "?", 0, "", 0)
    assert b.acquire() is not None and b.current().holder == "b"


def test_of_two_takers_of_an_expired_lease_the_first_gives_way(tmp_path, clock):
    a, b, c = (lease_of(tmp_path, who, clock) for who in "abc")
    a.acquire()
    clock.sleep(11)
    # c, which read a's expired lease too, writes while b waits to read its own lease back
    b.sleep = lambda seconds: c.acquire(force=True)
    with pytest.raises(LeaseHeld, match="written by store c"):
        b.acquire()
    assert c.current() is not None and c.current().holder == "c"


def test_a_create_race_is_lost_cleanly(tmp_path, clock):
    a, b = lease_of(tmp_path, "a", clock), lease_of(tmp_path, "b", clock)
    b.current = lambda: None  # type: ignore[method-assign]  # b read before a created it
    a.acquire()
    with pytest.raises(StoreError, match="lease changed while it was taken"):
        b.acquire()
    target = tmp_path / "x"
    assert create_new(target, b"one") and not create_new(target, b"two")
    assert target.read_bytes() == b"one" and os.listdir(tmp_path).count("x") == 1
