"""Placement: which of a group of remotes hold a chunk when each chunk is kept `copies` times
(`-o replicate=a,b,c,copies=2`, `maiffs push STORE a,b,c --copies 2`).

Rendezvous (highest-random-weight) hashing: every remote of the group gets a score per chunk,
BLAKE3 of the remote's identity and the chunk id, and the `copies` highest scores win. It needs
no table and no coordination, spreads chunks evenly, and adding or removing a remote moves only
the chunks whose winners change (about copies/n of them), never reshuffles the rest.

A remote's identity is its NAME in the store (`maiffs remote add STORE NAME URL`), not its URL:
the URL may change (a moved NFS mount, another endpoint) while the data stays where it is.
Renaming a remote of a group therefore moves chunks. Tree objects and snapshot refs are not
placed: every remote of the group gets all of them, so each one can list and walk every
snapshot, and self-heal finds a chunk on whichever remote has it (heal.py asks them all).

Pushing to a group is a push to each member with a filter: of the chunks, only those placed on
it (`placed_on`). The push's walk (transfer.py) stops at every object the member already has,
trusting that object's subtree to be complete there. With placement, "complete" means: every
object below it, and every chunk below it *that is placed on this member*. That still holds,
by the same order as a plain push (upload.py): a member's chunks are published before the
tree objects that refer to them, so an object visible on a member vouches for the member's
share of its subtree, never for chunks placed elsewhere; those are neither looked up nor sent
(their absence there is expected, not a gap), and an interrupted push resumes as before.
This needs the same chunk to be placed on the same members at every push: placement depends
only on the chunk id, the member names and copies. Adding a member keeps it true (a new member
only takes chunks away from others: it has no objects yet, so its walk sends its whole share).
Removing or renaming a member, or raising copies, places chunks on members whose objects
already vouch for them: `maiffs verify --copies N --repair` with the new group sends those.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import blake3

from maiffs.errors import StoreError


def score(name: str, cid: bytes) -> bytes:
    """The weight of remote name for chunk cid (compared as bytes: the highest wins)."""
    return blake3.blake3(name.encode() + b"\0" + cid).digest()


def placed(cid: bytes, names: Iterable[str], copies: int) -> list[str]:
    """The remotes among names that hold chunk cid, highest score first (all of them if
    there are no more than copies)."""
    return sorted(names, key=lambda name: score(name, cid), reverse=True)[:copies]


def placed_on(member: str, names: list[str], copies: int) -> Callable[[bytes], bool]:
    """Whether a chunk belongs on member of the group names (the filter of its push)."""
    return lambda cid: member in placed(cid, names, copies)


def check_copies(copies: int, names: tuple[str, ...] | list[str]) -> None:
    """Refuse a replication factor the group cannot give."""
    if len(set(names)) != len(names):
        raise StoreError(f"a remote is named twice in {','.join(names)}")
    if not 1 <= copies <= len(names):
        raise StoreError(f"copies must be between 1 and the number of remotes ({len(names)}), "
                         f"not {copies}")
