"""A follower mount's background work (`maiffs mount --follow URL STORE MNT`).

The mounted tree is the newest snapshot the remote holds for the followed volume, read-only;
older ones are under `.snapshots/`. Every `follow_every` seconds the follower looks for a newer
snapshot: it fetches only its tree objects (the network part runs in a thread), records it with
its chunks known but not held, and puts it in place as the live tree in one transaction, as
`maiffs snapshot restore` does. Files open at the switch keep their old inodes, so they go on
reading the version they opened. With `-o prefetch` the new tree's chunks are then fetched in
the background (as many as the cache holds), so first reads are local. A chunk is fetched from the remote the first time it is read
and kept; the store is a cache bounded by `cache_size`: past it, the least recently read chunks
the remote holds lose their data (their records stay, so a later read fetches them again).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

import trio

from maiffs.errors import FsError, StoreError
from maiffs.namespace.records import decode_extent
from maiffs.remotes import config, transfer
from maiffs.remotes.packs import CHUNK
from maiffs.service import SnapshotService
from maiffs.store.chunks import EVICTED, REF_RECORD
from maiffs.store.env import Txn

log = logging.getLogger(__name__)

EVICT_TO = 0.9  # evict down to this share of the bound, so eviction does not run every commit
PREFETCH_BATCH = 64  # chunks fetched per thread call (nearby ones in one ranged read)
FETCHED_AHEAD_KEPT = 64  # chunks fetched ahead and held in memory before they are stored


class Follower:
    """Keeps a mount on the newest snapshot of a remote volume, and its store within a bound."""

    def __init__(self, service: SnapshotService, store_path: str, url: str, every: float,
                 cache_limit: int, prefetch: bool = False) -> None:
        self.service = service
        self.snapshots = service.snapshots
        self.snapshots.ns.chunks.recent = OrderedDict()  # what eviction goes by
        self.remote = config.open_remote(url, store_path)
        self.url = url
        self.every = every
        self.cache_limit = cache_limit
        self.prefetch = prefetch
        self.nursery: trio.Nursery | None = None  # for read-ahead, while run() runs
        self.in_flight: set[bytes] = set()  # chunks being fetched ahead
        self.fetchers = trio.CapacityLimiter(2)  # read-ahead fetches at once
        self.current: str | None = None
        self.ref_times: dict[str, int] = {}  # remote snapshot -> its time (refs never change)
        self.switched_ns = 0
        self.evictions = 0
        self.last_error: str | None = None
        #: set once the first look at the remote is done (showing its newest snapshot, or not)
        self.looked = trio.Event()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self.snapshots.ns.chunks.read_ahead = self.read_ahead
            while True:
                try:
                    await self.follow()
                    self.last_error = None
                except (StoreError, FsError, OSError) as exc:  # a remote away for a while
                    self.last_error = str(exc)
                    log.warning("follow %s: %s", self.url, exc)
                self.looked.set()
                await trio.sleep(self.every)

    def read_ahead(self, cids: list[bytes]) -> None:
        """Fetch in the background the chunks a sequential read will ask for next (called
        from a read, on the trio thread, when it had to go to the remote)."""
        wanted = [cid for cid in cids if cid not in self.in_flight]
        if wanted and self.nursery is not None:
            self.in_flight.update(wanted)
            self.nursery.start_soon(self._arrive, wanted)

    async def _arrive(self, cids: list[bytes]) -> None:
        try:
            async with self.fetchers:
                await self._store_fetched()
                self.snapshots.ns.chunks.filled.update(await trio.to_thread.run_sync(self._fetch, cids))
        except (StoreError, OSError) as exc:  # the read itself will fetch, or say why not
            log.debug("read-ahead: %s", exc)
        finally:
            self.in_flight.difference_update(cids)

    async def _store_fetched(self) -> None:
        """Hold fetched-ahead data in memory only up to a bound: past it, store it now rather
        than at the next commit (waiting for commits held prefetch to ~128 chunks a second),
        then keep the store within its bound."""
        if len(self.snapshots.ns.chunks.filled) >= FETCHED_AHEAD_KEPT:
            self.snapshots.ns.write_back_healed()
            self.trim()
            await trio.sleep(0)  # let reads in between

    async def follow(self) -> None:
        """Switch to the remote's newest snapshot if it is not the one shown."""
        newest = await trio.to_thread.run_sync(self._newest)
        if newest is None or newest == self.current:
            return
        if newest not in {info.name for info in self.snapshots.list()}:
            tree = await trio.to_thread.run_sync(transfer.fetch_tree, self.snapshots, self.remote,
                                                 newest)
            transfer.record_tree(self.snapshots, tree)
        answer = await self.service.run({"op": "snapshot.restore", "name": newest, "path": ""})
        if not answer.get("ok"):
            raise StoreError(f"cannot show snapshot {newest}: {answer.get('error')}")
        self.current, self.switched_ns = newest, time.time_ns()
        log.info("following %s: now showing snapshot %s", self.url, newest)
        if self.prefetch:
            await self.warm()

    async def warm(self) -> None:
        """Fetch the shown tree's chunks that are not held (up to the cache bound), so that
        first reads are local: in batches, the network in a thread, stored as they pile up."""
        wanted = self._not_held()
        room = self.cache_limit or sum(wanted.values())
        chosen = []
        for cid, raw_len in wanted.items():
            if raw_len > room:
                break
            room -= raw_len
            chosen.append(cid)
        for start in range(0, len(chosen), PREFETCH_BATCH):
            await self._store_fetched()
            fetched = await trio.to_thread.run_sync(self._fetch, chosen[start:start + PREFETCH_BATCH])
            self.snapshots.ns.chunks.filled.update(fetched)
        log.info("prefetch of %s: %d chunks fetched", self.current, len(chosen))

    def _not_held(self) -> dict[bytes, int]:
        """The live tree's chunks whose data is not here: id -> raw length, in file order."""
        wanted: dict[bytes, int] = {}
        with self.snapshots.store.read() as txn:
            for _key, value in txn.prefix_items("extents", b""):
                cid, _length = decode_extent(bytes(value))
                ref = txn.get("chunkrefs", cid)
                if ref is not None and REF_RECORD.unpack(ref)[2] == EVICTED:
                    wanted[cid] = REF_RECORD.unpack(ref)[1]
        return wanted

    def _fetch(self, cids: list[bytes]) -> dict[bytes, tuple[int, bytes]]:
        got = {}
        for cid, found in self.remote.fetch_chunks(cids):
            if isinstance(found, tuple):
                got[cid] = found
            else:
                log.warning("prefetch: %s", found)
        return got

    def _newest(self) -> str | None:
        self.remote.refresh()
        for name in self.remote.refs():
            if name not in self.ref_times:
                self.ref_times[name] = self.remote.get_ref(name)[1]
        times = self.ref_times
        return max(times, key=lambda name: (times[name], name)) if times else None

    def trim(self) -> None:
        """Evict the least recently read chunks the remote holds until the store's chunk data
        fits in the bound, if there is one (called after each commit)."""
        store = self.snapshots.store
        held = store.stats()["chunk_stored_bytes"]
        if not self.cache_limit or held <= self.cache_limit:
            return
        freed = store.write(lambda txn: self._evict(txn, held - int(self.cache_limit * EVICT_TO)))
        log.info("cache: evicted %d bytes of chunk data", freed)

    def _evict(self, txn: Txn, excess: int) -> int:
        """Drop data of chunks, least recently read first (never read since mount: first of all)."""
        recent = self.snapshots.ns.chunks.recent
        assert recent is not None
        held = {bytes(cid) for cid, ref in txn.prefix_items("chunkrefs", b"")
                if REF_RECORD.unpack(ref)[2] != EVICTED}
        order = [cid for cid in held if cid not in recent] + [cid for cid in recent if cid in held]
        freed = 0
        for cid in order:
            if freed >= excess:
                break
            if self.remote.has(CHUNK, cid):  # never the last copy
                freed += self.snapshots.ns.chunks.evict(txn, cid)
                self.evictions += 1
        return freed

    def status(self) -> dict[str, Any]:
        chunks = self.snapshots.ns.chunks
        hits = chunks.local_reads + chunks.cache.hits  # from the store or its memory cache
        reads = hits + chunks.remote_reads
        return {"url": self.url, "showing": self.current,
                "switched_seconds_ago": round((time.time_ns() - self.switched_ns) / 1e9, 1)
                if self.current else None,
                "cache_limit": self.cache_limit, "hits": hits, "misses": chunks.remote_reads,
                "hit_rate": round(hits / reads, 4) if reads else None,
                "evictions": self.evictions, "last_error": self.last_error}
