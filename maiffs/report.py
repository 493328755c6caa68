"""The numbers `maiffs stat` and `.maiffs/stats` show: the store's as of its last commit (files,
directories, bytes, dedup and compression, snapshots, when it last committed), and the mounted
daemon's own (memory cache, open files, replication lag, a follower's cache); and the table
`maiffs stat` prints of them."""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

from maiffs.mounts import maiffs_mounts
from maiffs.namespace.records import is_directory_record
from maiffs.progress import human_size
from maiffs.store import Store
from maiffs.store.chunks import ChunkCache

if TYPE_CHECKING:  # (both are built on the daemon's service, which shows these numbers)
    from maiffs.follower import Follower
    from maiffs.replication import Replicator


def _ratio(a: int, b: int) -> float:
    return round(a / b, 3) if b else 1.0


def last_commit_ns(store_path: str) -> int:
    """When the store's last write transaction committed: LMDB writes its pages and meta page
    into data.mdb at every commit (and at nothing else), so the file's mtime is that moment."""
    return os.stat(os.path.join(store_path, "data.mdb")).st_mtime_ns


def count_directories(store: Store) -> int:
    """Directories among the inodes: a scan of every inode record (about 0.2 s a million),
    as no counter keeps them."""
    with store.read(buffers=True) as txn:
        if txn.dbs["inodes"] is None:
            return 0
        return sum(map(is_directory_record, txn.cursor("inodes").iternext(keys=False, values=True)))


def store_numbers(store: Store, tree: bool = True) -> dict[str, Any]:
    """Counters of an open store as of its last commit, with the ratios derived from them;
    with tree, files and directories apart (a scan of the inodes: see count_directories)."""
    s = store.stats()
    with store.read() as txn:
        snapshots = sum(1 for _ in txn.prefix_items("snapshots", b""))
    numbers: dict[str, Any] = {"store": store.path, "inodes": s["inodes"]}
    if tree:
        directories = count_directories(store)
        numbers.update(files=s["inodes"] - directories, directories=directories)
    numbers.update({
        "snapshots": snapshots,
        "logical_bytes": s["logical_bytes"],
        "referenced_bytes": s["referenced_bytes"],
        "unique_bytes": s["chunk_raw_bytes"],
        "stored_bytes": s["chunk_stored_bytes"],
        "chunks": s["chunks"],
        "store_file_bytes": os.path.getsize(os.path.join(store.path, "data.mdb")),
        "dedup_ratio": _ratio(s["referenced_bytes"], s["chunk_raw_bytes"]),
        "compression_ratio": _ratio(s["chunk_raw_bytes"], s["chunk_stored_bytes"]),
        "total_ratio": _ratio(s["logical_bytes"], s["chunk_stored_bytes"]),
        "commits": store.env.info()["last_txnid"],  # LMDB's: one per write transaction
        "last_commit_ns": last_commit_ns(store.path),
    })
    return numbers


def cache_numbers(cache: ChunkCache) -> dict[str, Any]:
    """The daemon's memory cache of decompressed chunks: its size and how often reads find
    their chunk there (hit_rate None before the first read)."""
    looked = cache.hits + cache.misses
    return {"bytes": cache.bytes, "limit_bytes": cache.max_bytes, "hits": cache.hits,
            "misses": cache.misses, "hit_rate": round(cache.hits / looked, 4) if looked else None}


def daemon_numbers(cache: ChunkCache, open_files: int, replicator: Replicator | None,
                   follower: Follower | None) -> dict[str, Any]:
    """What only the mounted daemon knows, added to the store's numbers in `.maiffs/stats`."""
    numbers: dict[str, Any] = {
        "pid": os.getpid(), "open_files": open_files, "chunk_cache": cache_numbers(cache),
        "replication": replicator.status() if replicator is not None else {}}
    if follower is not None:
        numbers["follow"] = follower.status()
    return numbers


def daemon_stats(mountpoint: str | None) -> dict[str, Any]:
    """The mounted daemon's numbers (`.maiffs/stats`), or {} when there is none to ask."""
    if mountpoint is None:
        return {}
    try:
        with open(os.path.join(mountpoint, ".maiffs", "stats")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def store_report(store_path: str) -> dict[str, Any]:
    """`maiffs stat` of a store directory: the daemon's numbers while it is mounted, else read
    here (LMDB lets readers in beside a daemon, should it not answer)."""
    mounted_on = next((m.mountpoint for m in maiffs_mounts() if m.store == store_path), None)
    numbers = daemon_stats(mounted_on)
    if "store" not in numbers:
        store = Store.open(store_path, readonly=True)
        try:
            numbers = store_numbers(store)
        finally:
            store.env.close()
    numbers["mounted_on"] = mounted_on
    return numbers


# -- the table -------------------------------------------------------------------------------------
def _count(n: int) -> str:
    return f"{n:,}"


def _bytes(n: int) -> str:
    return f"{human_size(n)} ({n:,} bytes)" if n >= 1024 else f"{n} bytes"


def _ago(ns: int) -> str:
    seconds = max(0.0, time.time() - ns / 1e9)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9))
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{when} ({seconds / size:.0f} {unit} ago)"
    return f"{when} ({seconds:.0f}s ago)"


def _share(rate: float | None) -> str:
    return "no reads yet" if rate is None else f"{rate:.1%}"


def _cache_line(cache: dict[str, Any]) -> str:
    return (f"{human_size(cache['bytes'])} of {human_size(cache['limit_bytes'])}, hit rate "
            f"{_share(cache['hit_rate'])} ({cache['hits']:,} hits, {cache['misses']:,} misses)")


def _replication_line(state: dict[str, Any]) -> str:
    behind = state["snapshots_behind"]
    line = (f"{behind} snapshot{'' if behind == 1 else 's'} behind, lag {state['lag_seconds']:.0f}s"
            if behind else "up to date")
    line += f"; lease {state['lease']}"
    return line + (f"; last error: {state['last_error']}" if state.get("last_error") else "")


def _follow_line(state: dict[str, Any]) -> str:
    limit = human_size(state["cache_limit"]) if state["cache_limit"] else "unbounded"
    line = (f"{state['url']}, showing {state['showing'] or 'nothing yet'}; store cache {limit}, "
            f"hit rate {_share(state['hit_rate'])}, {state['evictions']:,} evictions")
    return line + (f"; last error: {state['last_error']}" if state.get("last_error") else "")


def table(report: dict[str, Any]) -> list[str]:
    """`maiffs stat` for people: one line per number, sizes in binary units."""
    rows: list[tuple[str, str]] = [
        ("store", report["store"]),
        ("mounted on", f"{report['mounted_on']} (daemon pid {report['pid']})"
         if report.get("pid") else report["mounted_on"] or "not mounted"),
        ("files", _count(report["files"])),
        ("directories", _count(report["directories"])),
        ("snapshots", _count(report["snapshots"])),
        ("logical bytes", _bytes(report["logical_bytes"])),
        ("referenced bytes", _bytes(report["referenced_bytes"])),
        ("unique bytes", _bytes(report["unique_bytes"])),
        ("stored bytes", _bytes(report["stored_bytes"])),
        ("store file", _bytes(report["store_file_bytes"])),
        ("chunks", _count(report["chunks"])),
        ("dedup ratio", f"{report['dedup_ratio']:.2f}"),
        ("compression ratio", f"{report['compression_ratio']:.2f}"),
        ("total ratio", f"{report['total_ratio']:.2f}"),
        ("last commit", f"{_ago(report['last_commit_ns'])}, {report['commits']:,} in all"),
    ]
    if "chunk_cache" in report:
        rows += [("chunk cache", _cache_line(report["chunk_cache"])),
                 ("open files", _count(report["open_files"]))]
    rows += [(f"replication {name}", _replication_line(state))
             for name, state in report.get("replication", {}).items()]
    if report.get("follow"):
        rows.append(("following", _follow_line(report["follow"])))
    return [f"{label:18} {value}" for label, value in rows]
