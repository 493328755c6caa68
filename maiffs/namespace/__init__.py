"""Inodes, directory entries, extents and xattrs with POSIX semantics (design.md §2.2)."""

from maiffs.namespace.namespace import MAX_FILE_SIZE, NAME_MAX, FlushJob, Namespace
from maiffs.namespace.records import ROOT_INO, Inode

__all__ = ["Namespace", "FlushJob", "Inode", "ROOT_INO", "NAME_MAX", "MAX_FILE_SIZE"]
