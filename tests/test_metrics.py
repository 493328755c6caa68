"""Prometheus metrics (`-o metrics=[HOST:]PORT`, issue 9): served only when asked for, on
loopback unless a host is named; the counters move by what was done through the mount."""

from __future__ import annotations

import os
import re
import socket
import urllib.request
from pathlib import Path

import pytest

from conftest import MaiffsMount, maiffs, make_mount, mount_session
from fsutil import wait_for, write_file
from remote_spots import DirSpot

MiB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    """The samples of /metrics by name with labels, e.g. 'maiffs_read_bytes_total' or
    'maiffs_fuse_operation_seconds_count{op="read"}' (labels sorted by name)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of the TCP sockets process pid listens on (IPv4, as /proc shows them)."""
    sockets = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, port = fields[1].split(":")
        if fields[3] == "0A" and f"socket:[{fields[9]}]" in sockets:  # 0A: LISTEN
            found.add((socket.inet_ntoa(bytes.fromhex(address)[::-1]), int(port, 16)))
    return found


def drop_page_cache() -> None:
    """So that reads reach the daemon (its files are opened with keep_cache)."""
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def test_metrics_count_what_the_mount_did(tmp_path):
    port = free_port()
    with mount_session(tmp_path, [f"metrics=127.0.0.1:{port}"]) as m:
        assert listening(m.daemon_pid()) == {("127.0.0.1", port)}
        before = scrape(port)
        data = os.urandom(3 * MiB + 5)
        write_file(m.path / "f", data)
        with pytest.raises(FileNotFoundError):
            os.stat(m.path / "no-such-name")
        after_write = scrape(port)
        drop_page_cache()
        assert (m.path / "f").read_bytes() == data
        after_read = scrape(port)
        drop_page_cache()
        assert (m.path / "f").read_bytes() == data
        after_reread = scrape(port)

    def moved(a: dict, b: dict, name: str) -> float:
        return b.get(name, 0) - a.get(name, 0)

    assert moved(before, after_write, "maiffs_written_bytes_total") == len(data)
    assert moved(before, after_write, 'maiffs_fuse_operation_seconds_count{op="create"}') == 1
    assert moved(before, after_write, 'maiffs_fuse_operation_seconds_count{op="write"}') >= 1
    assert moved(before, after_write, 'maiffs_fuse_errors_total{errno="ENOENT",op="lookup"}') >= 1
    assert moved(before, after_write, "maiffs_commits_total") >= 1
    assert after_write["maiffs_store_logical_bytes"] == len(data)
    assert after_write["maiffs_store_inodes"] == 2  # the root and f
    assert moved(before, after_write, "maiffs_read_bytes_total") == 0

    assert moved(after_write, after_read, "maiffs_read_bytes_total") >= len(data)
    assert moved(after_write, after_read, 'maiffs_fuse_operation_seconds_count{op="read"}') >= 1
    assert moved(after_write, after_read, "maiffs_chunk_cache_misses_total") >= 1
    assert moved(after_read, after_reread, "maiffs_chunk_cache_hits_total") >= 1  # held now
    assert after_reread["maiffs_chunk_cache_bytes"] >= len(data)
    # the histogram's buckets hold every request: the +Inf bucket equals the count
    assert after_reread['maiffs_fuse_operation_seconds_bucket{le="+Inf",op="read"}'] == \
        after_reread['maiffs_fuse_operation_seconds_count{op="read"}']


def test_no_option_no_listener_and_loopback_unless_a_host_is_named(tmp_path):
    (tmp_path / "a").mkdir()
    with mount_session(tmp_path / "a") as m:
        (m.path / "f").write_text("x")
        assert listening(m.daemon_pid()) == set()
    (tmp_path / "b").mkdir()
    port = free_port()
    with mount_session(tmp_path / "b", [f"metrics={port}"]) as m:
        assert listening(m.daemon_pid()) == {("127.0.0.1", port)}
        assert scrape(port)["maiffs_store_inodes"] == 1
    (tmp_path / "c").mkdir()
    with mount_session(tmp_path / "c", [f"metrics=0.0.0.0:{port}"]) as m:  # as named
        assert listening(m.daemon_pid()) == {("0.0.0.0", port)}


def test_replication_lag_per_remote(tmp_path):
    remote = DirSpot(tmp_path / "remote")
    (tmp_path / "a").mkdir()
    m = make_mount(tmp_path / "a", ["replicate=r", f"metrics={(port := free_port())}"])
    remote.add(m.store, "r")
    remote.root.write_text("not a directory: pushes fail")
    m.mount()
    try:
        (m.path / "f").write_text("one")
        os.mkdir(m.path / ".snapshots" / "s1")
        wait_for(lambda: scrape(port).get('maiffs_replication_failing{remote="r"}') == 1,
                 "the failed push shows", limit=30)
        samples = scrape(port)
        assert samples['maiffs_replication_snapshots_behind{remote="r"}'] == 1
        assert samples['maiffs_replication_lag_seconds{remote="r"}'] >= 0
        table = maiffs("stat", m.path).stdout
        assert re.search(r"^replication r +1 snapshot behind, lag \d+s; .*last error: ", table, re.M), table
        remote.root.unlink()  # the remote can be made now: the retry pushes s1
        wait_for(lambda: scrape(port).get('maiffs_replication_snapshots_behind{remote="r"}') == 0,
                 "the remote catches up", limit=60)
        assert scrape(port)['maiffs_replication_lag_seconds{remote="r"}'] == 0
        assert re.search(r"^replication r +up to date", maiffs("stat", m.path).stdout, re.M)
    finally:
        m.cleanup()


@pytest.mark.parametrize("value, words", [
    ("", "is not [HOST:]PORT"),
    ("http", "is not [HOST:]PORT"),
    ("127.0.0.1:0", "is not [HOST:]PORT"),
    ("127.0.0.1:70000", "is not [HOST:]PORT"),
    ("no-such-host.invalid:9100", "cannot serve metrics on no-such-host.invalid:9100"),
])
def test_a_bad_metrics_value_is_refused_in_one_line(tmp_path, value, words):
    m = make_mount(tmp_path)
    try:
        done = maiffs("mount", m.store, m.path, "-o", f"metrics={value}", check=False)
        assert not os.path.ismount(m.path)
    finally:
        m.cleanup()
    assert done.returncode == 1 and words in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_taken_port_is_refused(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        m: MaiffsMount = make_mount(tmp_path)
        try:
            done = maiffs("mount", m.store, m.path, "-o", f"metrics={port}", check=False)
            assert not os.path.ismount(m.path)
        finally:
            m.cleanup()
    assert done.returncode == 1
    assert done.stderr.strip() == f"maiffs: cannot serve metrics on 127.0.0.1:{port}: Address already in use"
