"""Stores as older maiffs versions wrote them, made from a current one (for upgrade tests)."""

from __future__ import annotations

import struct
from pathlib import Path

import lmdb

from maiffs.store.env import DB_NAMES, HEADER_KEYS
from maiffs.store.seals import UNSEALED_DBS, unseal

#: The databases store format 2 added (snapshots, backlinks).
FORMAT_2_DATABASES = ("backlinks", "dirty", "objects", "objrefs", "objcache", "snapshots", "byid")


def make_old(store: Path, version: int) -> int:
    """Rewrite an unmounted store of the current format as format version (1 or 2) was: no
    record sealed (format 3 sealed them all), and for 1 without format 2's databases. Returns
    the number of records unsealed."""
    env = lmdb.open(str(store), max_dbs=len(DB_NAMES) + 2, map_size=4 << 30)
    count = 0
    try:
        with env.begin(write=True) as txn:
            for name in DB_NAMES:
                db = env.open_db(name.encode(), txn=txn)
                if name in UNSEALED_DBS:
                    continue
                if version < 2 and name in FORMAT_2_DATABASES:
                    txn.drop(db, delete=True)
                    continue
                for key, sealed in [(bytes(k), bytes(v)) for k, v in txn.cursor(db=db)]:
                    if name == "meta" and key in HEADER_KEYS:
                        continue
                    txn.put(key, bytes(unseal(name, key, sealed)), db=db)
                    count += 1
            txn.put(b"format", struct.pack(">I", version), db=env.open_db(b"meta", txn=txn))
    finally:
        env.close()
    return count
