"""`maiffs verify`: read and hash every object and chunk (or a sample) of a store and of a
remote, report what is missing or corrupt where, and repair each from a good copy elsewhere.

Everything is checked against its own id (chunks: BLAKE3 of the decoded bytes; tree objects:
BLAKE3 of their encoding), so a copy that passes is good wherever it came from.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from maiffs.errors import CorruptChunk, StoreError
from maiffs.progress import Progress
from maiffs.remotes.base import ChunkResult, Remote, RemoteDamage
from maiffs.remotes.packs import CHUNK
from maiffs.snapshots.objects import TreeObject, object_id
from maiffs.store.chunks import EVICTED, REF_RECORD, ChunkStore, decode_chunk
from maiffs.store.env import Store, Txn


@dataclass
class Problem:
    where: str  # "local" or the remote's name
    kind: str  # "chunk" or "object"
    id: str
    what: str
    repaired: bool = False

    def line(self) -> str:
        state = "repaired" if self.repaired else "NOT repaired"
        return f"{self.where}: {self.kind} {self.id}: {self.what} ({state})"


@dataclass
class Report:
    checked: int
    problems: list[Problem]

    def as_dict(self) -> dict[str, object]:
        return {"checked": self.checked, "problems": [asdict(p) for p in self.problems]}


def chosen(ids: list[bytes], sample: float, rng: random.Random) -> list[bytes]:
    return ids if sample >= 1 else [i for i in ids if rng.random() < sample]


def local_damage(store: Store, sample: float = 1.0, seed: int | None = None,
                 progress: Progress | None = None) -> Report:
    """Every chunk and tree object of the store (or a sample) that fails its id."""
    rng = random.Random(seed)
    problems = []
    with store.read() as txn:
        stored = {bytes(k): REF_RECORD.unpack(v)[2] for k, v in txn.prefix_items("chunkrefs", b"")}
        chunk_ids = chosen(list(stored), sample, rng)
        object_ids = chosen([bytes(k) for k, _ in txn.prefix_items("objects", b"")], sample, rng)
        if progress is not None:
            progress.start(sum(stored[cid] for cid in chunk_ids), len(chunk_ids) + len(object_ids))
        for cid in chunk_ids:
            why = _chunk_problem(txn, cid)
            if why:
                problems.append(Problem("local", "chunk", cid.hex(), why))
            if progress is not None:
                progress.advance(stored[cid], 1)
        for oid in object_ids:
            encoded = bytes(txn.get("objects", oid) or b"")
            if object_id(encoded) != oid:
                problems.append(Problem("local", "object", oid.hex(), "does not match its id"))
            if progress is not None:
                progress.advance(0, 1)
    return Report(len(chunk_ids) + len(object_ids), problems)


def _chunk_problem(txn: Txn, cid: bytes) -> str | None:
    ref, encoded = txn.get("chunkrefs", cid), txn.get("chunks", cid)
    if encoded is None and REF_RECORD.unpack(ref)[2] == EVICTED:
        return None  # a cache store's: held by its remote
    if encoded is None:
        return "is missing"
    try:
        decode_chunk(cid, bytes(encoded), REF_RECORD.unpack(ref)[1])
    except CorruptChunk as exc:
        return exc.detail.removeprefix(f"chunk {cid.hex()} ")
    return None


def remote_damage(remote: Remote, name: str, sample: float = 1.0,
                  seed: int | None = None, progress: Progress | None = None) -> Report:
    """Every object and chunk the remote's snapshots need (or a sample of the chunks) that is
    missing there or fails its id."""
    objects, problems, chunks = remote_tree(remote, name)
    picked = chosen(chunks, sample, random.Random(seed))
    for _remote, cid, found in fetch_counted({remote: picked}, progress):
        if not isinstance(found, tuple):
            problems.append(fetch_problem(name, cid, found))
    return Report(objects + len(picked), problems)


def fetch_counted(wanted: dict[Remote, list[bytes]],
                  progress: Progress | None) -> Iterator[tuple[Remote, bytes, ChunkResult]]:
    """fetch_chunks of each remote's wanted chunks in turn, with the remote, told to progress
    (the sizes to go by are the stored ones the remotes' indexes give)."""
    if progress is not None:
        progress.start(sum(places[0].length for remote, cids in wanted.items() for cid in cids
                           if (places := remote.catalog().where(CHUNK, cid))),
                       sum(map(len, wanted.values())))
    for remote, cids in wanted.items():
        for cid, found in remote.fetch_chunks(cids):
            if progress is not None:
                progress.advance(len(found[1]) if isinstance(found, tuple) else 0, 1)
            yield remote, cid, found


def remote_tree(remote: Remote, name: str) -> tuple[int, list[Problem], list[bytes]]:
    """(objects checked, problems, chunk ids) of the remote's snapshots: objects are walked
    from the refs and checked; a bad object hides its subtree."""
    problems: list[Problem] = []
    seen: set[bytes] = set()
    chunks: list[bytes] = []
    objects = 0
    stack = [remote.get_ref(ref)[0] for ref in remote.refs()]
    while stack:
        oid = stack.pop()
        if oid in seen:
            continue
        seen.add(oid)
        try:
            obj = TreeObject.decode(remote.get_object(oid))
        except StoreError as exc:
            what = "does not match its id" if isinstance(exc, RemoteDamage) else "is missing"
            problems.append(Problem(name, "object", oid.hex(), what))
            continue
        objects += 1
        stack.extend(child for _name, child in obj.entries)
        for _off, cid, _len in obj.extents:
            if cid not in seen:
                seen.add(cid)
                chunks.append(cid)
    return objects, problems, chunks


def fetch_problem(name: str, cid: bytes, failed: StoreError | CorruptChunk) -> Problem:
    """Why remote name gave no good copy of chunk cid (fetch_chunks' answer)."""
    what = failed.detail.removeprefix(f"chunk {cid.hex()} ") if isinstance(failed, CorruptChunk) \
        else "is missing"
    return Problem(name, "chunk", cid.hex(), what)


def repair_remote(store: Store, remote: Remote, problems: list[Problem],
                  elsewhere: Callable[[bytes], tuple[int, bytes] | None] | None = None) -> None:
    """Send good local copies (of chunks, else elsewhere's) of the remote's bad blobs, in new
    packs (a remote's packs never change; readers take the first good copy); chunks before
    the objects that may refer to them."""
    with store.read() as txn, remote.uploader() as up:
        for p in sorted(problems, key=lambda p: p.kind != "chunk"):
            key = bytes.fromhex(p.id)
            if p.kind == "chunk" and (chunk := _good_local_chunk(txn, key) or (
                    elsewhere(key) if elsewhere is not None else None)) is not None:
                up.add_chunk(key, *chunk)
                p.repaired = True
            elif p.kind == "object" and (encoded := _good_local_object(txn, key)) is not None:
                up.add_object(key, encoded)
                p.repaired = True


def _good_local_chunk(txn: Txn, cid: bytes) -> tuple[int, bytes] | None:
    """(raw length, encoded bytes) of the store's copy of a chunk, if it is good."""
    if _chunk_problem(txn, cid) is not None:
        return None
    return REF_RECORD.unpack(txn.get("chunkrefs", cid))[1], bytes(txn.get("chunks", cid))


def _good_local_object(txn: Txn, oid: bytes) -> bytes | None:
    """The store's encoding of a tree object, if it has one that matches its id."""
    encoded = txn.get("objects", oid)
    return bytes(encoded) if encoded is not None and object_id(bytes(encoded)) == oid else None


def repair_local(store: Store, remotes: dict[str, Remote], problems: list[Problem]) -> None:
    """Replace the store's bad chunks with good copies from remotes (the store must be ours:
    unmounted, its lock held by the caller). Bad local objects are fsck's to repair."""
    def txn_fn(txn: Txn) -> list[Problem]:
        fixed = []
        for p in problems:
            if p.kind != "chunk":
                continue
            cid = bytes.fromhex(p.id)
            for remote in remotes.values():
                try:
                    raw_len, encoded = remote.get_chunk(cid)
                except (StoreError, CorruptChunk):
                    continue
                if ChunkStore.replace(txn, cid, raw_len, encoded):
                    fixed.append(p)
                break
        return fixed

    for p in store.write(txn_fn):
        p.repaired = True
    store.sync()
