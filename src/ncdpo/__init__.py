"""ncdpo: fine-tune diffusion policies with PPO by back-propagating through every denoising step (NCDPO).

The Python API: :func:`load_policy` (a trained policy that maps raw env observations to env-ready actions),
:func:`train` and :func:`pretrain` (the runs ``ncdpo train`` and ``ncdpo pretrain`` start), :class:`TrainConfig`.
They are imported on first use, so ``import ncdpo`` (and the CLI) stays light.
"""

from typing import Any

from ncdpo import _gl
from ncdpo.errors import NcdpoError

_gl.preset()  # MuJoCo's headless OpenGL backend, before anything imports MuJoCo

__version__ = "0.1.0"
_API = {
    "Policy": "ncdpo.api",
    "load_policy": "ncdpo.api",
    "pretrain": "ncdpo.api",
    "resolve": "ncdpo.api",
    "train": "ncdpo.api",
    "TrainConfig": "ncdpo.config",
}
__all__ = ["NcdpoError", "Policy", "TrainConfig", "__version__", "load_policy", "pretrain", "resolve", "train"]


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'ncdpo' has no attribute {name!r}")
