#!/usr/bin/env bash
# Quickstart: install everything, create the default embedded store (.maiffs-store/ in this
# checkout) if it does not exist, and mount it on ./mount.
set -euo pipefail
cd "$(dirname "$0")/.."
bash contrib/install.sh
store=.maiffs-store
if [ ! -e "$store/data.mdb" ]; then
  .venv/bin/maiffs mkfs "$store"
fi
mkdir -p mount
if grep -q " $(pwd)/mount fuse.maiffs " /proc/self/mountinfo; then
  echo "maiffs: $(pwd)/mount is already mounted; unmount with: .venv/bin/maiffs umount mount"
  exit 0
fi
.venv/bin/maiffs mount "$store" mount
echo "maiffs: the store $(pwd)/$store is mounted on $(pwd)/mount"
echo "maiffs: use it like any directory; unmount with: .venv/bin/maiffs umount mount"
