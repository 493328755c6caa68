"""The object layer: one LMDB environment holding chunks and namespace records (design.md §2.1)."""

from maiffs.store.env import Store, Txn, STORE_FORMAT
from maiffs.store.chunks import ChunkStore, PreparedChunk, prepare_chunk

__all__ = ["Store", "Txn", "STORE_FORMAT", "ChunkStore", "PreparedChunk", "prepare_chunk"]
