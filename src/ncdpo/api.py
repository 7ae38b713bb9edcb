"""The public Python API: use a trained policy (:func:`load_policy`), train (:func:`train`), behaviour-clone
(:func:`pretrain`).

    import ncdpo
    policy = ncdpo.load_policy("shipped:Hopper-v5")      # a checkpoint file, a run folder or shipped:TASK
    action = policy.act(obs)                             # a raw env observation in, an env-ready action out
    run_dir = ncdpo.train(env="Hopper-v5", algo="ppo", total_env_steps=50_000)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ncdpo.config import TrainConfig
from ncdpo.errors import NcdpoError
from ncdpo.observations import obs_len


class Policy:
    """A trained policy, ready for its environment: :meth:`act` takes raw env observations (one, or a batch as
    the rows of an array) and returns env-ready actions.

    It normalises observations with the statistics saved in the checkpoint, runs the policy on ``device``,
    queues the executed part of each predicted action chunk (``act_steps`` actions: one is returned per call,
    a new decision is taken when the queue is empty), and maps continuous actions from [-1, 1] onto the env's
    action bounds. Call :meth:`reset` when an episode ends (all rows, or the ones given) so the next call
    decides afresh. The policy's noise comes from its own generator (``seed``): the caller's torch RNG is left
    alone, and the same seed gives the same actions as ``ncdpo eval --seed``.
    """

    def __init__(
        self, path: str | Path, device: str = "cpu", deterministic: bool = True, seed: int = 0, noise_mean: bool = False
    ) -> None:
        from ncdpo.algos import load_agent

        with torch.random.fork_rng(devices=[]):  # building the modules draws their (overwritten) initial weights
            self.agent, self.obs_norm, self.checkpoint = load_agent(path, device)
        if noise_mean:
            if getattr(self.agent, "noise_policy", None) is None:
                raise NcdpoError(f"noise_mean needs an NCDPO policy with a noise policy ({path} has none)")
            self.agent.noise_mean = True
        cfg = self.checkpoint.config
        self.config: TrainConfig = cfg
        self.env_id, self.algo, self.act_steps = cfg.env.id, cfg.algo, cfg.act_steps
        self.obs_dim, self.act_dim = self.checkpoint.obs_dim, self.checkpoint.act_dim
        self.obs_spec = self.agent.obs_spec
        """A camera task's observation entries (names, shapes, dtypes: the cameras and image size it was
        trained with); None for a flat observation."""
        self.discrete = self.agent.discrete
        self.deterministic = deterministic
        self.device = next(self.agent.parameters()).device
        self.action_low, self.action_high = (None, None) if self.discrete else self._bounds()
        self._queue: np.ndarray | None = None  # (rows, actions left, ...) of the current chunks
        self._left: np.ndarray | None = None
        self.seed(seed)

    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        meta = self.checkpoint.meta
        if "action_bounds" in meta:
            low, high = meta["action_bounds"]
        else:  # checkpoints written before the bounds were saved: read them off the env
            from ncdpo.envs.registry import action_bounds

            low, high = action_bounds(self.env_id)
        return np.asarray(low, np.float64), np.asarray(high, np.float64)

    def seed(self, seed: int) -> None:
        """Restart the policy's noise generator from ``seed`` (and forget queued actions)."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            self._rng = self._rng_now()
        self.reset()

    def _rng_now(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return torch.get_rng_state(), cuda

    def reset(self, rows: Any = None) -> None:
        """Forget the queued actions of all rows (``rows`` None) or of the given rows (a finished episode)."""
        if rows is None or self._left is None:
            self._queue, self._left = None, None
        else:
            self._left[np.asarray(rows)] = 0

    def _rows(self, obs: Any) -> tuple[Any, bool]:
        """``obs`` as a batch of rows, and whether it was one observation; checked against the saved layout."""
        spec = self.obs_spec
        if spec is None:
            if isinstance(obs, dict):
                raise NcdpoError(
                    f"policy for {self.env_id} takes a flat observation of {self.obs_dim} numbers, not a dict"
                )
            obs = np.asarray(obs)
            single = obs.ndim == 1
            rows = obs[None] if single else obs
            if rows.ndim != 2 or rows.shape[1] != self.obs_dim:
                raise NcdpoError(
                    f"policy for {self.env_id} takes observations of {self.obs_dim} numbers, got shape "
                    f"{tuple(obs.shape)}"
                )
            return rows, single
        if not isinstance(obs, dict):
            raise NcdpoError(f"policy for {self.env_id} takes a dict observation ({spec.describe()})")
        missing = [k for k in spec.names if k not in obs]
        if missing:
            raise NcdpoError(f"observation lacks entry '{missing[0]}' (the policy reads {spec.describe()})")
        first = spec.names[0]
        single = np.asarray(obs[first]).ndim == len(spec.shape(first))
        rows = {}
        for k, shape, _ in spec.keys:
            v = np.asarray(obs[k])
            v = v[None] if single else v
            if tuple(v.shape[1:]) != tuple(shape):
                raise NcdpoError(
                    f"observation entry '{k}' has shape {tuple(np.asarray(obs[k]).shape)}; the policy was trained on "
                    f"{tuple(shape)} per row (cameras and image size are saved with it)"
                )
            rows[k] = v
        return rows, single

    @torch.no_grad()
    def act(self, obs: Any, deterministic: bool | None = None, mask: np.ndarray | None = None) -> Any:
        """The next env action for ``obs`` (obs_dim,) -> (act_dim,) or an int; a batch (B, obs_dim) -> (B, act_dim)
        or (B,) ints; a camera task's dict observation (one, or a dict of batches) likewise. ``mask``: the legal
        discrete actions, (n_actions,) or (B, n_actions)."""
        rows, single = self._rows(obs)
        n = obs_len(rows)
        if self._left is not None and len(self._left) != n:
            self.reset()  # a different number of rows: start over
        need = np.ones(n, bool) if self._left is None else self._left == 0
        if need.any():
            self._decide(rows, need, deterministic, None if mask is None else np.atleast_2d(mask))
        taken = self.act_steps - self._left
        out = self._queue[np.arange(n), taken]
        self._left -= 1
        return out[0] if single else out

    def _decide(self, rows: Any, need: np.ndarray, deterministic: bool | None, mask: np.ndarray | None) -> None:
        from ncdpo.training.evaluation import decide

        det = self.deterministic if deterministic is None else deterministic
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.set_rng_state(self._rng[0])
            if self._rng[1] is not None:
                torch.cuda.set_rng_state(self._rng[1], self.device)
            action = decide(self.agent, self.obs_norm, rows, det, mask).action.cpu().numpy()
            self._rng = self._rng_now()
        if self.discrete:
            chunk = action.reshape(obs_len(rows), 1)
        else:
            chunk = to_env(action, self.action_low, self.action_high)  # (rows, act_steps, act_dim), elementwise
        if self._queue is None:
            self._queue = chunk
            self._left = np.full(obs_len(rows), self.act_steps)
        else:  # every row decides at once when the rows run in step; otherwise only those whose queue is empty
            self._queue[need] = chunk[need]
            self._left[need] = self.act_steps

    def __repr__(self) -> str:
        return (
            f"Policy({self.algo} on {self.env_id}, obs {self.obs_dim}, "
            f"{'actions ' + str(self.act_dim) if self.discrete else 'action dim ' + str(self.act_dim)}, "
            f"act_steps {self.act_steps}, from {self.checkpoint.path})"
        )


def to_env(a: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Normalised actions (any leading shape) as the env takes them (float32, as gymnasium's Box actions)."""
    from ncdpo.envs.wrappers import to_bounds

    return to_bounds(a, low, high).astype(np.float32)


def load_policy(
    path_or_shipped: str | Path,
    device: str = "cpu",
    deterministic: bool = True,
    seed: int = 0,
    noise_mean: bool = False,
) -> Policy:
    """Load a trained policy: a checkpoint file, a run folder (its final checkpoint) or ``shipped:TASK``.

    ``noise_mean``: an NCDPO policy with a learned noise policy acts with the noise policy's mean ``mu_psi(s)``
    instead of drawing the chain noise from it (as ``ncdpo eval --noise-mean``)."""
    return Policy(path_or_shipped, device, deterministic, seed, noise_mean)


def _values(config: TrainConfig | Mapping[str, Any] | str | Path | None, values: dict[str, Any]) -> dict[str, Any]:
    out = dict(config) if isinstance(config, Mapping) else {}
    for k, v in values.items():
        out["env.id" if k == "env" else k.replace("__", ".")] = v
    return out


def resolve(
    config: TrainConfig | Mapping[str, Any] | str | Path | None = None, command: str = "train", **values: Any
) -> TrainConfig:
    """The config :func:`train` / :func:`pretrain` run: a :class:`TrainConfig` as given (validated), or resolved as
    the CLI does (defaults, task preset, ``init`` checkpoint, a config file, then ``values``)."""
    from ncdpo.config import apply_overrides, validate
    from ncdpo.training.resolve import resolve_config

    if isinstance(config, TrainConfig):
        return validate(apply_overrides(config, _values(None, values), source="keyword value"))
    file = str(config) if isinstance(config, (str, Path)) else None
    return resolve_config(_values(config, values), file, command)


def train(config: TrainConfig | Mapping[str, Any] | str | Path | None = None, **values: Any) -> Path:
    """Train a policy; returns the run folder (its ``checkpoints/final.safetensors`` loads with :func:`load_policy`).

    ``config``: a :class:`TrainConfig`, a mapping of dotted keys, or a JSON/YAML config file; keyword ``values``
    go on top, ``__`` standing for the dot (``ppo__gamma=0.95``) and ``env`` for ``env.id``::

        ncdpo.train(env="Hopper-v5", algo="ppo", total_env_steps=100_000)
        ncdpo.train(init="shipped:Hopper-v5", config="configs/finetune_locomotion.yaml", total_env_steps=200_000)
    """
    from ncdpo.training.trainer import Trainer

    return Trainer(resolve(config, "train", **values)).run()


def pretrain(config: TrainConfig | Mapping[str, Any] | str | Path | None = None, **values: Any) -> Path:
    """Behaviour-clone a diffusion policy on a dataset (``pretrain__dataset=...`` or ``dataset=...``); returns the
    run folder."""
    from ncdpo.training.bc import pretrain as run_pretrain

    if "dataset" in values:
        values["pretrain__dataset"] = values.pop("dataset")
    return run_pretrain(resolve(config, "pretrain", **values))[0]
