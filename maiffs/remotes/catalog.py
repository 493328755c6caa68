"""What a remote holds and where: every pack's index, read once into memory.

Index files never change, so each is read from the remote once per machine: a copy is kept in
a cache directory of the store (checked against its checksum like the remote's), and a later
push or pull only fetches the indexes of packs that are new since.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterable

from maiffs.errors import StoreError
from maiffs.remotes.packs import Entry, read_index

log = logging.getLogger(__name__)


class Catalog:
    """id -> the places (pack, offset, length) that hold it; a blob may be in several packs
    (written by two stores at once, or again by a repair)."""

    def __init__(self, cache_dir: str | None) -> None:
        self.cache_dir = cache_dir
        self.places: dict[bytes, list[Entry]] = {}
        self.packs: set[str] = set()

    def add(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            self.places.setdefault(entry.kind + entry.id, []).append(entry)
            self.packs.add(entry.pack)

    def has(self, kind: bytes, oid: bytes) -> bool:
        return kind + oid in self.places

    def where(self, kind: bytes, oid: bytes) -> list[Entry]:
        return self.places.get(kind + oid, [])

    def load(self, names: list[str], get: Callable[[str], bytes | None]) -> None:
        """Read the indexes named (pack ids) that are not read yet: from the cache, else with
        get(pack id). A damaged or vanished index is left out (its pack counts as absent:
        a push sends its contents again, verify reports what the remote's snapshots miss)."""
        for pack_id in names:
            if pack_id in self.packs:
                continue
            data = self._cached(pack_id)
            try:
                entries = read_index(pack_id, data) if data is not None else None
            except StoreError:
                entries = None  # a damaged cache copy: fetch it again
            if entries is None:
                data = get(pack_id)
                if data is None:
                    continue
                try:
                    entries = read_index(pack_id, data)
                except StoreError as exc:
                    log.warning("%s; its pack is treated as absent", exc)
                    continue
                self.remember(pack_id, data)
            self.add(entries)
            self.packs.add(pack_id)

    def _cached(self, pack_id: str) -> bytes | None:
        if self.cache_dir is None:
            return None
        try:
            with open(os.path.join(self.cache_dir, pack_id), "rb") as f:
                return f.read()
        except OSError:
            return None

    def remember(self, pack_id: str, index: bytes) -> None:
        """Keep a copy of an index file (best effort: the cache only saves requests)."""
        if self.cache_dir is None:
            return
        try:
            for directory in (os.path.dirname(self.cache_dir), self.cache_dir):  # in the store:
                os.makedirs(directory, mode=0o700, exist_ok=True)  # private, whatever the umask
            tmp = os.path.join(self.cache_dir, f".{pack_id}.{uuid.uuid4().hex}.tmp")
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                f.write(index)
            os.rename(tmp, os.path.join(self.cache_dir, pack_id))
        except OSError as exc:
            log.debug("index cache %s: %s", self.cache_dir, exc)
