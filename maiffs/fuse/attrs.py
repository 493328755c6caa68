"""Namespace inodes as pyfuse3 EntryAttributes."""

from __future__ import annotations

import stat

import pyfuse3

from maiffs.namespace import Inode

#: Reported st_blksize: large, so that cp and friends move data in big requests.
BLOCK_SIZE = 128 << 10
#: How long the kernel may cache attributes and names; every change goes through this mount.
ATTR_TIMEOUT = 1.0
DIR_SIZE = 4096


def entry_attributes(inode: Inode, timeout: float = ATTR_TIMEOUT) -> pyfuse3.EntryAttributes:
    """timeout: how long the kernel may keep the name and attributes (0: it asks every time)."""
    attr = pyfuse3.EntryAttributes()
    attr.st_ino = inode.ino
    attr.generation = 0
    attr.entry_timeout = timeout
    attr.attr_timeout = timeout
    attr.st_mode = inode.mode
    attr.st_nlink = inode.nlink
    attr.st_uid = inode.uid
    attr.st_gid = inode.gid
    attr.st_rdev = inode.rdev
    is_dir = stat.S_ISDIR(inode.mode)
    attr.st_size = DIR_SIZE if is_dir else inode.size
    attr.st_blksize = BLOCK_SIZE
    attr.st_blocks = (DIR_SIZE if is_dir else inode.allocated + 511) // 512
    attr.st_atime_ns = inode.atime_ns
    attr.st_mtime_ns = inode.mtime_ns
    attr.st_ctime_ns = inode.ctime_ns
    return attr
