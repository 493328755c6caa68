"""The `maiffs` command: one small function per verb; each exits 0 or prints one line and exits 1."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from maiffs import __version__
from maiffs.errors import FsError, StoreError
from maiffs.mounts import find_mount, is_mountpoint, maiffs_mounts, resolve_store
from maiffs.options import MountOptions
from maiffs.store import Store
from maiffs.store.lock import is_locked

log = logging.getLogger("maiffs")


class _Group(click.Group):
    """Turn store and filesystem errors into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (StoreError, FsError, OSError) as exc:
            click.echo(f"maiffs: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="maiffs")
def cli() -> None:
    """maiffs: a deduplicating, compressing filesystem over a content-addressed store."""


@cli.command()
@click.argument("store", type=click.Path())
def mkfs(store: str) -> None:
    """Create an empty store in STORE (a new or empty directory)."""
    Store.create(store).close()
    click.echo(f"created store {os.path.abspath(store)}")


def _log_to(store: str, foreground: bool, debug: bool) -> None:
    level = logging.DEBUG if debug else logging.INFO
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if foreground:
        logging.basicConfig(level=level, format=fmt, stream=sys.stderr)
    elif os.path.isdir(store):
        logging.basicConfig(level=level, format=fmt, filename=os.path.join(store, "maiffs.log"))


def _daemonize(run: Callable[[Callable[[str | None], None]], None]) -> None:
    """Fork; the child runs the mount, the parent exits once it reports ready or failed."""
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        with os.fdopen(read_end) as pipe:
            status = pipe.readline().strip()
        if status != "ok":
            raise StoreError(status or "the mount daemon died while starting (see the store's maiffs.log)")
        return
    os.close(read_end)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)

    def ready(error: str | None) -> None:
        try:
            os.write(write_end, f"{error or 'ok'}\n".encode())
            os.close(write_end)
        except OSError:
            pass

    code = 0
    try:
        run(ready)
    except BaseException:
        code = 1
        log.exception("daemon ended with an error")
    finally:
        os._exit(code)


@cli.command()
@click.argument("store", type=click.Path())
@click.argument("mountpoint", type=click.Path())
@click.option("-f", "--foreground", is_flag=True, help="Stay in the foreground, logging to stderr.")
@click.option("-o", "options", multiple=True, metavar="OPT[,OPT...]",
              help="allow_other, commit_interval=SECONDS, compression=LEVEL, cache_size=SIZE, debug")
def mount(store: str, mountpoint: str, foreground: bool, options: tuple[str, ...]) -> None:
    """Mount STORE on MOUNTPOINT."""
    from maiffs.daemon import check_mountpoint, serve

    opts = MountOptions.parse(list(options))
    Store.open(store, readonly=True).env.close()  # fail early, in this process, on a bad store
    check_mountpoint(mountpoint)
    _log_to(store, foreground, opts.debug)
    if foreground:
        serve(store, mountpoint, opts, ready=lambda error: None)
        return
    _daemonize(lambda ready: serve(store, mountpoint, opts, ready))
    click.echo(f"mounted {os.path.abspath(store)} on {os.path.abspath(mountpoint)}; "
               f"unmount with: maiffs umount {mountpoint}")


@cli.command()
@click.argument("mountpoint", type=click.Path())
@click.option("--timeout", default=300.0, show_default=True,
              help="Seconds to wait for the daemon to commit and exit.")
def umount(mountpoint: str, timeout: float) -> None:
    """Unmount MOUNTPOINT after everything buffered is committed."""
    entry = find_mount(mountpoint)
    if entry is None:
        what = "not a maiffs mount" if is_mountpoint(mountpoint) else "not mounted"
        raise StoreError(f"{mountpoint} is {what}")
    done = subprocess.run(["fusermount3", "-u", entry.mountpoint], capture_output=True, text=True)
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "fusermount3 failed"
        raise StoreError(f"cannot unmount {mountpoint}: {reason} (close files that are open there)")
    deadline = time.monotonic() + timeout
    while is_locked(entry.store):
        if time.monotonic() > deadline:
            raise StoreError(f"daemon of {entry.store} still committing after {timeout:.0f}s")
        time.sleep(0.05)
    click.echo(f"unmounted {entry.mountpoint}")


def _ratio(a: int, b: int) -> float:
    return round(a / b, 3) if b else 1.0


def store_report(store_path: str) -> dict[str, Any]:
    """The numbers `maiffs stat` shows, from the committed state of a store."""
    store = Store.open(store_path, readonly=True)
    try:
        s = store.stats()
        on_disk = os.path.getsize(os.path.join(store_path, "data.mdb"))
    finally:
        store.env.close()
    return {
        "store": store_path,
        "mounted_on": next((m.mountpoint for m in maiffs_mounts() if m.store == store_path), None),
        "files": s["inodes"],
        "logical_bytes": s["logical_bytes"],
        "referenced_bytes": s["referenced_bytes"],
        "unique_bytes": s["chunk_raw_bytes"],
        "stored_bytes": s["chunk_stored_bytes"],
        "chunks": s["chunks"],
        "store_file_bytes": on_disk,
        "dedup_ratio": _ratio(s["referenced_bytes"], s["chunk_raw_bytes"]),
        "compression_ratio": _ratio(s["chunk_raw_bytes"], s["chunk_stored_bytes"]),
        "total_ratio": _ratio(s["logical_bytes"], s["chunk_stored_bytes"]),
    }


@cli.command("stat")
@click.argument("target", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def stat_cmd(target: str, as_json: bool) -> None:
    """Files, bytes, dedup and compression of a store (or of the store mounted at TARGET)."""
    report = store_report(resolve_store(target))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        click.echo(f"{key:18} {value}")


@cli.command("fsck")
@click.argument("store", type=click.Path())
@click.option("--repair", is_flag=True,
              help="Fix what can be fixed; data in corrupt or missing chunks is lost (reads as zeros).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
def fsck_cmd(store: str, repair: bool, as_json: bool) -> None:
    """Check every invariant of STORE (not mounted); exit 1 if problems remain."""
    from maiffs.fsck import fsck

    report = fsck(resolve_store(store), repair=repair)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for line in report.lines():
            click.echo(line)
    if not report.ok:
        sys.exit(1)


def main() -> None:
    cli(prog_name="maiffs")


if __name__ == "__main__":
    main()
