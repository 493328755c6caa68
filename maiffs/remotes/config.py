"""The remotes a store knows: name -> URL, in STORE/remotes.json (mode 0600, written atomically).

Kept beside the LMDB environment rather than in it, so `maiffs remote add` works while the
store is mounted (LMDB has one writer: the daemon) and a store's remotes survive with it.
"""

from __future__ import annotations

import json
import os
from urllib.parse import urlparse

from maiffs.errors import StoreError
from maiffs.remotes.dirremote import DirRemote

CONFIG_NAME = "remotes.json"


def _path(store: str) -> str:
    return os.path.join(store, CONFIG_NAME)


def load(store: str) -> dict[str, str]:
    try:
        with open(_path(store)) as f:
            remotes = json.load(f)
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise StoreError(f"{_path(store)} is not valid JSON ({exc})") from None
    if not isinstance(remotes, dict):
        raise StoreError(f"{_path(store)} is not a JSON object")
    return remotes


def save(store: str, remotes: dict[str, str]) -> None:
    tmp = _path(store) + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(remotes, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, _path(store))


def directory_of(url: str) -> str:
    """The local path of a directory remote's URL; StoreError for anything else."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        path = parsed.path if parsed.scheme else url
        if not os.path.isabs(path):
            raise StoreError(f"remote directory {url!r} must be an absolute path")
        return path
    raise StoreError(f"remote URL {url!r}: only directories (/path or file:///path) are supported "
                     f"so far")


def open_remote(url: str) -> DirRemote:
    return DirRemote(directory_of(url))


def url_of(store: str, name: str) -> str:
    remotes = load(store)
    if name not in remotes:
        raise StoreError(f"no remote named {name!r} (known: {', '.join(sorted(remotes)) or 'none'})")
    return remotes[name]
