"""The `maiffs` command: one small function per verb; each exits 0 or prints one line and exits 1."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from maiffs import __version__, commands, logs, sdnotify
from maiffs.completion import completion, mounted_points
from maiffs.errors import FsError, StoreError
from maiffs.malloc import keep_freed_memory
from maiffs.mount_helper import helper_call
from maiffs.mounts import FSTYPE, find_mount, is_mountpoint, maiffs_mounts, path_in_mount, resolve_store
from maiffs.options import MountOptions, documented, kernel_flags_help
from maiffs.preflight import check_fuse, check_store_free, fusermount
from maiffs.progress import ProgressBar, progress_bar
from maiffs.remotes import config as remotes
from maiffs.remotes import placement, replicas
from maiffs.remotes import transfer
from maiffs.remotes.lease import Holder, VolumeLease, utc
from maiffs.remotes import verify as checks
from maiffs.report import daemon_stats, store_report, table
from maiffs.store import Store
from maiffs.store.lock import StoreLock, holder_pid, is_locked

log = logging.getLogger("maiffs")


class _Group(click.Group):
    """Turn store and filesystem errors into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # the reader left (`| head -1`): end quietly, as tools that
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # SIGPIPE kills do
            sys.exit(128 + signal.SIGPIPE)
        except (StoreError, FsError, OSError) as exc:
            click.echo(f"maiffs: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="maiffs")
def cli() -> None:
    """maiffs: a deduplicating, compressing filesystem over a content-addressed store."""


cli.add_command(completion)


@cli.command()
@click.argument("store", type=click.Path())
def mkfs(store: str) -> None:
    """Create an empty store in STORE (a new or empty directory)."""
    Store.create(store).close()
    click.echo(f"created store {os.path.abspath(store)}")


def _daemonize(run: Callable[[Callable[[str | None], None]], None], died: str) -> None:
    """Fork; the child runs the mount, the parent exits once it reports ready or failed (the
    died message if it ends without a word)."""
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        with os.fdopen(read_end) as pipe:
            status = pipe.readline().strip()
        if status != "ok":
            raise StoreError(status or died)
        return
    os.close(read_end)
    os.setsid()
    sdnotify.forget()
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


class _MountCommand(click.Command):
    """`maiffs mount --help` lists every -o option, from MountOptions."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Mount options (-o; a flag takes =no to turn it off)"):
            formatter.write_dl([(doc.spec, f"{doc.help} [default: {doc.default}]" if doc.default
                                 else doc.help) for doc in documented()])
            formatter.write_paragraph()
            formatter.write_text(kernel_flags_help())


@cli.command(cls=_MountCommand)
@click.argument("store", type=click.Path())
@click.argument("mountpoint", type=click.Path())
@click.option("-f", "--foreground", is_flag=True,
              help="Stay in the foreground, logging to stderr (under systemd: Type=notify).")
@click.option("--debug", is_flag=True, help="Log every FUSE request (the same as -o debug).")
@click.option("-o", "options", multiple=True, metavar="OPT[,OPT...]",
              help="Mount options, comma-separated (listed below); repeatable.")
@click.option("--follow", metavar="URL[#VOLUME]",
              help="Follower mount: the newest snapshot of this remote volume, read-only, "
                   "switched as new ones arrive; STORE is the local cache (made if absent; "
                   "-o cache_size=SIZE bounds it, -o follow_every=INTERVAL, default 5s).")
def mount(store: str, mountpoint: str, foreground: bool, debug: bool, options: tuple[str, ...],
          follow: str | None) -> None:
    """Mount STORE on MOUNTPOINT."""
    from maiffs.daemon import check_mountpoint, serve

    opts = MountOptions.parse(list(options))
    opts.follow = follow or opts.follow
    opts.debug = opts.debug or debug
    check_fuse()
    if opts.follow:
        _follower_store(store, opts.follow)
    Store.check(store)  # fail early, in this process, on a bad store
    check_store_free(os.path.abspath(store))
    check_mountpoint(mountpoint, opts.nonempty)
    logs.setup(opts.log, store, foreground, opts.debug)
    if foreground:
        serve(store, mountpoint, opts, ready=sdnotify.mounted)
        return
    _daemonize(lambda ready: serve(store, mountpoint, opts, ready),
               died=f"the mount daemon died while starting; see {logs.describe(opts.log, store, False)}, "
                    f"or run `maiffs mount -f {store} {mountpoint}` to watch it start")
    click.echo(f"mounted {os.path.abspath(store)} on {os.path.abspath(mountpoint)}; "
               f"unmount with: maiffs umount {mountpoint}")


def _follower_store(store: str, url: str) -> None:
    """A follower's cache store: made on first use, its remote `origin` the followed URL."""
    remotes.check_url(url)
    if not os.path.isdir(store) or not os.listdir(store):
        Store.create(store).close()
    known = remotes.load(store)
    if known.get(remotes.ORIGIN) not in (None, url):
        raise StoreError(f"store {store} follows {known[remotes.ORIGIN]}, not {url}")
    remotes.save(store, {**known, remotes.ORIGIN: url})


@cli.command()
@click.argument("mountpoint", type=click.Path(), shell_complete=mounted_points)
@click.option("--timeout", default=300.0, show_default=True,
              help="Seconds to wait for the daemon to commit and exit.")
def umount(mountpoint: str, timeout: float) -> None:
    """Unmount MOUNTPOINT after everything buffered is committed; returns once it is."""
    entry = find_mount(mountpoint)
    if entry is None:
        if is_mountpoint(mountpoint):
            raise StoreError(f"{mountpoint} is not a maiffs mount; unmount it with `umount {mountpoint}`")
        raise StoreError(f"{mountpoint} is not mounted (`findmnt -t {FSTYPE}` lists the maiffs mounts)")
    unmounter = fusermount()
    for remote, state in daemon_stats(entry.mountpoint).get("replication", {}).items():
        if state["pending"]:
            count = len(state["pending"])
            click.echo(f"replication to {remote} not finished: {count} snapshot{'s' * (count != 1)} "
                       f"pending (pushed at the next mount, or by `maiffs push`)")
    done = subprocess.run([unmounter, "-u", entry.mountpoint], capture_output=True, text=True)
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "fusermount3 failed"
        raise StoreError(f"cannot unmount {mountpoint}: {reason}; close the files open there "
                         f"(`fuser -vm {mountpoint}` lists them) and run it again")
    deadline = time.monotonic() + timeout
    while is_locked(entry.store):
        if time.monotonic() > deadline:
            pid = holder_pid(entry.store)
            raise StoreError(f"the daemon (pid {pid}) of {entry.store} is still committing after "
                             f"{timeout:.0f}s and goes on; mount the store again once it has exited")
        time.sleep(0.05)
    click.echo(f"unmounted {entry.mountpoint}")


@cli.command("stat")
@click.argument("target", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def stat_cmd(target: str, as_json: bool) -> None:
    """Files, directories, bytes, dedup and compression, snapshots and last commit of a store
    (or of the store mounted at TARGET); while mounted, also its cache, replication lag and
    follower state (docs/monitoring.md)."""
    report = store_report(resolve_store(target))
    click.echo(json.dumps(report, indent=2) if as_json else "\n".join(table(report)))


@cli.group()
def snapshot() -> None:
    """Snapshots of a store: create, list, delete, diff, restore.

    STORE is a store directory or a mount point of one; while it is mounted, the daemon
    does the work (through MOUNTPOINT/.maiffs/control)."""


def _time(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9))


@snapshot.command("create")
@click.argument("store", type=click.Path())
@click.argument("name", required=False)
def snapshot_create(store: str, name: str | None) -> None:
    """Snapshot the whole tree as NAME (default: the UTC time)."""
    info = commands.run(store, {"op": "snapshot.create", "name": name})
    click.echo(f"created snapshot {info['name']} (root {info['root'][:16]})")


@snapshot.command("list")
@click.argument("store", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def snapshot_list(store: str, as_json: bool) -> None:
    """List snapshots, oldest first."""
    infos = commands.run(store, {"op": "snapshot.list"})
    if as_json:
        click.echo(json.dumps(infos, indent=2))
        return
    for info in infos:
        click.echo(f"{info['name']:32} {_time(info['created_ns'])}  {info['root'][:16]}")


@snapshot.command("delete")
@click.argument("store", type=click.Path())
@click.argument("name")
def snapshot_delete(store: str, name: str) -> None:
    """Delete snapshot NAME, freeing the data only it held."""
    commands.run(store, {"op": "snapshot.delete", "name": name})
    click.echo(f"deleted snapshot {name}")


@snapshot.command("diff")
@click.argument("store", type=click.Path())
@click.argument("a")
@click.argument("b", required=False)
def snapshot_diff(store: str, a: str, b: str | None) -> None:
    """Paths added (A), removed (D) or modified (M) from snapshot A to B (default: the live tree)."""
    for mark, path in commands.run(store, {"op": "snapshot.diff", "a": a, "b": b}):
        click.echo(f"{mark} {path}")


@snapshot.command("restore")
@click.argument("store", type=click.Path())
@click.argument("name")
@click.argument("path", required=False, default="")
def snapshot_restore(store: str, name: str, path: str) -> None:
    """Put PATH (a file or a directory, relative to the tree's root; default: everything)
    back as it was in snapshot NAME. Nothing outside PATH changes."""
    commands.run(store, {"op": "snapshot.restore", "name": name, "path": path})
    click.echo(f"restored {path or '/'} from snapshot {name}")


@cli.command("log")
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def log_cmd(path: str, as_json: bool) -> None:
    """Every version of PATH (a file in a maiffs mount) in the snapshots, newest first.

    The content of each is at MOUNTPOINT/.snapshots/SNAPSHOT/PATH."""
    entry, relative = path_in_mount(path)
    rows = commands.run(entry.mountpoint, {"op": "log", "path": relative})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['snapshot']:32} {_time(row['mtime_ns'])}  {row['size']:>12}  "
                   f"{row['id'] or row['type']}")


@cli.group()
def remote() -> None:
    """Remotes of a store: places to push snapshots to and pull them from."""


@remote.command("add")
@click.argument("store", type=click.Path())
@click.argument("name")
@click.argument("url")
@click.option("--endpoint", metavar="URL", help="The S3 endpoint of an s3:// remote.")
def remote_add(store: str, name: str, url: str, endpoint: str | None) -> None:
    """Add remote NAME at URL: a directory (/path, file:///path) or a bucket
    (s3://BUCKET/PREFIX; credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or boto3's
    files, never stored here)."""
    path = resolve_store(store)
    Store.check(path)  # only in a store
    url = remotes.with_endpoint(url, endpoint)
    remotes.check_url(url)
    known = remotes.load(path)
    if name in known:
        raise StoreError(f"remote {name!r} exists ({known[name]})")
    known[name] = url
    remotes.save(path, known)
    click.echo(f"added remote {name} {url}")


@remote.command("list")
@click.argument("store", type=click.Path())
def remote_list(store: str) -> None:
    """List the remotes of STORE."""
    for name, url in sorted(remotes.load(resolve_store(store)).items()):
        click.echo(f"{name:16} {url}")


@remote.command("remove")
@click.argument("store", type=click.Path())
@click.argument("name")
def remote_remove(store: str, name: str) -> None:
    """Forget remote NAME (nothing on the remote is touched)."""
    path = resolve_store(store)
    known = remotes.load(path)
    remotes.url_of(path, name)
    del known[name]
    remotes.save(path, known)
    click.echo(f"removed remote {name}")


@remote.command("takeover")
@click.argument("store", type=click.Path())
@click.argument("name")
def remote_takeover(store: str, name: str) -> None:
    """Make STORE the writer of remote NAME's volume now, replacing another store's lease
    before it expires (that store crashed, or will never unmount). Mount STORE with
    -o replicate=NAME soon: a mount renews the lease, which otherwise expires after 60s."""
    path = resolve_store(store)
    lease = VolumeLease(remotes.named_remote(path, name), name, Holder.here(path))
    previous = lease.acquire(force=True)
    replaced = f"replaced the lease of {previous.who()}, valid until {utc(previous.expires_ns)}" \
        if previous else "the volume had no other writer"
    click.echo(f"remote {name} volume {lease.remote.volume}: {replaced}; store "
               f"{lease.holder.id} holds it until {utc(lease.expires_ns)}")


def quiet_option(command: Callable[..., None]) -> Callable[..., None]:
    """--quiet, shared by the commands that show progress (progress.py)."""
    return click.option("--quiet", "-q", is_flag=True, help="No progress display.")(command)


def transfer_options(command: Callable[..., None]) -> Callable[..., None]:
    """--json and --quiet, shared by the commands that move snapshots."""
    command = click.option("--json", "as_json", is_flag=True,
                           help="Print the result as JSON (what was moved).")(command)
    return quiet_option(command)


def _report(verb: str, name: str, stats: transfer.TransferStats, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(stats.as_dict()))
    else:
        way, moved = ("to", "sent") if verb == "pushed" else ("from", "received")
        click.echo(f"{verb} {stats.snapshots} snapshots {way} {name}: {stats.objects} objects and "
                   f"{stats.chunks} chunks {moved} ({stats.bytes} bytes in {stats.packs} packs)")


@cli.command()
@click.argument("store", type=click.Path())
@click.argument("name")
@click.argument("snapshots", nargs=-1)
@transfer_options
@click.option("--copies", type=int, metavar="N",
              help="NAME is a group A,B,C: each chunk goes to N of them (rendezvous hashing on "
                   "their names), tree objects and refs to all.")
@click.option("--to", "members", multiple=True, metavar="NAME",
              help="With --copies: push to this member of the group only (repeatable).")
def push(store: str, name: str, snapshots: tuple[str, ...], as_json: bool, quiet: bool,
         copies: int | None, members: tuple[str, ...]) -> None:
    """Send SNAPSHOTS (default: all) to remote NAME, with only what it lacks; run it again
    after an interruption to finish. A member of a group that fails does not stop the others."""
    path = resolve_store(store)
    group = name.split(",") if copies is not None else [name]
    if copies is not None:
        placement.check_copies(copies, group)
    elif members:
        raise StoreError("--to goes with --copies")
    failed = 0
    for member in members or group:
        try:
            if member not in group:
                raise StoreError(f"remote {member!r} is not in the group {name}")
            remote = remotes.named_remote(path, member)
            stale = VolumeLease(remote, member, Holder.here(path)).check()  # another writer: refused
            if stale is not None:
                click.echo(f"maiffs: warning: remote {member}: the lease of {stale.who()} expired "
                           f"at {utc(stale.expires_ns)}; pushing in its place", err=True)
            bar = ProgressBar(f"push {member}", quiet=quiet)
            with commands.reading(store) as snaps:
                stats = transfer.push(snaps, remote, list(snapshots) or None, bar,
                                      placement.placed_on(member, group, copies) if copies else None)
            bar.finish()
            _report("pushed", member, stats, as_json)
        except (StoreError, OSError) as exc:
            click.echo(f"maiffs: {exc}", err=True)
            failed += 1
    if failed:
        sys.exit(1)


def _pull(store: str, url: str, label: str, names: list[str], quiet: bool) -> transfer.TransferStats:
    """Stage what the store lacks from the remote beside it (this process waits on the network,
    not the daemon), then bring the snapshots in from there. A staging area left by an
    interrupted pull is reused."""
    path = resolve_store(store)
    remote = remotes.open_remote(url, path)
    staging = remotes.staging_dir(path, url)
    os.umask(0o077)  # this command writes only into the store: private to its owner, as it is
    os.makedirs(staging, mode=0o700, exist_ok=True)
    lock = StoreLock(staging, label, refusal=f"a pull from {url} into this store is running")
    try:
        bar = ProgressBar(label, quiet=quiet)
        with commands.reading(store) as snaps:
            stats = transfer.stage(snaps, remote, remotes.open_remote(staging),
                                   names or remote.refs(), bar)
        bar.finish()
        stats.snapshots = commands.run(store, {"op": "pull", "url": staging,
                                               "names": names})["snapshots"]
        shutil.rmtree(staging)
    finally:
        lock.release()
    return stats  # what crossed the network; the snapshots that are new here


@cli.command()
@click.argument("store", type=click.Path())
@click.argument("name")
@click.argument("snapshots", nargs=-1)
@transfer_options
def pull(store: str, name: str, snapshots: tuple[str, ...], as_json: bool, quiet: bool) -> None:
    """Bring SNAPSHOTS (default: all) from remote NAME into STORE's .snapshots/."""
    url = remotes.url_of(resolve_store(store), name)
    _report("pulled", name, _pull(store, url, f"pull {name}", list(snapshots), quiet), as_json)


@cli.command()
@click.argument("url")
@click.argument("store", type=click.Path())
@transfer_options
def clone(url: str, store: str, as_json: bool, quiet: bool) -> None:
    """Make a new store from the remote at URL: every snapshot, and the newest as the live tree."""
    remotes.check_url(url)
    names = remotes.open_remote(url).refs()
    if not names:
        raise StoreError(f"remote {url} has no snapshots")
    Store.create(store).close()
    remotes.save(store, {remotes.ORIGIN: url})
    stats = _pull(store, url, "clone", names, quiet)
    with commands.reading(store) as snaps:
        newest = max(snaps.list(), key=lambda info: info.created_ns).name
    commands.run(store, {"op": "snapshot.restore", "name": newest, "path": ""})
    if as_json:
        click.echo(json.dumps(stats.as_dict()))
    else:
        click.echo(f"cloned {url} into {os.path.abspath(store)}: {len(names)} snapshots "
                   f"({stats.bytes} bytes), live tree from {newest}")


@cli.command()
@click.argument("store", type=click.Path())
@click.option("--remote", "remote_names", multiple=True, metavar="NAME",
              help="Also check remote NAME (repeatable); without it only the store is checked.")
@click.option("--sample", default=1.0, type=click.FloatRange(0, 1),
              help="Check this fraction of chunks (1 = all); objects are always walked.")
@click.option("--repair", is_flag=True,
              help="Replace bad copies with good ones from elsewhere (local repair needs the "
                   "store unmounted).")
@click.option("--copies", type=int, metavar="N",
              help="The remotes are a group keeping each chunk N times (push --copies): report "
                   "chunks with fewer good copies on the reachable ones; --repair adds copies "
                   "where placement wants them.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
@quiet_option
def verify(store: str, remote_names: tuple[str, ...], sample: float, repair: bool,
           copies: int | None, as_json: bool, quiet: bool) -> None:
    """Hash every object and chunk of STORE (and of remotes), report what is missing or
    corrupt where; exit 1 if anything is left unrepaired."""
    path = resolve_store(store)
    named = {name: remotes.named_remote(path, name) for name in remote_names}
    if copies is not None:
        placement.check_copies(copies, remote_names)
    with commands.reading(store) as snaps:
        with progress_bar("verify local", quiet, "chunks+objects") as bar:
            report = checks.local_damage(snaps.store, sample, progress=bar)
        if copies is not None:
            with progress_bar(f"verify {','.join(named)}", quiet, "chunks") as bar:
                group = replicas.group_damage(named, copies, sample, progress=bar)
            report.checked += group.report.checked
            report.problems += group.report.problems
            if repair:
                replicas.repair_group(snaps.store, named, group)
        else:
            for name, remote in named.items():
                with progress_bar(f"verify {name}", quiet, "chunks") as bar:
                    found = checks.remote_damage(remote, name, sample, progress=bar)
                report.checked += found.checked
                report.problems += found.problems
                if repair:
                    checks.repair_remote(snaps.store, remote, found.problems)
    local = [p for p in report.problems if p.where == "local"]
    if repair and local:
        if find_mount(path) is not None or any(m.store == path for m in maiffs_mounts()):
            raise StoreError("local damage is repaired with the store unmounted (or by reads, "
                             "which heal from remotes)")
        lock = StoreLock(path, "maiffs verify --repair")
        try:
            opened = Store.open(path)
            try:
                checks.repair_local(opened, {**named, **_all_remotes(path)}, local)
            finally:
                opened.close()
        finally:
            lock.release()
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for problem in report.problems:
            click.echo(problem.line())
        click.echo(f"verify: {report.checked} checked, {len(report.problems)} problems")
    if any(not p.repaired for p in report.problems):
        sys.exit(1)


@cli.command("prefetch")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@quiet_option
def prefetch_cmd(paths: tuple[str, ...], as_json: bool, quiet: bool) -> None:
    """Read the files at PATHS (in a follower mount) so that its store holds their data: later
    reads are local, even with the remote away. Exit 1 if a file could not be read."""
    from maiffs import prefetch

    todo = prefetch.plan(list(paths))
    for warning in todo.warnings:
        click.echo(f"maiffs: warning: {warning}", err=True)
    with progress_bar("prefetch", quiet, "files") as bar:
        read, failed = prefetch.read_through(todo.files, bar)
    for why in failed:
        click.echo(f"maiffs: {why}", err=True)
    done = {"files": len(todo.files) - len(failed), "bytes": read, "failed": len(failed)}
    click.echo(json.dumps(done) if as_json else
               f"prefetched {done['files']} files ({done['bytes']} bytes)"
               + (f"; {len(failed)} could not be read" if failed else ""))
    if failed:
        sys.exit(1)


def _all_remotes(store: str) -> dict[str, Any]:
    return {name: remotes.open_remote(url, store) for name, url in remotes.load(store).items()}


@cli.command("fsck")
@click.argument("store", type=click.Path())
@click.option("--repair", is_flag=True,
              help="Fix what can be fixed; data in corrupt or missing chunks is lost (reads as zeros).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
@quiet_option
def fsck_cmd(store: str, repair: bool, as_json: bool, quiet: bool) -> None:
    """Check every invariant of STORE (not mounted); exit 1 if problems remain."""
    from maiffs.fsck import fsck

    with progress_bar("fsck", quiet, "chunks") as bar:
        report = fsck(resolve_store(store), repair=repair, progress=bar)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for line in report.lines():
            click.echo(line)
    if not report.ok:
        sys.exit(1)


def main() -> None:
    # No core dumps: a maiffs process (the CLI, and the daemon it becomes) may hold a remote's
    # credentials in memory, and a core file would keep them on disk for anyone who reads it.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    keep_freed_memory()
    logs.dump_stacks_on_sigusr1(sys.stderr)  # (a daemon's go to its log: logs.setup)
    try:  # run as mount.fuse.maiffs or umount.fuse.maiffs by mount(8)/umount(8)?
        call = helper_call(sys.argv[0], sys.argv[1:])
    except StoreError as exc:
        click.echo(f"maiffs: {exc}", err=True)
        sys.exit(1)
    if call is None:
        cli(prog_name="maiffs")
    elif call.args is not None:
        with contextlib.redirect_stdout(sys.stdout if call.verbose else io.StringIO()):
            cli(args=call.args, prog_name="maiffs")


if __name__ == "__main__":
    main()
