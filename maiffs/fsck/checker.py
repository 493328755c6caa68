"""The orchestration of one fsck pass: the order of the checks, and the checks that need both
the live tree and the snapshot side (allocators, chunk refcounts, counters);
then `check_and_repair`, which runs a pass, writes the plan with --repair and checks again."""

from __future__ import annotations

import itertools
from collections import Counter

from maiffs.fsck.chunk_checks import ChunkChecks
from maiffs.fsck.found import AsFound
from maiffs.fsck.model import Model, children_of, load, totals, walk
from maiffs.fsck.namespace_checks import NamespaceChecks
from maiffs.fsck.record_checks import RecordChecks
from maiffs.fsck.report import Finding, Findings, Report
from maiffs.fsck.tree_checks import TreeChecks
from maiffs.fsck.words import count
from maiffs.namespace.namespace import FIRST_COOKIE
from maiffs.namespace.records import ROOT_INO
from maiffs.progress import Progress
from maiffs.store.chunks import REF_RECORD
from maiffs.store.env import STAT_FIELDS, STATS_RECORD, Store, Txn


def check_and_repair(store: Store, repair: bool, progress: Progress | None = None) -> Report:
    """One pass over a consistent snapshot; with repair and findings, write the plan (all or
    nothing) and report what a second pass still finds."""
    with store.read() as txn:
        checker = Checker(load(txn), txn, verify_chunks=True, store_format=store.format,
                          progress=progress)
        findings = checker.run()
    model = checker.model
    remaining: list[Finding] = []
    if repair and findings:
        store.write(model.apply, expected_bytes=sum(len(v or b"") for v in model.plan.values()))
        with store.read() as txn:  # chunk data was verified above and only deleted since
            remaining = Checker(load(txn), txn, verify_chunks=False,
                                store_format=store.format).run()
    return Report(store.path, repair, findings, remaining, len(model.inodes),
                  len(checker.chunks.good))


class Checker:
    """Runs the checks in dependency order over one model (see the package docstring); the
    checks of each area share the model, the findings and what the records imply as found."""

    def __init__(self, model: Model, txn: Txn, verify_chunks: bool, store_format: int,
                 progress: Progress | None = None) -> None:
        self.model = model
        self.findings = Findings(walk(model, children_of(model), ROOT_INO, "/"))
        self.report = self.findings.report
        self.found = AsFound.of(model)
        self.records = RecordChecks(model, self.findings)
        self.chunks = ChunkChecks(model, txn, self.findings, self.found, verify_chunks, progress)
        self.namespace = NamespaceChecks(model, self.findings, self.chunks)
        self.trees = TreeChecks(model, txn, self.findings, self.found, self.chunks, store_format)

    def run(self) -> list[Finding]:
        ns, trees = self.namespace, self.trees
        for check in (self.records.check, self._allocators, trees.snapshot_numbers, self.chunks.check,
                      ns.root, ns.symlinks, ns.dirents, ns.cookies, ns.dir_names, ns.reachable,
                      ns.nlinks, ns.orphans, ns.xattrs, ns.extents, trees.backlinks,
                      trees.trees, trees.objcache, trees.objrefs, trees.byid,
                      self._refcounts, self._counters):
            check()
        return self.findings.items

    def _allocators(self) -> None:
        """New inode numbers and cookies must lie above all in use, or they would collide."""
        m = self.model
        cookies = itertools.chain((k for _p, k in m.cookies), (k for _c, k in m.dirents.values()))
        in_use = {b"next_ino": max(m.inodes, default=ROOT_INO),
                  b"next_cookie": max(cookies, default=FIRST_COOKIE - 1),
                  b"next_snapshot": max((s.number for s in m.snapshots.values()), default=0)}
        for name, top in in_use.items():
            if m.next_ids[name] <= top:
                self.report("allocator", f"meta {name.decode()}",
                            f"next value {m.next_ids[name]} is not above {top}, which is in use",
                            f"set to {top + 1}")
                m.set_next(name, top + 1)

    def _refcounts(self) -> None:
        """A chunk's refcount is the number of extents using it, live ones and those of stored
        file objects (one per extent per object); a chunk nothing uses is deleted."""
        m = self.model
        users = Counter(cid for exts in m.extents.values() for cid, _l in exts.values())
        users.update(cid for oid in self.trees.kept for _o, cid, _l in m.objects[oid].extents)
        for cid in sorted(self.chunks.good):
            if cid in self.model.chunk_ids:
                self._check_refcount(cid, users[cid])
            self._write_ref(cid, users[cid])
        self.chunks.good = {cid: lens for cid, lens in self.chunks.good.items() if users[cid]}

    def _check_refcount(self, cid: bytes, users: int) -> None:
        found, ref = self.found.chunk_users[cid], self.model.refs.get(cid)
        if found == 0:
            self.report("chunk", f"chunk {cid.hex()}",
                        f"no extent or snapshot uses it (refcount {ref[0] if ref else 'missing'})",
                        "deleted" if users == 0 else "kept: a repaired file uses it")
        elif (ref is not None and ref[0] != found
              and not (self.found.unseen_holders and ref[0] > found)):
            self.report("refcount", f"chunk {cid.hex()}",
                        f"refcount is {ref[0]} but {count(found, 'extent uses', 'extents use')} it",
                        f"set to {users}")

    def _write_ref(self, cid: bytes, users: int) -> None:
        if users == 0:
            self.model.delete_chunk(cid)
            return
        record = (users, *self.chunks.good[cid])
        if self.model.refs.get(cid) != record:
            self.model.put("chunkrefs", cid, REF_RECORD.pack(*record))

    def _counters(self) -> None:
        """The store counters (`maiffs stat`) equal what the records imply.

        A counter that disagrees with the records as found but already has the repaired
        records' value is not reported: the broken record it follows from is. Nor is one
        when records were unreadable: it may be what they held that it counts.
        """
        stored = self.model.stats
        final = totals(self.model, self.chunks.good)
        for name in STAT_FIELDS:
            if (stored is not None and self.found.totals[name] != stored[name] != final[name]
                    and not self.found.bad_records):
                self.report("counter", f"counter {name}",
                            f"is {stored[name]} but the records say {self.found.totals[name]}",
                            f"set to {final[name]}")
        if stored != final:
            self.model.put("meta", b"stats", STATS_RECORD.pack(*(final[f] for f in STAT_FIELDS)))
