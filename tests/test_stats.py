"""`maiffs stat` and `MNT/.maiffs/stats` (issue 9): files and directories apart, bytes and
ratios, snapshots, the last commit, the daemon's cache with its hit rate; a table for people,
the same numbers as JSON (replication lag: test_metrics.py; a follower's: test_prefetch.py)."""

from __future__ import annotations

import json
import os
import re
import time

from conftest import maiffs, mount_session
from fsutil import read_file, run, store_stat

MiB = 1 << 20


def test_stat_counts_files_and_directories_and_the_last_commit(mounted):
    mnt = mounted.path
    for d in ("a", "a/b", "a/b/c", "e"):
        os.mkdir(mnt / d)
    (mnt / "a" / "one").write_bytes(b"1" * 1000)
    (mnt / "a" / "b" / "two").write_bytes(os.urandom(MiB))
    os.symlink("one", mnt / "a" / "link")
    os.mkfifo(mnt / "e" / "fifo")
    os.mkdir(mnt / ".snapshots" / "s1")
    before = store_stat(mnt)
    assert (before["files"], before["directories"], before["inodes"]) == (4, 5, 9), before
    assert before["snapshots"] == 1
    assert before["logical_bytes"] == 1000 + MiB

    (mnt / "a" / "three").write_text("three")  # a commit, later than the one before
    after = store_stat(mnt)
    assert after["files"] == 5 and after["commits"] > before["commits"]
    assert before["last_commit_ns"] < after["last_commit_ns"] <= time.time_ns()

    mounted.unmount()  # read from the store itself: the same numbers, without the daemon's
    unmounted = store_stat(mounted.store)
    assert unmounted["mounted_on"] is None and "chunk_cache" not in unmounted
    for key in ("files", "directories", "inodes", "logical_bytes", "stored_bytes", "snapshots"):
        assert unmounted[key] == after[key], key
    table = maiffs("stat", mounted.store).stdout
    assert re.search(r"^mounted on +not mounted$", table, re.M), table
    mounted.mount()


def test_the_table_and_the_json_tell_the_same(mounted):
    mnt = mounted.path
    data = os.urandom(3 * MiB)
    (mnt / "f").write_bytes(data)
    (mnt / "g").write_bytes(data)  # the same chunks again
    os.mkdir(mnt / "d")
    report = store_stat(mnt)
    table = maiffs("stat", mnt).stdout.splitlines()
    rows = {line[:18].strip(): line[19:] for line in table}
    assert rows["store"] == str(mounted.store)
    assert rows["mounted on"] == f"{mnt} (daemon pid {mounted.daemon_pid()})"
    assert (rows["files"], rows["directories"]) == ("2", "2")
    assert rows["logical bytes"] == f"6.0 MiB ({6 * MiB:,} bytes)"
    assert rows["unique bytes"] == f"3.0 MiB ({3 * MiB:,} bytes)"
    assert rows["dedup ratio"] == "2.00" and report["dedup_ratio"] == 2.0
    assert rows["chunks"] == f"{report['chunks']:,}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(\d+s ago\), [\d,]+ in all",
                        rows["last commit"]), rows["last commit"]
    assert re.fullmatch(r"[\d.]+ (B|KiB|MiB) of 64\.0 MiB, hit rate .+ \([\d,]+ hits, [\d,]+ misses\)",
                        rows["chunk cache"]), rows["chunk cache"]
    assert rows["open files"] == "0"


def test_the_daemon_counts_cache_hits_and_misses(mounted):
    mnt = mounted.path
    data = os.urandom(4 * MiB)
    (mnt / "f").write_bytes(data)
    mounted.remount()  # an empty cache
    cache = store_stat(mnt)["chunk_cache"]
    assert (cache["hits"], cache["misses"], cache["bytes"], cache["hit_rate"]) == (0, 0, 0, None)
    assert cache["limit_bytes"] == 64 * MiB
    assert read_file(mnt / "f") == data
    first = store_stat(mnt)["chunk_cache"]
    assert first["misses"] >= 1 and first["bytes"] == len(data)
    with open("/proc/sys/vm/drop_caches", "w") as f:  # so that the next read reaches the daemon
        f.write("3\n")
    assert read_file(mnt / "f") == data
    second = store_stat(mnt)["chunk_cache"]
    assert second["hits"] > first["hits"] and second["misses"] == first["misses"]
    assert second["hit_rate"] == round(second["hits"] / (second["hits"] + second["misses"]), 4)


def test_maiffs_stats_is_the_same_json_read_with_cat(mounted):
    (mounted.path / "f").write_text("x")
    by_cat = json.loads(run("cat", mounted.path / ".maiffs" / "stats").stdout)
    by_stat = store_stat(mounted.path)
    assert by_stat.pop("mounted_on") == str(mounted.path)
    assert by_cat.keys() == by_stat.keys()
    for key in ("files", "directories", "inodes", "logical_bytes", "pid", "last_commit_ns"):
        assert by_cat[key] == by_stat[key], key
    cache = by_cat["chunk_cache"]
    assert set(cache) == {"bytes", "limit_bytes", "hits", "misses", "hit_rate"}
    assert by_cat["replication"] == {}


def test_cache_size_sets_the_cache_bound(tmp_path):
    with mount_session(tmp_path, ["cache_size=8M"]) as m:
        assert store_stat(m.path)["chunk_cache"]["limit_bytes"] == 8 * MiB
        assert " of 8.0 MiB, " in maiffs("stat", m.path).stdout
