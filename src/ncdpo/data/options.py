"""What a reader is asked for: which observation keys, which filter, which env (shared by every format's reader)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ncdpo.errors import NcdpoError


@dataclass(frozen=True)
class ReadOptions:
    """How to read a dataset that holds named observation entries (robomimic's ``obs/<key>``, LeRobot's features).

    ``obs_keys`` entries are ``NAME`` (the dataset's key, used under the same name) or ``ENV_NAME=DATASET_KEY``
    (the dataset's key read into the env's entry ``ENV_NAME``, e.g. ``agentview_image=observation.images.top``).
    """

    obs_keys: tuple[str, ...] = ()
    """Observation keys to read, in order (a flat observation concatenates them); () = the format's default
    for the env (robomimic: the task's robomimic low-dim keys or camera entries; LeRobot: ``observation.state``)."""
    filter_key: str = ""
    """robomimic: read only the demos listed in ``mask/<filter_key>`` ("" = every demo)."""
    action_key: str = ""
    """The action entry ("" = the format's: robomimic ``actions``, LeRobot ``action``)."""
    env_id: str = ""
    """The env the data will train a policy for ("" = the one the dataset names)."""
    obs_spec: Any = None
    """The env's dict observation (:class:`~ncdpo.observations.ObsSpec`); None: the env takes a flat vector."""

    @property
    def given(self) -> bool:
        """Whether any key-level choice was made (formats without named keys refuse them)."""
        return bool(self.obs_keys or self.filter_key or self.action_key)


def key_pairs(keys: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """``(env name, dataset key)`` per entry of ``--dataset-obs-keys``."""
    out = []
    for k in keys:
        env_name, sep, data_key = str(k).partition("=")
        if sep and (not env_name or not data_key):
            raise NcdpoError(f"dataset observation key '{k}' must be NAME or ENV_NAME=DATASET_KEY")
        out.append((env_name, data_key) if sep else (env_name, env_name))
    names = [n for n, _ in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise NcdpoError(f"dataset observation key '{dup}' is given twice")
    return out


def assemble(parts: dict[str, np.ndarray], pairs: list[tuple[str, str]], flat: bool, where: str) -> Any:
    """The observation of one episode from its entries ``parts`` (by dataset key): a (T, d) float32 array of the
    entries concatenated in ``pairs`` order (``flat``), or a dict by env name (images kept uint8)."""
    if flat:
        cols = []
        for _, k in pairs:
            v = np.asarray(parts[k])
            if v.dtype == np.uint8 and v.ndim == 4:
                raise NcdpoError(
                    f"{where}: '{k}' is an image but the env takes a flat observation (drop it from "
                    "--dataset-obs-keys, or train a camera task)"
                )
            cols.append(v.reshape(len(v), -1).astype(np.float32))
        return np.concatenate(cols, axis=1)
    return {name: (v if (v := np.asarray(parts[k])).dtype == np.uint8 else v.astype(np.float32)) for name, k in pairs}
