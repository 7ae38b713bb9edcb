"""NCDPO: PPO on the noise-conditioned diffusion policy, back-propagating through every denoising step.

METHOD.md section 2. Acting draws the whole chain noise ``xi``; the buffer stores it with the executed
action; the update recomputes ``m_theta(s, xi)`` through all K denoising steps and scores the stored
action under ``N(m_theta(s, xi), sigma_exp^2 I)``.
"""

from __future__ import annotations

import torch

from ncdpo.algos.base import ActOutput, Agent
from ncdpo.config import TrainConfig
from ncdpo.policies.diffusion import DiffusionPolicy


class NCDPOAgent(Agent):
    algo = "ncdpo"

    def __init__(self, obs_dim: int, act_dim: int, cfg: TrainConfig) -> None:
        if cfg.critic.condition_on_mean:  # the critic sees the executed part of m_theta_old(s, xi)
            self.critic_extra_dim = cfg.act_steps * act_dim
        super().__init__(obs_dim, act_dim, cfg)
        self.policy = DiffusionPolicy(obs_dim, act_dim, cfg.horizon, cfg.act_steps, cfg.diffusion)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> ActOutput:
        action, noise, log_prob, mean = self.policy.act(obs, deterministic, return_mean=True)
        store = {"noise": noise, "action": action}
        if self.critic_extra_dim:
            store["mean"] = mean
        return ActOutput(action, log_prob, store)

    def critic_features(self, obs: torch.Tensor, store: dict[str, torch.Tensor]) -> torch.Tensor:
        if not self.critic_extra_dim:
            return obs
        return torch.cat([obs, store["mean"].flatten(1)], dim=-1)

    def evaluate(self, obs: torch.Tensor, store: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.policy.log_prob(obs, store["noise"], store["action"]), self.policy.entropy()

    def set_progress(self, frac: float) -> None:
        self.policy.set_progress(frac)

    def policy_std(self) -> float:
        return float(self.policy.sigma_exp().detach().mean())
