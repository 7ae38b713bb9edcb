#!/usr/bin/env bash
# Headless OpenGL for the camera tasks (lift-image, ...): Mesa's EGL and OSMesa, so MuJoCo renders without a
# screen or GPU. `make install` runs it. It installs the Debian packages only where they are missing, then checks
# that a frame renders (ncdpo picks EGL, then OSMesa, at run time; MUJOCO_GL overrides the choice).
#
#   bash scripts/setup_render.sh           # uses .venv/ for the check (make install first)
#   NCDPO_SKIP_RENDER_SETUP=1 make install # leave the system alone (the camera tasks then need the packages)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PKGS="libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6"
if [ "${NCDPO_SKIP_RENDER_SETUP:-0}" = 1 ]; then
  echo "setup_render: skipped (NCDPO_SKIP_RENDER_SETUP=1)"; exit 0
fi
missing=""
if command -v dpkg-query >/dev/null 2>&1; then
  for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    echo "setup_render: installing$missing"
    if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null; }; then
      echo "setup_render: could not install$missing; the camera tasks (lift-image, ...) need them" >&2
      exit 0
    fi
  fi
else
  echo "setup_render: not a Debian system; install EGL or OSMesa (Mesa) with your package manager" >&2
fi
if [ -x "$VENV/bin/python" ]; then
  "$VENV/bin/python" -c "from ncdpo.envs.render import select_gl_backend; print('setup_render: MuJoCo renders with', select_gl_backend())" \
    || echo "setup_render: no OpenGL backend renders here; the camera tasks (lift-image, ...) will not run" >&2
fi
