"""Everything a run needs to continue bit for bit: RNG states, simulator states, and a safetensors-friendly
encoding of such nested Python state.

A resumable checkpoint stores, next to the weights, a JSON tree whose arrays are replaced by references to
tensors in the same safetensors file (:func:`pack` / :func:`unpack`), so no pickle is ever loaded.

Simulator state (:func:`env_state` / :func:`set_env_state`, from :mod:`ncdpo.envs.snapshot`) is captured
layer by layer through the wrapper chain of each sub-environment: plain attributes, random generators and
the full MuJoCo integration state.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

import numpy as np
import torch

from ncdpo.envs.snapshot import env_state, set_env_state

__all__ = ["env_state", "pack", "rng_state", "set_env_state", "set_rng_state", "unpack"]


# ---------------------------------------------------------------------------------------------- encoding
def pack(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON-able copy of ``obj`` whose arrays/tensors are moved into ``tensors`` under ``prefix``."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": prefix}
    if isinstance(obj, np.ndarray):
        tensors[prefix] = torch.from_numpy(np.ascontiguousarray(obj).copy())
        return {"__ndarray__": prefix}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, deque):
        return {"__deque__": [pack(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)], "maxlen": obj.maxlen}
    if isinstance(obj, tuple):
        return {"__tuple__": [pack(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [pack(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        return {str(k): pack(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix} in a checkpoint")


def unpack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`pack`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]].clone()
        if "__ndarray__" in obj:
            return tensors[obj["__ndarray__"]].numpy().copy()
        if "__deque__" in obj:
            return deque([unpack(v, tensors) for v in obj["__deque__"]], maxlen=obj["maxlen"])
        if "__tuple__" in obj:
            return tuple(unpack(v, tensors) for v in obj["__tuple__"])
        return {k: unpack(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unpack(v, tensors) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    """States of Python's, NumPy's global and torch's (CPU and CUDA) generators."""
    st: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_st = st["numpy"]
    np.random.set_state((np_st[0], np.asarray(np_st[1], dtype=np.uint32), *np_st[2:]))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
