"""The rollout buffer and the typed batch of PPO samples the update consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ncdpo.observations import ObsSpec, obs_index, obs_map


@dataclass
class Batch:
    """PPO samples, batch-first: one per decision, or (DPPO) one per (decision, fine-tuned denoising step)."""

    obs: Any
    """Normalised observations the decisions were taken on: a tensor (B, obs_dim), or a dict of tensors
    (images uint8)."""
    log_prob: torch.Tensor
    """log pi_old of the stored actions."""
    advantages: torch.Tensor
    """GAE advantages (not yet normalised)."""
    returns: torch.Tensor
    """Value targets."""
    values: torch.Tensor
    """The critic's values at rollout time (the rollout's V_old)."""
    store: dict[str, torch.Tensor] = field(default_factory=dict)
    """What the agent stored to recompute its log-probabilities (chain noise, actions, masks, ...)."""
    obs_rows: torch.Tensor | None = None
    """Sample i reads observation ``obs_rows[i]`` (DPPO's samples share their decision's); None: row i."""

    def __len__(self) -> int:
        return int(self.log_prob.shape[0])

    def minibatch_store(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v[idx] for k, v in self.store.items()}

    def minibatch_obs(self, idx: torch.Tensor) -> Any:
        """The observations of samples ``idx``."""
        return obs_index(self.obs, idx if self.obs_rows is None else self.obs_rows[idx])


@dataclass
class RolloutBuffer:
    """Fixed-size (T, N, ...) storage of one iteration's decisions.

    Observations are float32 (T, N, obs_dim), or for a dict observation (``obs_spec``) one tensor per entry in
    its own dtype: camera images stay uint8 (T, N, H, W, 3) -- 4x smaller than as floats
    (:meth:`obs_bytes_per_decision`).
    """

    T: int
    N: int
    obs_dim: int
    device: torch.device
    obs_spec: ObsSpec | None = None
    obs: Any = field(init=False)
    rewards: torch.Tensor = field(init=False)
    dones: torch.Tensor = field(init=False)
    values: torch.Tensor = field(init=False)
    log_probs: torch.Tensor = field(init=False)
    store: dict[str, torch.Tensor] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        def z(*s: int) -> torch.Tensor:
            return torch.zeros(self.T, self.N, *s, device=self.device)

        if self.obs_spec is None:
            self.obs = z(self.obs_dim)
        else:
            self.obs = {
                k: torch.zeros(self.T, self.N, *s, device=self.device, dtype=getattr(torch, d))
                for k, s, d in self.obs_spec.keys
            }
        self.rewards, self.dones, self.values = z(), z(), z()
        self.log_probs = z()  # reshaped on the first add if the agent returns several log-probs per decision

    def add(
        self,
        t: int,
        obs: torch.Tensor,
        value: torch.Tensor,
        log_prob: torch.Tensor,
        store: dict[str, torch.Tensor],
        reward: torch.Tensor,
        done: torch.Tensor,
    ) -> None:
        """Record decision ``t`` of every env row."""
        if log_prob.dim() > 1 and self.log_probs.shape[2:] != log_prob.shape[1:]:
            self.log_probs = torch.zeros(self.T, *log_prob.shape, device=self.device)
        if not self.store:
            self.store = {k: torch.zeros(self.T, *v.shape, device=self.device, dtype=v.dtype) for k, v in store.items()}
        if isinstance(self.obs, dict):
            for k, v in self.obs.items():
                v[t] = obs[k]
        else:
            self.obs[t] = obs
        self.values[t], self.log_probs[t] = value, log_prob
        self.rewards[t], self.dones[t] = reward, done
        for k, v in store.items():
            self.store[k][t] = v

    def batch(self, advantages: torch.Tensor, returns: torch.Tensor) -> Batch:
        """The rollout flattened to one sample per decision, with its advantages and returns."""
        B = self.T * self.N

        def flat(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(B, *x.shape[2:])

        return Batch(
            obs_map(self.obs, flat),
            flat(self.log_probs),
            flat(advantages),
            flat(returns),
            flat(self.values),
            {k: flat(v) for k, v in self.store.items()},
        )

    def obs_bytes_per_decision(self) -> int:
        """Bytes of observation stored per decision (one env row at one step)."""
        if isinstance(self.obs, dict):
            return int(sum(v[0, 0].numel() * v.element_size() for v in self.obs.values()))
        return int(self.obs[0, 0].numel() * self.obs.element_size())
