"""The two fast read paths return only verified bytes (maiffs/store/blocks.py, namespace/readahead.py).

- Small reads at random offsets (O_DIRECT, so each one reaches the daemon) return the file's
  bytes, both the first read of a chunk (decoded whole) and later ones (checked block by block).
- A byte flipped in LMDB's file while mounted, after its chunk was read at random: a small read
  of its block fails with EIO, a read of another block of that chunk still returns good bytes,
  and the log names the file.
- A sequential read decodes ahead on worker threads: the whole file still comes back exactly,
  and a damaged chunk in its middle is EIO for that read, not wrong data.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import random
import subprocess
from pathlib import Path

import pytest

from conftest import MaiffsMount, mount_session
from fsutil import log_problems
from maiffs.daemon import READ_AHEAD_KB

MiB = 1 << 20
PAGE = 4096


def random_bytes(seed: str, n: int) -> bytes:
    return hashlib.shake_256(seed.encode()).digest(n)


def direct_read(path: Path, off: int, size: int = PAGE) -> bytes:
    """Read with O_DIRECT: the kernel's page cache is not asked, the daemon is."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, size)  # page-aligned, as O_DIRECT wants
        got = os.preadv(fd, [buf], off)
        return bytes(buf[:got])
    finally:
        os.close(fd)


def write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        os.fsync(f.fileno())


def flip_in_store(m: MaiffsMount, needle: bytes) -> None:
    """Flip a byte of the store's LMDB file where needle (raw file bytes) is stored, through the
    page cache the daemon's map shares, as bit rot found on a later read would look."""
    data_file = m.store / "data.mdb"
    with open(data_file, "r+b") as f, mmap.mmap(f.fileno(), 0) as whole:
        at = whole.find(needle)
        assert at >= 0, "the needle is not in the store: is the chunk compressed?"
        assert whole.find(needle, at + 1) < 0
        whole[at] ^= 0xFF


def test_small_random_reads_return_the_files_bytes(mounted: MaiffsMount):
    data = random_bytes("random reads", 6 * MiB)
    path = mounted.path / "big.bin"
    write_synced(path, data)
    rng = random.Random(7)
    offsets = [rng.randrange(0, len(data) - PAGE) // PAGE * PAGE for _ in range(300)]
    offsets += [len(data) - PAGE, 0]
    for off in offsets:
        assert direct_read(path, off) == data[off:off + PAGE], off
    odd = [rng.randrange(0, len(data) - 20_000) for _ in range(50)]  # unaligned, across blocks
    with open(path, "rb", buffering=0) as f:
        for off in odd:
            assert os.pread(f.fileno(), 20_000, off) == data[off:off + 20_000], off


@pytest.fixture
def uncached(tmp_path: Path):
    """A mount whose memory cache of decoded chunks holds none of these (smaller than any),
    so every read goes to the store."""
    with mount_session(tmp_path, ["cache_size=64k"]) as m:
        yield m


def test_flipped_byte_after_random_reads_is_eio_for_its_block_only(uncached: MaiffsMount):
    mounted = uncached
    data = random_bytes("flip", 3 * MiB)
    path = mounted.path / "victim.bin"
    write_synced(path, data)
    target = 1 * MiB + 100 * PAGE  # inside some chunk; its block hashes are learnt below
    far = target + 10 * PAGE  # another 16 KiB block of the same chunk (chunks are >= 256 KiB)
    assert direct_read(path, target) == data[target:target + PAGE]
    assert direct_read(path, far) == data[far:far + PAGE]
    flip_in_store(mounted, data[target:target + 64])
    with pytest.raises(OSError) as caught:
        direct_read(path, target)
    assert caught.value.errno == errno.EIO
    assert direct_read(path, 0) == data[:PAGE]  # elsewhere: the next read does not continue one
    assert direct_read(path, far) == data[far:far + PAGE]
    problems = "\n".join(log_problems(mounted))
    assert "victim.bin" in problems, problems


def test_sequential_read_decoded_ahead_is_exact_and_stops_at_damage(mounted: MaiffsMount):
    data = random_bytes("sequential", 24 * MiB)
    path = mounted.path / "seq.bin"
    write_synced(path, data)
    mounted.remount()  # an empty chunk cache: every chunk comes through the decoders
    subprocess.run(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"], check=True)
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()

    mounted.remount()
    subprocess.run(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"], check=True)
    damaged_at = 16 * MiB
    flip_in_store(mounted, data[damaged_at:damaged_at + 64])
    got = bytearray()
    with open(path, "rb", buffering=0) as f:
        with pytest.raises(OSError) as caught:
            while block := f.read(128 << 10):
                got += block
    assert caught.value.errno == errno.EIO
    assert len(got) <= damaged_at and bytes(got) == data[:len(got)]
    assert len(got) >= 8 * MiB  # the chunks before the damaged one were read


@pytest.mark.parametrize("buffers", [False, True])
def test_iter_extents_finds_exactly_the_overlapping_extents(tmp_path: Path, buffers: bool):
    """iter_extents against brute force, at the edges of the table (the first and last
    records, holes, neighbouring inodes) and with memoryview keys (a buffers txn)."""
    from maiffs.namespace.filedata import iter_extents
    from maiffs.namespace.records import encode_extent, extent_key
    from maiffs.store.env import Store

    store = Store.create(str(tmp_path / "store"))
    layout = {1: [(2, 8), (10, 5), (30, 10)], 2: [(5, 5)], 3: [(0, 4), (100, 1)]}
    store.write(lambda txn: [txn.put("extents", extent_key(ino, off), encode_extent(bytes([ino, off]) * 16, n))
                             for ino, extents in layout.items() for off, n in extents])
    with store.read(buffers=buffers) as txn:
        for ino, extents in layout.items():
            for start in range(0, 110, 3):
                for end in (start + 1, start + 7, start + 40):
                    want = [(off, bytes([ino, off]) * 16, n) for off, n in extents
                            if off < end and off + n > start]
                    assert list(iter_extents(txn, ino, start, end)) == want, (ino, start, end)
        assert list(iter_extents(txn, 4, 0, 1 << 40)) == []


def test_map_growth_waits_for_the_readers_of_worker_threads(tmp_path: Path):
    """Growing LMDB's map remaps the file under every reader of the process (LMDB allows it
    only with no transaction open), so it waits for the decoders' reads: their views would
    point into the old mapping. Store layer, with a real LMDB."""
    import threading

    from maiffs.store.env import Store

    store = Store.create(str(tmp_path / "store"))
    store.write(lambda txn: txn.put("meta", b"probe", b"x" * 100))
    entered, release, grown = threading.Event(), threading.Event(), threading.Event()
    seen = []

    def reader() -> None:
        with store.read_in_worker(buffers=True) as txn:
            entered.set()
            release.wait(10)
            seen.append(bytes(txn.get("meta", b"probe")))

    def grower() -> None:
        size = store.env.info()["map_size"]
        store.write(lambda txn: txn.put("meta", b"grown", b"y"), expected_bytes=size)
        grown.set()

    threads = [threading.Thread(target=reader)]
    threads[0].start()
    assert entered.wait(10)
    size_before = store.env.info()["map_size"]
    threads.append(threading.Thread(target=grower))
    threads[1].start()
    assert not grown.wait(0.3), "the map grew under an open reader"
    release.set()
    assert grown.wait(10)
    for thread in threads:
        thread.join(10)
    assert seen == [b"x" * 100]
    assert store.env.info()["map_size"] > size_before
    with store.read_in_worker() as txn:  # readers go on after the growth
        assert txn.get("meta", b"grown") == b"y"


def test_decoding_ahead_stops_before_the_store_closes(tmp_path: Path):
    """At unmount the decoders are stopped first: queued decodes are dropped, running ones end,
    so no decoder's read transaction outlives the store. Store layer, with a real LMDB."""
    import threading

    from maiffs.store.chunks import DECODERS, ChunkStore, prepare_chunk
    from maiffs.store.env import Store

    store = Store.create(str(tmp_path / "store"))
    chunks = ChunkStore(cache_bytes=64 * MiB)
    prepared = [prepare_chunk(random_bytes(f"c{i}", MiB), 3) for i in range(20)]
    store.write(lambda txn: [chunks.add(txn, p) for p in prepared])

    def map_growth(growing: bool) -> None:  # while the map grows, decoders wait to start
        with store._map_guard:
            store._growing = growing
            store._map_guard.notify_all()

    map_growth(True)
    chunks.decode_ahead(store.read_in_worker, [p.id for p in prepared])
    jobs = list(chunks.ahead.values())
    threading.Timer(0.5, map_growth, args=(False,)).start()
    chunks.stop_decoding()  # returns once the running decodes have ended
    assert all(job.done() for job in jobs) and chunks.ahead == {}
    decoded = [p.id for p, job in zip(prepared, jobs) if not job.cancelled()]
    assert len(decoded) == DECODERS  # the ones running; the queued ones were dropped
    assert all(chunks.cache.holds(cid) for cid in decoded)
    store.close()


def test_the_mount_reads_ahead_a_mebibyte(mounted):
    """The kernel's read-ahead for the mount is widened from FUSE's 128 KiB once INIT is
    answered (the kernel sets it there), so a sequential reader keeps the daemon busy."""
    dev = os.stat(mounted.path).st_dev
    bdi = Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")
    assert int(bdi.read_text()) == READ_AHEAD_KB == 1024
    data = os.urandom(3 << 20)
    (mounted.path / "f").write_bytes(data)
    mounted.remount()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    assert (mounted.path / "f").read_bytes() == data
