"""The one observation type of the project: a flat vector, or a dict of named arrays (images uint8).

An observation batch is either an array of shape (B, obs_dim) (every task with a 1-D Box observation, as
before) or a ``dict`` mapping each key of the env's gymnasium ``Dict`` space to an array of shape
(B, *shape): camera images as uint8 (B, H, W, 3), low-dimensional entries as float (B, d). The helpers here
work on both forms, on NumPy arrays and torch tensors alike, so the core (buffer, normaliser, trainer,
evaluation, datasets) never needs to know which one it has. :class:`ObsSpec` describes the dict form: its
keys in order with shapes and dtypes, and which low-dim keys are *privileged* (simulator state the actor must
not read, e.g. robosuite's ``object`` poses, which only a privileged critic sees).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

Obs = Any
"""``np.ndarray | torch.Tensor | dict[str, np.ndarray | torch.Tensor]``."""


@dataclass(frozen=True)
class ObsSpec:
    """The keys of a dict observation: name, per-row shape and dtype of each, in the space's order."""

    keys: tuple[tuple[str, tuple[int, ...], str], ...]
    """``(name, shape, dtype)`` per key; images are uint8 of shape (H, W, 3), low-dim entries float (d,)."""
    privileged: tuple[str, ...] = ()
    """Low-dim keys only a privileged critic reads (the actor never does)."""

    @property
    def names(self) -> list[str]:
        return [k for k, _, _ in self.keys]

    def shape(self, key: str) -> tuple[int, ...]:
        return dict((k, s) for k, s, _ in self.keys)[key]

    @property
    def image_keys(self) -> list[str]:
        return [k for k, s, d in self.keys if is_image(s, d)]

    @property
    def lowdim_keys(self) -> list[str]:
        return [k for k, s, d in self.keys if not is_image(s, d)]

    def lowdim_dim(self, keys: list[str] | None = None) -> int:
        return int(sum(int(np.prod(s)) for k, s, _ in self.keys if k in (keys or self.lowdim_keys)))

    @property
    def flat_dim(self) -> int:
        """Numbers per row, all keys together (what ``EnvSpec.obs_dim`` reports for a dict observation)."""
        return int(sum(int(np.prod(s)) for _, s, _ in self.keys))

    def to_dict(self) -> dict[str, Any]:
        return {"keys": [[k, list(s), d] for k, s, d in self.keys], "privileged": list(self.privileged)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ObsSpec":
        return cls(tuple((str(k), tuple(int(x) for x in s), str(t)) for k, s, t in d["keys"]), tuple(d["privileged"]))

    @classmethod
    def from_space(cls, space: Any, privileged: tuple[str, ...] = ()) -> "ObsSpec":
        """The spec of a gymnasium ``Dict`` space of Box entries (images: uint8 (H, W, 3); others: 1-D)."""
        from ncdpo.errors import NcdpoError

        keys = []
        for name, sub in space.spaces.items():
            shape, dtype = tuple(int(x) for x in sub.shape), np.dtype(sub.dtype).name
            if not (is_image(shape, dtype) or len(shape) == 1) or type(sub).__name__ != "Box":
                raise NcdpoError(
                    f"observation entry '{name}' is {sub}; an entry must be a uint8 image (H, W, 3) or a 1-D Box"
                )
            keys.append((str(name), shape, dtype))
        return cls(tuple(keys), tuple(k for k in privileged if k in dict((k, 0) for k, _, _ in keys)))

    def describe(self) -> str:
        """E.g. ``agentview_image 84x84x3 uint8, robot0_eef_pos (3), ...``."""
        parts = []
        for k, s, d in self.keys:
            parts.append(f"{k} {'x'.join(map(str, s))} {d}" if is_image(s, d) else f"{k} ({s[0]})")
        return ", ".join(parts)


def is_image(shape: tuple[int, ...], dtype: str) -> bool:
    return len(shape) == 3 and shape[-1] == 3 and np.dtype(dtype) == np.uint8


def is_dict(obs: Obs) -> bool:
    return isinstance(obs, dict)


def obs_map(obs: Obs, fn: Callable[[Any], Any]) -> Obs:
    """``fn`` applied to the array (or to every entry of a dict observation)."""
    return {k: fn(v) for k, v in obs.items()} if isinstance(obs, dict) else fn(obs)


def obs_index(obs: Obs, idx: Any) -> Obs:
    """The rows ``idx`` of an observation batch."""
    return obs_map(obs, lambda v: v[idx])


def obs_len(obs: Obs) -> int:
    """Rows in an observation batch."""
    return int(next(iter(obs.values())).shape[0]) if isinstance(obs, dict) else int(obs.shape[0])


def to_tensor(obs: Obs, device: torch.device | str) -> Obs:
    """An observation batch as torch tensors on ``device`` (dtypes kept: images stay uint8)."""
    return obs_map(obs, lambda v: torch.as_tensor(v, device=device))


def obs_stack(rows: list[Obs]) -> Obs:
    """One batch from single-row observations (e.g. a vector env's ``final_obs`` entries)."""
    if rows and isinstance(rows[0], dict):
        return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}
    return np.stack(rows)


def obs_copy(obs: Obs) -> Obs:
    return obs_map(obs, lambda v: v.clone() if torch.is_tensor(v) else np.array(v, copy=True))


def finite_rows(obs: Obs) -> np.ndarray:
    """Per row: every float entry is finite (uint8 images always are)."""
    if isinstance(obs, dict):
        ok = np.ones(obs_len(obs), bool)
        for v in obs.values():
            v = np.asarray(v)
            if v.dtype.kind == "f":
                ok &= np.isfinite(v.reshape(v.shape[0], -1)).all(axis=1)
        return ok
    return np.isfinite(np.asarray(obs)).all(axis=1)


def row_of(obs: Obs, i: int) -> Obs:
    """Row ``i`` of a batch, without the batch dimension."""
    return obs_map(obs, lambda v: v[i])


def set_row(obs: Obs, i: int, value: Obs) -> None:
    """Write one row into a batch in place."""
    if isinstance(obs, dict):
        for k in obs:
            obs[k][i] = value[k]
    else:
        obs[i] = value


def obs_nbytes(obs: Obs) -> int:
    return int(sum(v.nbytes if isinstance(v, np.ndarray) else v.numel() * v.element_size() for v in _values(obs)))


def _values(obs: Obs) -> list[Any]:
    return list(obs.values()) if isinstance(obs, dict) else [obs]
