"""Snapshots of vector environments, so that a resumed run continues every episode exactly where it stopped.

State is captured layer by layer through the wrapper chain of each sub-environment: plain attributes
(numbers, arrays, deques), random generators, and for MuJoCo envs the full integration state
(``mj_getState(..., mjSTATE_INTEGRATION)``: time, qpos, qvel, actuator state, warm-start accelerations). A
layer that knows its own state better (a simulator wrapped as a gymnasium env, such as robosuite's) defines
``ncdpo_state()`` / ``ncdpo_set_state(st)``; the chain stops there.

Works for a :class:`gymnasium.vector.SyncVectorEnv` (directly), an :class:`~gymnasium.vector.AsyncVectorEnv` and a
:class:`~ncdpo.envs.ray_vector.RayVectorEnv` (each worker or actor snapshots its own env through
:class:`~ncdpo.envs.wrappers.WorkerGuard`'s ``ncdpo_snapshot`` attribute). This module needs NumPy and MuJoCo only,
so that subprocess workers never import torch.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

# Attributes that are structure or configuration, not state.
_SKIP = {
    "env",
    "envs",
    "env_fns",
    "_action_space",
    "_observation_space",
    "_metadata",
    "_cached_spec",
    "_saved_kwargs",
    "action_space",
    "observation_space",
    "single_action_space",
    "single_observation_space",
    "metadata",
    "spec",
    "model",
    "data",
    "_ezpickle_args",
    "_ezpickle_kwargs",
    "render_mode",
    "mujoco_renderer",
    "_env_obs",
    "closed",
    "context",
    "shared_memory",
    "copy",
    "daemon",
}
_SIMPLE = (bool, int, float, str, np.ndarray, np.generic, deque)


def _layers(env: Any) -> list[Any]:
    out = [env]
    while hasattr(out[-1], "env") and not hasattr(out[-1], "ncdpo_state"):
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
        elif isinstance(v, dict) and v and all(isinstance(x, np.ndarray) for x in v.values()):
            st[k] = {"__arrays__": {name: x.copy() for name, x in v.items()}}  # a vector env's dict observations
    if hasattr(obj, "ncdpo_state"):
        st["__custom__"] = obj.ncdpo_state()
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
        if k in ("__class__", "__custom__"):
            continue
        if k == "__mujoco__":
            import mujoco

            mujoco.mj_setState(obj.model, obj.data, np.asarray(v, np.float64), mujoco.mjtState.mjSTATE_INTEGRATION)
        elif isinstance(v, dict) and "__arrays__" in v:
            setattr(obj, k, {name: np.array(x, copy=True) for name, x in v["__arrays__"].items()})
        elif isinstance(v, dict) and "__generator__" in v:
            gen = getattr(obj, k, None)
            if not isinstance(gen, np.random.Generator):
                gen = np.random.default_rng()
                setattr(obj, k, gen)
            gen.bit_generator.state = v["__generator__"]
        else:
            setattr(obj, k, v)
    if "__custom__" in st:
        obj.ncdpo_set_state(st["__custom__"])


def stack_state(env: Any) -> list[dict[str, Any]]:
    """The state of every layer of one env's wrapper chain."""
    return [_layer_state(layer) for layer in _layers(env)]


def set_stack_state(env: Any, layers: list[dict[str, Any]]) -> None:
    own = _layers(env)
    if len(layers) != len(own):
        raise ValueError(f"saved env stack has {len(layers)} layers, this one {len(own)}")
    for layer, ls in zip(own, layers):
        _set_layer_state(layer, ls)


def _is_async(envs: Any) -> bool:
    """Sub-envs in other processes (``async`` subprocesses, ``ray`` actors): reached through get_attr / set_attr."""
    from gymnasium.vector import AsyncVectorEnv

    return isinstance(envs, AsyncVectorEnv) or type(envs).__name__ == "RayVectorEnv"


def env_state(envs: Any) -> dict[str, Any]:
    """State of a vector env and of every layer of each of its sub-envs."""
    envs = getattr(envs, "venv", envs)  # a multi-agent AgentRows view holds no state of its own
    if _is_async(envs):
        per_env = [list(s) for s in envs.get_attr("ncdpo_snapshot")]
    else:
        per_env = [stack_state(e) for e in envs.envs]
    return {"vector": _layer_state(envs), "envs": per_env}


def set_env_state(envs: Any, st: dict[str, Any]) -> None:
    """Restore :func:`env_state` into a freshly made vector env of the same task and size."""
    envs = getattr(envs, "venv", envs)
    if len(st["envs"]) != envs.num_envs:
        raise ValueError(f"saved state has {len(st['envs'])} envs, this vector env {envs.num_envs}")
    _set_layer_state(envs, st["vector"])
    if _is_async(envs):
        envs.set_attr("ncdpo_snapshot", list(st["envs"]))
    else:
        for e, layers in zip(envs.envs, st["envs"]):
            set_stack_state(e, layers)
