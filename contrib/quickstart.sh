#!/usr/bin/env bash
# Quickstart: install everything, create the default embedded store (.maiffs-store/ in this
# checkout) if it does not exist, and mount it on ./mount. MAIFFS_STORE and MAIFFS_MOUNT
# choose another store and mount point.
set -euo pipefail
cd "$(dirname "$0")/.."
bash contrib/install.sh
store=${MAIFFS_STORE:-.maiffs-store}
mnt=${MAIFFS_MOUNT:-mount}
if [ ! -e "$store/data.mdb" ]; then
  .venv/bin/maiffs mkfs "$store"
fi
mkdir -p "$mnt"
if .venv/bin/python -c 'import sys; from maiffs.mounts import find_mount; sys.exit(find_mount(sys.argv[1]) is None)' "$mnt"; then
  echo "maiffs: $mnt is already mounted; unmount with: .venv/bin/maiffs umount $mnt"
  exit 0
fi
# nonempty: git keeps the empty ./mount as a folder holding .gitkeep, hidden while mounted
.venv/bin/maiffs mount -o nonempty "$store" "$mnt"
echo "maiffs: the store $(realpath "$store") is mounted on $(realpath "$mnt")"
echo "maiffs: use it like any directory; unmount with: .venv/bin/maiffs umount $mnt"
