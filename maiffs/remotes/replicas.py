"""`maiffs verify --remote A --remote B --remote C --copies N`: are the group's chunks kept N
times, and where not, put copies back where placement wants them (placement.py).

A member that cannot be read (its directory or bucket gone, unreachable) is reported and left
out: copies are counted on the reachable members, and a repair places each short chunk on the
members rendezvous hashing chooses among those, so the group heals without the lost one. A
chunk missing from one member is no problem by itself (it may be placed elsewhere); a chunk
with fewer than N good copies is, reported once per member that should gain a copy. Tree
objects go to every member, so each member's missing or damaged objects are reported as by a
plain verify (verify.py), and so are damaged chunk copies.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

from maiffs.errors import CorruptChunk, StoreError
from maiffs.progress import Progress
from maiffs.remotes import placement
from maiffs.remotes.base import Remote
from maiffs.remotes.packs import CHUNK
from maiffs.remotes.verify import (Problem, Report, chosen, fetch_counted, fetch_problem, remote_tree,
                                   repair_remote)
from maiffs.store.env import Store


@dataclass
class GroupReport:
    report: Report
    holders: dict[bytes, set[str]] = field(default_factory=dict)  # chunk -> members with a good copy


def group_damage(group: dict[str, Remote], copies: int, sample: float = 1.0,
                 seed: int | None = None, progress: Progress | None = None) -> GroupReport:
    """The group's unreachable members, bad objects and chunk copies, and the members each
    under-replicated chunk (or a sample of the chunks) should gain a copy on."""
    problems: list[Problem] = []
    reachable: dict[str, Remote] = {}
    for name, remote in group.items():
        try:
            remote.refs()
            reachable[name] = remote
        except (StoreError, OSError) as exc:
            problems.append(Problem(name, "remote", "-", f"cannot be read ({exc})"))
    checked = 0
    wanted: dict[bytes, None] = {}  # every chunk of every member's snapshots, in order
    for name, remote in reachable.items():
        objects, found, chunks = remote_tree(remote, name)
        checked += objects
        problems += found
        wanted.update(dict.fromkeys(chunks))
    holders: dict[bytes, set[str]] = {cid: set() for cid in chosen(list(wanted), sample,
                                                                   random.Random(seed))}
    damaged: set[tuple[str, bytes]] = set()
    names = {remote: name for name, remote in reachable.items()}
    to_fetch = {remote: [cid for cid in holders if remote.has(CHUNK, cid)] for remote in names}
    for remote, cid, got in fetch_counted(to_fetch, progress):
        checked += 1
        if isinstance(got, tuple):
            holders[cid].add(names[remote])
        else:
            problems.append(fetch_problem(names[remote], cid, got))
            damaged.add((names[remote], cid))
    for cid, held in holders.items():
        if len(held) < copies:
            problems += [Problem(name, "chunk", cid.hex(),
                                 f"is under-replicated ({len(held)} good copies of {copies})")
                         for name in placement.placed(cid, reachable, copies)
                         if name not in held and (name, cid) not in damaged]
    return GroupReport(Report(checked, problems), holders)


def repair_group(store: Store, group: dict[str, Remote], found: GroupReport) -> None:
    """Send each member that lacks a good copy of a chunk one, from the store if its copy is
    good, else from a member that has one; and the store's good copies of bad objects."""
    todo: dict[str, list[Problem]] = defaultdict(list)
    for p in found.report.problems:
        if p.where in group and p.kind != "remote":
            todo[p.where].append(p)
    for name, problems in todo.items():
        repair_remote(store, group[name], problems, lambda cid: _remote_copy(
            [group[h] for h in sorted(found.holders.get(cid, ()))], cid))


def _remote_copy(remotes: list[Remote], cid: bytes) -> tuple[int, bytes] | None:
    for remote in remotes:
        try:
            return remote.get_chunk(cid)
        except (StoreError, CorruptChunk, OSError):
            continue
    return None
