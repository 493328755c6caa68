"""Retention of automatic snapshots, checked with a fake clock: names are built from chosen times."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest

from maiffs.errors import StoreError
from maiffs.options import MountOptions
from maiffs.snapshots.retention import (
    DEFAULT_POLICY,
    RetentionPolicy,
    auto_name,
    auto_time,
    parse_interval,
    parse_policy,
    to_prune,
)

HOUR = 3600
DAY = 24 * HOUR


def at(*args: int) -> float:
    """Epoch seconds of a UTC date and time."""
    return datetime(*args, tzinfo=timezone.utc).timestamp()


def names(start: float, step: float, count: int) -> list[str]:
    """Auto snapshot names at start, start+step, ... oldest first."""
    return [auto_name(start + i * step) for i in range(count)]


def kept(all_names: list[str], policy: RetentionPolicy) -> list[str]:
    dropped = set(to_prune(all_names, policy))
    return [n for n in all_names if n not in dropped]


# --- auto names --------------------------------------------------------------------------------


def test_auto_name_is_utc_and_round_trips():
    t = at(2026, 11, 29, 12, 0, 0)
    assert auto_name(t) == "auto-20261129T120000Z"
    assert auto_time("auto-20261129T120000Z") == t
    assert auto_name(t + 0.999) == "auto-20261129T120000Z"  # fractions of a second are dropped
    assert auto_name(at(1999, 1, 2, 3, 4, 5)) == "auto-19990102T030405Z"


def test_auto_names_sort_by_time_as_strings():
    rng = random.Random(7)
    times = [rng.uniform(at(1990, 1, 1), at(2090, 1, 1)) for _ in range(200)]
    by_time = [auto_name(t) for t in sorted(times)]
    assert sorted(by_time) == by_time
    assert [auto_time(n) for n in by_time] == [float(int(t)) for t in sorted(times)]


@pytest.mark.parametrize("name", [
    "before-upgrade",
    "auto-20261129T120000",       # no Z
    "auto-20261129T1200Z",        # too short
    "auto-20261129T120000Z.bak",
    " auto-20261129T120000Z",
    "Auto-20261129T120000Z",
    "auto_20261129T120000Z",
    "auto-20261329T120000Z",      # month 13
    "auto-20260230T120000Z",      # February 30
    "auto-20261129T240000Z",      # hour 24
    "auto-20261129T235960Z",      # leap second
    "auto-２０２６1129T120000Z",  # non-ASCII digits
    "",
])
def test_auto_time_is_none_for_manual_names(name):
    assert auto_time(name) is None


# --- to_prune ----------------------------------------------------------------------------------


def test_hourly_24_over_48_hours_keeps_exactly_the_newest_24():
    snaps = names(at(2026, 11, 1), HOUR, 48)
    dropped = to_prune(snaps, parse_policy("hourly:24"))
    assert dropped == snaps[:24]


def test_hourly_keeps_the_newest_snapshot_of_each_hour():
    snaps = names(at(2026, 11, 1), 15 * 60, 4 * 10)  # every 15 minutes for 10 hours
    assert kept(snaps, parse_policy("hourly:3")) == [
        "auto-20261101T074500Z", "auto-20261101T084500Z", "auto-20261101T094500Z"]


def test_daily_7_over_30_days_keeps_the_newest_of_each_of_the_newest_7_days():
    snaps = names(at(2026, 10, 1), 6 * HOUR, 30 * 4)  # 00:00, 06:00, 12:00, 18:00 each day
    result = kept(snaps, parse_policy("daily:7"))
    assert result == [auto_name(at(2026, 10, day, 18)) for day in range(24, 31)]
    assert to_prune(snaps, parse_policy("daily:7")) == [n for n in snaps if n not in result]


def test_combined_rules_keep_the_union():
    snaps = names(at(2026, 10, 1), 6 * HOUR, 5 * 4)  # 1-5 October, every 6 hours
    result = kept(snaps, parse_policy("hourly:3,daily:3"))
    hourly = [at(2026, 10, 5, 6), at(2026, 10, 5, 12), at(2026, 10, 5, 18)]
    daily = [at(2026, 10, 3, 18), at(2026, 10, 4, 18), at(2026, 10, 5, 18)]
    assert result == [auto_name(t) for t in sorted(set(hourly) | set(daily))]
    assert len(result) == 5


def test_rule_order_does_not_matter():
    snaps = names(at(2026, 1, 1), 5 * HOUR, 400)
    a = to_prune(snaps, parse_policy("hourly:10,daily:5,weekly:3,monthly:2"))
    b = to_prune(snaps, parse_policy("monthly:2,weekly:3,daily:5,hourly:10"))
    assert a == b and a  # and something is dropped at all


def test_manual_snapshots_are_never_pruned():
    autos = names(at(2026, 11, 1), HOUR, 10)
    manual = ["before-upgrade", "auto-yesterday", "auto-20261101T000000", "2026-11-01"]
    dropped = to_prune(manual + autos, parse_policy("last:1"))
    assert dropped == autos[:-1]
    assert not set(dropped) & set(manual)
    assert to_prune(manual, parse_policy("last:1")) == []


def test_last_keeps_the_newest_n_whatever_their_time():
    snaps = names(at(2026, 11, 1, 12), 1, 10)  # ten snapshots in the same minute
    assert kept(snaps, parse_policy("last:3")) == snaps[-3:]
    # a period bucket, by contrast, keeps one per period: here one for the whole minute
    assert kept(snaps, parse_policy("minutely:3")) == snaps[-1:]


def test_newest_is_always_kept():
    snaps = names(at(2026, 11, 1), HOUR, 5)
    assert to_prune(snaps, RetentionPolicy(())) == snaps[:-1]
    assert to_prune(snaps[:1], RetentionPolicy(())) == []
    for policy in ("last:1", "yearly:1", "minutely:1"):
        assert snaps[-1] not in to_prune(snaps, parse_policy(policy))


def test_weekly_uses_iso_weeks():
    # ISO week 2026-W53 runs from Monday 28 December 2026 to Sunday 3 January 2027.
    snaps = names(at(2026, 12, 14, 12), DAY, 28)  # noon daily, 14 Dec 2026 .. 10 Jan 2027
    assert kept(snaps, parse_policy("weekly:3")) == [
        auto_name(at(2026, 12, 27, 12)),  # Sunday of W52
        auto_name(at(2027, 1, 3, 12)),    # Sunday of W53: the new year did not start a new week
        auto_name(at(2027, 1, 10, 12)),   # Sunday of 2027-W01
    ]


def test_weekly_starts_on_monday():
    sunday, monday = at(2026, 11, 29, 23, 59, 59), at(2026, 11, 30, 0, 0, 0)
    snaps = [auto_name(sunday), auto_name(monday)]
    assert to_prune(snaps, parse_policy("weekly:2")) == []
    assert to_prune(snaps, parse_policy("weekly:1")) == [auto_name(sunday)]


@pytest.mark.parametrize("policy, start, step, count, expect", [
    ("minutely:2", at(2026, 5, 1, 10, 0), 20, 9, [at(2026, 5, 1, 10, 1, 40), at(2026, 5, 1, 10, 2, 40)]),
    ("monthly:2", at(2026, 1, 15), DAY, 60, [at(2026, 2, 28), at(2026, 3, 15)]),
    ("yearly:2", at(2024, 6, 1), 100 * DAY, 12, [at(2026, 11, 18), at(2027, 6, 6)]),
])
def test_period_buckets(policy, start, step, count, expect):
    assert kept(names(start, step, count), parse_policy(policy)) == [auto_name(t) for t in expect]


def test_result_is_oldest_first_without_duplicates_whatever_the_input_order():
    snaps = names(at(2026, 11, 1), HOUR, 30)
    shuffled = snaps * 2
    random.Random(3).shuffle(shuffled)
    assert to_prune(shuffled, parse_policy("hourly:10")) == snaps[:20]
    assert to_prune(iter(shuffled), parse_policy("hourly:10")) == snaps[:20]  # any iterable
    assert to_prune([], parse_policy("hourly:10")) == []


def test_default_policy():
    assert DEFAULT_POLICY.rules == (("hourly", 24), ("daily", 7), ("weekly", 4), ("monthly", 12))
    snaps = names(at(2025, 1, 1), HOUR, 2 * 366 * 24)  # two years of hourly snapshots
    assert snaps[-1] == "auto-20270102T230000Z"  # a Saturday in ISO week 2026-W53
    result = kept(snaps, DEFAULT_POLICY)
    hourly = snaps[-24:]  # all of 2 January 2027
    daily = [auto_name(at(2026, 12, d, 23)) for d in range(27, 32)] + [auto_name(at(2027, 1, 1, 23))]
    weekly = [auto_name(at(2026, 12, d, 23)) for d in (13, 20)]  # Sundays; the 27th is in daily
    monthly = [auto_name(at(2026, m + 1, 1, 23) - DAY) for m in range(2, 12)]  # 28 Feb .. 30 Nov
    assert result == sorted(hourly + daily + weekly + monthly)
    assert len(result) == 24 + 6 + 2 + 10  # rules overlap: the newest counts for every rule


# --- parsing -----------------------------------------------------------------------------------


def test_parse_policy():
    policy = parse_policy("hourly:24, daily:7,weekly:4")
    assert policy.rules == (("hourly", 24), ("daily", 7), ("weekly", 4))
    assert str(policy) == "hourly:24,daily:7,weekly:4"
    assert parse_policy(str(DEFAULT_POLICY)) == DEFAULT_POLICY
    assert parse_policy("last:1").rules == (("last", 1),)


@pytest.mark.parametrize("text, part", [
    ("", "empty"),
    ("hourli:24", "hourli"),
    ("hourly:24,fortnightly:2", "fortnightly"),
    ("hourly:24,daily:7,hourly:3", "hourly"),
    ("hourly:0", "hourly:0"),
    ("hourly:-1", "hourly:-1"),
    ("hourly:x", "hourly:x"),
    ("hourly:1.5", "hourly:1.5"),
    ("hourly:", "hourly:"),
    ("hourly", "hourly"),
    ("hourly:24,", "''"),
])
def test_parse_policy_errors_name_the_bad_part(text, part):
    with pytest.raises(StoreError) as err:
        parse_policy(text)
    message = str(err.value)
    assert part in message
    assert "\n" not in message


def test_duplicate_bucket_says_so():
    with pytest.raises(StoreError, match="twice"):
        parse_policy("daily:7,daily:3")


@pytest.mark.parametrize("rules", [
    (("hourli", 1),), (("hourly", 0),), (("hourly", 1), ("hourly", 2)), (("hourly", True),),
])
def test_policy_checks_its_rules_when_built_directly(rules):
    with pytest.raises(StoreError):
        RetentionPolicy(rules)


@pytest.mark.parametrize("text, seconds", [
    ("15m", 900.0), ("30", 30.0), ("30s", 30.0), ("2h", 7200.0), ("1d", 86400.0),
    ("1w", 604800.0), ("1.5h", 5400.0), (" 10s ", 10.0), ("0.5", 0.5),
])
def test_parse_interval(text, seconds):
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", [
    "", "0", "0m", "-5m", "15x", "m", "inf", "nan", "1e3", "15mm", "15 minutes", "15M", "1,5h",
])
def test_parse_interval_errors(text):
    with pytest.raises(StoreError) as err:
        parse_interval(text)
    assert repr(text) in str(err.value)
    assert "\n" not in str(err.value)


# --- mount options -----------------------------------------------------------------------------


def test_mount_options_snapshot_every_and_keep():
    opts = MountOptions.parse(["snapshot_every=15m,keep=hourly:24,daily:7"])
    assert opts.snapshot_every == 900.0
    assert opts.keep == RetentionPolicy((("hourly", 24), ("daily", 7)))


def test_mount_options_defaults_are_off_and_default_policy():
    opts = MountOptions.parse([])
    assert opts.snapshot_every == 0.0
    assert opts.keep == DEFAULT_POLICY


def test_keep_rules_end_at_the_next_option():
    opts = MountOptions.parse(["keep=hourly:24,daily:7,debug,compression=5,snapshot-every=1h"])
    assert opts.keep.rules == (("hourly", 24), ("daily", 7))
    assert opts.debug is True
    assert opts.compression == 5
    assert opts.snapshot_every == 3600.0


def test_keep_without_snapshot_every_is_allowed():
    opts = MountOptions.parse(["keep=last:3"])
    assert opts.keep.rules == (("last", 3),)
    assert opts.snapshot_every == 0.0


def test_other_mount_options_still_parse():
    opts = MountOptions.parse(["allow_other,commit_interval=0.5s", "cache_size=1M"])
    assert (opts.allow_other, opts.commit_interval, opts.cache_size) == (True, 0.5, 1 << 20)


@pytest.mark.parametrize("specs, words", [
    (["snapshot_every=15m,keep=hourly:24,dayly:7"], ["keep", "dayly"]),
    (["keep=hourly:24,hourly:3"], ["keep", "twice"]),
    (["keep="], ["keep", "empty"]),
    (["snapshot_every=soon"], ["snapshot_every", "soon"]),
    (["snapshot_every=0"], ["snapshot_every"]),
    (["daily:7"], ["unknown mount option"]),                 # a rule without keep= before it
    (["keep=hourly:24", "daily:7"], ["unknown mount option"]),  # rules do not span -o arguments
    (["keep=hourly:24,debug,daily:7"], ["unknown mount option"]),
])
def test_bad_snapshot_mount_options(specs, words):
    with pytest.raises(StoreError) as err:
        MountOptions.parse(specs)
    message = str(err.value)
    assert all(w in message for w in words), message
    assert "\n" not in message
