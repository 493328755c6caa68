"""Records that fail their checksum (a damaged byte on disk) or do not decode (a bug).

Each one is removed: what it says cannot be trusted, and if the damage hit its key it is not
even the record it seems to be. What it held is put back where other records still say it
exactly, rebuilt where they imply it, and reported lost where nothing does:

- the inode record, extents, symlink target and extended attributes of an inode unchanged
  since its tree object was last built (`objcache` names the object; no `dirty` mark says it
  changed since) are restored from that object, as they were;
- another inode is rebuilt from what hangs off it: a directory from its entries, a symlink
  from its target, a file from its extents (its size then ends where its last extent does).
  Its mode, owner and times are lost: it gets 0600 (directories 0700), its directory's owner,
  and the current time. An inode nothing hangs off is removed with its names;
- a directory entry is restored from its backlink and its readdir cookie, which name it too;
  an entry that is not is gone, and the reachability check links its file into /lost+found;
- the bytes of a file's extent that is not restored read as zeros (a `data` finding);
- a damaged `dirty` mark could have been any inode's: every inode is marked changed (the next
  snapshot builds every tree object anew), and no cached object is trusted here;
- a damaged tree object is left to the tree checks, which repair the trees that use it;
- the rest are derived records, rebuilt by the checks after this one (refcounts, backlinks,
  byid, readdir cookies, orphans, counters, allocators), or are lost as reported (an extended
  attribute, a symlink's target, a snapshot).

The restoring runs from what is missing, not from the damaged keys, so it also finds the
record whose damaged key made it look like another one.
"""

from __future__ import annotations

import stat
from dataclasses import replace

from maiffs.errors import show_key
from maiffs.fsck.model import Model, Names, names_of
from maiffs.fsck.report import Findings
from maiffs.fsck.words import describe, join, show
from maiffs.namespace.records import (ROOT_INO, Inode, dirent_key, encode_dirent, extent_key,
                                      ino_key, key_ino, now_ns)

#: Databases whose records a clean inode's tree object holds too.
IN_OBJECTS = {"inodes", "extents", "xattrs", "symlinks"}
#: Keys that begin with the inode number they belong to.
INODE_KEYED = IN_OBJECTS | {"orphans", "objcache", "dirty"}
FROM_OBJECT = "restored from its cached tree object (the inode has not changed since)"
FROM_LINKS = "restored from its backlink and readdir cookie"
#: What removing a bad record that nothing put back loses (the derived ones lose nothing).
_LOST = {"snapshots": "removed; the snapshot is lost",
         "xattrs": "removed: extended attribute {} is lost",
         "symlinks": "removed: the symlink's target is lost",
         "dirents": "removed; its file keeps its other names or goes to /lost+found",
         "dirty": "removed; every inode is marked changed (the next snapshot builds all anew)",
         "objcache": "removed (the next snapshot builds that tree object anew)",
         "inodes": "removed"}
DERIVED = "removed; rebuilt from the other records"


class RecordChecks:
    """The first check of a pass: the bad records, removed, and what can be put back."""

    def __init__(self, model: Model, findings: Findings) -> None:
        self.model = model
        self.report = findings.report
        self.paths = findings.paths
        #: (db, key) of each record put back -> how
        self.fixes: dict[tuple[str, bytes], str] = {}

    def check(self) -> None:
        m = self.model
        damaged = {db for db, _key, _why in m.bad}
        for db, key, _why in m.bad:
            m.delete(db, key)
        if damaged & IN_OBJECTS and "dirty" not in damaged:  # (else no object can be trusted)
            self._restore_from_objects()
        if "inodes" in damaged:
            self._rebuild_inodes()
        if "dirents" in damaged:
            self._restore_entries()
        if "dirty" in damaged:  # which inode lost its mark is unknown: all are marked
            for ino in m.inodes.keys() - m.marked:
                m.marked.add(ino)
                m.put("dirty", ino_key(ino), b"")
        for db, key, why in m.bad:
            self._report(db, key, why, self.fixes.pop((db, key), None))
        for (db, key), fix in sorted(self.fixes.items()):  # under another key than the damaged one
            self._report(db, key, "", fix, message="record is missing")

    def _restore_from_objects(self) -> None:
        m = self.model
        names = names_of(m)
        for ino, oid in sorted(m.objcache.items()):
            obj = m.objects.get(oid)
            if obj is None or ino in m.marked:
                continue
            if ino not in m.inodes:
                m.changed(replace(obj.inode, ino=ino, parent=_parent(ino, names)))
                self.fixes[("inodes", ino_key(ino))] = FROM_OBJECT
            for off, cid, length in obj.extents:
                if off not in m.extents.get(ino, {}):
                    m.put_extent(ino, off, cid, length)
                    self.fixes[("extents", extent_key(ino, off))] = FROM_OBJECT
            for name, value in obj.xattrs:
                key = ino_key(ino) + name
                if key not in m.xattrs.setdefault(ino, []):
                    m.xattrs[ino].append(key)
                    m.put("xattrs", key, value)
                    self.fixes[("xattrs", key)] = FROM_OBJECT
            if stat.S_ISLNK(obj.inode.mode) and ino not in m.symlinks:
                m.symlinks[ino] = obj.target
                m.put("symlinks", ino_key(ino), obj.target)
                self.fixes[("symlinks", ino_key(ino))] = FROM_OBJECT

    def _rebuild_inodes(self) -> None:
        """Every inode something refers to, or a damaged key names, without a record."""
        m = self.model
        names = names_of(m)
        parents = {parent for parent, _name in m.dirents}
        wanted = {key_ino(key) for db, key, _why in m.bad if db == "inodes" and len(key) == 8}
        wanted.update(names, parents, (i for i, held in m.extents.items() if held), m.symlinks)
        for ino in sorted(wanted - set(m.inodes)):
            inode, source = _implied(m, ino, names, parents)
            if inode is None:
                m.drop_inode(ino)
                self.fixes[("inodes", ino_key(ino))] = (
                    "removed with its names: nothing else says what it was (no entries, "
                    "target or data)")
                continue
            m.changed(inode)
            m.relinked.add(ino)  # its link count is set from its names without a finding
            self.fixes[("inodes", ino_key(ino))] = (
                f"rebuilt as a {describe(inode)} from its {source}; its mode, owner and times "
                f"are lost (now {stat.S_IMODE(inode.mode):04o}, owner {inode.uid}:{inode.gid})")

    def _restore_entries(self) -> None:
        """Entries that their backlink and their readdir cookie both still name."""
        m = self.model
        cookies = {(parent, name): cookie for (parent, cookie), name in m.cookies.items()}
        for child, parent, name in sorted(m.backlinks):
            cookie = cookies.get((parent, name))
            pdir = m.inodes.get(parent)
            if ((parent, name) in m.dirents or cookie is None or child not in m.inodes
                    or pdir is None or not stat.S_ISDIR(pdir.mode)):
                continue
            m.dirents[(parent, name)] = (child, cookie)
            m.put("dirents", dirent_key(parent, name), encode_dirent(child, cookie))
            self.fixes[("dirents", dirent_key(parent, name))] = FROM_LINKS

    def _report(self, db: str, key: bytes, why: str, fix: str | None,
                message: str = "record {why}") -> None:
        ino = key_ino(key) if db in INODE_KEYED and len(key) >= 8 else None
        if fix is None and db == "extents" and len(key) == 16:
            self._extent_lost(key_ino(key), key_ino(key, 8), why)
            return
        if fix is None:
            fix = _LOST.get(db, DERIVED)
            if db == "xattrs" and ino is not None:
                fix = fix.format(show(key[8:]))
            if db == "objcache" and ino is not None:  # its inode is rebuilt by the next snapshot
                self.model.touched.add(ino)
        path = None
        if db == "dirents" and len(key) > 8 and key_ino(key) in self.paths:
            path = join(self.paths[key_ino(key)], key[8:])
        subject = f"inode {ino}" if db == "inodes" and ino is not None else f"{db} {show_key(key)}"
        self.report("record", subject, message.format(why=why), fix, ino, path=path)

    def _extent_lost(self, ino: int, off: int, why: str) -> None:
        """An extent not restored: its bytes, up to the next extent or the end of the file,
        read as zeros (its length went with it)."""
        m = self.model
        inode = m.inodes.get(ino)
        if inode is None or not stat.S_ISREG(inode.mode):
            self.report("record", f"extents {show_key(extent_key(ino, off))}",
                        f"record {why}", "removed")
            return
        held = m.extents.get(ino, {})
        end = min([inode.size, *(o for o in held if o > off)])
        lost = (off, end) if off < end else None
        fix = f"removed; bytes {off}-{end - 1} read as zeros" if lost else "removed"
        self.report("data", f"inode {ino}", f"extent record at byte {off} {why}", fix, ino, lost)
        inode.allocated = sum(length for _cid, length in held.values())
        m.changed(inode)


def _parent(ino: int, names: Names) -> int:
    """The directory holding ino's first name (the root for the root and nameless inodes)."""
    own = names.get(ino)
    return own[0][0] if own and ino != ROOT_INO else ROOT_INO


def _implied(m: Model, ino: int, names: Names, parents: set[int]) -> tuple[Inode | None, str]:
    """The inode its entries, target or extents imply (None if nothing hangs off it), and
    which of them it was."""
    parent = _parent(ino, names)
    owner = m.inodes.get(parent)
    uid, gid = (owner.uid, owner.gid) if owner is not None and ino != ROOT_INO else (0, 0)
    t = now_ns()
    base = Inode(ino, 0, uid, gid, 1, parent=parent, atime_ns=t, mtime_ns=t, ctime_ns=t,
                 birth_ns=t)
    if ino in parents:
        return replace(base, mode=stat.S_IFDIR | (0o755 if ino == ROOT_INO else 0o700)), "entries"
    if ino in m.symlinks:
        return replace(base, mode=stat.S_IFLNK | 0o777, size=len(m.symlinks[ino])), "target"
    held = m.extents.get(ino)
    if held:
        return replace(base, mode=stat.S_IFREG | 0o600,
                       size=max(off + length for off, (_cid, length) in held.items()),
                       allocated=sum(length for _cid, length in held.values())), "extents"
    return None, ""
