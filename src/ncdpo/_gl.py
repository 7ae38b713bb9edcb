"""Set MuJoCo's OpenGL backend before MuJoCo is imported (it reads ``MUJOCO_GL`` once, at import).

``import ncdpo`` calls :func:`preset`: where ``MUJOCO_GL`` is unset it sets it (and ``PYOPENGL_PLATFORM``) to the
first of ``egl``, ``osmesa`` whose library loads, a guess that costs no context. The first camera env then
checks the choice for real (:func:`ncdpo.envs.render.select_gl_backend`). Standard library only: importing ncdpo
stays light.
"""

from __future__ import annotations

import ctypes
import os
import sys

LIBRARIES = {"egl": ("libEGL.so.1", "libEGL.so"), "osmesa": ("libOSMesa.so.8", "libOSMesa.so.6", "libOSMesa.so")}
guessed: str | None = None
"""The backend :func:`preset` chose (None: the user's ``MUJOCO_GL``, or nothing loadable, or not Linux)."""


def loadable(backend: str) -> bool:
    for name in LIBRARIES[backend]:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def preset() -> None:
    global guessed
    if os.environ.get("MUJOCO_GL") or not sys.platform.startswith("linux") or "mujoco" in sys.modules:
        return
    for backend in LIBRARIES:
        if loadable(backend):
            os.environ["MUJOCO_GL"] = backend
            if os.environ.get("PYOPENGL_PLATFORM", backend) == backend:
                os.environ["PYOPENGL_PLATFORM"] = backend
            guessed = backend
            return
