#!/usr/bin/env bash
# Install maiffs with its test dependencies (Debian packages of the tools the tests drive
# through the mount, Ceph for a real S3 gateway, and pytest/hypothesis) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRA_APT="acl attr rsync sqlite3 git tar stress-ng zstd unzip libarchive-tools zsh systemd ceph-mon ceph-osd radosgw ceph-common" EXTRA_PIP="[test]" \
  bash contrib/install.sh
exec .venv/bin/python -m pytest -q tests "$@"
