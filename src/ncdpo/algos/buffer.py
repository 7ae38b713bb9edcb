"""The rollout buffer and the typed batch of PPO samples the update consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Batch:
    """PPO samples, batch-first: one per decision, or (DPPO) one per (decision, fine-tuned denoising step)."""

    obs: torch.Tensor
    """Normalised observations the decisions were taken on."""
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

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    def minibatch_store(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v[idx] for k, v in self.store.items()}


@dataclass
class RolloutBuffer:
    """Fixed-size (T, N, ...) storage of one iteration's decisions."""

    T: int
    N: int
    obs_dim: int
    device: torch.device
    obs: torch.Tensor = field(init=False)
    rewards: torch.Tensor = field(init=False)
    dones: torch.Tensor = field(init=False)
    values: torch.Tensor = field(init=False)
    log_probs: torch.Tensor = field(init=False)
    store: dict[str, torch.Tensor] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        def z(*s: int) -> torch.Tensor:
            return torch.zeros(self.T, self.N, *s, device=self.device)

        self.obs, self.rewards, self.dones, self.values = z(self.obs_dim), z(), z(), z()
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
        self.obs[t], self.values[t], self.log_probs[t] = obs, value, log_prob
        self.rewards[t], self.dones[t] = reward, done
        for k, v in store.items():
            self.store[k][t] = v

    def batch(self, advantages: torch.Tensor, returns: torch.Tensor) -> Batch:
        """The rollout flattened to one sample per decision, with its advantages and returns."""
        B = self.T * self.N

        def flat(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(B, *x.shape[2:])

        return Batch(
            flat(self.obs),
            flat(self.log_probs),
            flat(advantages),
            flat(returns),
            flat(self.values),
            {k: flat(v) for k, v in self.store.items()},
        )
