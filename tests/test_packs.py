"""The pack format and the catalog of a remote's indexes (pure layer, no mount)."""

from __future__ import annotations

import os

import pytest

from maiffs.errors import StoreError
from maiffs.remotes.catalog import Catalog
from maiffs.remotes.dirremote import DirRemote
from maiffs.remotes.packs import CHUNK, OBJECT, PackBuilder, read_index
from maiffs.store.chunks import prepare_chunk


def test_a_pack_lists_what_it_holds_and_where():
    builder = PackBuilder(target=100)
    blobs = [(CHUNK, os.urandom(32), os.urandom(40), 99), (OBJECT, os.urandom(32), b"tree", 0)]
    for kind, oid, data, raw_len in blobs:
        builder.add(kind, oid, data, raw_len)
    assert not builder.full
    pack_id, pack, index, entries = builder.finish()
    assert entries == read_index(pack_id, index)
    for (kind, oid, data, raw_len), entry in zip(blobs, entries):
        assert (entry.kind, entry.id, entry.raw_len, entry.pack) == (kind, oid, raw_len, pack_id)
        assert pack[entry.offset:entry.offset + entry.length] == data


def test_a_damaged_index_is_refused():
    builder = PackBuilder(target=1)
    builder.add(CHUNK, b"\1" * 32, b"x", 1)
    assert builder.full
    pack_id, _pack, index, _entries = builder.finish()
    damaged = bytearray(index)
    damaged[-3] ^= 1
    with pytest.raises(StoreError, match="damaged"):
        read_index(pack_id, bytes(damaged))


def test_the_catalog_reads_each_index_once_and_survives_a_bad_cached_copy(tmp_path):
    remote = DirRemote(str(tmp_path / "remote"), cache_dir=str(tmp_path / "cache"))
    chunk = prepare_chunk(b"some bytes" * 100, 3)
    with remote.uploader() as up:
        up.add_chunk(chunk.id, chunk.raw_len, chunk.encoded)
    assert DirRemote(str(tmp_path / "remote")).get_chunk(chunk.id) == (chunk.raw_len, chunk.encoded)
    [cached] = os.listdir(tmp_path / "cache")
    (tmp_path / "cache" / cached).write_bytes(b"garbage")
    fetched: list[str] = []

    def get(pack_id: str) -> bytes | None:
        fetched.append(pack_id)
        return (tmp_path / "remote" / "index" / pack_id).read_bytes()

    catalog = Catalog(str(tmp_path / "cache"))
    catalog.load([cached], get)
    catalog.load([cached], get)
    assert fetched == [cached] and catalog.has(CHUNK, chunk.id)
    again = Catalog(str(tmp_path / "cache"))
    again.load([cached], get)  # the repaired cached copy serves it now
    assert fetched == [cached] and again.has(CHUNK, chunk.id)
