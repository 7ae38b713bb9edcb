"""NCDPO: PPO on the noise-conditioned diffusion policy, back-propagating through every denoising step.

docs/METHOD.md section 2. Acting draws the whole chain noise ``xi``; the buffer stores it with the executed
action; the update recomputes ``m_theta(s, xi)`` through all K denoising steps and scores the stored
action under ``N(m_theta(s, xi), sigma_exp^2 I)`` (continuous actions) or ``softmax(logit_scale * m_theta(s, xi))``
(discrete actions).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ncdpo.algos.base import ActOutput, Agent, check_same_prediction, with_mask
from ncdpo.config import TrainConfig
from ncdpo.envs.spec import EnvSpec
from ncdpo.policies.categorical import DiscreteDiffusionPolicy
from ncdpo.policies.diffusion import DiffusionPolicy


class NCDPOAgent(Agent):
    algo = "ncdpo"
    init_algos = ("dppo",)

    def __init__(self, obs_dim: int, act_dim: int, cfg: TrainConfig, spec: EnvSpec | None = None) -> None:
        if (
            cfg.critic.condition_on_mean
        ):  # the critic sees the executed part of m_theta_old(s, xi) (discrete: the logits)
            self.critic_extra_dim = cfg.act_steps * act_dim
        super().__init__(obs_dim, act_dim, cfg, spec)
        if self.discrete:
            self.policy: DiffusionPolicy = DiscreteDiffusionPolicy(self.spec.actor_dim, act_dim, cfg.diffusion)
        else:
            encoder, in_dim = self.actor_encoder(cfg)
            self.policy = DiffusionPolicy(in_dim, act_dim, cfg.horizon, cfg.act_steps, cfg.diffusion, encoder)

    def act(self, obs: torch.Tensor, deterministic: bool = False, mask: torch.Tensor | None = None) -> ActOutput:
        if self.discrete:
            action, noise, log_prob, mean = self.policy.act(self.actor_obs(obs), deterministic, mask=mask)
        else:
            action, noise, log_prob, mean = self.policy.act(self.actor_obs(obs), deterministic, return_mean=True)
        store = with_mask({"noise": noise, "action": action}, mask if self.discrete else None)
        if self.critic_extra_dim:
            store["mean"] = mean
        return ActOutput(action, log_prob, store)

    def critic_features(self, obs: torch.Tensor, store: dict[str, torch.Tensor]) -> torch.Tensor:
        if not self.critic_extra_dim:
            return self.critic_obs(obs)
        return torch.cat([self.critic_obs(obs), store["mean"].flatten(1)], dim=-1)

    def log_prob_entropy(self, obs: torch.Tensor, store: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.discrete:
            return self.policy.log_prob_entropy(self.actor_obs(obs), store["noise"], store["action"], store.get("mask"))
        return self.policy.log_prob(self.actor_obs(obs), store["noise"], store["action"]), self.policy.entropy()

    def check_init(self, ck: Any) -> None:
        check_same_prediction(ck, self.policy.cfg.prediction)

    def set_progress(self, frac: float) -> None:
        self.policy.set_progress(frac)

    def policy_std(self) -> float:
        return math.nan if self.discrete else float(self.policy.sigma_exp().detach().mean())
