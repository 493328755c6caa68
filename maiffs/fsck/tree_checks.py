"""Checks of the snapshot side (store format 2): snapshot numbers, backlinks, tree objects and
the Merkle rewrite of damaged trees, objcache, object refcounts and byid. Each fixes the model
as --repair would; the derived records are recomputed from the repaired model."""

from __future__ import annotations

import itertools
import os
import stat
from collections import Counter
from dataclasses import replace

from maiffs.fsck.chunk_checks import ChunkChecks
from maiffs.fsck.found import AsFound
from maiffs.fsck.model import Children, Model, Names, children_of, names_of, reachable_objects
from maiffs.fsck.report import Findings
from maiffs.fsck.words import count, join, show
from maiffs.namespace.records import Inode, backlink_key, ino_key
from maiffs.snapshots.builder import content_id
from maiffs.snapshots.objects import TreeObject, byid_key, encode_refcount, object_id
from maiffs.store.env import Txn


class TreeChecks:
    """The checks of snapshot data, in the order `Checker` runs them: snapshot numbers with the
    allocators (they are one), the rest after the live tree's (whose entries they follow)."""

    def __init__(self, model: Model, txn: Txn, findings: Findings, found: AsFound,
                 chunks: ChunkChecks, store_format: int) -> None:
        self.model = model
        self.txn = txn
        self.report = findings.report
        self.found = found
        self.chunks = chunks
        self.store_format = store_format
        #: object id -> its id after the Merkle rewrite (itself if sound; None if it is lost)
        self.fixed: dict[bytes, bytes | None] = {}
        #: object id -> its own damage: (entry name or None, what, fix, lost bytes)
        self.harm: dict[bytes, list[tuple[bytes | None, str, str, tuple[int, int] | None]]] = {}
        self.kept: set[bytes] = set()  # the objects the repaired store keeps
        self.walked: set[int] = set()  # inodes marked changed with everything above them
        self._final_names: Names | None = None

    def snapshot_numbers(self) -> None:
        """Snapshot numbers are unique (a snapshot's inode numbers are made from its number)."""
        m = self.model
        first: dict[int, bytes] = {}
        for name, snap in sorted(m.snapshots.items(), key=lambda i: (i[1].created_ns, i[0])):
            other = first.setdefault(snap.number, name)
            if other != name:
                number = m.allocate(b"next_snapshot")
                self.report("snapshot", f"snapshot {show(name)}",
                            f"has number {snap.number}, as snapshot {show(other)} has",
                            f"renumbered {number}")
                snap.number = number
                m.put("snapshots", name, snap.encode())

    def backlinks(self) -> None:
        """backlinks holds exactly one (child, parent, name) per directory entry; it follows the
        entries fsck changed silently (format 1 stores get theirs when first mounted)."""
        if self.store_format < 2:
            return
        m = self.model
        final = {(c, p, n) for (p, n), (c, _k) in m.dirents.items()}
        for child, parent, name in sorted(m.backlinks - self.found.links - final):
            self.report("backlink", f"inode {child}",
                        f"backlink names entry {show(name)} in inode {parent}, which does not "
                        f"exist", "removed", child)
        for child, parent, name in sorted((self.found.links - m.backlinks) & final):
            self.report("backlink", f"inode {child}",
                        f"its entry {show(name)} in inode {parent} has no backlink", "added",
                        child)
        for link in final - m.backlinks:
            m.put("backlinks", backlink_key(*link), b"")
        for link in m.backlinks - final:
            m.delete("backlinks", backlink_key(*link))
        m.backlinks = final

    def trees(self) -> None:
        """Objects must be sound and hold only sound data; damaged trees get a Merkle rewrite."""
        m = self.model
        for oid, why in sorted(m.bad_objects.items()):
            self.report("object", f"object {oid.hex()}", why,
                        "deleted; the trees that use it are repaired")
            m.delete("objects", oid)
        for oid in itertools.chain((snap.root for snap in m.snapshots.values()),
                                   m.objcache.values()):
            self._fix(oid)
        for name in sorted(m.snapshots):
            self._repair_snapshot(name)
        for ino, oid in sorted(m.objcache.items()):
            if self.fixed[oid] == oid:
                continue
            if oid not in m.objects or oid in self.harm:  # else damage below it: said elsewhere
                why = (self._missing(oid) if oid not in m.objects
                       else "holds damaged data: " + self.harm[oid][0][1])
                self.report("objcache", f"inode {ino}", f"cached object {oid.hex()} {why}",
                            "cache entry removed; the inode is marked changed", ino)
            del m.objcache[ino]
            m.delete("objcache", ino_key(ino))
            self._mark(ino)

    def _missing(self, oid: bytes) -> str:
        return self.model.bad_objects.get(oid, "is missing from the store")

    def _fix(self, top: bytes) -> None:
        """Fill self.fixed for top and everything below it (post-order, without recursion)."""
        m = self.model
        stack = [(top, False)]
        while stack:
            oid, expanded = stack.pop()
            if oid in self.fixed:
                continue
            obj = m.objects.get(oid)
            if obj is None:
                self.fixed[oid] = None
            elif obj.is_dir and not expanded:
                stack.append((oid, True))
                stack.extend((child, False) for _n, child in obj.entries if child not in self.fixed)
            else:
                self.fixed[oid] = self._rewrite(oid, obj)

    def _rewrite(self, oid: bytes, obj: TreeObject) -> bytes:
        """The id of obj without its damage: itself, or a new object put in its place."""
        m = self.model
        harm: list[tuple[bytes | None, str, str, tuple[int, int] | None]] = []
        new = obj
        if obj.is_file:
            kept, dropped = [], 0
            for off, cid, length in obj.extents:
                why = self.chunks.problem(cid, length)
                if why is None:
                    kept.append((off, cid, length))
                    continue
                lo, hi = off, min(off + length, obj.inode.size)
                lost = (lo, hi) if lo < hi else None
                fix = (f"extent dropped; bytes {lo}-{hi - 1} read as zeros" if lost
                       else "extent dropped")
                harm.append((None, f"bytes {off}-{off + length - 1}: {why}", fix, lost))
                dropped += length
            if harm:
                reader = self.chunks.reader()
                new = TreeObject(replace(obj.inode, allocated=max(0, obj.inode.allocated - dropped)),
                                 list(obj.xattrs), obj.target,
                                 content_id(self.txn, reader, kept, obj.inode.size), kept)
        elif obj.is_dir:
            entries, changed = [], False
            for name, child in obj.entries:
                fixed = self.fixed[child]
                if fixed is None:
                    harm.append((name, f"its object {child.hex()} {self._missing(child)}",
                                 "entry removed from the snapshot", None))
                    changed = True
                else:
                    entries.append((name, fixed))
                    changed |= fixed != child
            if changed:
                new = TreeObject(obj.inode, list(obj.xattrs), entries=entries)
        if harm:
            self.harm[oid] = harm
        if new is obj:
            return oid
        encoded = new.encode()
        nid = object_id(encoded)
        if nid not in m.objects:
            m.objects[nid] = new
            m.put("objects", nid, encoded)
        self.fixed[nid] = nid
        return nid

    def _repair_snapshot(self, name: bytes) -> None:
        """Point a snapshot at its rewritten root, naming every damaged path; one whose root is
        lost is deleted."""
        m = self.model
        snap = m.snapshots[name]
        base = "/.snapshots/" + os.fsdecode(name)
        subject = f"snapshot {show(name)}"
        new = self.fixed[snap.root]
        if new is None or not m.objects[new].is_dir:
            why = (f"its root object {snap.root.hex()} {self._missing(snap.root)}" if new is None
                   else f"its root object {snap.root.hex()} is not a directory")
            self.report("snapshot", subject, why, "snapshot deleted: the snapshot is lost",
                        path=base)
            del m.snapshots[name]
            m.delete("snapshots", name)
            return
        if new == snap.root:
            return
        seen: set[bytes] = set()
        stack = [(snap.root, base)]
        while stack:
            oid, path = stack.pop()
            if oid in seen:
                continue
            seen.add(oid)
            for entry, what, fix, lost in self.harm.get(oid, ()):
                category = "data" if entry is None else "snapshot"  # lost bytes, or an entry
                self.report(category, subject, what, fix, lost=lost,
                            path=join(path, entry) if entry is not None else path)
            obj = m.objects.get(oid)
            for entry_name, child in sorted(obj.entries if obj else (), reverse=True):
                if child in m.objects and self.fixed.get(child) != child:
                    stack.append((child, join(path, entry_name)))
        snap.root = new
        m.put("snapshots", name, snap.encode())

    def _names_final(self) -> Names:
        """Who names each inode, once the entries are repaired (they are, before the objects)."""
        if self._final_names is None:
            self._final_names = names_of(self.model)
        return self._final_names

    def _mark(self, ino: int) -> None:
        """Mark ino and every directory above it changed: the next snapshot rebuilds them."""
        m = self.model
        names = self._names_final()
        pending = [ino]
        while pending:
            current = pending.pop()
            if current in self.walked:
                continue
            self.walked.add(current)
            if current not in m.inodes and current not in m.objcache:
                continue
            if current not in m.marked:
                m.marked.add(current)
                m.put("dirty", ino_key(current), b"")
            pending.extend(parent for parent, _name in names.get(current, ()))

    def objcache(self) -> None:
        """An objcache entry belongs to an inode that exists (or is marked changed: the next
        snapshot releases it), and one of a clean inode describes that inode as it is."""
        m = self.model
        if not m.objcache:
            return
        for ino in sorted(m.touched):  # fsck changed them: rebuilt without a finding
            self._mark(ino)
        children = children_of(m)
        wrong = []
        for ino, oid in sorted(m.objcache.items()):
            inode = m.inodes.get(ino)
            if inode is None:
                if ino not in m.marked:
                    self.report("objcache", f"inode {ino}",
                                f"cached object {oid.hex()} is of an inode that no longer exists "
                                f"and is not marked changed", "cache entry removed")
                    del m.objcache[ino]
                    m.delete("objcache", ino_key(ino))
            elif ino not in m.marked:
                why = self._cache_mismatch(inode, m.objects[oid], children)
                if why is not None:
                    wrong.append((ino, oid, why))
        for ino, oid, why in wrong:
            self.report("objcache", f"inode {ino}", f"cached object {oid.hex()} {why}",
                        "inode marked changed with the directories above it; the next "
                        "snapshot rebuilds them", ino)
            self._mark(ino)

    def _cache_mismatch(self, inode: Inode, obj: TreeObject, children: Children) -> str | None:
        """How a clean inode's cached object differs from the inode (from records in the model)."""
        m, o = self.model, obj.inode
        for attr, label, fmt in (("ino", "inode number", str), ("mode", "mode", oct),
                                 ("uid", "owner", str), ("gid", "group", str),
                                 ("size", "size", str), ("mtime_ns", "mtime", str)):
            have, want = getattr(o, attr), getattr(inode, attr)
            if have != want:
                return f"has {label} {fmt(have)} but the inode has {fmt(want)}"
        if sorted(n for n, _v in obj.xattrs) != sorted(k[8:] for k in m.xattrs.get(inode.ino, ())):
            return "has other extended attributes than the inode"
        if stat.S_ISDIR(inode.mode):
            want_entries, have_entries = dict(children.get(inode.ino, ())), dict(obj.entries)
            if want_entries.keys() != have_entries.keys():
                return "has other entry names than the directory"
            for name, child in sorted(want_entries.items()):
                if child in m.marked:
                    return f"has entry {show(name)}, whose inode {child} is marked changed"
                if m.objcache.get(child) != have_entries[name]:
                    return (f"has entry {show(name)}, which is not the cached object of "
                            f"inode {child}")
        elif stat.S_ISREG(inode.mode):
            extents = [(off, cid, n)
                       for off, (cid, n) in sorted(m.extents.get(inode.ino, {}).items())]
            if extents != obj.extents:
                return "has other extents than the file"
        elif stat.S_ISLNK(inode.mode) and obj.target != m.symlinks.get(inode.ino, b""):
            return "has another target than the symlink"
        return None

    def objrefs(self) -> None:
        """An object's refcount is the snapshots rooted at it, plus the objcache entries naming
        it, plus the entries naming it in directory objects; objects nothing holds are deleted."""
        m = self.model
        found = Counter(self.found.roots)
        found.update(self.found.cache.values())
        found.update(child for obj in self.found.tree.values() for _n, child in obj.entries)
        roots = [snap.root for snap in m.snapshots.values()] + list(m.objcache.values())
        self.kept = reachable_objects(m, roots)
        final = Counter(roots)
        final.update(child for oid in self.kept for _n, child in m.objects[oid].entries)
        for oid in sorted(set(m.objrefs) | set(self.found.tree) | self.kept):
            stored = m.objrefs.get(oid)
            shown = "missing" if stored is None else stored
            if oid in self.kept:
                want = final[oid]
                unseen = self.found.unseen_holders and (stored or 0) > found[oid]
                said = stored is None and oid in self.found.bad_objrefs  # as a record that is removed
                if (oid in self.found.tree and stored not in (found[oid], want)
                        and not unseen and not said):
                    self.report("refcount", f"object {oid.hex()}",
                                f"refcount is {shown} but "
                                f"{count(found[oid], 'reference holds', 'references hold')} it",
                                f"set to {want}")
                if stored != want:
                    m.put("objrefs", oid, encode_refcount(want))
                continue
            if oid in self.found.tree and found[oid] == 0:
                self.report("object", f"object {oid.hex()}",
                            f"nothing references it (refcount {shown})", "deleted")
            elif oid not in self.found.tree and oid not in m.bad_objects and found[oid] == 0:
                self.report("refcount", f"object {oid.hex()}",
                            "refcount record of an object that does not exist", "removed")
            if m.objects.pop(oid, None) is not None:
                m.delete("objects", oid)
            if stored is not None:
                m.delete("objrefs", oid)

    def byid(self) -> None:
        """byid lists each file object under its content id, and nothing else."""
        m = self.model
        found = {byid_key(o.content_id, oid) for oid, o in self.found.tree.items() if o.is_file}
        final = {byid_key(m.objects[oid].content_id, oid) for oid in self.kept
                 if m.objects[oid].is_file}
        for key in sorted(m.byid - found - final):
            self.report("byid", f"object {key[32:].hex()}",
                        f"is listed under content id {key[:32].hex()} but is no file object "
                        f"with that content", "removed")
        for key in sorted((found - m.byid) & final):
            self.report("byid", f"object {key[32:].hex()}",
                        "file object is not listed under its content id", "added")
        for key in final - m.byid:
            m.put("byid", key, b"")
        for key in m.byid - final:
            m.delete("byid", key)
        m.byid = final
