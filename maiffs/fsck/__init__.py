"""`maiffs fsck`: check every invariant of a store and repair what can be repaired (design.md §1).

How it works, and why so: the store is read in one read transaction (one consistent snapshot)
into an in-memory model of its records; chunk data is not kept, each chunk is read and verified
once. The checks run over that model in dependency order (records before the tree, the tree
before link counts, extents before refcounts, everything before the counters). Each check
reports what is wrong as a `Finding` and fixes the model the way --repair would, recording the
fix in a plan of puts and deletes. Without --repair the plan is dropped, so a check and a repair
report the same findings; with --repair the plan is written in one write transaction (all or
nothing), and a second pass checks the result.

Derived values (link counts, `allocated`, chunk refcounts, the store counters) are compared
with what the records *as found* imply, then set to what the *repaired* records imply: one
broken record is reported once, not again as a wrong refcount and a wrong counter.

Snapshots (store format 2) add a second, content-addressed tree beside the live one: tree
objects (`objects`, named by their hash) with refcounts (`objrefs`), snapshot records naming a
root object, `objcache` (a clean live inode's object; one reference) and `byid` (file objects by
content). File objects hold chunk references too, so a chunk's refcount counts live extents
plus the extents of every stored file object, and a chunk only a snapshot holds is live data.
The derived records (`backlinks`, `byid`, both kinds of refcount) are recomputed from the
repaired model like the counters. A damaged tree (a missing or corrupt object, a file object
over a missing or corrupt chunk) is repaired by a Merkle rewrite: the damaged file object loses
the bad extents (they read as zeros), a directory object loses entries whose object is gone,
and every ancestor up to the snapshot roots is re-encoded under its new id. `objcache` entries
must describe their inode as it is; any doubt is settled by marking the inode (and every
directory above it) changed in `dirty`, which only makes the next snapshot rebuild it.

The model takes memory in proportion to the number of records (as e2fsck's does).

Where each part lives:
- `checker.py`: one pass (the order of the checks) and `check_and_repair`; the checks that need
  both sides: the id allocators, chunk refcounts and the counters.
- `model.py`: the model, its record parsers, its plan of puts and deletes, and loading it
  (each record is checked against its seal first, store format 3).
- `record_checks.py`: records that fail their checksum or do not decode: removed, and what they
  held restored, rebuilt or reported lost.
- `found.py`: what the records as found imply, for comparing derived values with.
- `chunk_checks.py`: verifying chunks, and which are usable for extents and file objects.
- `namespace_checks.py`: the live tree (root, symlinks, entries, cookies, reachability and
  /lost+found, link counts, orphans, xattrs, extents).
- `tree_checks.py`: the snapshot side (snapshot numbers, backlinks, objects and the Merkle
  rewrite, objcache, object refcounts, byid).
- `report.py`: `Finding`, the findings of a pass, and the `Report`; `words.py`: their wording.
"""

from __future__ import annotations

from maiffs.fsck.checker import check_and_repair
from maiffs.fsck.report import Finding, Report
from maiffs.progress import Progress
from maiffs.store.env import Store
from maiffs.store.lock import StoreLock

__all__ = ["fsck", "Finding", "Report"]


def fsck(store_path: str, repair: bool = False, progress: Progress | None = None) -> Report:
    """Check a store no daemon has mounted (StoreError if one has); with repair, fix it.
    progress is told of the chunks verified (the part that takes time in proportion to data)."""
    Store.check(store_path)  # not a store: say so, make no lock file in it
    # the lock first: a mounted store's LMDB is never opened for writing (nor synced) by fsck
    lock = StoreLock(store_path, "fsck --repair" if repair else "fsck")
    try:
        store = Store.open(store_path, readonly=not repair)
        try:
            return check_and_repair(store, repair, progress)
        finally:
            store.close()
    finally:
        lock.release()
