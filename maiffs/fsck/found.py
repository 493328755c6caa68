"""What the records *as found* imply, taken before any check changes the model.

Derived values (chunk refcounts, object refcounts, backlinks, byid, the counters) are compared
with these, then set to what the repaired model implies: so one broken record is reported once,
not again as a wrong refcount or counter.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass

from maiffs.fsck.model import Model, totals
from maiffs.snapshots.objects import TreeObject


@dataclass(frozen=True)
class AsFound:
    """The found state of everything fsck derives (the model's own copies change into the
    repaired ones)."""

    #: The store counters the records imply (a bad inode record still counts as an inode).
    totals: dict[str, int]
    #: (child, parent, name) of every directory entry: the backlinks there should be.
    links: set[tuple[int, int, bytes]]
    tree: dict[bytes, TreeObject]  # the sound objects
    cache: dict[int, bytes]  # objcache
    roots: list[bytes]  # each snapshot's root object
    #: chunk id -> extents using it, live ones and those of stored file objects.
    chunk_users: Counter[bytes]
    #: Some object (or objcache, snapshot or extent record) is missing or corrupt: the references it
    #: held are unseen, so a refcount above what is seen is explained by it (reported once).
    unseen_holders: bool
    bad_objrefs: set[bytes]  # keys of objrefs records that do not decode
    bad_records: bool  # some record is damaged or does not decode

    @classmethod
    def of(cls, model: Model) -> AsFound:
        found_totals = totals(model, {c: (r[1], r[2]) for c, r in model.refs.items()})
        found_totals["inodes"] += sum(1 for db, _k, _w in model.bad if db == "inodes")
        tree = dict(model.objects)
        cache = dict(model.objcache)
        roots = [snap.root for snap in model.snapshots.values()]
        users = Counter(cid for exts in model.extents.values() for cid, _l in exts.values())
        users.update(cid for obj in tree.values() for _o, cid, _l in obj.extents)
        held = itertools.chain(roots, cache.values(),
                               (c for obj in tree.values() for _n, c in obj.entries))
        unseen = (bool(model.bad_objects)
                  or any(db in ("objcache", "snapshots", "extents") for db, _k, _w in model.bad)
                  or any(o not in tree for o in held))
        return cls(totals=found_totals,
                   links={(c, p, n) for (p, n), (c, _k) in model.dirents.items()},
                   tree=tree, cache=cache, roots=roots, chunk_users=users,
                   unseen_holders=unseen,
                   bad_objrefs={key for db, key, _why in model.bad if db == "objrefs"},
                   bad_records=bool(model.bad))
