"""Gaussian MLP policy with a state-independent log-std (the MLP+PPO baseline)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ncdpo.config import MLPConfig
from ncdpo.policies.common import mlp
from ncdpo.policies.diffusion import LOG_2PI, gaussian_log_prob


class GaussianPolicy(nn.Module):
    """``a ~ N(mu_theta(s), diag(exp(log_std))^2)`` over the ``act_steps`` executed actions of a chunk."""

    def __init__(
        self, obs_dim: int, act_dim: int, act_steps: int, cfg: MLPConfig, encoder: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.act_dim, self.act_steps = act_dim, act_steps
        self.encoder = encoder
        """Dict observations: the features the MLP reads (``obs_dim`` is their width); None: the observation."""
        self.mean_net = mlp(obs_dim, cfg.hidden_dims, act_steps * act_dim, cfg.activation, out_gain=0.01)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(cfg.init_log_std)))

    def mean(self, obs: Any) -> torch.Tensor:
        x = obs if self.encoder is None else self.encoder(obs)
        return self.mean_net(x).view(x.shape[0], self.act_steps, self.act_dim)

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return gaussian_log_prob(action, self.mean(obs), self.log_std.exp())

    def entropy(self) -> torch.Tensor:
        return self.act_steps * (0.5 * (1.0 + LOG_2PI) + self.log_std).sum()

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(action (B, act_steps, A), log-prob (B,))``."""
        mu, std = self.mean(obs), self.log_std.exp()
        a = mu if deterministic else mu + std * torch.randn(mu.shape, generator=generator, device=mu.device)
        return a, gaussian_log_prob(a, mu, std)
