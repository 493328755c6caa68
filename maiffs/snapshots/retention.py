"""Which automatic snapshots to keep: intervals, retention policies and auto snapshot names.

Pure functions only (no store, no clock): the time of an automatic snapshot is read from its
name, so the daemon decides *when* to snapshot and prune, and this module decides *what* to prune,
which tests can check with made-up names. The keep rules work like restic's `forget --keep-*`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from maiffs.errors import StoreError

_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_INTERVAL = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([smhdw]?)")


def parse_interval(text: str) -> float:
    """'15m' -> 900.0 seconds; units s, m, h, d, w; a bare number is seconds.

    Only plain decimal numbers are accepted (no 'inf', 'nan', '1e3') so that a typo cannot
    become a surprising interval; it must be positive because 0 would snapshot in a busy loop.
    """
    match = _INTERVAL.fullmatch(text.strip())
    seconds = float(match[1]) * _UNIT_SECONDS[match[2] or "s"] if match else 0.0
    if seconds <= 0:
        raise StoreError(f"bad interval {text!r}: expected a positive number with an optional "
                         "unit s, m, h, d or w (e.g. 15m)")
    return seconds


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


#: Period key of each bucket: two snapshots with the same key are in the same period.
#: `last` has no period (every snapshot is its own), so it keeps the newest N outright.
_PERIOD: dict[str, Callable[[datetime], object]] = {
    "last": lambda t: t,
    "minutely": lambda t: t.strftime("%Y-%m-%dT%H:%M"),
    "hourly": lambda t: t.strftime("%Y-%m-%dT%H"),
    "daily": lambda t: t.strftime("%Y-%m-%d"),
    "weekly": lambda t: t.isocalendar()[:2],  # ISO year and week: a week spanning New Year is one
    "monthly": lambda t: t.strftime("%Y-%m"),
    "yearly": lambda t: t.year,
}

BUCKETS: tuple[str, ...] = tuple(_PERIOD)


@dataclass(frozen=True)
class RetentionPolicy:
    """Keep rules as (bucket, count) pairs, e.g. (("hourly", 24), ("daily", 7)).

    Frozen (hence hashable) so that one instance can serve as a shared default value.
    """

    rules: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for bucket, count in self.rules:
            if bucket not in _PERIOD:
                raise StoreError(f"unknown retention bucket {bucket!r} "
                                 f"(known: {', '.join(BUCKETS)})")
            if bucket in seen:
                raise StoreError(f"retention bucket {bucket!r} given twice")
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise StoreError(f"retention count for {bucket!r} must be a positive integer, "
                                 f"not {count!r}")
            seen.add(bucket)

    def __str__(self) -> str:
        """The same 'bucket:N,...' text that parse_policy reads, for logs and messages."""
        return ",".join(f"{bucket}:{count}" for bucket, count in self.rules)


def parse_policy(text: str) -> RetentionPolicy:
    """'hourly:24,daily:7,weekly:4' -> RetentionPolicy; errors name the bad rule."""
    rules: list[tuple[str, int]] = []
    if not text.strip():
        raise StoreError(f"empty retention policy (expected e.g. hourly:24,daily:7; buckets: "
                         f"{', '.join(BUCKETS)})")
    for part in text.split(","):
        bucket, colon, count = (s.strip() for s in part.partition(":"))
        bucket = bucket.lower()
        if not colon:
            raise StoreError(f"bad retention rule {part.strip()!r}: expected BUCKET:COUNT, "
                             "e.g. daily:7")
        if bucket not in _PERIOD:
            raise StoreError(f"unknown retention bucket {bucket!r} in {part.strip()!r} "
                             f"(known: {', '.join(BUCKETS)})")
        if any(bucket == b for b, _ in rules):
            raise StoreError(f"retention bucket {bucket!r} given twice in {text.strip()!r}")
        if not re.fullmatch(r"[0-9]+", count) or int(count) < 1:
            raise StoreError(f"bad count in retention rule {part.strip()!r}: expected a positive "
                             "integer")
        rules.append((bucket, int(count)))
    return RetentionPolicy(tuple(rules))


DEFAULT_POLICY = parse_policy("hourly:24,daily:7,weekly:4,monthly:12")

_AUTO_PREFIX = "auto-"
_AUTO_FORMAT = "%Y%m%dT%H%M%SZ"
_AUTO_NAME = re.compile(r"auto-[0-9]{8}T[0-9]{6}Z")


def auto_name(epoch_seconds: float) -> str:
    """'auto-20261129T120000Z' for that UTC second: names then sort by time as plain strings.

    Fractions of a second are dropped, so two snapshots in the same second share a name.
    """
    return _AUTO_PREFIX + _utc(int(epoch_seconds // 1)).strftime(_AUTO_FORMAT)


def auto_time(name: str) -> float | None:
    """The epoch time in an auto snapshot name, or None for any other (manual) name.

    Only names auto_name could have produced count, so a user's snapshot that merely looks
    similar (another format, an invalid date) is never treated as automatic and never pruned.
    """
    if not _AUTO_NAME.fullmatch(name):
        return None
    try:
        when = datetime.strptime(name.removeprefix(_AUTO_PREFIX), _AUTO_FORMAT)
    except ValueError:
        return None
    epoch = when.replace(tzinfo=timezone.utc).timestamp()
    return epoch if auto_name(epoch) == name else None


def to_prune(names: Iterable[str], policy: RetentionPolicy) -> list[str]:
    """The auto snapshots `policy` drops, oldest first; manual snapshots are never listed.

    Like restic's forget: each rule walks the snapshots newest first and keeps one whenever its
    period differs from the last one that rule kept, until it has kept its count. What any rule
    keeps stays, and so does the newest snapshot, so pruning never leaves no recent snapshot.
    """
    autos = sorted({(t, n) for n in names if (t := auto_time(n)) is not None}, reverse=True)
    keep = {autos[0][1]} if autos else set()
    for bucket, count in policy.rules:
        period = _PERIOD[bucket]
        last: object = None
        left = count
        for when, name in autos:
            if left == 0:
                break
            key = period(_utc(when))
            if key != last:
                keep.add(name)
                last = key
                left -= 1
    return [name for _, name in reversed(autos) if name not in keep]
