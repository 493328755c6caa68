"""The leases a mounted store holds on its replicate= remotes' volumes (remotes/lease.py).

Taken at mount: another store's live lease refuses the mount, but a remote that cannot be
reached does not (the mount comes up and keeps trying). Renewed every ttl/3 in a trio task that
does the remote I/O in a thread; released at clean unmount. Replication to a remote waits while
its lease is not held; when renewal has failed past our lease's expiry, or another store took
the lease, replication to that remote stops until the lease can be had again.
"""

from __future__ import annotations

import logging
import time

import trio

from maiffs.remotes import config
from maiffs.remotes.lease import Holder, LeaseHeld, VolumeLease, utc

log = logging.getLogger(__name__)


class Leases:
    """One VolumeLease per replicate= remote, with why each is not held (if it is not)."""

    def __init__(self, store_path: str, mountpoint: str, names: tuple[str, ...], ttl: float) -> None:
        holder = Holder.here(store_path, mountpoint)
        self.ttl = ttl
        self.leases = {name: VolumeLease(config.named_remote(store_path, name), name, holder, ttl)
                       for name in names}
        self.trouble: dict[str, str] = {name: "not taken yet" for name in names}

    def take(self) -> None:
        """At mount: LeaseHeld if another store writes one of the volumes; any other failure is
        logged and tried again by run()."""
        for name in self.leases:
            try:
                self._acquire(name)
            except LeaseHeld:
                raise
            except Exception as exc:  # e.g. a directory remote that is a file: mount anyway
                self.trouble[name] = f"remote unreachable: {exc}"
                log.error("lease of remote %s not taken (replication to it waits): %s", name, exc)

    def _acquire(self, name: str) -> None:
        previous = self.leases[name].acquire()
        if previous is not None:
            log.warning("remote %s: took over the lease of %s, expired at %s", name,
                        previous.who(), utc(previous.expires_ns))
        self.trouble.pop(name, None)

    async def run(self) -> None:
        """Renew every ttl/3 (take again what is not held); never lets an exception out."""
        while True:
            await trio.sleep(self.ttl / 3)
            for name in self.leases:
                # abandoned at unmount if stuck on the network; release() then deletes the
                # lease itself (a late renewal landing after it leaves a lease that expires)
                await trio.to_thread.run_sync(self._keep, name, abandon_on_cancel=True)

    def _keep(self, name: str) -> None:
        lease = self.leases[name]
        try:
            if name in self.trouble:
                self._acquire(name)
            else:
                lease.renew()
        except LeaseHeld as exc:
            self._stop(name, str(exc))
        except Exception as exc:  # a network error, or a bug: either must not end the mount
            if name in self.trouble or time.time_ns() < lease.expires_ns:
                log.warning("lease of remote %s not renewed (tried again in %.0fs): %s", name,
                            self.ttl / 3, exc)
            else:
                self._stop(name, f"lease not renewed for longer than its {self.ttl:g}s: {exc}")

    def _stop(self, name: str, why: str) -> None:
        if self.trouble.get(name) != why:
            log.error("replication to %s stopped: %s", name, why)
        self.trouble[name] = why

    def refusal(self, name: str) -> str | None:
        """Why replication to name must wait (None: the lease is held)."""
        why = self.trouble.get(name)
        return f"no lease on the remote's volume: {why}" if why else None

    def status(self, name: str) -> str:
        why = self.trouble.get(name)
        return f"not held: {why}" if why else f"held until {utc(self.leases[name].expires_ns)}"

    def release(self) -> None:
        """At clean unmount: delete the leases we hold, so the next writer need not wait."""
        for name, lease in self.leases.items():
            if name in self.trouble:
                continue
            try:
                lease.release()
            except Exception as exc:  # the lease then simply expires
                log.error("lease of remote %s not released (expires at %s): %s", name,
                          utc(lease.expires_ns), exc)
