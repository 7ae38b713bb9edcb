"""robomimic's own HDF5 layout, as robomimic's ``dataset_states_to_obs.py`` (and robosuite conversion) write it::

    data/                     attrs: total, env_args (JSON: env_name, type, env_kwargs incl. controller_configs)
    data/demo_<i>/            attrs: num_samples, model_file
    data/demo_<i>/obs/<key>   (T, ...) one dataset per observation key: robot0_eef_pos, ..., object,
                              <camera>_image (T, H, W, 3) uint8
    data/demo_<i>/next_obs/<key>, states (T, n), actions (T, A), rewards (T,), dones (T,)
    mask/<filter>             names of the demos in a split (``train``, ``valid``, ``20_percent``, ...)

The observation keys are chosen and ordered by :class:`~ncdpo.data.options.ReadOptions` (default: the task's
robomimic low-dim keys, concatenated in this package's flat order, or a camera task's entries); a filter key
keeps the demos its mask lists. ``env_args`` is checked by its ``env_name`` only, so robosuite 1.4 controller
configs (``{"type": "OSC_POSE", ...}``) and 1.5 composite ones are both accepted.

robomimic sets ``dones`` on every step at which the task is solved (and on the last step); this package's
episodes end where they terminate, so an episode counts as terminated when its last step is done and as cut
(``truncated``) otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ncdpo.data.dataset import Dataset, Episode, bounds_for
from ncdpo.data.options import ReadOptions, assemble, key_pairs
from ncdpo.errors import NcdpoError


def is_robomimic(f: Any) -> bool:
    """Whether an open HDF5 file is in robomimic's own layout (not one this package wrote)."""
    import h5py

    if "data" not in f:
        return False
    attrs = f["data"].attrs
    if "env_args" in attrs:
        return True
    if "format" in attrs or "env_id" in attrs:
        return False
    # unmarked: robomimic's if its demos keep obs as a group of keys, or robomimic's states / next_obs
    first = next((f["data"][k] for k in f["data"].keys() if k.startswith("demo_")), None)
    if not isinstance(first, h5py.Group):
        return False
    return isinstance(first.get("obs"), h5py.Group) or "states" in first or "next_obs" in first


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def env_args(f: Any, path: Path) -> dict[str, Any]:
    """``data.attrs["env_args"]`` parsed ({} if absent)."""
    raw = f["data"].attrs.get("env_args")
    if raw is None:
        return {}
    try:
        out = json.loads(_text(raw))
    except json.JSONDecodeError as e:
        raise NcdpoError(f"dataset {path}: data.attrs['env_args'] is not JSON ({e.msg})") from None
    if not isinstance(out, dict):
        raise NcdpoError(f"dataset {path}: data.attrs['env_args'] is not a JSON object")
    return out


def task_of_env_name(env_name: str) -> str:
    """This package's state task for a robosuite env name (``Lift`` -> ``lift``), or ""."""
    from ncdpo.envs.manipulation import SPECS

    return next((task for task, spec in SPECS.items() if spec.env_name == env_name), "")


def controller_of(args: dict[str, Any]) -> str:
    """The arm controller an ``env_args`` names: robosuite 1.4's ``{"type": "OSC_POSE"}`` or the right arm's
    part of a 1.5 composite config (``{"type": "BASIC", "body_parts": {"right": {"type": "OSC_POSE"}}}``)."""
    cc = (args.get("env_kwargs") or {}).get("controller_configs") or {}
    if not isinstance(cc, dict):
        return ""
    parts = cc.get("body_parts") or cc.get("body_parts_controller_configs") or {}
    arm = parts.get("right") if isinstance(parts, dict) else None
    if isinstance(arm, dict) and "type" in arm:
        return f"{cc.get('type', '')}/{arm['type']}"
    return str(cc.get("type", ""))


def dataset_env(f: Any, path: Path) -> str:
    """The task a robomimic file was recorded on (from ``env_args``' env_name), or ""."""
    return task_of_env_name(str(env_args(f, path).get("env_name", "")))


def _demo_names(f: Any, path: Path, filter_key: str) -> list[str]:
    g = f["data"]
    if not filter_key:
        names = [k for k in g.keys() if k.startswith("demo_")]
        try:
            return sorted(names, key=lambda k: int(k.split("_", 1)[1]))
        except ValueError:
            return sorted(names)
    masks = sorted(f["mask"].keys()) if "mask" in f else []
    if filter_key not in masks:
        have = f"it has: {', '.join(masks)}" if masks else "it has no mask group"
        raise NcdpoError(f"dataset {path} has no filter key '{filter_key}' (mask/{filter_key}; {have})")
    names = [_text(n) for n in np.asarray(f["mask"][filter_key][()]).reshape(-1)]
    gone = [n for n in names if n not in g]
    if gone:
        raise NcdpoError(f"dataset {path}: mask/{filter_key} lists '{gone[0]}', which is not in data/")
    if not names:
        raise NcdpoError(f"dataset {path}: mask/{filter_key} lists no demos")
    return names


def default_obs_keys(env_id: str, obs_spec: Any, available: list[str], path: Path) -> tuple[str, ...]:
    """A camera task's entries, a robosuite task's robomimic low-dim keys, or the file's only key."""
    if obs_spec is not None:
        return tuple(obs_spec.names)
    from ncdpo.envs.manipulation import base_task, robomimic_lowdim_keys

    if env_id and base_task(env_id):
        return tuple(robomimic_lowdim_keys(env_id))
    if len(available) == 1:
        return (available[0],)
    raise NcdpoError(
        f"dataset {path}: choose the observation keys with --dataset-obs-keys (it has: {', '.join(available)})"
    )


def read_robomimic(f: Any, path: Path, opts: ReadOptions) -> Dataset:
    """A :class:`Dataset` from an open robomimic-layout file (see the module docstring)."""
    import h5py

    args = env_args(f, path)
    env_name = str(args.get("env_name", ""))
    file_task = task_of_env_name(env_name)
    env_id = opts.env_id or file_task
    if opts.env_id and env_name:
        from ncdpo.envs.manipulation import SPECS, base_task

        base = base_task(opts.env_id)
        want = SPECS[base].env_name if base else ""
        if want and want != env_name:
            raise NcdpoError(
                f"dataset {path} was recorded on robosuite env '{env_name}' but {opts.env_id} is robosuite '{want}'"
            )
    names = _demo_names(f, path, opts.filter_key)
    if not names:
        raise NcdpoError(f"dataset {path} has no data/demo_<i> episodes")
    act_key = opts.action_key or "actions"
    first = f["data"][names[0]]
    if "obs" not in first:
        raise NcdpoError(
            f"dataset {path}: {names[0]} has no 'obs' (a states-only robomimic file: extract observations first with "
            "robomimic's dataset_states_to_obs.py)"
        )
    if not isinstance(first["obs"], h5py.Group):
        raise NcdpoError(f"dataset {path}: {names[0]}/obs is not a group of observation keys (robomimic's layout)")
    available = sorted(first["obs"].keys())
    keys = opts.obs_keys or default_obs_keys(env_id, opts.obs_spec, available, path)
    pairs = key_pairs(keys)
    flat = opts.obs_spec is None
    episodes = []
    for name in names:
        d = f["data"][name]
        where = f"dataset {path}, {name}"
        for need in ("obs", act_key):
            if need not in d:
                raise NcdpoError(f"{where} lacks '{need}'")
        obs_g = d["obs"]
        parts = {}
        for _, k in pairs:
            if k not in obs_g:
                raise NcdpoError(f"{where} has no observation key '{k}' (it has: {', '.join(sorted(obs_g.keys()))})")
            parts[k] = np.asarray(obs_g[k][()])
        actions = np.asarray(d[act_key][()], np.float32)
        T = len(actions)
        if T == 0:
            raise NcdpoError(f"{where} is empty (no actions)")
        for k, v in parts.items():
            if len(v) != T:
                raise NcdpoError(f"{where}: obs '{k}' has {len(v)} steps but there are {T} actions")
        obs = assemble(parts, pairs, flat, where)
        rewards = np.asarray(d["rewards"][()], np.float32).reshape(-1) if "rewards" in d else np.zeros(T, np.float32)
        raw_dones = np.asarray(d["dones"][()]).astype(bool).reshape(-1) if "dones" in d else np.zeros(T, bool)
        if rewards.shape != (T,) or raw_dones.shape != (T,):
            raise NcdpoError(
                f"{where}: lengths disagree (actions {actions.shape}, rewards {rewards.shape}, dones {raw_dones.shape})"
            )
        terminated = bool(raw_dones[-1])
        dones = np.zeros(T, bool)
        dones[-1] = terminated
        episodes.append(Episode(obs, actions, rewards, dones, not terminated))
    lo, hi = bounds_for(env_id, episodes[0].actions.shape[-1])
    meta = {
        "source": "robomimic",
        "env_name": env_name,
        "controller": controller_of(args),
        "env_version": str(args.get("env_version", "")),
        "filter_key": opts.filter_key,
        "obs_keys": [k for k in keys],
        "demos": names,
    }
    return Dataset(episodes, env_id, lo, hi, meta, str(path))


def save_robomimic(ds: Dataset, path: str | Path) -> Path:
    """Write a robosuite task's dataset in robomimic's own layout (``obs/<key>`` per robomimic key, ``next_obs``,
    ``env_args`` with the robosuite env name, ``mask/train`` of every demo), so that robomimic's tools read this
    package's demonstrations; the file loads back to the same episodes. ``states`` are not recorded here, so a
    file written by this function cannot be replayed in robomimic's playback tools."""
    import h5py

    from ncdpo.envs.manipulation import SPECS, base_task, robomimic_lowdim_keys

    base = base_task(ds.env_id)
    if base is None:
        raise NcdpoError(f"robomimic's layout is for robosuite tasks; dataset {ds.source} is for '{ds.env_id}'")
    n_robots = len(SPECS[base].robots)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    env_args = {
        "env_name": SPECS[base].env_name,
        "type": 1,
        "env_version": "1.5.2",
        "env_kwargs": {"robots": list(SPECS[base].robots), "control_freq": 20, "controller_configs": {"type": "BASIC"}},
    }
    with h5py.File(tmp, "w") as f:
        g = f.create_group("data")
        g.attrs["total"] = ds.n_transitions
        g.attrs["env_args"] = json.dumps(env_args)
        for i, e in enumerate(ds.episodes):
            d = g.create_group(f"demo_{i}")
            d.attrs["num_samples"] = len(e)
            if isinstance(e.obs, dict):
                parts = dict(e.obs)
            else:
                dims = [3, 4, 2] * n_robots
                dims.append(e.obs.shape[1] - sum(dims))
                bounds = np.cumsum([0, *dims])
                parts = {k: e.obs[:, a:b] for k, a, b in zip(robomimic_lowdim_keys(base), bounds[:-1], bounds[1:])}
            for k, v in parts.items():
                d.create_dataset(f"obs/{k}", data=v)
                d.create_dataset(f"next_obs/{k}", data=np.concatenate([v[1:], v[-1:]]))
            d.create_dataset("actions", data=e.actions)
            d.create_dataset("rewards", data=e.rewards)
            d.create_dataset("dones", data=e.dones.astype(np.int64))
        f.create_dataset("mask/train", data=np.array([f"demo_{i}" for i in range(len(ds.episodes))], dtype="S"))
    tmp.replace(path)
    return path
