"""The remote layout, once: what push, pull, verify and self-heal need of a remote, written over
four storage primitives that each kind of remote (directory, S3 bucket) provides.

Keys: `packs/AB/PACKID` (many chunks or tree objects, packs.py), `index/PACKID` (where each is in
that pack), `volumes/VOLUME/refs/NAME` (JSON: root id, time). A volume is one writer's line of
snapshots (`URL#VOLUME`, `default` without); packs are shared by all volumes, so data pushed by
several stores is stored once; `volumes/VOLUME/lease` names the one store that may write the
volume (lease.py). Packs and indexes never change once
written, and a write is all-or-nothing, which is all the push protocol needs (upload.py,
transfer.py). Everything read back is checked against its id before it is returned, and a blob
held by several packs is taken from the first good one.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Iterator

from maiffs.errors import CorruptChunk, StoreError
from maiffs.remotes.catalog import Catalog
from maiffs.remotes.packs import CHUNK, OBJECT, Entry
from maiffs.remotes.upload import Sent, Uploader
from maiffs.snapshots.objects import object_id
from maiffs.store.chunks import decode_chunk

INDEX = "index"
DEFAULT_VOLUME = "default"
RANGE_GAP = 1 << 20  # ranges of one pack closer than this are fetched in one request
RANGE_SPAN = 64 << 20  # and no request asks for more than this
TREE_PACKS_KEPT = 8  # tree packs kept whole in memory while a tree is walked
REFRESH_EVERY = 10.0  # seconds between re-reads of the index list when a blob is not found

#: a chunk as the local store keeps it (raw length, encoded bytes), or why it could not be had
ChunkResult = tuple[int, bytes] | StoreError | CorruptChunk


class RemoteAbsent(StoreError):
    """The remote is not there (not made yet: the first push makes it)."""


class RemoteDamage(StoreError):
    """The remote holds a blob, but no copy of it passes its check."""


def pack_key(pack_id: str) -> str:
    return f"packs/{pack_id[:2]}/{pack_id}"


class Remote:
    """A remote, given put/get/get-range/list of whole values by key."""

    def __init__(self, where: str, cache_dir: str | None, volume: str = DEFAULT_VOLUME) -> None:
        self.where = where  # for messages: never with credentials
        self.volume = volume
        self.refs_folder = f"volumes/{volume}/refs"
        self._catalog: Catalog | None = None
        self.cache_dir = cache_dir  # local copies of the remote's index files (None: no cache)
        self._tree_packs: OrderedDict[str, bytes | None] = OrderedDict()
        self._refreshed = 0.0

    # -- the primitives each kind provides ---------------------------------------------------------
    def _put(self, key: str, data: bytes) -> None:
        """Store data under key, all or nothing."""
        raise NotImplementedError

    def _get(self, key: str) -> bytes | None:
        """The value under key, or None if there is none."""
        raise NotImplementedError

    def _get_range(self, key: str, offset: int, length: int) -> bytes | None:
        """length bytes of the value under key from offset (fewer at its end), or None."""
        raise NotImplementedError

    def _names(self, folder: str) -> list[str]:
        """The names of the values directly in folder; RemoteAbsent if the remote does not
        exist, StoreError if it cannot be read."""
        raise NotImplementedError

    def _put_new(self, key: str, data: bytes) -> bool:
        """Store data under key only if there is no value there (atomically): False if there was."""
        raise NotImplementedError

    def _delete(self, key: str) -> None:
        """Remove the value under key, if any."""
        raise NotImplementedError

    # -- what is where ------------------------------------------------------------------------------
    def catalog(self) -> Catalog:
        """Every pack's index, read on first use (an empty catalog if the remote is not made yet)."""
        if self._catalog is None:
            self.refresh()
        assert self._catalog is not None
        return self._catalog

    def refresh(self) -> None:
        """Read the indexes of packs written since the catalog was read (by other stores)."""
        self._refreshed = time.monotonic()
        if self._catalog is None:
            self._catalog = Catalog(self.cache_dir)
        catalog = self._catalog
        try:
            names = self._names(INDEX)
        except RemoteAbsent:
            return
        catalog.load(names, lambda pack_id: self._get(f"{INDEX}/{pack_id}"))

    def has(self, kind: bytes, oid: bytes) -> bool:
        return self.catalog().has(kind, oid)

    def _places(self, kind: bytes, oid: bytes) -> list[Entry]:
        places = self.catalog().where(kind, oid)
        if not places and time.monotonic() - self._refreshed > REFRESH_EVERY:
            self.refresh()
            places = self.catalog().where(kind, oid)
        return places

    # -- writing ------------------------------------------------------------------------------------
    def uploader(self, sent: Sent | None = None) -> Uploader:
        """Where to add chunks and objects; they are on the remote when its block ends."""
        self.catalog()
        return Uploader(self, sent)

    def put_pack(self, pack_id: str, pack: bytes) -> None:
        """A pack, invisible to readers until its index is published."""
        self._put(pack_key(pack_id), pack)

    def publish(self, pack_id: str, index: bytes, entries: list[Entry]) -> None:
        """The index of a pack that is on the remote whole: its blobs are there from now on."""
        self._put(f"{INDEX}/{pack_id}", index)
        catalog = self.catalog()
        catalog.add(entries)
        catalog.remember(pack_id, index)

    def set_ref(self, name: str, root: bytes, created_ns: int) -> None:
        """Point snapshot name at root: written last, once everything it needs is there."""
        self._put(f"{self.refs_folder}/{name}", json.dumps({"root": root.hex(), "created_ns": created_ns}).encode())

    # -- reading ------------------------------------------------------------------------------------
    def get_ref(self, name: str) -> tuple[bytes, int]:
        data = self._get(f"{self.refs_folder}/{name}")
        if data is None:
            raise StoreError(f"remote {self.where} has no snapshot {name!r}")
        try:
            ref = json.loads(data)
            return bytes.fromhex(ref["root"]), int(ref["created_ns"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"remote {self.where}: snapshot ref {name!r} is malformed ({exc})") from None

    def refs(self) -> list[str]:
        return sorted(self._names(self.refs_folder))

    def get_object(self, oid: bytes) -> bytes:
        """A tree object's encoding, checked against its id (its tree pack is fetched whole
        and kept a while: a walk reads its neighbours next)."""
        places = self._places(OBJECT, oid)
        for entry in places:
            pack = self._tree_pack(entry.pack)
            data = pack[entry.offset:entry.offset + entry.length] if pack is not None else None
            if data is not None and object_id(data) == oid:
                return data
        if any(self._tree_packs.get(e.pack) for e in places):
            raise RemoteDamage(f"remote {self.where} has no good copy of object {oid.hex()}")
        raise StoreError(f"remote {self.where} has no object {oid.hex()}")

    def _tree_pack(self, pack_id: str) -> bytes | None:
        if pack_id not in self._tree_packs:
            self._tree_packs[pack_id] = self._get(pack_key(pack_id))
            while len(self._tree_packs) > TREE_PACKS_KEPT:
                self._tree_packs.popitem(last=False)
        self._tree_packs.move_to_end(pack_id)
        return self._tree_packs[pack_id]

    def get_chunk(self, cid: bytes) -> tuple[int, bytes]:
        """(raw length, encoded bytes) of a chunk, checked; StoreError if the remote has none,
        CorruptChunk if every copy it has is damaged."""
        found = self._chunk_from(self._places(CHUNK, cid), cid)
        if isinstance(found, tuple):
            return found
        raise found

    def fetch_chunks(self, cids: Iterable[bytes]) -> Iterator[tuple[bytes, ChunkResult]]:
        """Each chunk named, fetched with as few requests as its packs allow (nearby ranges of a
        pack in one), checked; a chunk whose first copy fails is looked for in its others."""
        runs: dict[str, list[Entry]] = defaultdict(list)
        for cid in cids:
            places = self._places(CHUNK, cid)
            if places:
                runs[places[0].pack].append(places[0])
            else:
                yield cid, StoreError(f"remote {self.where} has no chunk {cid.hex()}")
        for pack_id, entries in runs.items():
            for run in _nearby(sorted(entries, key=lambda e: e.offset)):
                start = run[0].offset
                blob = self._get_range(pack_key(pack_id), start, run[-1].offset + run[-1].length - start)
                for entry in run:
                    at = entry.offset - start
                    found = _checked_chunk(entry, blob[at:at + entry.length] if blob is not None else None)
                    if not isinstance(found, tuple):
                        found = self._chunk_from(self.catalog().where(CHUNK, entry.id)[1:], entry.id,
                                                 found)
                    yield entry.id, found

    def _chunk_from(self, places: list[Entry], cid: bytes,
                    failed: ChunkResult | None = None) -> ChunkResult:
        """The first good copy among places, else why there is none (damage wins over absence)."""
        why = failed
        for entry in places:
            found = _checked_chunk(entry, self._get_range(pack_key(entry.pack), entry.offset,
                                                          entry.length))
            if isinstance(found, tuple):
                return found
            why = found if why is None or isinstance(found, CorruptChunk) else why
        return why or StoreError(f"remote {self.where} has no chunk {cid.hex()}")


def _checked_chunk(entry: Entry, data: bytes | None) -> ChunkResult:
    if data is None:
        return StoreError(f"pack {entry.pack} holding chunk {entry.id.hex()} is missing")
    try:
        decode_chunk(entry.id, data, entry.raw_len)
    except CorruptChunk as exc:
        return exc
    return entry.raw_len, data


def _nearby(entries: list[Entry]) -> Iterator[list[Entry]]:
    """Entries (sorted by offset) in runs that one ranged request can fetch."""
    run: list[Entry] = []
    for entry in entries:
        if run and (entry.offset - (run[-1].offset + run[-1].length) > RANGE_GAP
                    or entry.offset + entry.length - run[0].offset > RANGE_SPAN):
            yield run
            run = []
        run.append(entry)
    if run:
        yield run
