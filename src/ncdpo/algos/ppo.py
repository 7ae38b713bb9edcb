"""MLP+PPO: the Gaussian MLP baseline on the same PPO core; with discrete actions, a categorical MLP (and,
on a multi-agent task, with the shared actor and the centralised critic, MLP+MAPPO)."""

from __future__ import annotations

import math

import torch

from ncdpo.algos.base import ActOutput, Agent, with_mask
from ncdpo.config import TrainConfig
from ncdpo.envs.spec import EnvSpec
from ncdpo.policies.categorical import CategoricalPolicy
from ncdpo.policies.gaussian import GaussianPolicy


class PPOAgent(Agent):
    algo = "ppo"

    def __init__(self, obs_dim: int, act_dim: int, cfg: TrainConfig, spec: EnvSpec | None = None) -> None:
        super().__init__(obs_dim, act_dim, cfg, spec)
        if self.discrete:
            self.policy: torch.nn.Module = CategoricalPolicy(self.spec.actor_dim, act_dim, cfg.mlp)
        else:
            encoder, in_dim = self.actor_encoder(cfg)
            self.policy = GaussianPolicy(in_dim, act_dim, cfg.act_steps, cfg.mlp, encoder)

    def act(self, obs: torch.Tensor, deterministic: bool = False, mask: torch.Tensor | None = None) -> ActOutput:
        if self.discrete:
            action, log_prob = self.policy.act(self.actor_obs(obs), deterministic, mask)
        else:
            action, log_prob = self.policy.act(self.actor_obs(obs), deterministic)
        return ActOutput(action, log_prob, with_mask({"action": action}, mask if self.discrete else None))

    def log_prob_entropy(self, obs: torch.Tensor, store: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.discrete:
            return self.policy.log_prob_entropy(self.actor_obs(obs), store["action"], store.get("mask"))
        return self.policy.log_prob(self.actor_obs(obs), store["action"]), self.policy.entropy()

    def policy_std(self) -> float:
        return math.nan if self.discrete else float(self.policy.log_std.detach().exp().mean())
