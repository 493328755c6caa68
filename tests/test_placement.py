"""Placement (design.md §6): a store replicating to a group of remotes keeps each chunk on
`copies` of them, chosen by rendezvous hashing on the remote names; tree objects and refs go to
all, so losing any one remote loses nothing.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import blake3
import pytest

from conftest import make_mount, maiffs, mount_session
from fsutil import flip_a_byte_of_every_chunk, killed_once_arrived, store_stat, wait_for
from maiffs.errors import StoreError
from maiffs.options import MountOptions
from maiffs.remotes.config import open_remote
from maiffs.remotes.packs import CHUNK, OBJECT
from maiffs.remotes.placement import placed
from remote_spots import DirSpot, Spot

GROUP = ("a", "b", "c")


def ids(n: int) -> list[bytes]:
    return [blake3.blake3(str(i).encode()).digest() for i in range(n)]


def test_rendezvous_spreads_evenly_and_is_stable():
    shares = dict.fromkeys(GROUP, 0)
    for cid in ids(10_000):
        chosen = placed(cid, GROUP, 2)
        assert len(set(chosen)) == 2
        assert chosen == placed(cid, reversed(GROUP), 2)  # the order names come in is no matter
        for name in chosen:
            shares[name] += 1
    for name, share in shares.items():  # 2/3 of the chunks each, within 3%
        assert abs(share - 20_000 / 3) < 200, shares


def test_adding_a_remote_moves_only_what_it_takes():
    gained = 0
    for cid in ids(10_000):
        before, after = set(placed(cid, GROUP, 2)), set(placed(cid, [*GROUP, "d"], 2))
        assert after - {"d"} <= before  # no chunk moves between the remotes that were there
        gained += "d" in after
    assert abs(gained - 5_000) < 250  # d takes its fair share (2 of 4), no more


def test_copies_option_is_parsed_and_checked():
    opts = MountOptions.parse(["replicate=a,b,c,copies=2,commit_interval=1"])
    assert opts.replicate == GROUP and opts.copies == 2 and opts.commit_interval == 1
    assert MountOptions.parse(["replicate=a,b"]).copies is None
    assert MountOptions.parse(["copies=1,replicate=a"]).copies == 1
    for spec, words in [("replicate=a,b,c,copies=4", "between 1 and the number of remotes (3)"),
                        ("replicate=a,b,copies=0", "between 1 and"),
                        ("copies=2", "copies= goes with replicate="),
                        ("replicate=a,b,copies=two", "bad value for mount option copies"),
                        ("replicate=a,a,copies=1", "named twice")]:
        with pytest.raises(StoreError, match=re.escape(words)):
            MountOptions.parse([spec])


# -- through real mounts ------------------------------------------------------------------------
def fill(root: Path, tag: str) -> dict[str, bytes]:
    """Files of several chunks and many small ones; what they hold, by name."""
    files = {"big.bin": os.urandom(6 << 20), "mid.bin": os.urandom(1 << 20)}
    files.update({f"small{i}": f"{tag} {i}\n".encode() * (i + 1) for i in range(150)})
    for name, data in files.items():
        (root / name).write_bytes(data)
    return files


def blobs(url: str, kind: bytes) -> dict[bytes, int]:
    """The blobs of a kind that the remote at url holds, with how many copies of each."""
    places = open_remote(url).catalog().places
    return {key[1:]: len(entries) for key, entries in places.items() if key[:1] == kind}


def check_placement(spots: dict[str, Spot], copies: int, snapshots: list[str]) -> set[bytes]:
    """Each chunk on exactly the remotes placement names, once; every object and ref on all.
    Returns the chunk ids."""
    chunks = {name: blobs(spot.url, CHUNK) for name, spot in spots.items()}
    every = set().union(*chunks.values())
    for cid in every:
        holders = sorted(name for name in spots if cid in chunks[name])
        assert holders == sorted(placed(cid, spots, copies)), cid.hex()
        assert all(chunks[name][cid] == 1 for name in holders)  # never sent twice
    objects = [set(blobs(spot.url, OBJECT)) for spot in spots.values()]
    assert objects[0] and all(o == objects[0] for o in objects)
    for spot in spots.values():
        assert [k.rsplit("/", 1)[1] for k in spot.keys("volumes/default/refs")] == snapshots
    return every


def group_of(tmp_path: Path, store: Path, third: Spot | None = None) -> dict[str, Spot]:
    spots: dict[str, Spot] = {"a": DirSpot(tmp_path / "ra"), "b": DirSpot(tmp_path / "rb"),
                              "c": third or DirSpot(tmp_path / "rc")}
    for name, spot in spots.items():
        spot.add(store, name)
    return spots


def test_replicate_with_copies_places_each_chunk_on_two_of_three(tmp_path):
    base = tmp_path / "m"
    base.mkdir()
    m = make_mount(base, ["replicate=a,b,c,copies=2"])
    spots = group_of(tmp_path, m.store)
    m.mount()
    try:
        fill(m.path, "one")
        os.mkdir(m.path / ".snapshots" / "s1")
        wait_for(lambda: all(s.keys("volumes/default/refs") for s in spots.values()),
                 "s1 on every remote", limit=120)  # (the leases are there from the mount on)
        first = check_placement(spots, 2, ["s1"])
        assert len(first) == store_stat(m.path)["chunks"]
        replication = store_stat(m.path)["replication"]
        assert sorted(replication) == list(GROUP)
        assert all(r["pending"] == [] and r["last_error"] is None for r in replication.values())

        (m.path / "more.bin").write_bytes(os.urandom(2 << 20))
        (m.path / "small3").write_text("changed")
        os.mkdir(m.path / ".snapshots" / "s2")
        wait_for(lambda: all(len(s.keys("volumes/default/refs")) == 2 for s in spots.values()),
                 "s2 on every remote", limit=120)
        second = check_placement(spots, 2, ["s1", "s2"])  # the old chunks stayed where they were
        assert first < second
        again = maiffs("push", m.store, "a,b,c", "--copies", "2", "--json").stdout.splitlines()
        assert [json.loads(line)["chunks"] for line in again] == [0, 0, 0]
    finally:
        m.cleanup()


def test_losing_one_remote_loses_nothing(tmp_path, spot):
    base = tmp_path / "m"
    base.mkdir()
    m = make_mount(base)
    spots = group_of(tmp_path, m.store, third=spot)  # the third member: a directory, or S3
    m.mount()
    try:
        files = fill(m.path, "one")
        os.mkdir(m.path / ".snapshots" / "s")
        pushed = maiffs("push", m.store, "a,b,c", "--copies", "2").stdout
        assert pushed.count("pushed 1 snapshots") == 3
        chunks = check_placement(spots, 2, ["s"])
        m.unmount()
        survivors = {"b": spots["b"], "c": spots["c"]}
        lost = [cid for cid in chunks if "a" in placed(cid, GROUP, 2)]
        os.rename(tmp_path / "ra", tmp_path / "gone")  # remote a is lost
        flip_a_byte_of_every_chunk(m.store)
        m.mount()
        for name, data in files.items():  # healed from whichever survivor holds each chunk
            assert (m.path / name).read_bytes() == data, name
        m.unmount()  # the healed copies are written back

        flip_a_byte_of_every_chunk(m.store)  # so that repair must copy between remotes
        group = ["--remote", "a", "--remote", "b", "--remote", "c", "--copies", "2"]
        found = maiffs("verify", m.store, *group, check=False)
        assert found.returncode == 1
        assert "a: remote -: cannot be read" in found.stdout
        assert found.stdout.count("is under-replicated (1 good copies of 2) (NOT repaired)") \
            == len(lost)
        fixed = maiffs("verify", m.store, *group, "--repair", check=False)
        assert fixed.stdout.count("(repaired)") == len(lost) + len(chunks)  # remotes and local
        assert fixed.returncode == 1  # a is still gone: only the group without it is whole
        assert maiffs("verify", m.store, "--remote", "b", "--remote", "c", "--copies", "2",
                      ).stdout.strip().endswith("0 problems")
        for name, spot_ in survivors.items():
            assert set(blobs(spot_.url, CHUNK)) == chunks, name
        assert maiffs("fsck", m.store, check=False).returncode == 0
        m.mount()
        assert all((m.path / name).read_bytes() == data for name, data in files.items())
    finally:
        m.cleanup()


def test_a_group_push_killed_half_way_finishes_when_run_again(tmp_path):
    with mount_session(tmp_path) as m:
        for i in range(12):  # a's share: about 8 data packs
            (m.path / f"part{i}").write_bytes(os.urandom(16 << 20))
        os.mkdir(m.path / ".snapshots" / "s")
        spots = group_of(tmp_path, m.store)
        killed_once_arrived(["push", m.store, "a,b,c", "--copies", "2"],
                            lambda: spots["a"].keys("index/"))
        assert spots["a"].keys("volumes/") == []  # no ref before a has its whole share
        arrived = set(blobs(spots["a"].url, CHUNK))
        again = [json.loads(line) for line in
                 maiffs("push", m.store, "a,b,c", "--copies", "2", "--json").stdout.splitlines()]
        assert [r["snapshots"] for r in again] == [1, 1, 1]
        chunks = check_placement(spots, 2, ["s"])  # every chunk where it belongs, none twice
        share = {cid for cid in chunks if "a" in placed(cid, GROUP, 2)}
        assert arrived and again[0]["chunks"] == len(share - arrived)  # the rest of a's share


def test_push_to_a_group_refuses_bad_input(tmp_path):
    maiffs("mkfs", tmp_path / "s")
    for name in GROUP:
        maiffs("remote", "add", tmp_path / "s", name, tmp_path / f"r{name}")
    for args, words in [
        (("a,b,c", "--copies", "4"), "between 1 and the number of remotes (3)"),
        (("a,b,c", "--copies", "2", "--to", "d"), "is not in the group a,b,c"),
        (("a", "--to", "a"), "--to goes with --copies"),
        (("a,b,x", "--copies", "2", "--to", "x"), "no remote named 'x'"),
    ]:
        done = maiffs("push", tmp_path / "s", *args, check=False)
        assert done.returncode == 1 and words in done.stderr, (args, done.stderr)
