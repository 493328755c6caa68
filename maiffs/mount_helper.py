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


def _flags(argv: list[str], takes_value: str) -> tuple[list[str], set[str], dict[str, str]]:
    """Positional arguments, single-letter flags (-sfnv, bundled or not) and valued flags."""
    positional: list[str] = []
    flags: set[str] = set()
    values: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-") and len(arg) > 1:
            for j, letter in enumerate(arg[1:], 1):
                if letter in takes_value:
                    rest = arg[j + 1:]
                    if not rest:
                        i += 1
                        if i == len(argv):
                            raise StoreError(f"option -{letter} needs a value")
                        rest = argv[i]
                    values[letter] = rest
                    break
                flags.add(letter)
        else:
            positional.append(arg)
        i += 1
    return positional, flags, values


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
    positional, flags, values = _flags(argv, "oNt")
    _check_common(MOUNT_HELPER, values)
    if len(positional) != 2:
        raise StoreError(f"usage: {MOUNT_HELPER} STORE MOUNTPOINT [-o OPTIONS] (as run by "
                         f"`mount -t {FSTYPE} STORE MOUNTPOINT`)")
    store, mountpoint = positional
    options = maiffs_options(values.get("o", ""), sloppy="s" in flags)
    if "f" in flags:  # mount -f: everything but the mount itself
        MountOptions.parse([options])
        return HelperCall(None)
    return HelperCall(["mount", store, mountpoint, "-o", options], verbose="v" in flags)


def umount_call(argv: list[str]) -> HelperCall:
    """`umount.fuse.maiffs MNT [-flnrv] [-N NS] [-t fuse.maiffs]` as a `maiffs umount`, which
    returns once everything is committed and the daemon is gone. -l detaches at once instead
    (the daemon commits and ends when the last file open there is closed); -f is a plain
    unmount: forcing a FUSE mount would drop buffered writes."""
    positional, flags, values = _flags(argv, "Nt")
    _check_common(UMOUNT_HELPER, values)
    if len(positional) != 1:
        raise StoreError(f"usage: {UMOUNT_HELPER} MOUNTPOINT (as run by `umount MOUNTPOINT`)")
    if "l" in flags:
        done = subprocess.run(["fusermount3", "-u", "-z", positional[0]], capture_output=True, text=True)
        if done.returncode != 0:
            raise StoreError(f"cannot unmount {positional[0]}: {done.stderr.strip()}")
        return HelperCall(None)
    return HelperCall(["umount", positional[0]], verbose="v" in flags)


HELPERS = {MOUNT_HELPER: mount_call, UMOUNT_HELPER: umount_call}


def helper_call(program: str, argv: list[str]) -> HelperCall | None:
    """The call program (argv[0]) makes if it is one of the helpers' names, else None."""
    helper = HELPERS.get(os.path.basename(program))
    return helper(argv) if helper else None
