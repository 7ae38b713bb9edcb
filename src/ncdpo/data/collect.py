"""Roll out a saved policy into a dataset (``ncdpo collect``).

Envs are plain gymnasium envs stepped side by side with one batched policy call per decision. Each env
executes its own action chunk step by step and records every env step, so the dataset holds single-step
transitions whatever the policy's ``act_steps``; a chunk is abandoned when its episode ends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ncdpo.data.dataset import Dataset, Episode
from ncdpo.errors import NcdpoError
from ncdpo.observations import obs_copy, obs_index, obs_stack, row_of, set_row


class _Recorder:
    """The episodes of ``n`` envs as they are recorded, one step at a time."""

    def __init__(self, n: int) -> None:
        self.bufs: list[dict[str, list[Any]]] = [self._empty() for _ in range(n)]
        self.episodes: list[Episode] = []
        self.cut: list[int] = []  # indices of episodes that collection stopped before they ended

    @staticmethod
    def _empty() -> dict[str, list[Any]]:
        return {"obs": [], "act": [], "rew": []}

    def add(self, i: int, obs: Any, action: np.ndarray, reward: float) -> None:
        b = self.bufs[i]
        b["obs"].append(obs_copy(obs))
        b["act"].append(action)
        b["rew"].append(reward)

    def finish(self, i: int, terminated: bool, truncated: bool, collection_cut: bool = False) -> None:
        b = self.bufs[i]
        if collection_cut and not terminated and b["act"]:
            self.cut.append(len(self.episodes))
        T = len(b["act"])
        if T:
            dones = np.zeros(T, bool)
            dones[-1] = terminated
            obs = obs_stack(b["obs"]) if isinstance(b["obs"][0], dict) else np.array(b["obs"], np.float32)
            self.episodes.append(
                Episode(
                    obs,
                    np.array(b["act"], np.float32),
                    np.array(b["rew"], np.float32),
                    dones,
                    truncated and not terminated,
                )
            )
        self.bufs[i] = self._empty()


@torch.no_grad()
def collect(
    checkpoint: str | Path,
    episodes: int = 0,
    transitions: int = 0,
    action_noise: float = 0.0,
    deterministic: bool = False,
    seed: int = 0,
    n_envs: int = 8,
    device: str = "cpu",
) -> Dataset:
    """Collect ``episodes`` complete episodes, or ``transitions`` env steps, from a saved policy.

    ``action_noise`` is the std of extra Gaussian noise added to the executed action in the normalised
    [-1, 1] space (then clipped). With ``transitions`` the last episode of each env may be cut
    (``truncated=True``).
    """
    from ncdpo.algos import load_agent
    from ncdpo.envs.registry import env_kwargs, make_env
    from ncdpo.training.evaluation import decide

    if (episodes > 0) == (transitions > 0):
        raise NcdpoError("give exactly one of --episodes N or --transitions N (a positive number)")
    if action_noise < 0:
        raise NcdpoError(f"--action-noise must be >= 0 (got {action_noise})")
    agent, obs_norm, ck = load_agent(checkpoint, device)
    cfg = ck.config
    n_envs = max(1, min(n_envs, episodes) if episodes else n_envs)
    envs = [make_env(cfg.env.id, 1, cfg.env.max_episode_steps, env_kwargs(cfg.env)) for _ in range(n_envs)]
    to_env = envs[0].to_env_action
    low, high = envs[0].action_low.astype(np.float32), envs[0].action_high.astype(np.float32)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    obs = obs_stack([e.reset(seed=seed + i)[0] for i, e in enumerate(envs)])
    rec = _Recorder(n_envs)
    total, started = 0, n_envs  # env steps so far, episodes begun so far
    active = np.ones(n_envs, bool)
    while active.any():
        idx = np.nonzero(active)[0]
        chunks = decide(agent, obs_norm, obs_index(obs, idx), deterministic).action.cpu().numpy()
        for j, i in enumerate(idx):
            for a in chunks[j]:
                if action_noise > 0:
                    a = a + rng.normal(0.0, action_noise, a.shape)
                env_a = to_env(a)
                o2, r, term, trunc, _ = envs[i].env.step(env_a)  # below the chunking wrapper: one env step
                rec.add(i, row_of(obs, i), np.clip(env_a, low, high), float(r))
                set_row(obs, i, o2)
                total += 1
                if transitions and total >= transitions:
                    rec.finish(i, bool(term), True, collection_cut=not trunc)
                    active[:] = False
                    break
                if term or trunc:
                    rec.finish(i, bool(term), bool(trunc))
                    if episodes and started >= episodes:
                        active[i] = False
                    else:
                        started += 1
                        set_row(obs, i, envs[i].reset(seed=seed + started)[0])
                    break
            if not active.any():
                break
    if transitions:  # cut the episodes still running
        for i in range(n_envs):
            rec.finish(i, False, True, collection_cut=True)
    for e in envs:
        e.close()
    if not rec.episodes:
        raise NcdpoError("collection produced no transitions")
    meta = {
        "source_checkpoint": str(ck.path),
        "source_algo": cfg.algo,
        "source_env_steps": ck.meta.get("env_steps"),
        "action_noise": action_noise,
        "deterministic": deterministic,
        "seed": seed,
        "cut_episodes": rec.cut,
    }
    return Dataset(rec.episodes, cfg.env.id, low, high, meta)
