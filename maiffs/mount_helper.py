"""mount(8) and umount(8) helpers: `mount -t fuse.maiffs STORE MNT -o OPTS`, an /etc/fstab line,
and `umount MNT` all run the maiffs command.

mount(8) runs /sbin/mount.fuse.maiffs (and umount(8) /sbin/umount.fuse.maiffs) with its own
argument conventions; contrib/install.sh links both names to the `maiffs` entry point, which
sees the name it was run as and comes here to turn the arguments into a `maiffs mount` or
`maiffs umount` command line. The options mount(8) and systemd keep for themselves (noauto,
nofail, _netdev, user, ...) are dropped; the kernel's mount flags (ro, noexec, ...) and maiffs's
own options go on; anything else is refused unless mount runs sloppy (-s).
"""

from __future__ import annotations

import getopt
import os
import subprocess
from dataclasses import dataclass

from maiffs.errors import StoreError
from maiffs.mounts import FSTYPE
from maiffs.options import MountOptions, option_items, option_names

MOUNT_HELPER = f"mount.{FSTYPE}"
UMOUNT_HELPER = f"umount.{FSTYPE}"
#: options only mount(8), fstab and systemd act on; `relatime` is what a FUSE mount has anyway
MOUNT_ONLY = {"defaults", "auto", "noauto", "nofail", "_netdev", "user", "nouser", "users",
              "owner", "group", "relatime"}
MOUNT_ONLY_PREFIXES = ("x-", "comment=")


@dataclass
class HelperCall:
    """What a helper invocation asks for: maiffs arguments to run (none: nothing to do), and
    whether the command's own success line is wanted (mount -v)."""

    args: list[str] | None
    verbose: bool = False


def _parse(helper: str, argv: list[str], letters: str) -> tuple[list[str], dict[str, str]]:
    """Positional arguments and the -X flags (getopt letters; a flag without a value maps to '')."""
    try:
        pairs, positional = getopt.gnu_getopt(argv, letters)
    except getopt.GetoptError as exc:
        raise StoreError(f"{helper}: {exc}") from None
    return positional, {flag[1]: value for flag, value in pairs}


def _check_common(helper: str, values: dict[str, str]) -> None:
    if "N" in values:
        raise StoreError(f"{helper}: -N (another mount namespace) is not supported; "
                         f"run the command inside it (nsenter -m -t PID ...)")
    if values.get("t", FSTYPE) != FSTYPE:
        raise StoreError(f"{helper} mounts type {FSTYPE}, not {values['t']}")


def maiffs_options(spec: str, sloppy: bool) -> str:
    """The -o string mount(8) gave, less what only mount and systemd act on (and, sloppy,
    less what maiffs does not know)."""
    names = option_names()
    kept = []
    for key, value in option_items(spec, names):
        if key in MOUNT_ONLY or key.startswith(MOUNT_ONLY_PREFIXES) or (sloppy and key not in names):
            continue
        kept.append(f"{key}={value}" if value else key)
    return ",".join(kept)


def mount_call(argv: list[str]) -> HelperCall:
    """`mount.fuse.maiffs STORE MNT [-sfnv] [-N NS] [-o OPTS] [-t fuse.maiffs]` (mount(8)'s
    helper convention) as a `maiffs mount` command."""
    positional, values = _parse(MOUNT_HELPER, argv, "sfnvo:N:t:")
    _check_common(MOUNT_HELPER, values)
    if len(positional) != 2:
        raise StoreError(f"usage: {MOUNT_HELPER} STORE MOUNTPOINT [-o OPTIONS] (as run by "
                         f"`mount -t {FSTYPE} STORE MOUNTPOINT`)")
    store, mountpoint = positional
    options = maiffs_options(values.get("o", ""), sloppy="s" in values)
    if "f" in values:  # mount -f: everything but the mount itself
        MountOptions.parse([options])
        return HelperCall(None)
    return HelperCall(["mount", store, mountpoint, "-o", options], verbose="v" in values)


def umount_call(argv: list[str]) -> HelperCall:
    """`umount.fuse.maiffs MNT [-flnrv] [-N NS] [-t fuse.maiffs]` as a `maiffs umount`, which
    returns once everything is committed and the daemon is gone. -l detaches at once instead
    (the daemon commits and ends when the last file open there is closed); -f is a plain
    unmount: forcing a FUSE mount would drop buffered writes."""
    positional, values = _parse(UMOUNT_HELPER, argv, "flnrvN:t:")
    _check_common(UMOUNT_HELPER, values)
    if len(positional) != 1:
        raise StoreError(f"usage: {UMOUNT_HELPER} MOUNTPOINT (as run by `umount MOUNTPOINT`)")
    if "l" in values:
        done = subprocess.run(["fusermount3", "-u", "-z", positional[0]], capture_output=True, text=True)
        if done.returncode != 0:
            raise StoreError(f"cannot unmount {positional[0]}: {done.stderr.strip()}")
        return HelperCall(None)
    return HelperCall(["umount", positional[0]], verbose="v" in values)


HELPERS = {MOUNT_HELPER: mount_call, UMOUNT_HELPER: umount_call}


def helper_call(program: str, argv: list[str]) -> HelperCall | None:
    """The call program (argv[0]) makes if it is one of the helpers' names, else None."""
    helper = HELPERS.get(os.path.basename(program))
    return helper(argv) if helper else None
