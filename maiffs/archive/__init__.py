"""Zip archives browsed as directories (`data.zip#/`): the pure layer, no FUSE and no store.

`ZipIndex.parse` reads an archive's central directory into a tree; `open_member` reads one
member's content at any offset. Both see the archive only through `read_at(offset, size)`.
The hostile-input policy is in `maiffs.archive.zipread`'s docstring.
"""

from maiffs.archive.zipmember import MemberReader, open_member
from maiffs.archive.zipread import (DEFAULT_LIMITS, BadMember, BadZip, Directory, Entry,
                                    Limits, Member, ReadAt, ZipIndex)

__all__ = ["ZipIndex", "Member", "Directory", "Entry", "Limits", "DEFAULT_LIMITS", "BadZip",
           "BadMember", "ReadAt", "MemberReader", "open_member"]
