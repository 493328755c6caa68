"""The `-o` options of `maiffs mount`, parsed and checked in one place."""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields
from typing import Any

from maiffs.errors import StoreError
from maiffs.remotes.placement import check_copies
from maiffs.remotes.lease import DEFAULT_TTL
from maiffs.snapshots.retention import DEFAULT_POLICY, RetentionPolicy, parse_interval, parse_policy

DEFAULT_MEMORY_CACHE = 64 << 20
_SIZE_SUFFIX = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
#: Mount flags handed to the kernel as mount(8) and fstab give them, each with the one it cancels.
KERNEL_FLAGS = {"ro": "rw", "rw": "ro", "suid": "nosuid", "nosuid": "suid", "dev": "nodev",
                "nodev": "dev", "exec": "noexec", "noexec": "exec", "sync": "async",
                "async": "sync", "atime": "noatime", "noatime": "atime", "dirsync": "dirsync"}


def parse_size(text: str) -> int:
    """'64M' -> 67108864; plain numbers are bytes."""
    text = text.strip().lower().removesuffix("b").removesuffix("i")
    mult = _SIZE_SUFFIX.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in _SIZE_SUFFIX else text
    return int(float(number) * mult)


def option(default: Any, help: str, value: str = "") -> Any:
    """A mount option's field: its help and VALUE (empty for a flag) are shown by
    `maiffs mount --help` and docs/reference.md (contrib/gen_reference.py)."""
    return field(default=default, metadata={"help": help, "value": value})


@dataclass
class MountOptions:
    """Everything `-o` can set. See docs/reference.md."""

    allow_other: bool = option(False, "let users other than the one who mounted in (the kernel "
                               "checks permissions as on ext4)")
    default_permissions: bool = option(True, "always on: the kernel checks permissions as on ext4; "
                                       "accepted, as other FUSE filesystems take it, and turning "
                                       "it off is refused (maiffs itself checks nothing)")
    nonempty: bool = option(False, "mount over a directory that has files in it (they stay hidden "
                            "until unmounted); without it a non-empty mount point is refused")
    commit_interval: float = option(2.0, "seconds between group commits: buffered writes are "
                                    "committed and the store synced (a file written to within "
                                    "that time keeps its last chunk back until it is idle, "
                                    "closed or fsynced)", "SECONDS")
    compression: int = option(3, "zstd level of stored chunks, 0 (off) to 22", "LEVEL")
    cache_size: int = option(0, "memory for decompressed chunks (unset: 64M); on a follower "
                             "mount instead the bound on the store's chunk data (unset: none)",
                             "SIZE")
    debug: bool = option(False, "log at debug level, with a line per FUSE request (operation "
                         "and first arguments, never file data); the same as --debug")
    snapshot_every: float = option(0.0, "take an automatic snapshot this often (e.g. 15m), named "
                                   "auto-YYYYMMDDTHHMMSSZ (unset: none)", "INTERVAL")
    keep: RetentionPolicy = option(DEFAULT_POLICY, "which automatic snapshots pruning keeps, "
                                   "bucket:N rules from last, minutely, hourly, daily, weekly, "
                                   "monthly, yearly; snapshots you named are never pruned", "RULES")
    replicate: tuple[str, ...] = option((), "push every new snapshot to these remotes in the "
                                        "background, holding their volumes' leases",
                                        "NAME[,NAME...]")
    follow: str = option("", "a follower mount of this remote volume: its newest snapshot, "
                         "read-only (what `maiffs mount --follow URL` sets)", "URL[#VOLUME]")
    follow_every: float = option(5.0, "how often a follower looks for a newer snapshot",
                                 "INTERVAL")
    prefetch: bool = option(False, "a follower fetches each new snapshot's data in the "
                            "background, as much as cache_size allows")
    copies: int | None = option(None, "after replicate=: each chunk goes to N of its remotes "
                                "(tree objects and refs to all)", "N")
    lease: float = option(DEFAULT_TTL, "seconds the volume lease of a replicate= remote lives "
                          "unrenewed", "SECONDS")
    metrics: tuple[str, int] | None = option(None, "serve Prometheus metrics (request counts "
                                             "and latencies, bytes, cache hits, replication "
                                             "lag) on this address; HOST defaults to "
                                             "127.0.0.1 (docs/monitoring.md)", "[HOST:]PORT")
    log: str = option("", "where the daemon logs: a FILE, syslog (/dev/log) or syslog:SOCKET "
                      "(unset: STORE/maiffs.log; stderr with -f)", "FILE|syslog[:SOCKET]")
    #: the KERNEL_FLAGS given (ro, noexec, ...), the last of each pair kept; not an option itself
    kernel_flags: tuple[str, ...] = ()

    @property
    def memory_cache(self) -> int:
        """Bytes of decompressed chunks kept in memory (cache_size bounds a follower's store)."""
        return DEFAULT_MEMORY_CACHE if self.follow or not self.cache_size else self.cache_size

    @classmethod
    def parse(cls, specs: list[str]) -> "MountOptions":
        """Parse '-o a,b=c' arguments (each a comma-separated list)."""
        out = cls()
        known = {f.name: f for f in option_fields()}
        for spec in specs:
            for key, value in option_items(spec, option_names()):
                if key in KERNEL_FLAGS and not value:
                    out.kernel_flags = tuple(f for f in out.kernel_flags
                                             if f not in (key, KERNEL_FLAGS[key])) + (key,)
                    continue
                if key not in known:
                    raise StoreError(f"unknown mount option {key!r} (known: {', '.join(known)}, "
                                     f"and the mount flags {', '.join(KERNEL_FLAGS)})")
                try:
                    if known[key].type in (bool, "bool"):
                        setattr(out, key, value.lower() not in ("0", "no", "false") if value else True)
                    elif key == "cache_size":
                        out.cache_size = parse_size(value)
                    elif key in ("commit_interval", "lease"):
                        setattr(out, key, float(value.rstrip("s")))
                    elif key == "follow_every":
                        out.follow_every = parse_interval(value)
                    elif key in ("follow", "log"):
                        setattr(out, key, value)
                    elif key == "snapshot_every":
                        out.snapshot_every = parse_interval(value)
                    elif key == "keep":
                        out.keep = parse_policy(value)
                    elif key == "metrics":
                        out.metrics = parse_listen(value)
                    elif key == "replicate":
                        out.replicate = tuple(filter(None, value.split(",")))
                    else:
                        setattr(out, key, int(value))
                except ValueError:
                    raise StoreError(f"bad value for mount option {key}: {value!r}") from None
                except StoreError as exc:
                    raise StoreError(f"bad value for mount option {key}: {exc}") from None
        if not out.default_permissions:
            raise StoreError("default_permissions cannot be turned off: the kernel's permission "
                             "checks are the only ones")
        if not 0 <= out.compression <= 22:
            raise StoreError("compression must be a zstd level from 0 (off) to 22")
        if out.commit_interval <= 0 or out.lease <= 0:
            raise StoreError("commit_interval and lease must be positive")
        if out.follow_every <= 0:
            raise StoreError("follow_every must be positive")
        if out.copies is not None:
            if not out.replicate:
                raise StoreError("copies= goes with replicate=NAME,NAME,...")
            check_copies(out.copies, out.replicate)
        return out


@dataclass(frozen=True)
class OptionDoc:
    """One `-o` option as help and docs show it."""

    name: str
    value: str  # the VALUE in name=VALUE; empty for a flag
    default: str  # as it would be written after name=; empty when unset
    help: str

    @property
    def spec(self) -> str:
        return f"{self.name}={self.value}" if self.value else self.name


def kernel_flags_help() -> str:
    """What `-o` does with the kernel's mount flags, for help and docs."""
    return (f"Also the kernel's mount flags, as mount(8) and fstab give them: {', '.join(KERNEL_FLAGS)} "
            f"(the last of each pair wins; ro makes the mount read-only).")


def option_fields() -> list[Field]:
    """MountOptions' fields that are `-o` options (all but kernel_flags)."""
    return [f for f in fields(MountOptions) if f.name != "kernel_flags"]


def documented() -> list[OptionDoc]:
    """Every `-o` option with its help, in MountOptions' order."""
    return [OptionDoc(f.name, f.metadata.get("value", ""), _shown(f.default), f.metadata.get("help", ""))
            for f in option_fields()]


def _shown(default: Any) -> str:
    """A default as a user would write it: on/off for flags, '' for unset (None, 0, empty)."""
    if isinstance(default, bool):
        return "on" if default else "off"
    if not default:
        return ""
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def parse_listen(text: str) -> tuple[str, int]:
    """'9100' or ':9100' -> ('127.0.0.1', 9100): loopback unless a host is named ('HOST:PORT',
    '[::1]:PORT')."""
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise StoreError(f"{text!r} is not [HOST:]PORT with a port from 1 to 65535")
    return host.removeprefix("[").removesuffix("]") or "127.0.0.1", int(port)


def option_names() -> set[str]:
    """Every name -o takes: maiffs's options and the kernel's mount flags."""
    return {f.name for f in option_fields()} | set(KERNEL_FLAGS)


def option_items(spec: str, options: set[str]) -> list[tuple[str, str]]:
    """Split one '-o' argument into (key, value) pairs.

    Two options take lists with commas: in 'keep=hourly:24,daily:7' the items without '=' but
    with ':' that follow a keep item belong to its value, and in 'replicate=a,b' the items
    without '=' that follow it and are not option names are more remotes ('copies=2' after
    them has '=': an option of its own, 'replicate=a,b,c,copies=2').
    """
    items: list[tuple[str, str]] = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        last = items[-1][0] if items else None
        if "=" not in item and ((last == "keep" and ":" in item) or (
                last == "replicate" and item.replace("-", "_") not in options)):
            items[-1] = (last, f"{items[-1][1]},{item}")
            continue
        key, _, value = item.partition("=")
        items.append((key.replace("-", "_"), value))
    return items
