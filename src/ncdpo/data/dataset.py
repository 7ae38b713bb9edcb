"""Demonstration datasets: one on-disk format, three readers, validation on load.

The format is HDF5 laid out like robomimic's::

    data/                      attrs: env_id, obs_dim, act_dim, action_low, action_high, total, meta (JSON)
    data/demo_0/obs            (T, obs_dim) float32   observation before each action, or for a dict observation
                               (camera tasks) robomimic's group of one dataset per key:
    data/demo_0/obs/<camera>_image  (T, H, W, 3) uint8 (gzip-compressed), data/demo_0/obs/<key> (T, d) float32
    data/demo_0/actions        (T, act_dim) float32   executed action, in the env's units
    data/demo_0/rewards        (T,)         float32
    data/demo_0/dones          (T,)         bool      true on the step where the env *terminated*
                               attrs: num_samples, truncated (episode cut by a time limit or by collection)

:func:`load_dataset` also reads a plain ``.npz`` of flat arrays (D4RL names: ``observations``, ``actions``,
``rewards``, ``terminals``, optional ``timeouts`` and ``env_id``) and, where ``minari`` is installed, a
local Minari dataset given as ``minari:DATASET_ID``. Every problem (missing keys, wrong shapes, NaNs, an
action dimension that does not fit the env) is a one-line :class:`~ncdpo.errors.NcdpoError`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ncdpo.data.options import ReadOptions
from ncdpo.errors import NcdpoError

FORMAT = "ncdpo-dataset"
FORMAT_VERSION = 1


@dataclass
class Episode:
    """One episode (or the part of it that was recorded)."""

    obs: Any
    """(T, obs_dim) observation before each action, or a dict of (T, ...) arrays (images uint8)."""
    actions: np.ndarray
    """(T, act_dim) executed actions in the env's units."""
    rewards: np.ndarray
    """(T,) rewards."""
    dones: np.ndarray
    """(T,) true where the env terminated (never set on a time-limit truncation)."""
    truncated: bool = False
    """The episode was cut (time limit or end of collection) rather than terminated."""

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def ret(self) -> float:
        return float(self.rewards.sum())


@dataclass
class Dataset:
    """A list of episodes for one env, with the env's action bounds."""

    episodes: list[Episode]
    env_id: str
    action_low: np.ndarray
    action_high: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    @property
    def obs_dim(self) -> int:
        """Numbers per observation (all entries of a dict observation together)."""
        o = self.episodes[0].obs
        if isinstance(o, dict):
            return int(sum(np.prod(v.shape[1:]) for v in o.values()))
        return int(o.shape[1])

    @property
    def obs_keys(self) -> dict[str, tuple[tuple[int, ...], str]] | None:
        """A dict observation's entries: per-row shape and dtype by name (None for flat observations)."""
        o = self.episodes[0].obs
        if not isinstance(o, dict):
            return None
        return {k: (tuple(int(x) for x in v.shape[1:]), np.asarray(v).dtype.name) for k, v in o.items()}

    @property
    def act_dim(self) -> int:
        return int(self.episodes[0].actions.shape[1])

    @property
    def n_transitions(self) -> int:
        return sum(len(e) for e in self.episodes)

    def stats(self) -> dict[str, float]:
        """Return statistics over all recorded episodes, and over complete ones (``meta["cut_episodes"]`` lists
        the indices of episodes that collection stopped before they ended)."""
        r = np.array([e.ret for e in self.episodes])
        lengths = np.array([len(e) for e in self.episodes])
        cut = set(self.meta.get("cut_episodes", []))
        whole = np.array([e.ret for i, e in enumerate(self.episodes) if i not in cut])
        return {
            "complete_episodes": len(whole),
            "complete_return_mean": float(whole.mean()) if len(whole) else float("nan"),
            "complete_return_std": float(whole.std()) if len(whole) else float("nan"),
            "episodes": len(self.episodes),
            "transitions": int(lengths.sum()),
            "return_mean": float(r.mean()),
            "return_std": float(r.std()),
            "return_min": float(r.min()),
            "return_max": float(r.max()),
            "length_mean": float(lengths.mean()),
        }

    def normalize_actions(self, actions: np.ndarray) -> np.ndarray:
        """Env units -> [-1, 1] (the diffusion policy's space)."""
        lo, hi = self.action_low, self.action_high
        return np.clip(2.0 * (actions - lo) / (hi - lo) - 1.0, -1.0, 1.0).astype(np.float32)

    def save(self, path: str | Path) -> Path:
        """Write the HDF5 file atomically (temporary file in the same folder, then rename)."""
        import h5py

        validate_dataset(self)
        path = Path(path)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            with h5py.File(tmp, "w") as f:
                g = f.create_group("data")
                g.attrs.update(
                    format=FORMAT,
                    format_version=FORMAT_VERSION,
                    env_id=self.env_id,
                    obs_dim=self.obs_dim,
                    act_dim=self.act_dim,
                    action_low=self.action_low,
                    action_high=self.action_high,
                    total=self.n_transitions,
                    meta=json.dumps(self.meta),
                )
                for i, e in enumerate(self.episodes):
                    d = g.create_group(f"demo_{i}")
                    opts = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
                    if isinstance(e.obs, dict):  # robomimic's layout: obs/<key>
                        og = d.create_group("obs")
                        for k, v in e.obs.items():
                            v = np.asarray(v)
                            if v.dtype == np.uint8:
                                chunks = (1, *v.shape[1:])  # one frame per chunk: reading a frame reads only it
                                og.create_dataset(k, data=v, chunks=chunks, compression="gzip", compression_opts=4)
                            else:
                                og.create_dataset(k, data=v.astype(np.float32), **opts)
                    else:
                        d.create_dataset("obs", data=e.obs.astype(np.float32), **opts)
                    d.create_dataset("actions", data=e.actions.astype(np.float32), **opts)
                    d.create_dataset("rewards", data=e.rewards.astype(np.float32), **opts)
                    d.create_dataset("dones", data=e.dones.astype(bool), **opts)
                    d.attrs.update(num_samples=len(e), truncated=bool(e.truncated))
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException as e:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            if isinstance(e, OSError):
                raise NcdpoError(
                    f"could not write dataset {path}: {e.strerror or e} (an existing file there was left as it was)"
                ) from e
            raise
        return path


# ---------------------------------------------------------------------------------------------- validation
def validate_dataset(ds: Dataset) -> Dataset:
    """Check shapes, dtypes and finiteness; raise a one-line error naming the first problem."""
    src = ds.source
    if not ds.episodes:
        raise NcdpoError(f"dataset {src} has no episodes")
    obs_dim, act_dim = None, None
    keys0 = ds.obs_keys
    for i, e in enumerate(ds.episodes):
        where = f"dataset {src}, episode {i}"
        if isinstance(e.obs, dict) or keys0 is not None:
            _validate_dict_obs(e, keys0, where)
            if e.actions.ndim != 2:
                raise NcdpoError(f"{where}: actions must be 2-D (T, dim); got shape {e.actions.shape}")
            T = len(e.actions)
            if T == 0:
                raise NcdpoError(f"{where} is empty")
            if e.rewards.shape != (T,) or e.dones.shape != (T,):
                raise NcdpoError(
                    f"{where}: lengths disagree (actions {e.actions.shape}, rewards {e.rewards.shape}, dones "
                    f"{e.dones.shape})"
                )
            act_dim = act_dim or e.actions.shape[1]
            if e.actions.shape[1] != act_dim:
                raise NcdpoError(f"{where}: action dim {e.actions.shape[1]} differs from episode 0's ({act_dim})")
            for name in ("actions", "rewards"):
                if not np.all(np.isfinite(getattr(e, name))):
                    raise NcdpoError(f"{where}: '{name}' contains NaN or inf")
            if e.dones[:-1].any():
                raise NcdpoError(
                    f"{where}: 'dones' is set before the last step (episodes must end where they terminate)"
                )
            continue
        if e.obs.ndim != 2 or e.actions.ndim != 2:
            raise NcdpoError(
                f"{where}: obs and actions must be 2-D (T, dim); got shapes {e.obs.shape} and {e.actions.shape}"
            )
        T = len(e.actions)
        if T == 0:
            raise NcdpoError(f"{where} is empty")
        if e.obs.shape[0] != T or e.rewards.shape != (T,) or e.dones.shape != (T,):
            raise NcdpoError(
                f"{where}: lengths disagree (obs {e.obs.shape}, actions {e.actions.shape}, rewards "
                f"{e.rewards.shape}, dones {e.dones.shape})"
            )
        obs_dim = obs_dim or e.obs.shape[1]
        act_dim = act_dim or e.actions.shape[1]
        if e.obs.shape[1] != obs_dim or e.actions.shape[1] != act_dim:
            raise NcdpoError(
                f"{where}: obs/action dims ({e.obs.shape[1]}, {e.actions.shape[1]}) differ from episode 0's "
                f"({obs_dim}, {act_dim})"
            )
        for name in ("obs", "actions", "rewards"):
            if not np.all(np.isfinite(getattr(e, name))):
                raise NcdpoError(f"{where}: '{name}' contains NaN or inf")
        if e.dones[:-1].any():
            raise NcdpoError(f"{where}: 'dones' is set before the last step (episodes must end where they terminate)")
    if ds.action_low.shape != (act_dim,) or ds.action_high.shape != (act_dim,):
        raise NcdpoError(f"dataset {src}: action bounds have shape {ds.action_low.shape}, expected ({act_dim},)")
    if not np.all(ds.action_high > ds.action_low):
        raise NcdpoError(f"dataset {src}: action_high must exceed action_low")
    return ds


def _validate_dict_obs(e: Episode, keys0: dict[str, Any] | None, where: str) -> None:
    if not isinstance(e.obs, dict) or keys0 is None:
        raise NcdpoError(f"{where}: mixes flat and dict observations")
    T = len(e.actions)
    if set(e.obs) != set(keys0):
        raise NcdpoError(f"{where}: observation keys {sorted(e.obs)} differ from episode 0's {sorted(keys0)}")
    for k, v in e.obs.items():
        v = np.asarray(v)
        if v.shape[0] != T:
            raise NcdpoError(f"{where}: obs '{k}' has {v.shape[0]} steps but there are {T} actions")
        if (tuple(v.shape[1:]), v.dtype.name) != keys0[k]:
            raise NcdpoError(f"{where}: obs '{k}' has shape {v.shape[1:]} {v.dtype} unlike episode 0's {keys0[k]}")
        if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
            raise NcdpoError(f"{where}: obs '{k}' contains NaN or inf")


def check_fits_env(ds: Dataset, env_id: str, obs_dim: int, act_dim: int, obs_spec: Any = None) -> None:
    """Raise if the dataset's dimensions (a dict observation: its entries, ``obs_spec``'s) do not fit the env."""
    if ds.act_dim != act_dim:
        raise NcdpoError(f"dataset {ds.source} has action dimension {ds.act_dim} but {env_id} has {act_dim}")
    keys = ds.obs_keys
    if obs_spec is not None or keys is not None:
        if obs_spec is None or keys is None:
            has = "dict observations" if keys is not None else "flat observations"
            wants = "dict observations (cameras)" if obs_spec is not None else "flat observations"
            raise NcdpoError(f"dataset {ds.source} holds {has} but {env_id} has {wants}")
        for k, shape, dtype in obs_spec.keys:
            if k not in keys:
                what = "image key" if dtype == "uint8" else "observation key"
                raise NcdpoError(
                    f"dataset {ds.source} lacks the {what} '{k}' that {env_id} needs (it has: {', '.join(keys)})"
                )
            if keys[k][0] != tuple(shape):
                size = lambda s: "x".join(map(str, s))  # noqa: E731
                raise NcdpoError(
                    f"dataset {ds.source} has '{k}' of {size(keys[k][0])} but {env_id} gives {size(shape)}"
                    + (" (env.image_size, env.cameras)" if dtype == "uint8" else "")
                )
        return
    if ds.obs_dim != obs_dim:
        raise NcdpoError(f"dataset {ds.source} has observation dimension {ds.obs_dim} but {env_id} has {obs_dim}")


# ---------------------------------------------------------------------------------------------- readers
def bounds_for(env_id: str, act_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The env's action bounds (made from the env), or [-1, 1] if it cannot be made."""
    try:
        from ncdpo.envs.registry import action_bounds

        lo, hi = action_bounds(env_id)
        if lo.shape == (act_dim,):
            return lo, hi
    except NcdpoError:
        pass
    return -np.ones(act_dim, np.float32), np.ones(act_dim, np.float32)


def _load_hdf5(path: Path, opts: ReadOptions) -> Dataset:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise NcdpoError(
            f"dataset {path} is not a readable HDF5 file (truncated or corrupt?): {str(e).splitlines()[0]}"
        ) from None
    with f:
        from ncdpo.data.d4rl import is_d4rl, read_d4rl_hdf5
        from ncdpo.data.robomimic import is_robomimic, read_robomimic

        if is_d4rl(f):
            _refuse_keys(opts, path, "D4RL")
            return read_d4rl_hdf5(f, path)
        if "data" not in f:
            raise NcdpoError(
                f"dataset {path} has neither a 'data' group (robomimic's layout: data/demo_<i>/...) nor D4RL's flat "
                f"'observations' and 'actions' (it has: {', '.join(sorted(f.keys())) or 'nothing'})"
            )
        if is_robomimic(f):
            try:
                return read_robomimic(f, path, opts)
            except (OSError, KeyError, ValueError, TypeError) as e:
                raise NcdpoError(f"dataset {path} is damaged ({str(e).splitlines()[0]})") from None
        _refuse_keys(opts, path, "this package's")
        g = f["data"]
        names = sorted((k for k in g.keys() if k.startswith("demo_")), key=lambda k: int(k.split("_")[1]))
        episodes = []
        try:
            for k in names:
                d = g[k]
                missing = [x for x in ("obs", "actions", "rewards", "dones") if x not in d]
                if missing:
                    raise NcdpoError(f"dataset {path}: {k} lacks '{missing[0]}'")
                if isinstance(d["obs"], h5py.Group):  # robomimic's layout: one dataset per observation key
                    obs: Any = {}
                    for name, v in d["obs"].items():
                        a = np.asarray(v[()])
                        obs[name] = a if a.dtype == np.uint8 else a.astype(np.float32)
                else:
                    obs = np.asarray(d["obs"][()], np.float32)
                episodes.append(
                    Episode(
                        obs,
                        np.asarray(d["actions"][()], np.float32),
                        np.asarray(d["rewards"][()], np.float32).reshape(-1),
                        np.asarray(d["dones"][()]).astype(bool).reshape(-1),
                        bool(d.attrs.get("truncated", False)),
                    )
                )
            env_id = str(g.attrs.get("env_id", ""))
            meta = json.loads(g.attrs.get("meta", "{}"))
            lo = np.asarray(g.attrs["action_low"], np.float32) if "action_low" in g.attrs else None
            hi = np.asarray(g.attrs["action_high"], np.float32) if "action_high" in g.attrs else None
        except (OSError, KeyError, ValueError) as e:
            raise NcdpoError(f"dataset {path} is damaged ({str(e).splitlines()[0]})") from None
    if not episodes:
        raise NcdpoError(f"dataset {path} has no data/demo_<i> episodes")
    if lo is None or hi is None:
        lo, hi = bounds_for(env_id, episodes[0].actions.shape[-1])
    return Dataset(episodes, env_id, lo, hi, meta, str(path))


def _load_minari(dataset_id: str, opts: ReadOptions | None = None) -> Dataset:
    opts = opts or ReadOptions()
    try:
        import minari
    except ImportError:
        raise NcdpoError("reading a Minari dataset needs the 'minari' package (pip install 'minari[hdf5]')") from None
    try:
        md = minari.load_dataset(dataset_id)
    except Exception as e:  # minari raises several types for a missing local dataset
        raise NcdpoError(f"Minari dataset '{dataset_id}' cannot be loaded locally ({str(e).splitlines()[0]})") from None
    kitchen = _minari_kitchen_task(md, dataset_id, opts)
    episodes = []
    for ep in md.iterate_episodes():
        if kitchen:  # D4RL's kitchen as Minari stores it: dict observations, 450 steps, no termination
            from ncdpo.envs.kitchen import from_gymnasium_episode

            e = from_gymnasium_episode(ep.observations["observation"], ep.actions, kitchen)
            episodes.append(Episode(e["obs"], e["actions"], e["rewards"], e["dones"], e["truncated"]))
            continue
        if isinstance(ep.observations, dict):
            raise NcdpoError(
                f"Minari dataset '{dataset_id}' has dict observations (keys: {', '.join(ep.observations)}); only Box "
                "observations and D4RL's kitchen layout are supported"
            )
        obs = np.asarray(ep.observations, np.float32)
        if obs.ndim != 2:
            raise NcdpoError(
                f"Minari dataset '{dataset_id}' has non-flat observations (shape {obs.shape}); only Box "
                "observations are supported"
            )
        T = len(ep.actions)
        term = np.asarray(ep.terminations, bool).reshape(-1)
        trunc = np.asarray(ep.truncations, bool).reshape(-1)
        episodes.append(
            Episode(
                obs[:T],
                np.asarray(ep.actions, np.float32),
                np.asarray(ep.rewards, np.float32).reshape(-1),
                term,
                bool(trunc[-1]) if T else False,
            )
        )
    space = md.action_space
    env_id = ""
    try:
        env_id = md.spec.env_spec.id if md.spec.env_spec is not None else ""
    except AttributeError:
        pass
    lo = np.asarray(getattr(space, "low", -np.ones(episodes[0].actions.shape[1])), np.float32)
    hi = np.asarray(getattr(space, "high", np.ones(episodes[0].actions.shape[1])), np.float32)
    meta: dict[str, Any] = {"minari_id": dataset_id}
    if kitchen:
        env_id, meta["converted_from"] = kitchen, "FrankaKitchen-v1 (Minari D4RL/kitchen layout)"
    return Dataset(episodes, env_id, lo, hi, meta, f"minari:{dataset_id}")


def _minari_kitchen_task(md: Any, dataset_id: str, opts: ReadOptions) -> str:
    """The kitchen task a Minari dataset recorded on FrankaKitchen-v1 is for ("" for other datasets)."""
    try:
        spec = md.spec.env_spec
        env_name = spec.id if spec is not None else ""
        kwargs = dict(spec.kwargs) if spec is not None else {}
    except AttributeError:
        return ""
    if not env_name.startswith("FrankaKitchen"):
        return ""
    from ncdpo.envs.kitchen import TASKS, task_for_goal

    goal = set(kwargs.get("tasks_to_complete") or ())
    if opts.env_id:
        if opts.env_id not in TASKS:
            raise NcdpoError(f"Minari dataset '{dataset_id}' is Franka Kitchen; {opts.env_id} is not a kitchen task")
        if goal and set(TASKS[opts.env_id]) != goal:
            raise NcdpoError(
                f"Minari dataset '{dataset_id}' has the goal {sorted(goal)}, but {opts.env_id}'s is "
                f"{sorted(TASKS[opts.env_id])}"
            )
        return opts.env_id
    return task_for_goal(goal or set(TASKS["kitchen-complete"]), dataset_id)


def _refuse_keys(opts: ReadOptions, path: Path, layout: str) -> None:
    """Formats without named observation keys, filters or action keys refuse them (rather than ignore them)."""
    if opts.given:
        flag = "--dataset-obs-keys" if opts.obs_keys else "--dataset-filter" if opts.filter_key else ""
        what = flag or "--dataset-action-key"
        raise NcdpoError(
            f"dataset {path} is in {layout} layout, which has no named observation keys, filters or action keys: drop "
            f"{what} (it applies to robomimic and LeRobot datasets)"
        )


def load_dataset(path: str | Path, opts: ReadOptions | None = None) -> Dataset:
    """Read and validate a dataset: ``.hdf5``/``.h5`` (this package's layout, robomimic's own or D4RL's flat one),
    ``.npz`` (D4RL's arrays), a LeRobot dataset folder, ``minari:ID`` or ``shipped:TASK``. ``opts`` chooses the
    observation keys, the robomimic filter key and the action key, and names the env the data is for."""
    from ncdpo.shipped import resolve

    opts = opts or ReadOptions()
    s = str(resolve(path, "dataset"))
    if s.startswith("minari:"):
        _refuse_keys(opts, Path(s), "Minari's")
        return validate_dataset(_load_minari(s[len("minari:") :], opts))
    p = Path(s)
    if p.is_dir():
        from ncdpo.data.lerobot import read_lerobot

        return validate_dataset(read_lerobot(p, opts))
    if not p.is_file():
        raise NcdpoError(f"dataset not found: {p}")
    if p.suffix == ".npz":
        from ncdpo.data.d4rl import read_npz

        _refuse_keys(opts, p, "D4RL's flat (.npz)")
        ds = read_npz(p)
    elif p.suffix in (".hdf5", ".h5"):
        ds = _load_hdf5(p, opts)
    else:
        raise NcdpoError(
            f"dataset {p}: unknown file type '{p.suffix}' (expected .hdf5, .h5, .npz, a LeRobot folder or minari:ID)"
        )
    return validate_dataset(ds)


def dataset_env_id(path: str | Path) -> str:
    """The env a dataset names, read from its header only ("" if it names none): what ``ncdpo pretrain`` trains
    for when no ``--env`` is given."""
    from ncdpo.shipped import resolve

    s = str(resolve(path, "dataset"))
    p = Path(s)
    if s.startswith("minari:") or p.suffix == ".npz":
        return load_dataset(s).env_id
    if p.is_dir() or not p.is_file() or p.suffix not in (".hdf5", ".h5"):
        return ""
    import h5py

    try:
        with h5py.File(p, "r") as f:
            from ncdpo.data.robomimic import dataset_env, is_robomimic

            if "data" in f and is_robomimic(f):
                return dataset_env(f, p)
            if "data" in f:
                return str(f["data"].attrs.get("env_id", ""))
            env_id = f.attrs.get("env_id", "")
            return env_id.decode() if isinstance(env_id, bytes) else str(env_id)
    except OSError:
        return ""  # load_dataset reports it


# ---------------------------------------------------------------------------------------------- chunking
def make_chunks(ds: Dataset, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Behaviour-cloning pairs ``(obs_t, a_{t:t+horizon})`` with actions normalised to [-1, 1].

    Chunks never cross an episode boundary: near the end of an episode the chunk is padded by repeating the
    episode's last action (as Diffusion Policy does). Returns ``(obs (N, obs_dim), chunks (N, horizon, act_dim))``
    (a dict observation: a dict of (N, ...) arrays).
    """
    if horizon < 1:
        raise NcdpoError(f"horizon must be >= 1 (got {horizon})")
    all_obs, all_chunks = [], []
    for e in ds.episodes:
        a = ds.normalize_actions(e.actions)
        T = len(a)
        idx = np.minimum(np.arange(T)[:, None] + np.arange(horizon)[None, :], T - 1)
        all_obs.append(e.obs if isinstance(e.obs, dict) else e.obs.astype(np.float32))
        all_chunks.append(a[idx])
    if isinstance(all_obs[0], dict):  # a dict of (N, ...) arrays, images kept uint8
        obs = {k: np.concatenate([o[k] for o in all_obs]) for k in all_obs[0]}
        return obs, np.concatenate(all_chunks)
    return np.concatenate(all_obs), np.concatenate(all_chunks)
