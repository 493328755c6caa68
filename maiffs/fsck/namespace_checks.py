"""Checks of the live namespace: the root, symlinks, directory entries and their readdir
cookies, one name per directory, reachability from / (the rest goes to /lost+found), link
counts, the orphans list, leftover xattrs, and file extents (over usable chunks, in order,
within the file). Each fixes the model as --repair would."""

from __future__ import annotations

import stat

from maiffs.fsck.chunk_checks import ChunkChecks
from maiffs.fsck.model import Children, Model, Names, children_of, names_of, walk
from maiffs.fsck.report import Findings
from maiffs.fsck.words import count, describe, join, kind, show
from maiffs.namespace.filedata import is_zero
from maiffs.namespace.records import ROOT_INO, Inode, cookie_key, ino_key
from maiffs.options import MountOptions
from maiffs.store.chunks import decode_chunk, prepare_chunk

#: Level for the one kind of chunk fsck writes: the head of a chunk cut at the end of its file.
LEVEL = MountOptions().compression


class NamespaceChecks:
    """The checks of the live tree, in the order `Checker` runs them (records come first)."""

    def __init__(self, model: Model, findings: Findings, chunks: ChunkChecks) -> None:
        self.model = model
        self.report = findings.report
        self.paths = findings.paths
        self.chunks = chunks
        self.lost_found: tuple[int, str] | None = None  # /lost+found, once made or found

    def root(self) -> None:
        """/ must be a directory that is its own parent (a never-mounted store has no / yet)."""
        m = self.model
        root = m.inodes.get(ROOT_INO)
        if root is None and not m.inodes and not m.dirents:
            return
        if root is None or not stat.S_ISDIR(root.mode):
            what = "is missing" if root is None else "is not a directory"
            self.report("directory", f"inode {ROOT_INO}", f"the root directory {what}",
                        "replaced by an empty directory", ROOT_INO)
            m.new_dir(ROOT_INO, ROOT_INO, 0o755, 0, 0)
        elif root.parent != ROOT_INO:
            self.report("directory", f"inode {ROOT_INO}",
                        f"the root's parent pointer is {root.parent}", "set to itself", ROOT_INO)
            root.parent = ROOT_INO
            m.changed(root)

    def symlinks(self) -> None:
        """A symlink needs its target record, and a target record needs its symlink."""
        m = self.model
        for ino, inode in sorted(m.inodes.items()):
            if not stat.S_ISLNK(inode.mode):
                continue
            target = m.symlinks.get(ino)
            if target is None:
                self.report("symlink", f"inode {ino}", "symlink has no target", "removed", ino)
                m.drop_inode(ino)
            elif inode.size != len(target):
                self.report("symlink", f"inode {ino}",
                            f"size {inode.size} is not its target's length {len(target)}",
                            "size corrected", ino)
                inode.size = len(target)
                m.changed(inode)
        for ino in sorted(m.symlinks):
            if ino not in m.inodes or not stat.S_ISLNK(m.inodes[ino].mode):
                self.report("symlink", f"inode {ino}", "symlink target without a symlink inode",
                            "removed")
                del m.symlinks[ino]
                m.delete("symlinks", ino_key(ino))

    def dirents(self) -> None:
        """An entry must be in an existing directory and name an existing inode other than /."""
        for (parent, name), (child, _cookie) in sorted(self.model.dirents.items()):
            why = self._dirent_problem(parent, child)
            if why is not None:
                path = join(self.paths[parent], name) if parent in self.paths else None
                self.report("dirent", f"inode {parent}", f"entry {show(name)} {why}", "removed",
                            path=path)
                self.model.remove_dirent(parent, name)

    def _dirent_problem(self, parent: int, child: int) -> str | None:
        pdir = self.model.inodes.get(parent)
        if pdir is None or not stat.S_ISDIR(pdir.mode):
            return f"is in inode {parent}, which is {'missing' if pdir is None else 'not a directory'}"
        if child not in self.model.inodes:
            return f"names inode {child}, which does not exist"
        if child == ROOT_INO:
            return "names the root directory"
        return None

    def cookies(self) -> None:
        """Entries and readdir cookies pair up one to one (an entry without one is invisible)."""
        m = self.model
        paired = {(p, k) for (p, name), (_c, k) in m.dirents.items() if m.cookies.get((p, k)) == name}
        for (parent, cookie), name in sorted(m.cookies.items()):
            if (parent, cookie) not in paired:
                self.report("cookie", f"inode {parent}",
                            f"readdir cookie {cookie} names {show(name)}, which has no entry "
                            f"with that cookie", "removed", parent)
                del m.cookies[(parent, cookie)]
                m.delete("dircookies", cookie_key(parent, cookie))
        for (parent, name), (child, cookie) in sorted(m.dirents.items()):
            if (parent, cookie) not in paired:
                self.report("cookie", f"inode {parent}",
                            f"entry {show(name)} has no readdir cookie, so readdir skips it",
                            "given a new cookie", child)
                m.set_cookie(parent, name, child)

    def dir_names(self) -> None:
        """A directory has one name, in the directory its parent pointer names."""
        m = self.model
        names = names_of(m)
        for ino, inode in sorted(m.inodes.items()):
            own = names.get(ino, [])
            if not stat.S_ISDIR(inode.mode) or not own:
                continue
            keep = next((n for n in own if n[0] == inode.parent), own[0])
            for parent, name in own:
                if (parent, name) != keep:
                    self.report("directory", f"inode {ino}",
                                f"directory has a second name {show(name)} in inode {parent}",
                                "second name removed", ino)
                    m.remove_dirent(parent, name)
            if keep[0] != inode.parent:
                self.report("directory", f"inode {ino}",
                            f"parent pointer is {inode.parent} but its entry is in {keep[0]}",
                            f"set to {keep[0]}", ino)
                inode.parent = keep[0]
                m.changed(inode)

    def reachable(self) -> None:
        """Every inode but the unlinked ones is reachable from /; the others go to /lost+found."""
        m = self.model
        if ROOT_INO not in m.inodes:
            return
        names, children = names_of(m), children_of(m)
        reached = set(walk(m, children, ROOT_INO, "/"))
        pending = [ino for ino in sorted(m.inodes)
                   if ino not in reached and not self._unlinked(ino, names, children)]
        while pending:
            top = self._pick_top(pending, names)
            self._relink(top, names)
            reached.update(walk(m, children, top, ""))
            pending = [ino for ino in pending if ino not in reached]

    def _unlinked(self, ino: int, names: Names, children: Children) -> bool:
        """Unlinked on purpose (still open when it lost its last name): nlink 0, nameless, empty."""
        return self.model.inodes[ino].nlink == 0 and not names.get(ino) and not children.get(ino)

    def _pick_top(self, pending: list[int], names: Names) -> int:
        """Relink nameless inodes first, then directories (breaking cycles), so names survive."""
        dirs = (i for i in pending if stat.S_ISDIR(self.model.inodes[i].mode))
        return next((i for i in pending if not names.get(i)), next(dirs, pending[0]))

    def _relink(self, ino: int, names: Names) -> None:
        m = self.model
        inode = m.inodes[ino]
        home, home_path = self._lost_and_found()
        name = m.free_name(home, b"#%d" % ino)
        self.report("unreachable", f"inode {ino}", f"{describe(inode)} is not reachable from /",
                    f"linked as {join(home_path, name)}")
        if stat.S_ISDIR(inode.mode):  # a directory has one name: the new one
            for parent, old in names.get(ino, []):
                if (parent, old) in m.dirents:
                    m.remove_dirent(parent, old)
            inode.parent = home
            m.changed(inode)
        m.add_dirent(home, name, ino)
        m.unorphan(ino)

    def _lost_and_found(self) -> tuple[int, str]:
        """/lost+found, made (mode 0700, owned like /) the first time something goes there."""
        if self.lost_found is None:
            m = self.model
            name = b"lost+found"
            entry = m.dirents.get((ROOT_INO, name))
            if entry is None or not stat.S_ISDIR(m.inodes[entry[0]].mode):
                name = m.free_name(ROOT_INO, name)
                root, ino = m.inodes[ROOT_INO], m.allocate(b"next_ino")
                m.new_dir(ino, ROOT_INO, 0o700, root.uid, root.gid)
                m.add_dirent(ROOT_INO, name, ino)
            self.lost_found = (m.dirents[(ROOT_INO, name)][0], join("/", name))
        return self.lost_found

    def nlinks(self) -> None:
        """A file's link count is its number of names; a directory's is 2 + its subdirectories."""
        m = self.model
        names, children = names_of(m), children_of(m)
        for ino, inode in sorted(m.inodes.items()):
            want, why = self._wanted_nlink(inode, names, children)
            if inode.nlink == want:
                continue
            if ino not in m.relinked:
                self.report("nlink", f"inode {ino}", f"link count is {inode.nlink} but {why}",
                            f"set to {want}", ino)
            inode.nlink = want
            m.changed(inode)

    def _wanted_nlink(self, inode: Inode, names: Names, children: Children) -> tuple[int, str]:
        if not stat.S_ISDIR(inode.mode):
            n = len(names.get(inode.ino, ()))
            return n, f"{count(n, 'entry names', 'entries name')} it"
        if inode.ino != ROOT_INO and not names.get(inode.ino):
            return 0, "the directory has no name"
        subdirs = sum(1 for _n, c in children.get(inode.ino, ())
                      if stat.S_ISDIR(self.model.inodes[c].mode))
        return 2 + subdirs, f"the directory has {count(subdirs, 'subdirectory', 'subdirectories')}"

    def orphans(self) -> None:
        """orphans lists exactly the unlinked inodes (the next mount deletes them)."""
        m = self.model
        for ino in sorted(m.orphans):
            if ino not in m.inodes or m.inodes[ino].nlink > 0:
                why = ("does not exist" if ino not in m.inodes
                       else f"has {count(m.inodes[ino].nlink, 'link')}")
                self.report("orphan", f"inode {ino}", f"is listed as unlinked but {why}",
                            "removed from orphans", ino)
                m.unorphan(ino)
        for ino, inode in sorted(m.inodes.items()):
            if inode.nlink == 0 and ino not in m.orphans:
                self.report("orphan", f"inode {ino}",
                            "is unlinked but not listed in orphans, so its space is never freed",
                            "listed; the next mount deletes it", ino)
                m.orphan(ino)

    def xattrs(self) -> None:
        """Extended attributes of an inode that is gone are leftovers (and count against nothing)."""
        m = self.model
        for ino in sorted(set(m.xattrs) - set(m.inodes)):
            self.report("xattr", f"inode {ino}",
                        f"{count(len(m.xattrs[ino]), 'extended attribute')} of a missing inode",
                        "removed")
            for key in m.xattrs.pop(ino):
                m.delete("xattrs", key)

    def extents(self) -> None:
        """Extents belong to regular files (other inodes' are dropped), then per file checks."""
        m = self.model
        for ino in sorted(m.extents):
            inode = m.inodes.get(ino)
            if m.extents[ino] and (inode is None or not stat.S_ISREG(inode.mode)):
                what = "does not exist" if inode is None else f"is a {kind(inode)}"
                self.report("extent", f"inode {ino}",
                            f"{count(len(m.extents[ino]), 'extent')} of an inode that {what}",
                            "dropped", ino)
                for off in list(m.extents[ino]):
                    m.drop_extent(ino, off)
        for inode in sorted(m.inodes.values(), key=lambda i: i.ino):
            if stat.S_ISREG(inode.mode):
                self._file_extents(inode)

    def _file_extents(self, inode: Inode) -> None:
        """Over usable chunks of the same length, in order without overlap, within the size."""
        extents = self.model.extents.setdefault(inode.ino, {})
        found = sum(length for _cid, length in extents.values())
        end = 0  # where the last extent kept ends
        for off, (cid, length) in sorted(extents.items()):
            why = self._extent_problem(inode, off, cid, length, end)
            if why is not None:
                self._drop_extent(inode, off, length, end, why)
            elif off + length > inode.size:
                self._cut_extent(inode, off, cid, length)
                end = inode.size
            else:
                end = off + length
        if inode.allocated != found:
            self.report("allocated", f"inode {inode.ino}",
                        f"allocated is {inode.allocated} bytes but its extents hold {found}",
                        "corrected", inode.ino)
        final = sum(length for _cid, length in extents.values())
        if inode.allocated != final:
            inode.allocated = final
            self.model.changed(inode)

    def _extent_problem(self, inode: Inode, off: int, cid: bytes, length: int,
                        end: int) -> str | None:
        problem = self.chunks.problem(cid, length)
        if problem is not None:
            return problem
        if off < end:
            return "the extent overlaps the one before it"
        if off >= inode.size:
            return f"the extent lies beyond the end of the file ({inode.size} bytes)"
        return None

    def _drop_extent(self, inode: Inode, off: int, length: int, end: int, why: str) -> None:
        lo, hi = max(off, end), min(off + length, inode.size)
        lost = (lo, hi) if lo < hi else None
        fix = f"extent dropped; bytes {lo}-{hi - 1} read as zeros" if lost else "extent dropped"
        self.report("data", f"inode {inode.ino}", f"bytes {off}-{off + length - 1}: {why}", fix,
                    inode.ino, lost)
        self.model.drop_extent(inode.ino, off)

    def _cut_extent(self, inode: Inode, off: int, cid: bytes, length: int) -> None:
        """An extent reaching past the end of its file is cut there, as truncate does."""
        self.report("extent", f"inode {inode.ino}",
                    f"extent at bytes {off}-{off + length - 1} reaches past the end of the "
                    f"file ({inode.size} bytes)", f"cut at byte {inode.size}", inode.ino)
        head = decode_chunk(cid, self.chunks.encoded(cid), length)[:inode.size - off]
        self.model.drop_extent(inode.ino, off)
        if not is_zero(memoryview(head)):
            chunk = prepare_chunk(head, LEVEL)
            self.chunks.add(chunk)
            self.model.put_extent(inode.ino, off, chunk.id, chunk.raw_len)
