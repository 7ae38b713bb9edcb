#!/usr/bin/env bash
# Build and install Google Research Football (gfootball 2.10.2) into the project's venv, for the GRF tasks
# (grf-3v1, grf-pass-shoot, grf-counterattack). Optional and heavy: Debian packages, then a C++ build of
# about 8.5 minutes on 2 cores. The core and its tests never need it.
#
#   bash scripts/setup_gfootball.sh            # uses .venv/ (make install first)
#   VENV=/path/to/venv bash scripts/setup_gfootball.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || { echo "setup_gfootball: no venv at $VENV (run make install first)" >&2; exit 1; }
if "$VENV/bin/python" -c "import gfootball.env" 2>/dev/null; then
  echo "setup_gfootball: gfootball already installed in $VENV"; exit 0
fi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq git cmake build-essential libgl1-mesa-dev libsdl2-dev \
  libsdl2-image-dev libsdl2-ttf-dev libsdl2-gfx-dev libboost-all-dev libdirectfb-dev libst-dev mesa-utils xvfb >/dev/null
"$VENV/bin/pip" install -q -e ".[football]"
# gfootball's build script calls a bare `python3`: the venv's must come first on PATH
PATH="$(cd "$VENV/bin" && pwd):$PATH" "$VENV/bin/pip" install -q --no-build-isolation "gfootball==2.10.2"
"$VENV/bin/python" -c "import gfootball.env; print('setup_gfootball: gfootball', 'ok')"
