"""Headless camera rendering for MuJoCo tasks: the OpenGL backend, chosen once per process, and a camera renderer.

MuJoCo reads ``MUJOCO_GL`` when it is first imported. ``import ncdpo`` presets it to the first of ``egl``,
``osmesa`` whose library loads (:mod:`ncdpo._gl`); :func:`select_gl_backend`, called before the first camera env
is made, then picks the first backend that really renders a frame here -- ``egl`` (Mesa's or a GPU's EGL), then
``osmesa`` (Mesa's off-screen software rasteriser) -- by trying each in a short subprocess, and sets
``MUJOCO_GL`` (and ``PYOPENGL_PLATFORM``) so that this process and every env worker it starts use it (where
MuJoCo was imported before ncdpo, its GL context class is pointed at the chosen backend). A backend the user set
in ``MUJOCO_GL`` is used as it is. If none works, the error names the Debian packages to install
(``scripts/setup_render.sh`` installs them).

:class:`CameraRenderer` renders named cameras of a model at one size with the scene's costly effects (shadows,
reflections, skybox) off: on Mesa's software rasteriser a frame costs 17-21 ms at 64-96 px with them off and
2-4 times that with them on, whatever the size (RESULTS section 9).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import numpy as np

from ncdpo.errors import NcdpoError

BACKENDS = ("egl", "osmesa")
PACKAGES = {"egl": "libegl1 libegl-mesa0 libgl1-mesa-dri", "osmesa": "libosmesa6"}
_PROBE = (
    "import mujoco\n"
    'm = mujoco.MjModel.from_xml_string(\'<mujoco><worldbody><light pos="0 0 1"/><geom size=".1"/>'
    "</worldbody></mujoco>')\n"
    "r = mujoco.Renderer(m, 16, 16)\n"
    "d = mujoco.MjData(m)\n"
    "mujoco.mj_forward(m, d)\n"
    "r.update_scene(d)\n"
    "assert r.render().shape == (16, 16, 3)\n"
    "r.close()\n"
)
_chosen: str | None = None


def probe_backend(backend: str, timeout: float = 120.0) -> str:
    """'' if ``backend`` renders a frame in a fresh process, else the last line of its error."""
    env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
    try:
        r = subprocess.run(
            [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return f"no frame within {timeout:.0f} s"
    if r.returncode == 0:
        return ""
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    return lines[-1].strip() if lines else f"exit status {r.returncode}"


def select_gl_backend() -> str:
    """The OpenGL backend of this process (see the module docstring); raises a one-line error if none works."""
    global _chosen
    from ncdpo import _gl

    if _chosen is not None:
        return _chosen
    current = os.environ.get("MUJOCO_GL", "").strip().lower()
    if current and _gl.guessed != current:  # the user's choice
        _chosen = current
        return current
    if "OpenGL" in sys.modules:  # PyOpenGL is loaded: its platform is fixed, keep the backend that matches it
        platform = os.environ.get("PYOPENGL_PLATFORM", "").lower()
        _chosen = platform if platform in BACKENDS else current or "glfw"
        _use_in_this_process(_chosen)
        return _chosen
    errors = []
    for b in BACKENDS:
        err = probe_backend(b)
        if not err:
            os.environ["MUJOCO_GL"] = os.environ["PYOPENGL_PLATFORM"] = b
            _gl.guessed = b
            _use_in_this_process(b)
            _chosen = b
            return b
        errors.append(f"MUJOCO_GL={b}: {err}")
    raise NcdpoError(
        "no headless OpenGL backend renders here ("
        + "; ".join(errors)
        + f"); install the Debian packages {PACKAGES['egl']} (EGL) or {PACKAGES['osmesa']} (OSMesa), "
        "e.g. bash scripts/setup_render.sh"
    )


def _use_in_this_process(backend: str) -> None:
    """MuJoCo imported before ncdpo (so before ``MUJOCO_GL`` was set) holds its default GL context class; point it
    at ``backend``'s (read by ``mujoco.Renderer`` when it is built; PyOpenGL is not loaded yet, so this works)."""
    if "mujoco" not in sys.modules or backend not in BACKENDS:
        return
    import mujoco.gl_context as glc

    if getattr(glc, "_MUJOCO_GL", "") == backend:
        return
    if backend == "egl":
        from mujoco.egl import GLContext
    else:
        from mujoco.osmesa import GLContext
    glc.GLContext = GLContext


class CameraRenderer:
    """Renders the named cameras of ``model`` / ``data`` as uint8 (size, size, 3) images, upright.

    The renderer (an OpenGL context) is made on the first frame, so an env that is built only to read its
    spaces, or copied into a worker process, never opens one it does not use.
    """

    def __init__(self, model: Any, data: Any, cameras: tuple[str, ...], size: int) -> None:
        import mujoco

        known = [model.camera(i).name for i in range(model.ncam)]
        bad = [c for c in cameras if c not in known]
        if bad:
            raise NcdpoError(f"unknown camera '{bad[0]}' (this scene has: {', '.join(known)})")
        if size < 8 or size > 1024:
            raise NcdpoError(f"image size must be between 8 and 1024 pixels (got {size})")
        self.model, self.data, self.cameras, self.size = model, data, tuple(cameras), int(size)
        self._mujoco = mujoco
        self._renderer: Any = None

    def _make(self) -> Any:
        mujoco = self._mujoco
        select_gl_backend()
        try:
            r = mujoco.Renderer(self.model, self.size, self.size)
        except Exception as e:  # the GL library is missing or cannot make a context
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise NcdpoError(
                f"cannot render with MUJOCO_GL={os.environ.get('MUJOCO_GL', '')!r} ({first}); unset MUJOCO_GL to "
                f"choose a backend automatically, or install {PACKAGES['egl']} / {PACKAGES['osmesa']} "
                "(bash scripts/setup_render.sh)"
            ) from None
        for flag in (
            mujoco.mjtRndFlag.mjRND_SHADOW,
            mujoco.mjtRndFlag.mjRND_REFLECTION,
            mujoco.mjtRndFlag.mjRND_SKYBOX,
        ):
            r.scene.flags[flag] = False
        return r

    def render(self) -> dict[str, np.ndarray]:
        """One frame per camera of the current simulator state."""
        if self._renderer is None:
            self._renderer = self._make()
        out = {}
        for cam in self.cameras:
            self._renderer.update_scene(self.data, camera=cam)
            out[cam] = np.array(self._renderer.render(), dtype=np.uint8, copy=True)
        return out

    def close(self) -> None:
        if self._renderer is not None:
            try:
                self._renderer.close()
            except Exception:  # noqa: BLE001 - a context already gone at exit
                pass
            self._renderer = None
