"""Sending blobs to a remote in packs, uploaded by threads of their own (several packs in
flight: one PUT at a time leaves most of an S3 link idle) while the caller reads the next
blobs from the store.

Order is what makes an interrupted push safe to resume: a tree object may only become visible
on the remote (its pack's index written) after everything it refers to. Chunks go to data
packs, tree objects to tree packs; before a tree pack is queued the current data pack is queued
ahead of it. Packs are numbered as they are queued and uploaded in any order, but their indexes
are published in queue order, each after its pack. So whatever index exists on the remote,
everything its objects need is in packs whose indexes were written before it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

from maiffs.errors import StoreError
from maiffs.remotes.packs import CHUNK, OBJECT, Entry, PackBuilder

DATA_PACK_BYTES = 16 << 20  # a PUT of this size runs at the link's speed on S3 and NFS
TREE_PACK_BYTES = 4 << 20  # tree objects are small: a pull fetches a tree pack whole
UPLOADERS = 4  # packs in flight (memory: this many plus the queue, 16 MiB each)
_QUEUED_PACKS = 2

#: called after each pack arrives: (bytes, blobs) of what it carried
Sent = Callable[[int, int], None]


class PackSink(Protocol):
    """What an Uploader needs of a remote (Remote provides it)."""

    where: str

    def put_pack(self, pack_id: str, pack: bytes) -> None: ...

    def publish(self, pack_id: str, index: bytes, entries: list[Entry]) -> None: ...


class Uploader:
    """`with remote.uploader() as up: up.add_chunk(...)`: everything added is on the remote,
    indexed, when the block ends without an error."""

    def __init__(self, remote: PackSink, sent: Sent | None = None) -> None:
        self.remote = remote
        self.sent = sent
        self.data = PackBuilder(DATA_PACK_BYTES)
        self.tree = PackBuilder(TREE_PACK_BYTES)
        self.packs = 0  # queued so far; the number of each pack
        self.error: BaseException | None = None
        self.queue: queue.Queue[tuple[int, PackBuilder] | None] = queue.Queue(_QUEUED_PACKS)
        self.lock = threading.Lock()
        self.uploaded: dict[int, tuple[str, bytes, list[Entry]]] = {}  # waiting to be published
        self.published = 0
        self.threads = [threading.Thread(target=self._upload_all, name="maiffs-upload", daemon=True)
                        for _ in range(UPLOADERS)]
        for thread in self.threads:
            thread.start()

    def add_chunk(self, cid: bytes, raw_len: int, encoded: bytes) -> None:
        self.data.add(CHUNK, cid, encoded, raw_len)
        if self.data.full:
            self.data = self._queue(self.data, DATA_PACK_BYTES)

    def add_object(self, oid: bytes, encoded: bytes) -> None:
        self.tree.add(OBJECT, oid, encoded)
        if self.tree.full:
            self._flush_tree()

    def _flush_tree(self) -> None:
        if len(self.data):  # what the tree objects refer to goes first
            self.data = self._queue(self.data, DATA_PACK_BYTES)
        if len(self.tree):
            self.tree = self._queue(self.tree, TREE_PACK_BYTES)

    def _queue(self, pack: PackBuilder, target: int) -> PackBuilder:
        self._raise_error()
        self.queue.put((self.packs, pack))
        self.packs += 1
        return PackBuilder(target)

    def _raise_error(self) -> None:
        if isinstance(self.error, StoreError):
            raise self.error
        if self.error is not None:
            raise StoreError(f"remote {self.remote.where}: {self.error}") from self.error

    def _upload_all(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is not None:
                continue  # drain, so that the producer never blocks on a dead uploader
            number, pack = item
            try:
                pack_id, data, index, entries = pack.finish()
                self.remote.put_pack(pack_id, data)
                with self.lock:
                    self.uploaded[number] = (pack_id, index, entries)
                    self._publish_in_order()
            except BaseException as exc:  # reported to the producer by _raise_error
                self.error = exc

    def _publish_in_order(self) -> None:
        """Write the indexes of every uploaded pack whose predecessors are all published."""
        while self.error is None and self.published in self.uploaded:
            pack_id, index, entries = self.uploaded.pop(self.published)
            self.remote.publish(pack_id, index, entries)
            self.published += 1
            if self.sent is not None:
                self.sent(sum(e.length for e in entries), len(entries))

    def __enter__(self) -> "Uploader":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None and self.error is None:
            self._flush_tree()
        for thread in self.threads:
            self.queue.put(None)
        for thread in self.threads:
            thread.join()
        if kind is None:
            self._raise_error()
