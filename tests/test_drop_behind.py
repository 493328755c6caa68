"""A sequential reader's chunks leave the page cache of the store's file once read
(maiffs/store/dropbehind.py); the kernel keeps the bytes as the mounted file's.

- A cold sequential read of a 48 MiB file (random bytes: stored raw) with the store's file
  wholly in the page cache before: the file reads back exactly, and at least 3/4 of its size
  has left the store file's page cache afterwards (util-linux `fincore` says how much is
  there); the file reads back exactly again after a remount, from the disk.
- Small reads at scattered offsets (O_DIRECT, not a sequential reader) leave the store's
  pages where they are.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from conftest import MaiffsMount
from test_read_paths import PAGE, direct_read, random_bytes, write_synced

MiB = 1 << 20
SIZE = 48 * MiB


def resident_bytes(path: Path) -> int:
    """Bytes of path in the page cache, as fincore(1) counts them."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return int(out.strip())


def poll(measure: Callable[[], int], done: Callable[[int], bool], seconds: float = 5.0) -> int:
    """measure() until done() says so, or seconds have passed: the last measure."""
    deadline = time.monotonic() + seconds
    while not done(value := measure()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def stored_and_cached(m: MaiffsMount, seed: str) -> tuple[Path, bytes]:
    """A SIZE file written and the mount remounted (no decoded chunk in memory), with the
    store's whole file read into the page cache."""
    data = random_bytes(seed, SIZE)
    path = m.path / "big.bin"
    write_synced(path, data)
    m.remount()
    with open(m.store / "data.mdb", "rb") as f:
        while f.read(8 * MiB):
            pass
    assert resident_bytes(m.store / "data.mdb") >= SIZE
    return path, data


def test_a_sequential_read_drops_the_stores_pages_behind_it(mounted: MaiffsMount):
    path, data = stored_and_cached(mounted, "drop behind")
    before = resident_bytes(mounted.store / "data.mdb")
    with open(path, "rb") as f:
        got = hashlib.sha256()
        while block := f.read(MiB):
            got.update(block)
    assert got.digest() == hashlib.sha256(data).digest()
    # (the last pages are dropped by a decoder thread just after the last read)
    after = poll(lambda: resident_bytes(mounted.store / "data.mdb"),
                 lambda resident: before - resident >= SIZE * 3 // 4)
    assert before - after >= SIZE * 3 // 4, (before, after)

    mounted.remount()  # the mounted file's pages go with the mount: this read is the disk's
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_scattered_reads_keep_the_stores_pages(mounted: MaiffsMount):
    path, data = stored_and_cached(mounted, "scattered")
    before = resident_bytes(mounted.store / "data.mdb")
    rng = random.Random(5)
    for off in (rng.randrange(0, SIZE - PAGE) // PAGE * PAGE for _ in range(200)):
        assert direct_read(path, off) == data[off:off + PAGE], off
    assert resident_bytes(mounted.store / "data.mdb") >= before - MiB


def test_places_noted_before_the_map_grew_drop_the_right_pages(tmp_path: Path):
    """Where a chunk lies is noted as a file offset, so a drop after LMDB's map grew (and
    moved) unmaps and drops that chunk's pages in the new map; every chunk still reads back.
    Store layer, with a real LMDB."""
    from maiffs.store.chunks import ChunkStore, prepare_chunk
    from maiffs.store.env import Store

    store = Store.create(str(tmp_path / "store"))
    datas = [random_bytes(f"chunk {i}", MiB) for i in range(8)]
    prepared = [prepare_chunk(data, 0) for data in datas]  # (level 0: stored raw)
    chunks = ChunkStore()
    chunks.behind = store.drop_behind
    store.write(lambda txn: [chunks.add(txn, chunk) for chunk in prepared])
    cids = [chunk.id for chunk in prepared]
    chunks.decode_ahead(store.read_in_worker, cids)
    assert all(job.result(10) is not None for job in chunks.ahead.values())

    size = store.env.info()["map_size"]
    store.write(lambda txn: txn.put("meta", b"grown", b"y"), expected_bytes=size)
    assert store.env.info()["map_size"] > size
    store.sync()  # (dirty pages are never dropped: written back first)
    data_file = tmp_path / "store" / "data.mdb"
    with open(data_file, "rb") as f:
        while f.read(8 * MiB):
            pass
    before = resident_bytes(data_file)
    store.drop_behind.drop(cids)
    assert before - resident_bytes(data_file) >= 6 * MiB

    fresh = ChunkStore(cache_bytes=0)  # nothing cached: each chunk comes from the file again
    with store.read(buffers=True) as txn:
        assert [fresh.get(txn, cid) for cid in cids] == datas
    store.close()
