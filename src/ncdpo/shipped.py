"""Shipped defaults: small demonstration datasets and behaviour-cloned checkpoints inside the package.

``shipped:TASK`` names them wherever a path is expected: as a checkpoint (``ncdpo eval``, ``ncdpo train
--init``, ``ncdpo collect``) it is the task's behaviour-cloned diffusion policy, as a dataset (``ncdpo
pretrain --dataset``) the task's *medium* dataset. ``scripts/make_locomotion_data.py`` regenerates them.
"""

from __future__ import annotations

from pathlib import Path

from ncdpo.errors import NcdpoError

ASSETS = Path(__file__).resolve().parent / "assets" / "locomotion"
PREFIX = "shipped:"
FILES = {"checkpoint": "medium_bc.safetensors", "dataset": "medium.hdf5"}


def available() -> list[str]:
    """Tasks with shipped files."""
    return sorted(p.name for p in ASSETS.iterdir() if (p / FILES["checkpoint"]).is_file()) if ASSETS.is_dir() else []


def resolve(spec: str | Path, kind: str) -> Path:
    """``shipped:TASK`` -> the shipped file of ``kind`` (``checkpoint`` or ``dataset``); other paths unchanged."""
    s = str(spec)
    if not s.startswith(PREFIX):
        return Path(s)
    task = s[len(PREFIX):]
    path = ASSETS / task / FILES[kind]
    if not path.is_file():
        raise NcdpoError(f"no shipped {kind} for '{task}' (shipped: {', '.join(available()) or 'none'})")
    return path
