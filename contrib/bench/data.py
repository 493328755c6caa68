"""The data written by the benchmark, generated in memory before any timing starts.

Every repetition must write *different* bytes: maiffs deduplicates, so writing the same data
again would only hash it and store nothing, and the second and third runs would measure
something else than the first. Each dataset therefore makes any number of variants that
share no chunk with one another (nor with the other datasets), cheaply enough that the
source is never the bottleneck.
"""

from __future__ import annotations

import datetime as dt
import random
import zlib
from dataclasses import dataclass, field

import blake3

#: A generated log tile is this big at most; bigger files are made of re-dated tiles.
TILE_BYTES = 64 << 20


@dataclass
class RandomData:
    """Incompressible bytes: the BLAKE3 XOF (~1 GB/s, fast enough to make a GiB per run)."""

    name: str
    size: int

    def make(self, variant: int) -> bytes:
        return blake3.blake3(f"maiffs-bench {self.name} {variant}".encode()).digest(length=self.size)


def _weighted(items: list[str], weights: list[int], size: int = 256) -> list[str]:
    """A pool of exactly `size` strings in which each item appears in proportion to its weight."""
    total = sum(weights)
    pool = [item for item, w in zip(items, weights) for _ in range(round(w * size / total))]
    return (pool + items[:1] * size)[:size]


def _format(size: int, fmt: str) -> list[str]:
    return [fmt.format(i) for i in range(size)]


# Pools of 256 or 65536 pre-formatted values, so a column of random values is one randbytes()
# call and a C-level map (≈50 MiB/s in all instead of ≈15 MiB/s with per-line f-strings).
_LEVEL_SERVICE = _weighted(
    [f"{level} {svc}" for level in ("INFO", "DEBUG", "WARN", "ERROR")
     for svc in ("api-gateway", "auth", "billing", "search", "worker", "scheduler", "cache", "db-proxy")],
    [w for w in (70, 20, 7, 3) for _ in range(8)])
_REQUEST = _weighted(
    [f"{method} {path}" for method in ("GET", "POST", "PUT", "DELETE")
     for path in ("/v1/users", "/v1/orders", "/v1/items", "/healthz", "/v2/search", "/v1/login",
                  "/static/app.js", "/v1/cart")],
    [w for w in (60, 30, 6, 4) for _ in range(8)])
_STATUS = _weighted(["200", "201", "204", "301", "304", "400", "401", "403", "404", "500", "502", "503"],
                    [80, 3, 2, 1, 3, 2, 1, 1, 4, 1, 1, 1])
_MICROS = [f"{i * 15:06d}" for i in range(1 << 16)]
_NUMBER = _format(1 << 16, "{}")
_HEX = _format(1 << 16, "{:04x}")
_MILLIS = [f"{i / 200:.2f}" for i in range(1 << 16)]
_ADDRESS = [f"{i >> 8}.{i & 255}.{(i * 7) & 255}" for i in range(1 << 16)]
_CLOCK = [f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)]
_DATE = "2000-01-01T"  # placeholder, replaced per tile so that no two tiles share a line
_LINE = (_DATE + "%s.%sZ %s[%s] req=%s%s %s/%s status=%s bytes=%s dur=%sms client=10.%s\n")
#: The same fields as a CSV record (the versioned dataset's files).
CSV_LINE = _DATE + "%s.%s,%s,%s,%s%s,%s/%s,%s,%s,%s,10.%s\n"
_LINES_PER_SECOND = 120


def _column(rnd: random.Random, pool: list[str], n: int) -> list[str]:
    code, width = ("B", 1) if len(pool) == 256 else ("H", 2)
    return list(map(pool.__getitem__, memoryview(rnd.randbytes(n * width)).cast(code).tolist()))


def _log_block(rnd: random.Random, n: int, first_second: int, line: str) -> bytes:
    clock = [_CLOCK[(first_second + i // _LINES_PER_SECOND) % len(_CLOCK)] for i in range(n)]
    columns = (clock, _column(rnd, _MICROS, n), _column(rnd, _LEVEL_SERVICE, n), _column(rnd, _NUMBER, n),
               _column(rnd, _HEX, n), _column(rnd, _HEX, n), _column(rnd, _REQUEST, n),
               _column(rnd, _NUMBER, n), _column(rnd, _STATUS, n), _column(rnd, _NUMBER, n),
               _column(rnd, _MILLIS, n), _column(rnd, _ADDRESS, n))
    return "".join(map(line.__mod__, zip(*columns))).encode()


def generate_log_tile(size: int, seed: int, line: str = _LINE) -> bytes:
    """`size` bytes of web-service log lines (zstd -3 compresses them about 3.5:1), or of the
    same records in another `line` format such as CSV_LINE."""
    rnd = random.Random(seed)
    blocks, total, second, per_block = [], 0, 0, 20_000
    while total < size:
        block = _log_block(rnd, per_block, second, line)
        second += per_block // _LINES_PER_SECOND
        blocks.append(block)
        total += len(block)
    return b"".join(blocks)[:size]


@dataclass
class LogText:
    """Compressible log text: one generated tile, repeated with a different date in every line.

    Generating a GiB of log lines in Python takes far longer than writing it, so a tile of at
    most TILE_BYTES is generated once and every (variant, tile) pair gets its own date. Every
    chunk then differs (nothing deduplicates, within a file or between variants), and a
    compressor sees the same statistics as in an endless log because zstd's window and maiffs's
    chunks are far smaller than a tile.
    """

    name: str
    size: int
    _tile: bytes = field(default=b"", repr=False)

    def make(self, variant: int) -> bytes:
        if not self._tile:
            self._tile = generate_log_tile(min(self.size, TILE_BYTES), seed=zlib.crc32(self.name.encode()))
        tiles = -(-self.size // len(self._tile))
        first_day = dt.date(2001, 1, 1) + dt.timedelta(days=variant * tiles)
        dates = [(first_day + dt.timedelta(days=k)).strftime("%Y-%m-%dT").encode() for k in range(tiles)]
        parts = [self._tile.replace(_DATE.encode(), date) for date in dates]
        return b"".join(parts)[:self.size]


def small_file_contents(variant: int, count: int, size: int) -> list[bytes]:
    """`count` distinct files of `size` random bytes (distinct, so maiffs cannot share them)."""
    blob = RandomData("small-files", count * size).make(variant)
    return [blob[i * size:(i + 1) * size] for i in range(count)]
