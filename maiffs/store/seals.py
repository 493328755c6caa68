"""Record seals (store format 3): every record but chunk data ends in a checksum of its key and
value, checked on every read, so a damaged byte anywhere in a record is an error
(`CorruptRecord`), never a wrong answer, and a record whose key was damaged answers for no key.

The seal is zlib's CRC-32 (C speed, 4 bytes) of key + value, appended little-endian: the CRC-32
of key + sealed value is then a constant (the CRC's residue), so a check is one pass over the
record with nothing copied. Chunk data is not sealed: a chunk is named by the BLAKE3 hash of
its content and checked against it on every read (chunks.py). Two records of `meta` are read
before the store's format is known and so are sealed their own way (see env.py): `magic` is
compared with a constant, and `format` is sealed from format 3 on (4 bytes before).

Stores before format 3 have no seals. Their upgrade (upgrade.py) seals the databases one by one
in `Sealing.order`, recording how far it got, so that a store left half way reads right:
`Sealing` says which of its records carry a seal.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from maiffs.errors import CorruptRecord

#: The first store format whose records are sealed.
SEALED_FORMAT = 3
SEAL_SIZE = 4
UNSEALED_DBS = frozenset({"chunks"})
SEALED_RESIDUE = 0x2144DF1C  # CRC-32 of any bytes followed by their own CRC-32, little-endian
_DONE = struct.Struct(">H")


def seal(key: bytes, value: bytes) -> bytes:
    """value with its seal appended."""
    return value + zlib.crc32(value, zlib.crc32(key)).to_bytes(SEAL_SIZE, "little")


def unseal(db: str, key: bytes, sealed: bytes) -> bytes:
    """The value of a sealed record (a view if sealed is one); CorruptRecord if it fails its check."""
    if zlib.crc32(sealed, zlib.crc32(key)) != SEALED_RESIDUE:
        raise CorruptRecord(db, bytes(key))
    return sealed[:-SEAL_SIZE]


@dataclass(frozen=True)
class Sealing:
    """Which records of a store being upgraded to format 3 (or not yet) carry seals: the
    databases order[:done], and those of order[done] up to key upto. `meta` is sealed last,
    in the transaction that ends the upgrade, so here it never is."""

    order: tuple[str, ...]
    done: int = 0
    upto: bytes | None = None

    def sealed(self, db: str, key: bytes) -> bool:
        if db not in self.order:
            return False
        at = self.order.index(db)
        return at < self.done or (at == self.done and self.upto is not None
                                  and bytes(key) <= self.upto)

    def encode(self) -> bytes:
        return _DONE.pack(self.done) + (self.upto or b"")  # (an LMDB key is never empty)

    @classmethod
    def decode(cls, order: tuple[str, ...], raw: bytes) -> "Sealing":
        done = _DONE.unpack_from(raw)[0]
        return cls(order, done, bytes(raw[_DONE.size:]) or None)
