"""The policy-specific part of an on-policy algorithm.

The PPO core (:mod:`ncdpo.algos.core`) only ever talks to an :class:`Agent`: it asks it to act, stores what
the agent returns in the rollout buffer, and later asks it for the log-probabilities of the stored actions
with gradients. Each algorithm (NCDPO, MLP+PPO, ...) is a small subclass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ncdpo.config import TrainConfig
from ncdpo.envs.spec import EnvSpec
from ncdpo.policies.common import Critic, ValueNorm


@dataclass
class ActOutput:
    """What one call of :meth:`Agent.act` returns for a batch of observations."""

    action: torch.Tensor
    """Executed actions: continuous ones normalised to [-1, 1] (before clipping), (B, act_steps, act_dim);
    discrete ones as indices, (B,)."""
    log_prob: torch.Tensor
    """log pi_old of those actions: (B,)."""
    store: dict[str, torch.Tensor]
    """Everything the update needs to recompute the log-probability (e.g. the chain noise), batch-first."""


class Agent(nn.Module):
    """Actor (algorithm-specific) plus critic V(s) (shared)."""

    algo: str = ""
    critic_extra_dim: int = 0
    """Width of the features :meth:`critic_features` appends to the observation (0: the critic is V(s))."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: TrainConfig, spec: EnvSpec | None = None) -> None:
        super().__init__()
        self.spec = spec or EnvSpec(obs_dim, act_dim)
        if (self.spec.obs_dim, self.spec.act_dim) != (obs_dim, act_dim):
            raise ValueError(f"spec {self.spec} does not match obs/act dims ({obs_dim}, {act_dim})")
        self.obs_dim, self.act_dim, self.act_steps = obs_dim, act_dim, cfg.act_steps
        self.discrete = self.spec.discrete
        critic_in = obs_dim - self.spec.critic_start + self.critic_extra_dim
        self.critic = Critic(critic_in, cfg.critic.hidden_dims, cfg.critic.activation)
        self.value_norm = ValueNorm() if cfg.ppo.norm_value else None

    def actor_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """The part of a row's observation the actor reads (a multi-agent row: local obs and agent id)."""
        return obs if self.spec.actor_dim == obs.shape[-1] else obs[:, : self.spec.actor_dim]

    def critic_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """The part the critic reads (a multi-agent row: agent id and global state)."""
        return obs if self.spec.critic_start == 0 else obs[:, self.spec.critic_start :]

    def act(self, obs: torch.Tensor, deterministic: bool = False, mask: torch.Tensor | None = None) -> ActOutput:
        """Sample (or take the mean / most likely) executed action for normalised observations; ``mask``
        (B, n_actions) marks the legal discrete actions (ignored for continuous actions)."""
        raise NotImplementedError

    def evaluate(self, obs: torch.Tensor, store: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log pi_theta(stored action), entropy)`` with gradients, for the PPO update."""
        raise NotImplementedError

    def critic_features(self, obs: torch.Tensor, store: dict[str, torch.Tensor]) -> torch.Tensor:
        """The critic's input for observations and what :meth:`act` stored for them."""
        return self.critic_obs(obs)

    def value_raw(self, obs: torch.Tensor, store: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The critic's output: normalised values when ``ppo.norm_value``, else the values themselves."""
        if self.critic_extra_dim and store is None:
            store = self.act(obs).store
        return self.critic(self.critic_features(obs, store or {}))

    def value(self, obs: torch.Tensor, store: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Critic value of the decisions ``act`` took (``store``); without a store the agent acts first."""
        v = self.value_raw(obs, store)
        return v if self.value_norm is None else self.value_norm.denormalize(v)

    def training_samples(
        self, obs: torch.Tensor, log_prob: torch.Tensor, adv: torch.Tensor, returns: torch.Tensor, values: torch.Tensor,
        store: dict[str, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The PPO samples of a flattened rollout: one per decision here; DPPO makes one per denoising step."""
        return obs, log_prob, adv, returns, values, store

    def advantage_scale(self, store: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Per-sample factor applied to the (normalised) advantages, or None."""
        return None

    def clip_coef(self, store: dict[str, torch.Tensor], clip: float) -> float | torch.Tensor:
        """PPO clip range of each sample (a float for all by default)."""
        return clip

    def on_init_loaded(self, ck: Any) -> None:
        """Called with the :class:`~ncdpo.checkpoint.Checkpoint` after ``--init`` loaded its weights."""

    def actor_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("critic.")]

    def set_progress(self, frac: float) -> None:
        """Called before each rollout with the fraction of the budget spent (for schedules)."""

    def policy_std(self) -> float:
        """Mean std of the executed-action distribution (logged as charts/policy_std; nan for discrete actions)."""
        raise NotImplementedError


def with_mask(store: dict[str, torch.Tensor], mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """``store`` plus the action mask the decision was taken under (so the update scores it the same way)."""
    if mask is not None:
        store["mask"] = mask.bool()
    return store
