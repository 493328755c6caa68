"""The upgrade to store format 3: every record is rewritten with its seal (seals.py).

A store can hold more records than one transaction should rewrite (LMDB keeps a transaction's
dirty pages in memory), so the upgrade goes in bounded steps, each one transaction that seals
the next batch of records and records how far it got in meta's upgrade mark. The first step
also sets the format to 3 (so an older maiffs leaves a half-sealed store alone); the last seals
meta itself and removes the mark. A store killed between two steps opens as it is: every
transaction reads the mark and knows which records carry a seal, and the next open for writing
goes on from the mark.
"""

from __future__ import annotations

from maiffs.store.env import (SEALING_ORDER, UPGRADE_MARK, Store, Txn, format_record, format_of)
from maiffs.store.seals import SEALED_FORMAT, Sealing, seal, unseal

#: A step seals at most this many records, or this many bytes of them.
STEP_RECORDS = 20_000
STEP_BYTES = 64 << 20


def seal_records(store: Store) -> None:
    """Upgrade store (opened for writing, of format 2 or half way to 3) to format 3; nothing
    to do for one of format 3."""
    while not store.all_sealed:
        store.all_sealed = store.write(_step)
    store.format = max(store.format, SEALED_FORMAT)


def _step(txn: Txn) -> bool:
    """Seal the next batch of records (one transaction); True once every record is sealed."""
    meta = txn.dbs["meta"]
    if format_of(txn.raw.get(b"format", db=meta)) < SEALED_FORMAT:
        progress = Sealing(SEALING_ORDER)
        txn.raw.put(b"format", format_record(SEALED_FORMAT), db=meta)
    else:
        progress = Sealing.decode(SEALING_ORDER,
                                  unseal("meta", UPGRADE_MARK, txn.raw.get(UPGRADE_MARK, db=meta)))
    if progress.done == len(SEALING_ORDER):
        _seal_meta(txn)
        return True
    db = SEALING_ORDER[progress.done]
    batch, more = _batch(txn, db, progress.upto)
    for key, value in batch:
        txn.raw.put(key, seal(key, value), db=txn.dbs[db])
    if more:
        progress = Sealing(SEALING_ORDER, progress.done, batch[-1][0])
    else:
        progress = Sealing(SEALING_ORDER, progress.done + 1)
    txn.raw.put(UPGRADE_MARK, seal(UPGRADE_MARK, progress.encode()), db=meta)
    return False


def _batch(txn: Txn, db: str, after: bytes | None) -> tuple[list[tuple[bytes, bytes]], bool]:
    """The next records of db past key after, up to a step's worth; and whether more follow."""
    cur = txn.raw.cursor(db=txn.dbs[db])
    found = cur.set_range(after) if after is not None else cur.first()
    if found and cur.key() == after:
        found = cur.next()
    batch: list[tuple[bytes, bytes]] = []
    size = 0
    while found:
        if len(batch) == STEP_RECORDS or size >= STEP_BYTES:
            return batch, True
        key, value = cur.item()
        batch.append((bytes(key), bytes(value)))
        size += len(key) + len(value)
        found = cur.next()
    return batch, False


def _seal_meta(txn: Txn) -> None:
    """The last step: seal meta's records (magic stays as it is, the format is sealed already)."""
    meta = txn.dbs["meta"]
    for key, value in [(bytes(k), bytes(v)) for k, v in txn.raw.cursor(db=meta)]:
        if key == UPGRADE_MARK:
            txn.raw.delete(key, db=meta)
        elif key not in (b"magic", b"format"):
            txn.raw.put(key, seal(key, value), db=meta)
