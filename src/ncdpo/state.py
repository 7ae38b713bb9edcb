"""Everything a run needs to continue bit for bit: RNG states, simulator states, and a safetensors-friendly
encoding of such nested Python state.

A resumable checkpoint stores, next to the weights, a JSON tree whose arrays are replaced by references to
tensors in the same safetensors file (:func:`pack` / :func:`unpack`), so no pickle is ever loaded.

Simulator state (:func:`env_state` / :func:`set_env_state`) is captured layer by layer through the wrapper
chain of each sub-environment of a :class:`gymnasium.vector.SyncVectorEnv`: plain attributes (numbers,
arrays, deques), the env's random generator, and for MuJoCo envs the full integration state
(``mj_getState(..., mjSTATE_INTEGRATION)``: time, qpos, qvel, actuator state, warm-start accelerations).
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

import numpy as np
import torch

# Attributes that are structure or configuration, not state.
_SKIP = {
    "env", "envs", "env_fns", "_action_space", "_observation_space", "_metadata", "_cached_spec", "_saved_kwargs",
    "action_space", "observation_space", "single_action_space", "single_observation_space", "metadata", "spec",
    "model", "data", "_ezpickle_args", "_ezpickle_kwargs", "render_mode", "mujoco_renderer", "_env_obs",
}
_SIMPLE = (bool, int, float, str, np.ndarray, np.generic, deque)


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


# ---------------------------------------------------------------------------------------------- envs
def _layers(env: Any) -> list[Any]:
    out = [env]
    while hasattr(out[-1], "env"):
        out.append(out[-1].env)
    return out


def _layer_state(obj: Any) -> dict[str, Any]:
    st: dict[str, Any] = {"__class__": type(obj).__name__}
    for k, v in vars(obj).items():
        if k in _SKIP:
            continue
        if isinstance(v, np.random.Generator):
            st[k] = {"__generator__": v.bit_generator.state}
        elif isinstance(v, _SIMPLE) and not (isinstance(v, deque) and not all(isinstance(x, _SIMPLE) for x in v)):
            st[k] = v.copy() if isinstance(v, (np.ndarray, deque)) else v
    data, model = getattr(obj, "data", None), getattr(obj, "model", None)
    if data is not None and type(data).__name__ == "MjData":
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        buf = np.empty(mujoco.mj_stateSize(model, spec), np.float64)
        mujoco.mj_getState(model, data, buf, spec)
        st["__mujoco__"] = buf
    return st


def _set_layer_state(obj: Any, st: dict[str, Any]) -> None:
    if st.get("__class__", type(obj).__name__) != type(obj).__name__:
        raise ValueError(f"saved env layer {st['__class__']} where this env stack has {type(obj).__name__}")
    for k, v in st.items():
        if k == "__class__":
            continue
        if k == "__mujoco__":
            import mujoco

            mujoco.mj_setState(obj.model, obj.data, np.asarray(v, np.float64), mujoco.mjtState.mjSTATE_INTEGRATION)
        elif isinstance(v, dict) and "__generator__" in v:
            gen = getattr(obj, k, None)
            if not isinstance(gen, np.random.Generator):
                gen = np.random.default_rng()
                setattr(obj, k, gen)
            gen.bit_generator.state = v["__generator__"]
        else:
            setattr(obj, k, v)


def env_state(envs: Any) -> dict[str, Any]:
    """State of a SyncVectorEnv and of every layer of each of its sub-envs."""
    return {"vector": _layer_state(envs), "envs": [[_layer_state(layer) for layer in _layers(e)] for e in envs.envs]}


def set_env_state(envs: Any, st: dict[str, Any]) -> None:
    """Restore :func:`env_state` into a freshly made vector env of the same task and size."""
    if len(st["envs"]) != len(envs.envs):
        raise ValueError(f"saved state has {len(st['envs'])} envs, this vector env {len(envs.envs)}")
    _set_layer_state(envs, st["vector"])
    for e, layers in zip(envs.envs, st["envs"]):
        if len(layers) != len(_layers(e)):
            raise ValueError(f"saved env stack has {len(layers)} layers, this one {len(_layers(e))}")
        for layer, ls in zip(_layers(e), layers):
            _set_layer_state(layer, ls)
