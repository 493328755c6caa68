"""Exceptions shared by every layer.

`FsError` carries an errno so that the FUSE adapter can answer any failure with the right code
and the CLI can print a one-line reason; `StoreError` is for problems with a store as a whole
(not found, wrong format, locked, corrupt) that end a command rather than one request.
"""

import errno
import os


class FsError(Exception):
    """A filesystem operation failed with a POSIX errno (ENOENT, ENOTEMPTY, ...)."""

    def __init__(self, code: int, detail: str = "") -> None:
        self.errno = code
        self.detail = detail
        super().__init__(f"{errno.errorcode.get(code, code)}: {detail or os.strerror(code)}")


class StoreError(Exception):
    """The store cannot be used: the message says why and what to do next."""


class CorruptChunk(FsError):
    """A chunk is missing or its content does not match its hash: reads of it fail with EIO."""

    def __init__(self, chunk_id: bytes, why: str) -> None:
        super().__init__(errno.EIO, f"chunk {chunk_id.hex()} {why}")
        self.chunk_id = chunk_id


class CorruptRecord(StoreError):
    """A store record fails its checksum (format 3 seals every record): the request that read
    it fails with EIO, the rest of the store goes on serving; `maiffs fsck` lists every one."""

    def __init__(self, db: str, key: bytes, why: str = "fails its checksum") -> None:
        super().__init__(f"{db} record {show_key(key)} is damaged ({why}); "
                         f"`maiffs fsck` lists the damage, `maiffs fsck --repair` repairs it")
        self.db = db
        self.key = key


def show_key(key: bytes) -> str:
    """A record key as text when it is (meta's are), else in hex."""
    return key.decode() if key.isascii() and key.decode().isprintable() else key.hex()
