"""Shipped defaults: small demonstration datasets and behaviour-cloned checkpoints inside the package.

``shipped:TASK`` names them wherever a path is expected: as a checkpoint (``ncdpo eval``, ``ncdpo train
--init``, ``ncdpo collect``) it is the task's behaviour-cloned diffusion policy, as a dataset (``ncdpo
pretrain --dataset``) the dataset it was cloned from: the *medium* dataset of a locomotion task
(``scripts/make_locomotion_data.py`` regenerates them), the scripted demonstrations of a manipulation task
(``scripts/make_manipulation_data.py``).
"""

from __future__ import annotations

from pathlib import Path

from ncdpo.errors import NcdpoError

ASSETS = Path(__file__).resolve().parent / "assets" / "locomotion"
MANIPULATION_ASSETS = Path(__file__).resolve().parent / "assets" / "manipulation"
PREFIX = "shipped:"
FILES = {"checkpoint": "medium_bc.safetensors", "dataset": "medium.hdf5"}
MANIPULATION_FILES = {"checkpoint": "bc.safetensors", "dataset": "demos.hdf5"}


def asset_dir(task: str) -> Path:
    """The folder of a task's shipped files (which need not exist)."""
    return (MANIPULATION_ASSETS if (MANIPULATION_ASSETS / task).is_dir() else ASSETS) / task


def available() -> list[str]:
    """Tasks with shipped files."""
    return sorted(
        p.name
        for d, files in ((ASSETS, FILES), (MANIPULATION_ASSETS, MANIPULATION_FILES))
        if d.is_dir()
        for p in d.iterdir()
        if (p / files["checkpoint"]).is_file()
    )


def resolve(spec: str | Path, kind: str) -> Path:
    """``shipped:TASK`` -> the shipped file of ``kind`` (``checkpoint`` or ``dataset``); other paths unchanged."""
    s = str(spec)
    if not s.startswith(PREFIX):
        return Path(s)
    task = s[len(PREFIX) :]
    folder = asset_dir(task)
    path = folder / (MANIPULATION_FILES if folder.parent == MANIPULATION_ASSETS else FILES)[kind]
    if not path.is_file():
        if kind == "dataset" and (folder / MANIPULATION_FILES["checkpoint"]).is_file():
            script = "make_kitchen_data.py" if task.startswith("kitchen-") else "make_manipulation_data.py"
            raise NcdpoError(
                f"the '{task}' demonstrations are not shipped (the repository stays small enough to carry); rebuild "
                f"them with python scripts/{script} --tasks {task}"
            )
        raise NcdpoError(f"no shipped {kind} for '{task}' (shipped: {', '.join(available()) or 'none'})")
    return path
