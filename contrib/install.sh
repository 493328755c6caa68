#!/usr/bin/env bash
# Install what maiffs needs on Debian 12 (as root): FUSE 3, a compiler for pyfuse3, and a venv
# at .venv with the package in it. Safe to run again. EXTRA_APT / EXTRA_PIP add more.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages="fuse3 libfuse3-dev pkg-config gcc python3-venv python3-dev ${EXTRA_APT:-}"
missing=""
for p in $apt_packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "maiffs: installing Debian packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

python=$(command -v python3.11 || command -v python3)
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".${EXTRA_PIP:-}"

# Mount like any filesystem (docs/operations.md): `maiffs` on PATH, the helpers mount(8) and
# umount(8) run for type fuse.maiffs (the same entry point, told apart by the name it is run
# as), and the systemd unit template (inert until enabled).
ln -sfn "$PWD/.venv/bin/maiffs" /usr/local/bin/maiffs
ln -sfn "$PWD/.venv/bin/maiffs" /sbin/mount.fuse.maiffs
ln -sfn "$PWD/.venv/bin/maiffs" /sbin/umount.fuse.maiffs
if [ -d /etc/systemd/system ]; then
  install -m 0644 contrib/systemd/maiffs@.service /etc/systemd/system/maiffs@.service
  if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
fi
