"""Self-heal: a chunk that is missing or corrupt locally is fetched from a remote that has it
(and so is one a cache store evicted).

The store's chunk layer asks `source(cid)` when a read finds a chunk damaged; it verifies what
comes back against the chunk's id, serves it, and the daemon writes it over the local copy at
its next commit. With no good copy anywhere the read fails with EIO, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from maiffs.errors import CorruptChunk, StoreError
from maiffs.remotes import config
from maiffs.remotes.base import Remote

log = logging.getLogger(__name__)


def chunk_source(store: str, opened: dict[str, Remote] | None = None
                 ) -> Callable[[bytes, bool], tuple[int, bytes] | None] | None:
    """A lookup of good chunk copies on the store's remotes, or None if it has none; opened:
    remotes already open by name (a follower's, whose catalog it keeps fresh), asked first."""
    opened = opened or {}
    remotes = list(opened.items()) + [(name, config.open_remote(url, store))
                                      for name, url in sorted(config.load(store).items())
                                      if name not in opened]
    if not remotes:
        return None

    def source(cid: bytes, damaged: bool) -> tuple[int, bytes] | None:
        for name, remote in remotes:
            try:
                found = remote.get_chunk(cid)
            except (StoreError, CorruptChunk) as exc:
                log.debug("remote %s: %s", name, exc)
                continue
            except OSError as exc:
                log.warning("remote %s: %s", name, exc)
                continue
            if damaged:
                log.warning("chunk %s is damaged here; using the copy on remote %s", cid.hex(), name)
            return found
        log.error("chunk %s is %s here and no remote has it", cid.hex(),
                  "damaged" if damaged else "evicted")
        return None

    return source
