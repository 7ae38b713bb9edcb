"""MLP+PPO: the Gaussian MLP baseline on the same PPO core."""

from __future__ import annotations

import torch

from ncdpo.algos.base import ActOutput, Agent
from ncdpo.config import TrainConfig
from ncdpo.policies.gaussian import GaussianPolicy


class PPOAgent(Agent):
    algo = "ppo"

    def __init__(self, obs_dim: int, act_dim: int, cfg: TrainConfig) -> None:
        super().__init__(obs_dim, act_dim, cfg)
        self.policy = GaussianPolicy(obs_dim, act_dim, cfg.act_steps, cfg.gaussian)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> ActOutput:
        action, log_prob = self.policy.act(obs, deterministic)
        return ActOutput(action, log_prob, {"action": action})

    def evaluate(self, obs: torch.Tensor, store: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.policy.log_prob(obs, store["action"]), self.policy.entropy()

    def policy_std(self) -> float:
        return float(self.policy.log_std.detach().exp().mean())
