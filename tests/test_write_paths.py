"""Big writes through a mount: flushed in the background in pieces while they are written,
yet chunked exactly as one write of the whole would be, and every byte read back.

The daemon starts chunking a file's unflushed data at 8 MiB and makes the writer wait at
24 MiB (maiffs/fuse/operations.py), so a 40 MiB file goes through several background flushes,
each keeping its last chunk back for the next.
"""

import os
import random

from fsutil import store_stat

MiB = 1 << 20


def write_in_pieces(path, data: bytes, sizes: list[int]) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        view, off, i = memoryview(data), 0, 0
        while off < len(data):
            off += os.write(fd, view[off:off + sizes[i % len(sizes)]])
            i += 1
    finally:
        os.close(fd)


def test_a_file_written_in_pieces_is_chunked_as_one_write_of_it(mounted):
    rng = random.Random(7)
    data = rng.randbytes(40 * MiB + 12_345)
    write_in_pieces(mounted.path / "pieces", data, [MiB, 4096, 3 * MiB + 17, 65_536])
    after_first = store_stat(mounted.path)
    write_in_pieces(mounted.path / "whole", data, [len(data)])
    after_second = store_stat(mounted.path)
    assert after_second["logical_bytes"] == 2 * len(data)
    assert after_second["unique_bytes"] == after_first["unique_bytes"] == len(data)
    assert after_second["chunks"] == after_first["chunks"]
    mounted.remount()
    assert (mounted.path / "pieces").read_bytes() == data
    assert (mounted.path / "whole").read_bytes() == data


def test_overwrites_and_appends_past_stored_data_keep_every_byte(mounted):
    rng = random.Random(8)
    model = bytearray(rng.randbytes(20 * MiB))
    path = mounted.path / "f"
    path.write_bytes(model)  # committed at close: what follows lands on stored chunks
    with open(path, "r+b") as f:
        for off, size in [(5 * MiB + 3, MiB), (19 * MiB, 3 * MiB), (40 * MiB, 9 * MiB + 5)]:
            piece = rng.randbytes(size)
            f.seek(off)
            f.write(piece)
            if off > len(model):
                model.extend(bytes(off - len(model)))  # the hole reads as zeros
            model[off:off + size] = piece
        f.seek(0)
        assert f.read() == model  # unflushed and flushed parts together
    mounted.remount()
    assert path.read_bytes() == model
