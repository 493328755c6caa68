"""What fsck found: one `Finding` per broken invariant, the `Findings` the checks add to, and
the `Report` of a run (its lines, summary and JSON form)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from maiffs.fsck.words import count


@dataclass(frozen=True)
class Finding:
    """One broken invariant: what is concerned, what is wrong, and what --repair does about it.

    category is one of: record, allocator, chunk, data, extent, refcount, allocated, directory,
    dirent, cookie, unreachable, nlink, orphan, symlink, xattr, backlink, object, snapshot,
    objcache, byid, counter. lost is the byte range [start, end) of the file at path that reads
    as zeros after the repair (for a snapshot's file, path is /.snapshots/NAME/...).
    """

    category: str
    subject: str
    message: str
    fix: str
    path: str | None = None
    lost: tuple[int, int] | None = None

    def line(self, repaired: bool) -> str:
        where = f" ({self.path})" if self.path else ""
        done = "repaired" if repaired else "repair"
        return f"{self.category}: {self.subject}{where}: {self.message} ({done}: {self.fix})"


@dataclass
class Report:
    """The outcome of one fsck run; `remaining` is what a second pass still found after repair."""

    store: str
    repair: bool
    findings: list[Finding]
    remaining: list[Finding]
    inodes: int
    chunks: int

    @property
    def ok(self) -> bool:
        """Exit status 0: the store was clean, or everything found was repaired."""
        return not (self.remaining if self.repair else self.findings)

    def lines(self) -> list[str]:
        """One line per finding, then the summary."""
        out = [f.line(self.repair) for f in self.findings]
        out += [f"not repaired: {f.line(False)}" for f in self.remaining]
        return [*out, self.summary()]

    def summary(self) -> str:
        found = len(self.findings)
        if not found:
            return f"fsck: {self.store} is clean ({self.inodes} inodes, {self.chunks} chunks)"
        if not self.repair:
            return (f"fsck: {count(found, 'problem')} found "
                    f"(run `maiffs fsck {self.store} --repair`)")
        if self.remaining:
            return f"fsck: {count(found, 'problem')} found, {len(self.remaining)} could not be repaired"
        lost = {f.path or f.subject for f in self.findings if f.lost}
        tail = f"; data lost in {count(len(lost), 'file')} (see the `data` lines)" if lost else ""
        return f"fsck: {count(found, 'problem')} found and repaired{tail}"

    def as_dict(self) -> dict[str, Any]:
        return {"store": self.store, "repair": self.repair, "ok": self.ok,
                "problems": len(self.findings), "unrepaired": len(self.remaining),
                "inodes": self.inodes, "chunks": self.chunks,
                "findings": [asdict(f) for f in self.findings],
                "remaining": [asdict(f) for f in self.remaining],
                "summary": self.summary()}


class Findings:
    """The findings of one pass, in the order the checks make them; shared by every check."""

    def __init__(self, paths: dict[int, str]) -> None:
        #: Each reachable inode's path in the records as found, to say where a finding is.
        self.paths = paths
        self.items: list[Finding] = []

    def report(self, category: str, subject: str, message: str, fix: str,
               ino: int | None = None, lost: tuple[int, int] | None = None,
               path: str | None = None) -> None:
        """Add a finding; its path is given, or that of ino as found (if reachable then)."""
        path = path or (self.paths.get(ino) if ino is not None else None)
        self.items.append(Finding(category, subject, message, fix, path, lost))
