"""POSIX ACLs as Linux stores them in the system.posix_acl_* xattrs, and how they tie to mode.

With FUSE_POSIX_ACL the kernel checks permissions against the ACLs itself but leaves the file
system to keep mode and ACL in step (what ext4's posix_acl_update_mode/posix_acl_chmod/
posix_acl_create do): the group bits of mode are the mask entry when there is one, chmod
rewrites the base entries, and a new inode inherits its parent's default ACL.

The value format (linux/posix_acl_xattr.h): a little-endian u32 version 2, then entries of
(u16 tag, u16 perm, u32 id), sorted by tag then id.
"""

from __future__ import annotations

import errno
import stat
import struct

from maiffs.errors import FsError

ACCESS = b"system.posix_acl_access"
DEFAULT = b"system.posix_acl_default"
NAMES = (ACCESS, DEFAULT)

_VERSION = 2
_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")

USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_NAMED = (USER, GROUP)
_UNDEFINED_ID = 0xFFFFFFFF

Entry = tuple[int, int, int]  # (tag, perm, id)


def parse(value: bytes) -> list[Entry]:
    """Decode and validate (as posix_acl_valid does); EINVAL for anything malformed."""
    if len(value) < _HEADER.size or (len(value) - _HEADER.size) % _ENTRY.size:
        raise FsError(errno.EINVAL, "malformed POSIX ACL")
    (version,) = _HEADER.unpack_from(value)
    if version != _VERSION:
        raise FsError(errno.EOPNOTSUPP, f"POSIX ACL version {version}")
    entries = [_ENTRY.unpack_from(value, off)
               for off in range(_HEADER.size, len(value), _ENTRY.size)]
    tags = [tag for tag, _perm, _id in entries]
    if any(perm & ~7 for _tag, perm, _id in entries):
        raise FsError(errno.EINVAL, "POSIX ACL permission out of range")
    if any(tag not in (USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER) for tag in tags):
        raise FsError(errno.EINVAL, "unknown POSIX ACL tag")
    if any(tags.count(t) != 1 for t in (USER_OBJ, GROUP_OBJ, OTHER)) or tags.count(MASK) > 1:
        raise FsError(errno.EINVAL, "POSIX ACL lacks a base entry")
    named = [(tag, id_) for tag, _perm, id_ in entries if tag in _NAMED]
    if named and MASK not in tags:
        raise FsError(errno.EINVAL, "POSIX ACL with named entries needs a mask")
    if len(set(named)) != len(named):
        raise FsError(errno.EINVAL, "POSIX ACL names one id twice")
    return entries


def encode(entries: list[Entry]) -> bytes:
    """Entries in the order given (the kernel hands them over sorted, and we keep that)."""
    return _HEADER.pack(_VERSION) + b"".join(_ENTRY.pack(*e) for e in entries)


def is_minimal(entries: list[Entry]) -> bool:
    """An ACL of just owner/group/other says nothing mode does not (ext4 then stores none)."""
    return len(entries) == 3


def mode_bits(entries: list[Entry]) -> int:
    """The rwx bits of mode an access ACL implies: group bits come from the mask if any."""
    perms = {tag: perm for tag, perm, _id in entries if tag not in _NAMED}
    group = perms.get(MASK, perms[GROUP_OBJ])
    return perms[USER_OBJ] << 6 | group << 3 | perms[OTHER]


def chmod(entries: list[Entry], mode: int) -> list[Entry]:
    """Base entries follow a new mode; with a mask, the mask takes the group bits."""
    has_mask = any(tag == MASK for tag, _perm, _id in entries)
    group_tag = MASK if has_mask else GROUP_OBJ
    bits = {USER_OBJ: mode >> 6 & 7, group_tag: mode >> 3 & 7, OTHER: mode & 7}
    return [(tag, bits.get(tag, perm), id_) for tag, perm, id_ in entries]


def inherit(default_value: bytes, mode: int) -> tuple[int, bytes | None, bytes | None]:
    """What a new inode made with `mode` in a directory with this default ACL gets:
    (mode, access ACL or None, default ACL or None), as posix_acl_create decides.

    The owner, mask (or group) and other entries are limited by the requested mode; the
    requested mode's rwx bits are limited by them in turn. Only directories pass the
    default ACL on."""
    entries = parse(default_value)
    has_mask = any(tag == MASK for tag, _perm, _id in entries)
    limit = {USER_OBJ: mode >> 6 & 7, MASK if has_mask else GROUP_OBJ: mode >> 3 & 7,
             OTHER: mode & 7}
    access = [(tag, perm & limit.get(tag, 7), id_) for tag, perm, id_ in entries]
    new_mode = (mode & ~0o777) | mode_bits(access)
    default = default_value if stat.S_ISDIR(mode) else None
    return new_mode, None if is_minimal(access) else encode(access), default
