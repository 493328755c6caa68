"""The remotes a store knows: name -> URL, in STORE/remotes.json (mode 0600, written atomically).

Kept beside the LMDB environment rather than in it, so `maiffs remote add` works while the
store is mounted (LMDB has one writer: the daemon) and a store's remotes survive with it.
"""

from __future__ import annotations

import json
import os
import re

import blake3
from urllib.parse import parse_qs, urlencode, urlparse

from maiffs.errors import StoreError
from maiffs.remotes.base import DEFAULT_VOLUME, Remote
from maiffs.remotes.dirremote import DirRemote

CONFIG_NAME = "remotes.json"
VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
INDEX_CACHE = "remote-indexes"
ORIGIN = "origin"  # the remote a store was cloned from, or a follower follows
STAGING = "incoming"


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


def split_volume(url: str) -> tuple[str, str]:
    """(where the remote is, which volume in it): `URL#VOLUME`, the volume `default` without."""
    where, hash_, volume = url.rpartition("#")
    if not hash_:
        return url, DEFAULT_VOLUME
    if not VOLUME_NAME.fullmatch(volume):
        raise StoreError(f"remote URL {url!r}: volume {volume!r} must be 1-64 letters, digits, "
                         f"'.', '_' or '-'")
    return where, volume


def check_url(url: str) -> None:
    """Refuse a URL no remote can be made of (before it is saved)."""
    where, _volume = split_volume(url)
    if urlparse(where).scheme == "s3":
        _s3_parts(where)
    else:
        directory_of(where)


def _s3_parts(url: str) -> tuple[str, str, str | None]:
    parsed = urlparse(url)
    if not parsed.netloc:
        raise StoreError(f"remote URL {url!r}: s3://BUCKET[/PREFIX] names no bucket")
    endpoint = parse_qs(parsed.query).get("endpoint", [None])[0]
    return parsed.netloc, parsed.path, endpoint


def with_endpoint(url: str, endpoint: str | None) -> str:
    """An s3:// URL carrying the endpoint to reach (`remote add --endpoint`)."""
    if endpoint is None:
        return url
    where, volume = split_volume(url)
    if urlparse(where).scheme != "s3":
        raise StoreError("--endpoint goes with s3:// URLs")
    tail = f"#{volume}" if "#" in url else ""
    return f"{where}?{urlencode({'endpoint': endpoint})}{tail}"


def directory_of(url: str) -> str:
    """The local path of a directory remote's URL; StoreError for anything else."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        path = parsed.path if parsed.scheme else url
        if not os.path.isabs(path):
            raise StoreError(f"remote directory {url!r} must be an absolute path")
        return path
    raise StoreError(f"remote URL {url!r}: a remote is a directory (/path, file:///path) or a "
                     f"bucket (s3://BUCKET/PREFIX)")


def open_remote(url: str, store: str | None = None) -> Remote:
    """The remote at url; with store, it keeps copies of the remote's indexes in the store's
    directory (one folder per remote location, so renaming a remote loses nothing)."""
    where, volume = split_volume(url)
    cache = os.path.join(store, INDEX_CACHE, _location(where)) if store is not None else None
    if urlparse(where).scheme == "s3":
        from maiffs.remotes.s3remote import S3Remote  # boto3 takes 90 ms to import: only for S3

        return S3Remote(*_s3_parts(where), cache_dir=cache, volume=volume)
    return DirRemote(directory_of(where), cache_dir=cache, volume=volume)


def url_of(store: str, name: str) -> str:
    remotes = load(store)
    if name not in remotes:
        raise StoreError(f"no remote named {name!r} (known: {', '.join(sorted(remotes)) or 'none'})")
    return remotes[name]


def _location(url: str) -> str:
    return blake3.blake3(url.encode()).hexdigest()[:24]


def staging_dir(store: str, url: str) -> str:
    """Where a pull from url gathers what it fetched before the store takes it (kept when a
    pull is interrupted, so the next one resumes)."""
    return os.path.join(store, STAGING, _location(url))


def named_remote(store: str, name: str) -> Remote:
    """The store's remote called name, with its index cache."""
    return open_remote(url_of(store, name), store)
