"""The mount daemon: the trio main loop, the commit interval, signals, and clean shutdown.

`serve` runs in the foreground process; `maiffs mount` without -f forks first and the parent
waits on a pipe until the child reports that the mount is up (or why it failed), so the
command's exit status tells the truth.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING

import pyfuse3
import trio

from maiffs.archive.faces import ArchiveTree
from maiffs.archive.view import ZipTree
from maiffs.control import ControlTree
from maiffs.errors import StoreError
from maiffs.follower import Follower
from maiffs.fuse.operations import Operations
from maiffs.leases import Leases
from maiffs.mounts import find_mount, is_mountpoint, set_read_ahead
from maiffs.namespace import Namespace
from maiffs.options import MountOptions
from maiffs.remotes.config import ORIGIN
from maiffs.remotes.heal import chunk_source
from maiffs.replication import Replicator
from maiffs.sdnotify import notify
from maiffs.service import SnapshotService
from maiffs.snapshots.manager import Snapshots
from maiffs.snapshots.view import SnapshotTree
from maiffs.store import Store
from maiffs.store.lock import StoreLock

if TYPE_CHECKING:  # imported only with -o metrics (prometheus_client)
    from maiffs.fuse.metrics import Metrics

log = logging.getLogger(__name__)
#: How long `mount --follow` waits for the first look at the remote before it returns anyway
FIRST_LOOK_S = 30.0
#: The kernel's read-ahead for the mount (its default for FUSE is 128 KiB): a sequential reader
#: then has eight times as much asked of the daemon ahead of it, which keeps the daemon busy
#: while a request's round trip waits (cold `dd` of 1 GiB: 0.71-0.87 -> 0.89-1.3 GB/s here)
READ_AHEAD_KB = 1024


def check_mountpoint(mountpoint: str, nonempty: bool = False) -> None:
    """Refuse mount points that are missing, not directories, busy, or (unless nonempty) not
    empty: mounting over files hides them, which nobody should do by accident."""
    try:
        if not stat.S_ISDIR(os.stat(mountpoint).st_mode):
            raise StoreError(f"mount point {mountpoint} is not a directory")
        if find_mount(mountpoint) is not None:
            raise StoreError(f"{mountpoint} is already a maiffs mount; run `maiffs umount {mountpoint}` first")
        if is_mountpoint(mountpoint):
            raise StoreError(f"{mountpoint} is already a mount point; choose another, or unmount "
                             f"it first (`umount {mountpoint}`)")
        if os.listdir(mountpoint) and not nonempty:
            raise StoreError(f"mount point {mountpoint} is not empty (its files would be hidden "
                             f"while mounted; `-o nonempty` mounts anyway)")
    except FileNotFoundError:
        raise StoreError(f"mount point {mountpoint} does not exist (mkdir it first)") from None
    except OSError as exc:  # e.g. ENOTCONN: a dead FUSE mount
        raise StoreError(f"mount point {mountpoint} is unusable ({exc.strerror}); "
                         f"if a daemon died, run `maiffs umount {mountpoint}`") from None


async def _commit_loop(ops: Operations, interval: float, follower: Follower | None) -> None:
    """Group commit: every interval, commit buffered writes and make everything durable."""
    while True:
        await trio.sleep(interval)
        await ops.flush_all(idle_ns=int(interval * 1e9))
        try:
            healed = ops.ns.write_back_healed()
            if healed:
                log.warning("commit: %d damaged chunks replaced by copies from remotes", healed)
            if follower is not None:
                follower.trim()
            await trio.to_thread.run_sync(ops.ns.store.sync)
        except Exception as exc:  # a full disk must not stop the loop
            log.error("commit: %s", exc)


async def _signal_watch() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("signal %d: unmounting", signum)
            pyfuse3.terminate()
            return


async def _report_ready(ops: Operations, follower: Follower | None, mountpoint: str,
                        ready: Callable[[str | None], None]) -> None:
    """Say the mount is up once the kernel's INIT is answered (and the read-ahead it set is
    widened); a follower's once it shows the remote's newest snapshot (or has found the remote
    away), so that what runs after `maiffs mount --follow` sees it, unless that takes longer
    than FIRST_LOOK_S."""
    await ops.initialized.wait()
    if not set_read_ahead(mountpoint, READ_AHEAD_KB):
        log.debug("read-ahead of %s left at the kernel's default", mountpoint)
    if follower is not None:
        with trio.move_on_after(FIRST_LOOK_S):
            await follower.looked.wait()
    ready(None)


async def _main(ops: Operations, service: SnapshotService, options: MountOptions,
                metrics: Metrics | None, mountpoint: str, ready: Callable[[str | None], None]) -> None:
    if metrics is not None:  # its scrapes read the daemon's numbers on this thread
        metrics.attach(trio.lowlevel.current_trio_token())
    async with trio.open_nursery() as nursery:
        ops.nursery = nursery
        nursery.start_soon(_commit_loop, ops, options.commit_interval, service.follower)
        if service.follower is not None:
            nursery.start_soon(service.follower.run)
        nursery.start_soon(_report_ready, ops, service.follower, mountpoint, ready)
        nursery.start_soon(_signal_watch)
        if options.snapshot_every:
            nursery.start_soon(service.auto_snapshots, options)
        if service.replicator is not None:
            nursery.start_soon(service.replicator.run)
            nursery.start_soon(service.replicator.leases.run)
        await pyfuse3.main()
        notify("STOPPING=1")
        await ops.shutdown()
        if service.follower is not None:  # what the last commit stored keeps the bound too
            service.follower.trim()
            ops.ns.store.sync()
        nursery.cancel_scope.cancel()


def serve(store_path: str, mountpoint: str, options: MountOptions,
          ready: Callable[[str | None], None]) -> None:
    """Mount and serve until unmounted; call ready(None) once mounted, ready(reason) on failure."""
    store_path, mountpoint = os.path.abspath(store_path), os.path.abspath(mountpoint)
    lock = store = None
    replicator: Replicator | None = None
    metrics: Metrics | None = None
    mounted = False
    try:
        check_mountpoint(mountpoint, options.nonempty)
        lock = StoreLock(store_path, f"mounted on {mountpoint}")
        store = Store.open(store_path)
        ns = Namespace(store, level=options.compression, cache_bytes=options.memory_cache)
        snapshots = Snapshots(ns)
        if options.replicate:
            replicator = Replicator(snapshots, store_path, options.replicate, Leases(
                store_path, mountpoint, options.replicate, options.lease), options.copies)
            replicator.leases.take()  # before mounting: another store's live lease refuses
        service = SnapshotService(snapshots, replicator=replicator)
        if options.follow:
            service.follower = Follower(service, store_path, options.follow, options.follow_every,
                                        options.cache_size, options.prefetch)
        ns.chunks.fallback = chunk_source(store_path, service.follower and {
            ORIGIN: service.follower.remote})
        ops = service.ops = Operations(ns, trees=[
            SnapshotTree(service.snapshots, service.take, service.drop),
            ControlTree(service.snapshots, service.stats, service.run),
            ZipTree(ns), ArchiveTree(ns)])
        if options.metrics:  # off: nothing wrapped, nothing imported
            from maiffs.fuse.metrics import Metrics
            metrics = Metrics(lambda: service.stats(tree=False))
            metrics.instrument(ops)
            metrics.serve(*options.metrics)
        fuse_options = set(pyfuse3.default_options) | {f"fsname={store_path}", "subtype=maiffs"}
        fuse_options |= set(options.kernel_flags)
        if options.allow_other:
            fuse_options.add("allow_other")
        if options.follow:  # the kernel refuses every change with EROFS
            fuse_options = (fuse_options - {"rw"}) | {"ro"}
        real_mountpoint = os.path.realpath(mountpoint)  # as the mount table will show it
        try:
            pyfuse3.init(ops, mountpoint, fuse_options)
        except RuntimeError as exc:
            raise StoreError(f"cannot mount on {mountpoint}: {exc}") from None
        mounted = True
        log.info("mounted %s on %s", store_path, mountpoint)
        trio.run(_main, ops, service, options, metrics, real_mountpoint, ready)
    except StoreError as exc:
        ready(str(exc))
        raise
    finally:
        if mounted:
            pyfuse3.close(unmount=True)
        if metrics is not None:
            metrics.close()
        if replicator is not None:
            replicator.leases.release()
        if store is not None:
            store.close()
        if lock is not None:
            lock.release()
        if mounted:
            log.info("unmounted %s", mountpoint)
