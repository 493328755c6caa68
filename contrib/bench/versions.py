"""A versioned dataset: ten versions of ~200 MiB of CSV record files, each 1% changed.

design.md §7 (issue 7) asks for the bytes stored for "ten versions of a 200 MiB dataset with 1%
changes each, next to tar | zstd -3 of the same data", where maiffs must be at least 5× smaller:
a user who keeps each version as a directory pays for the changes only, while zstd's window
(a few MiB) never reaches back one version. The data is generated deterministically (a seed):

- version 0: PART_FILES files `part-NNN.csv` holding 80% of the size, and one `events.csv`
  holding the other 20%, of CSV records (the generated web-service requests of data.py);
- version k (1..9) is version k-1 with REWRITTEN files `part-NNN.csv` replaced by new records
  of the same size (1% of the dataset) and INSERTED bytes of new records inserted at a line
  boundary in the middle of `events.csv`: every byte after that point moves, so only
  content-defined chunking finds the rest of the file again.

Each version is written as a directory `vK` of ordinary files, as a user would copy them.
"""

from __future__ import annotations

import random
from pathlib import Path

from contrib.bench.data import CSV_LINE, generate_log_tile

PART_FILES = 160
#: Files rewritten per version: 2 of 160 files holding 80% of the data is 1% of it.
REWRITTEN = 2
#: Bytes of new records inserted in the middle of events.csv per version.
INSERTED = 4096
SEED = 7_000_003


def _records(pool: bytes, start: int, size: int) -> tuple[bytes, int]:
    """About `size` bytes of whole records from pool at start (cut after a newline), and where
    the next unused record starts."""
    end = pool.index(b"\n", start + size - 1) + 1
    return pool[start:end], end


def write_versions(dest: Path, size: int, versions: int) -> None:
    """Write versions v0..v{versions-1} of a dataset of about `size` bytes into dest."""
    part_size = size * 4 // 5 // PART_FILES
    fresh = (versions - 1) * (REWRITTEN * part_size + INSERTED)
    slack = (PART_FILES + 1 + versions * (REWRITTEN + 1)) * 256  # each cut ends at the next newline
    pool = generate_log_tile(size + fresh + slack, SEED, CSV_LINE)
    files, at = {}, 0
    for i in range(PART_FILES):
        files[f"part-{i:03d}.csv"], at = _records(pool, at, part_size)
    files["events.csv"], at = _records(pool, at, size - PART_FILES * part_size)
    rnd = random.Random(SEED)
    for k in range(versions):
        if k:
            for j in range(REWRITTEN):
                files[f"part-{((k - 1) * REWRITTEN + j) % PART_FILES:03d}.csv"], at = _records(pool, at, part_size)
            inserted, at = _records(pool, at, INSERTED)
            big = files["events.csv"]
            middle = big.index(b"\n", rnd.randrange(len(big) * 2 // 5, len(big) * 3 // 5)) + 1
            files["events.csv"] = big[:middle] + inserted + big[middle:]
        version = dest / f"v{k}"
        version.mkdir(parents=True)
        for name, data in files.items():
            (version / name).write_bytes(data)
