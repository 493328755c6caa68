"""Snapshot commands, run wherever the store is: in its daemon or, unmounted, in this process.

The CLI sends a request (a JSON object) through the mount's control file `.maiffs/control` when
the store is mounted (the daemon owns the store; LMDB has one writer), and otherwise opens the
store itself under its lock. Both end in `execute`, so a command behaves the same either way.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from maiffs.errors import FsError, StoreError
from maiffs.mounts import find_mount, maiffs_mounts, resolve_store
from maiffs.namespace import Namespace
from maiffs.remotes import transfer
from maiffs.remotes.config import open_remote
from maiffs.snapshots.manager import Snapshots
from maiffs.store import Store
from maiffs.store.lock import StoreLock

CONTROL_PATH = (".maiffs", "control")


def default_name() -> str:
    """A name for a snapshot the user did not name: its UTC time, sortable."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _create(s: Snapshots, r: dict[str, Any]) -> Any:
    return s.create(r.get("name") or default_name()).as_dict()


def _delete(s: Snapshots, r: dict[str, Any]) -> Any:
    s.delete(r["name"])
    return {"name": r["name"]}


def _list(s: Snapshots, r: dict[str, Any]) -> Any:
    return [info.as_dict() for info in s.list()]


def _diff(s: Snapshots, r: dict[str, Any]) -> Any:
    return [list(row) for row in s.diff(r["a"], r.get("b"))]


def _restore(s: Snapshots, r: dict[str, Any]) -> Any:
    parent, changed = s.restore(r["name"], r.get("path") or "")
    return {"parent": parent, "changed": [os.fsdecode(n) for n in changed]}


def _log(s: Snapshots, r: dict[str, Any]) -> Any:
    return s.log(r["path"])


def _pull(s: Snapshots, r: dict[str, Any]) -> Any:
    return transfer.pull(s, open_remote(r["url"]), r.get("names") or None).as_dict()


OPERATIONS: dict[str, Callable[[Snapshots, dict[str, Any]], Any]] = {
    "snapshot.create": _create, "snapshot.delete": _delete, "snapshot.list": _list,
    "snapshot.diff": _diff, "snapshot.restore": _restore, "log": _log, "pull": _pull,
}


def execute(snapshots: Snapshots, request: dict[str, Any]) -> dict[str, Any]:
    """Run one request; the answer is {"ok": true, "result": ...} or {"ok": false, "error": ...}."""
    handler = OPERATIONS.get(request.get("op", ""))
    if handler is None:
        return {"ok": False, "error": f"unknown request {request.get('op')!r}", "errno": errno.EINVAL}
    try:
        return {"ok": True, "result": handler(snapshots, request)}
    except FsError as exc:
        return {"ok": False, "error": exc.detail or os.strerror(exc.errno), "errno": exc.errno}
    except (StoreError, KeyError) as exc:
        return {"ok": False, "error": str(exc), "errno": errno.EINVAL}


def via_mount(mountpoint: str, request: dict[str, Any]) -> dict[str, Any]:
    """Send request to the daemon serving mountpoint and return its answer."""
    path = os.path.join(mountpoint, *CONTROL_PATH)
    fd = os.open(path, os.O_RDWR)
    try:
        os.write(fd, json.dumps(request).encode() + b"\n")
        chunks = []
        while chunk := os.pread(fd, 1 << 20, sum(map(len, chunks))):  # the answer starts at 0
            chunks.append(chunk)
    finally:
        os.close(fd)
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        raise StoreError(f"the daemon of {mountpoint} gave no answer (see the store's maiffs.log)") from None


def offline(store_path: str, request: dict[str, Any]) -> dict[str, Any]:
    """Run request on an unmounted store, holding its lock meanwhile."""
    if not os.path.isdir(store_path):
        raise StoreError(f"{store_path}: no such store directory or maiffs mount")
    Store.check(store_path)  # not a store: say so, leave it untouched
    lock = StoreLock(store_path, f"maiffs {request.get('op')}")
    try:
        store = Store.open(store_path)
        try:
            return execute(Snapshots(Namespace(store)), request)
        finally:
            store.close()
    finally:
        lock.release()


@contextmanager
def reading(target: str) -> Iterator[Snapshots]:
    """The snapshots of the store target names, opened read-only (beside its daemon, if any:
    LMDB lets readers in while one process writes)."""
    store = Store.open(resolve_store(target), readonly=True)
    try:
        yield Snapshots(Namespace(store))
    finally:
        store.close()


def run(target: str, request: dict[str, Any]) -> Any:
    """Run request on the store target names (a store or a mount point); raise on failure."""
    entry = find_mount(target)
    if entry is None:
        store = os.path.abspath(target)
        entry = next((m for m in maiffs_mounts() if m.store == store), None)
    answer = via_mount(entry.mountpoint, request) if entry else offline(os.path.abspath(target), request)
    if not answer.get("ok"):
        raise StoreError(answer.get("error", "the request failed"))
    return answer["result"]
