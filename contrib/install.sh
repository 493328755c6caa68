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
