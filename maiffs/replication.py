"""Continuous replication (`-o replicate=NAME[,NAME...]`): every new snapshot is pushed to each
named remote in the background, and the lag per remote is shown in `.maiffs/stats`. With
`copies=N` the remotes are a group: each push sends its remote only the chunks placed on it.

Each push runs as its own `maiffs push` process: it reads the store beside the daemon, as LMDB
allows any number of reader processes, so it never holds a transaction in the daemon while the
daemon grows the map, and never blocks the FUSE loop. What is pending is derived, not stored:
at mount, the snapshots a remote lacks; then every new one. A push that fails is tried again
after a pause; one cut short by unmount resumes at the next mount. A remote is pushed to only
while this store holds the lease of its volume (leases.py): one writer per volume.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import trio

from maiffs.errors import StoreError
from maiffs.leases import Leases
from maiffs.remotes import config
from maiffs.snapshots.manager import SnapshotInfo, Snapshots

log = logging.getLogger(__name__)

RETRY_AFTER = 10.0


class Replicator:
    """Pushes new snapshots of one mounted store to its replicate= remotes."""

    def __init__(self, snapshots: Snapshots, store_path: str, names: tuple[str, ...],
                 leases: Leases, copies: int | None = None) -> None:
        self.snapshots = snapshots
        self.leases = leases
        self.store_path = store_path
        # with copies, each remote is pushed only its share of the chunks (placement.py)
        self.group = ["--copies", str(copies), ",".join(names)] if copies else []
        self.remotes = {name: config.named_remote(store_path, name) for name in names}
        self.pending: dict[str, dict[str, int]] = {name: {} for name in names}
        self.errors: dict[str, str] = {}
        self.wake = trio.Event()
        snapshots.created_hooks.append(self.taken)
        snapshots.deleted_hooks.append(self.deleted)

    def start(self) -> None:
        """What each remote lacks now (a previous mount may have been cut short)."""
        infos = self.snapshots.list()
        for name, remote in self.remotes.items():
            try:
                there = set(remote.refs())
            except StoreError:
                there = set()  # a remote directory not made yet: everything is pending
            self.pending[name] = {i.name: i.created_ns for i in infos if i.name not in there}
        self.wake.set()

    def taken(self, info: SnapshotInfo) -> None:
        for pending in self.pending.values():
            pending[info.name] = info.created_ns
        self.wake.set()

    def deleted(self, name: str) -> None:
        for pending in self.pending.values():
            pending.pop(name, None)

    async def run(self) -> None:
        self.start()
        while True:
            await self.wake.wait()
            self.wake = trio.Event()
            for name in self.remotes:
                await self._push(name)
            if any(self.errors.get(name) for name in self.remotes):  # try again in a while
                with trio.move_on_after(RETRY_AFTER):
                    await self.wake.wait()
                self.wake.set()

    async def _push(self, name: str) -> None:
        batch = sorted(self.pending[name])
        if not batch:
            return
        refusal = self.leases.refusal(name)
        if refusal:
            self.errors[name] = refusal
            return
        target = [*self.group, "--to", name] if self.group else [name]
        done = await trio.run_process([sys.executable, "-m", "maiffs", "push", "--quiet",
                                       self.store_path, *target, *batch], capture_stdout=True,
                                      capture_stderr=True, check=False)
        if done.returncode == 0:
            for snapshot in batch:
                self.pending[name].pop(snapshot, None)
            self.errors.pop(name, None)
            log.info("replicated %d snapshots to %s", len(batch), name)
        else:
            self.errors[name] = done.stderr.decode(errors="replace").strip()[-500:]
            log.warning("replication to %s failed: %s", name, self.errors[name])

    def status(self) -> dict[str, Any]:
        """Per remote: the snapshots it lacks and how many, and the lag: the age of the oldest
        of them (what was written since then is on no remote yet; 0 when up to date)."""
        now = time.time_ns()
        return {name: {"pending": sorted(self.pending[name]),
                       "snapshots_behind": len(self.pending[name]),
                       "lag_seconds": round((now - min(self.pending[name].values())) / 1e9, 1)
                       if self.pending[name] else 0.0,
                       "last_error": self.errors.get(name),
                       "lease": self.leases.status(name)}
                for name in self.remotes}
