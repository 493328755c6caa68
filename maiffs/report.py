"""The numbers `maiffs stat` and `.maiffs/stats` show: files, bytes, dedup and compression."""

from __future__ import annotations

import os
from typing import Any

from maiffs.mounts import maiffs_mounts
from maiffs.store import Store


def _ratio(a: int, b: int) -> float:
    return round(a / b, 3) if b else 1.0


def store_numbers(store: Store) -> dict[str, Any]:
    """Counters of an open store as of its last commit, with the ratios derived from them."""
    s = store.stats()
    with store.read() as txn:
        snapshots = sum(1 for _ in txn.prefix_items("snapshots", b""))
    return {
        "store": store.path,
        "files": s["inodes"],
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
    }


def store_report(store_path: str) -> dict[str, Any]:
    """`maiffs stat` of a store directory (mounted or not: LMDB lets readers in beside the daemon)."""
    store = Store.open(store_path, readonly=True)
    try:
        numbers = store_numbers(store)
    finally:
        store.env.close()
    numbers["mounted_on"] = next((m.mountpoint for m in maiffs_mounts() if m.store == store_path), None)
    return numbers
