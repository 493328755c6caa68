"""The daemon's snapshot work: taking and deleting snapshots on request (mkdir/rmdir in
`.snapshots`, the control file), and automatic snapshots pruned by the retention policy.

Everything runs on the trio thread like the FUSE handlers, so it needs no locks; buffered
writes are committed first, so a snapshot holds everything written before it was asked for.
After a change the kernel's cached names are invalidated, so `ls` shows it at once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

import pyfuse3
import trio

from maiffs.commands import execute
from maiffs.errors import FsError, StoreError
from maiffs.fuse.operations import Operations
from maiffs.options import MountOptions
from maiffs.replication import Replicator
from maiffs.report import daemon_numbers, store_numbers
from maiffs.snapshots.manager import SnapshotInfo, Snapshots
from maiffs.snapshots.retention import auto_name, to_prune
from maiffs.snapshots.view import SNAPDIR_INO

if TYPE_CHECKING:  # the follower is built on this service
    from maiffs.follower import Follower

log = logging.getLogger(__name__)


class SnapshotService:
    """Snapshots of the mounted store, as the FUSE trees and the control file ask for them."""

    def __init__(self, snapshots: Snapshots, ops: Operations | None = None,
                 replicator: Replicator | None = None) -> None:
        self.snapshots = snapshots
        self.ops = ops
        self.replicator = replicator
        self.follower: Follower | None = None  # set on a follower mount
        # however a snapshot goes (rmdir, the CLI, pruning), the kernel's entry for it goes too
        snapshots.deleted_hooks.append(lambda name: _forget_name(SNAPDIR_INO, name))

    async def take(self, name: str) -> SnapshotInfo:
        assert self.ops is not None
        await self.ops.flush_all()
        return self.snapshots.create(name)

    async def drop(self, name: str) -> None:
        self.snapshots.delete(name)

    async def run(self, request: dict[str, Any]) -> dict[str, Any]:
        """A control-file request: commit buffered writes, execute, refresh the kernel's view."""
        assert self.ops is not None
        await self.ops.flush_all()
        answer = execute(self.snapshots, request)
        if answer.get("ok") and request.get("op") == "snapshot.restore":
            result = answer["result"]
            for name in result["changed"]:
                _forget_name(result["parent"], name)
            _forget_attributes(result["parent"])
        return answer

    def stats(self, tree: bool = True) -> dict[str, Any]:
        """`.maiffs/stats`: the store's numbers and the daemon's own (report.py); without
        tree, no files and directories apart (the metrics, scraped often, skip that scan)."""
        ns = self.snapshots.ns
        return {**store_numbers(self.snapshots.store, tree),
                **daemon_numbers(ns.chunks.cache, len(ns.files), self.replicator, self.follower)}

    async def auto_snapshots(self, options: MountOptions) -> None:
        """Every snapshot_every seconds: snapshot, then prune by the keep policy."""
        while True:
            await trio.sleep(options.snapshot_every)
            try:
                await self.take(auto_name(time.time()))
                for name in to_prune((info.name for info in self.snapshots.list()), options.keep):
                    await self.drop(name)
            except (FsError, StoreError) as exc:  # e.g. a full disk: try again next time
                log.error("automatic snapshot: %s", exc)


def _forget_name(parent: int, name: str) -> None:
    """Drop the kernel's cached entry for parent/name (it changed behind the kernel's back)."""
    try:
        pyfuse3.invalidate_entry_async(parent, os.fsencode(name), ignore_enoent=True)
    except Exception as exc:  # only a cache hint: never fail the request for it
        log.debug("invalidate %s: %s", name, exc)


def _forget_attributes(ino: int) -> None:
    """Drop the kernel's cached attributes of ino. On a thread of its own: the kernel may need
    an answer from this daemon before it can take the notification."""
    threading.Thread(target=_invalidate_inode, args=(ino,), daemon=True).start()


def _invalidate_inode(ino: int) -> None:
    try:
        pyfuse3.invalidate_inode(ino, attr_only=True)
    except Exception as exc:  # only a cache hint
        log.debug("invalidate inode %d: %s", ino, exc)
