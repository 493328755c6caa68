"""maiffs: a FUSE filesystem over a deduplicating, compressing, content-addressed LMDB store."""

__version__ = "0.1.0"
