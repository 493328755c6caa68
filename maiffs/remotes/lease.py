"""One writer per remote volume: a lease at `volumes/VOLUME/lease` names the store that writes it.

A store mounted with `-o replicate=` takes the lease of each named remote's volume, renews it
every ttl/3 and deletes it at clean unmount; a second store's mount or push is refused while the
lease is live. A lease whose expiry has passed (its writer crashed) is taken over by the next
store that asks; `maiffs remote takeover` does it before expiry.

Only the creation of a lease is atomic (`Remote._put_new`: link() on a directory, a conditional
PUT on S3). Replacing one (a renewal, a takeover) is a plain write, then a read-back that must
show our holder id; a takeover reads back after SETTLE seconds, so that of two stores taking
over the same expired lease at once, the first to write sees the second's lease and gives way.
What is left: two takers whose read-to-write gaps differ by more than SETTLE can both believe
they hold the lease until the loser's next renewal (ttl/3 later) reads the winner's and stops.
Expiry is wall-clock time written by the holder and compared by others: clocks must agree to
well within the ttl (NTP).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from maiffs.errors import StoreError
from maiffs.remotes.base import Remote
from maiffs.remotes.dirremote import create_new

DEFAULT_TTL = 60.0
SETTLE = 0.5  # seconds between writing a taken-over lease and reading it back
STORE_ID = "store-id"


@dataclass(frozen=True)
class Lease:
    """Who writes a volume, and until when (wall clock, UTC ns)."""

    holder: str  # the writing store's id (STORE/store-id)
    host: str
    pid: int
    mountpoint: str
    expires_ns: int

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> "Lease":
        """The lease in data; one nobody can read counts as an expired lease of an unknown store."""
        try:
            fields = json.loads(data)
            return cls(str(fields["holder"]), str(fields["host"]), int(fields["pid"]),
                       str(fields["mountpoint"]), int(fields["expires_ns"]))
        except (ValueError, KeyError, TypeError):
            return cls("(unreadable lease)", "?", 0, "", 0)

    def who(self) -> str:
        return (f"store {self.holder} on host {self.host} (pid {self.pid}, "
                f"mounted on {self.mountpoint or '-'})")


def utc(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ns / 1e9))


class LeaseHeld(StoreError):
    """Another store writes the volume (its lease is live, or it took ours)."""

    def __init__(self, name: str, volume: str, lease: Lease) -> None:
        super().__init__(f"remote {name} volume {volume} is written by {lease.who()} until "
                         f"{utc(lease.expires_ns)}; wait for it to unmount, or if that store is "
                         f"gone, `maiffs remote takeover STORE {name}`")
        self.lease = lease


def store_id(store: str) -> str:
    """This store's holder id, made on first need and kept in STORE/store-id."""
    path = Path(store) / STORE_ID
    if not path.exists():
        create_new(path, secrets.token_hex(8).encode(), 0o600)  # two first users agree: one link wins
    return path.read_text().strip()


@dataclass(frozen=True)
class Holder:
    """A would-be writer: a store, where it runs and is mounted."""

    id: str
    host: str
    pid: int
    mountpoint: str

    @classmethod
    def here(cls, store: str, mountpoint: str = "") -> "Holder":
        return cls(store_id(store), socket.gethostname(), os.getpid(), mountpoint)


class VolumeLease:
    """The lease of one remote's volume as seen by holder (name: the remote's name, for messages)."""

    def __init__(self, remote: Remote, name: str, holder: Holder, ttl: float = DEFAULT_TTL,
                 clock: Callable[[], int] = time.time_ns,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.remote = remote
        self.name = name
        self.holder = holder
        self.ttl = ttl
        self.clock = clock
        self.sleep = sleep
        self.key = f"volumes/{remote.volume}/lease"
        self.expires_ns = 0  # of the lease we last wrote

    def current(self) -> Lease | None:
        data = self.remote._get(self.key)
        return Lease.decode(data) if data is not None else None

    def _other(self, lease: Lease | None) -> Lease | None:
        """lease, if it is another store's."""
        return lease if lease is not None and lease.holder != self.holder.id else None

    def _refuse_live(self, lease: Lease) -> None:
        if lease.expires_ns > self.clock():
            raise LeaseHeld(self.name, self.remote.volume, lease)

    def _lost(self, there: Lease | None) -> StoreError:
        """Why our write did not stick: another store's lease, or none at all (a race)."""
        if there is not None:
            return LeaseHeld(self.name, self.remote.volume, there)
        return StoreError(f"remote {self.name} volume {self.remote.volume}: the lease changed "
                          f"while it was taken; try again")

    def check(self) -> Lease | None:
        """May this store push without a lease? LeaseHeld if another's is live; else the expired
        lease of another store, if there is one (to warn about)."""
        other = self._other(self.current())
        if other is not None:
            self._refuse_live(other)
        return other

    def acquire(self, force: bool = False) -> Lease | None:
        """Take the lease (renew it if it is ours): LeaseHeld if another store's is live (unless
        force); the other store's lease replaced, if any."""
        current = self.current()
        other = self._other(current)
        if other is not None and not force:
            self._refuse_live(other)
        self._write(current)
        return other

    def renew(self) -> None:
        """Push our expiry on; LeaseHeld if another store has taken the lease."""
        current = self.current()
        if self._other(current) is not None:
            raise self._lost(current)
        self._write(current)

    def release(self) -> None:
        """Delete the lease if it is ours (at clean unmount)."""
        current = self.current()
        if current is not None and self._other(current) is None:
            self.remote._delete(self.key)
        self.expires_ns = 0

    def _write(self, current: Lease | None) -> None:
        """Our lease in place of current (None: create it), checked by reading it back."""
        h = self.holder
        mine = Lease(h.id, h.host, h.pid, h.mountpoint, self.clock() + int(self.ttl * 1e9))
        if current is None:
            if not self.remote._put_new(self.key, mine.encode()):
                raise self._lost(self.current())
        else:
            self.remote._put(self.key, mine.encode())
            if self._other(current) is not None:
                self.sleep(SETTLE)
            back = self.current()
            if back is None or self._other(back) is not None:
                raise self._lost(back)
        self.expires_ns = mine.expires_ns
