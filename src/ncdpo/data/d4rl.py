"""D4RL's flat layout, as an HDF5 file (what D4RL downloads) or a ``.npz`` of the same arrays::

    observations (N, obs_dim)  actions (N, act_dim)  rewards (N,)  terminals (N,)  timeouts (N,) (optional)

Transitions follow each other episode by episode; an episode ends where ``terminals`` (the env terminated)
or ``timeouts`` (a time limit cut it) is set, and the two are kept apart: a terminal ends an episode with
``dones`` on its last step, a timeout ends it ``truncated``. Other entries (D4RL's ``infos/``, ``metadata/``,
``next_observations``) are ignored; an ``env_id`` (HDF5 attribute or array) names the env.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ncdpo.data.dataset import Dataset, Episode, bounds_for
from ncdpo.errors import NcdpoError


def is_d4rl(f: Any) -> bool:
    """Whether an open HDF5 file is in D4RL's flat layout."""
    return "observations" in f and "actions" in f and "data" not in f


def split_flat(obs, actions, rewards, terminals, timeouts) -> list[Episode]:
    """Flat arrays -> episodes, ending at each terminal (terminated) or timeout (truncated)."""
    ends = np.nonzero(terminals | timeouts)[0]
    starts = np.concatenate([[0], ends + 1])
    stops = np.concatenate([ends + 1, [len(actions)]])
    eps = []
    for a, b in zip(starts, stops):
        if b <= a:
            continue
        term = terminals[a:b].copy()
        eps.append(Episode(obs[a:b], actions[a:b], rewards[a:b], term, not bool(term[-1])))
    return eps


def from_arrays(arrays: dict[str, Any], path: Path, env_id: str = "") -> Dataset:
    """A :class:`Dataset` from D4RL's named arrays (any mapping of name -> array-like)."""

    def pick(*names: str, required: bool = True) -> np.ndarray | None:
        for n in names:
            if n in arrays:
                return np.asarray(arrays[n][()])  # an array or an h5py dataset, read only when needed
        if required:
            raise NcdpoError(f"dataset {path} lacks array '{names[0]}' (has: {', '.join(sorted(arrays))})")
        return None

    obs = np.asarray(pick("observations", "obs"), np.float32)
    actions = np.asarray(pick("actions"), np.float32)
    rewards = np.asarray(pick("rewards"), np.float32)
    n = len(actions)
    if obs.ndim != 2 or actions.ndim != 2 or len(obs) != n or rewards.reshape(-1).shape != (n,):
        raise NcdpoError(
            f"dataset {path}: flat arrays disagree (observations {obs.shape}, actions {actions.shape}, rewards "
            f"{rewards.shape})"
        )
    if n == 0:
        raise NcdpoError(f"dataset {path} holds no transitions")
    terminals = pick("terminals", "dones", required=False)
    timeouts = pick("timeouts", required=False)
    terminals = np.zeros(n, bool) if terminals is None else np.asarray(terminals).astype(bool).reshape(-1)
    timeouts = np.zeros(n, bool) if timeouts is None else np.asarray(timeouts).astype(bool).reshape(-1)
    if terminals.shape != (n,) or timeouts.shape != (n,):
        raise NcdpoError(f"dataset {path}: terminals/timeouts must have length {n}")
    if not env_id and "env_id" in arrays:
        env_id = str(pick("env_id"))
    lo, hi = bounds_for(env_id, actions.shape[1])
    meta = {"source": "d4rl"}
    return Dataset(split_flat(obs, actions, rewards.reshape(-1), terminals, timeouts), env_id, lo, hi, meta, str(path))


def read_npz(path: Path) -> Dataset:
    try:
        z = np.load(path, allow_pickle=False)
        arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise NcdpoError(f"dataset {path} is not a readable .npz file ({str(e).splitlines()[0]})") from None
    return from_arrays(arrays, path)


def read_d4rl_hdf5(f: Any, path: Path) -> Dataset:
    """A :class:`Dataset` from an open D4RL-layout HDF5 file."""
    import h5py

    arrays = {k: f[k] for k in f.keys() if isinstance(f[k], h5py.Dataset)}
    env_id = f.attrs.get("env_id", "")
    return from_arrays(arrays, path, env_id.decode() if isinstance(env_id, bytes) else str(env_id))
