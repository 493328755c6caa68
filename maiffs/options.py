"""The `-o` options of `maiffs mount`, parsed and checked in one place."""

from __future__ import annotations

from dataclasses import dataclass, fields

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


@dataclass
class MountOptions:
    """Everything `-o` can set. See docs/reference.md."""

    allow_other: bool = False
    #: always on: the kernel checks permissions as on ext4 (accepted, as other FUSE
    #: filesystems take it; turning it off is refused, maiffs itself checks nothing)
    default_permissions: bool = True
    nonempty: bool = False  # mount over a directory that has files in it (they are hidden)
    commit_interval: float = 2.0
    compression: int = 3
    cache_size: int = 0  # memory for decompressed chunks (0: 64 MiB); a follower's store bound
    debug: bool = False
    snapshot_every: float = 0.0  # seconds between automatic snapshots; 0 = none
    keep: RetentionPolicy = DEFAULT_POLICY  # which automatic snapshots pruning keeps
    replicate: tuple[str, ...] = ()  # remotes every new snapshot is pushed to
    follow: str = ""  # a follower mount of this remote URL#VOLUME (set by `mount --follow`)
    follow_every: float = 5.0  # seconds between a follower's looks for a newer snapshot
    prefetch: bool = False  # a follower fetches each new snapshot's data in the background
    copies: int | None = None  # with replicate=: each chunk on this many of them (placement.py)
    lease: float = DEFAULT_TTL  # seconds a replicate= remote's volume lease lives unrenewed
    log: str = ""  # FILE, syslog or syslog:SOCKET; default STORE/maiffs.log (stderr with -f)
    kernel_flags: tuple[str, ...] = ()  # the KERNEL_FLAGS given, the last of each pair kept

    @property
    def memory_cache(self) -> int:
        """Bytes of decompressed chunks kept in memory (cache_size bounds a follower's store)."""
        return DEFAULT_MEMORY_CACHE if self.follow or not self.cache_size else self.cache_size

    @classmethod
    def parse(cls, specs: list[str]) -> "MountOptions":
        """Parse '-o a,b=c' arguments (each a comma-separated list)."""
        out = cls()
        known = {f.name: f for f in fields(cls) if f.name != "kernel_flags"}
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


def option_names() -> set[str]:
    """Every name -o takes: maiffs's options and the kernel's mount flags."""
    return {f.name for f in fields(MountOptions) if f.name != "kernel_flags"} | set(KERNEL_FLAGS)


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
