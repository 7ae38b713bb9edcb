"""NCDPO's noise policy (an extension beyond the paper; docs/METHOD.md section 6).

The chain noise ``xi`` of the diffusion policy (:meth:`DiffusionPolicy.sample_noise`) picks a behaviour: on the
robosuite Lift BC policy the same state both succeeds and fails depending on it (benchmarks/RESULTS.md section 6).
The noise policy makes (part of) it a learned, state-conditioned Gaussian

    xi_c ~ N(mu_psi(s), diag(sigma_psi)^2),

with ``mu_psi`` an MLP of the actor's features whose output layer starts at zero and ``sigma_psi`` a learned
state-independent std per noise dimension that starts at 1: at the start it is ``N(0, I)`` exactly, so the
fine-tuning starts from the BC policy unchanged. ``xi_c`` is either the initial latent ``x_K`` (``covers:
initial``) or every noise of the chain (``covers: all``); the rest of ``xi`` stays ``N(0, I)``.

A draw reuses the standard-normal noise the diffusion policy drew anyway, ``xi_c = mu + sigma * eps``: with
``mu = 0`` and ``sigma = 1`` it is that noise bit for bit, so a frozen noise policy acts exactly as plain NCDPO.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ncdpo.config import NoisePolicyConfig
from ncdpo.policies.common import mlp

LOG_2PI = math.log(2 * math.pi)


class NoisePolicy(nn.Module):
    """``N(mu_psi(s), diag(sigma_psi)^2)`` over the covered chain noise ``xi_c`` of shape ``(n_covered, *step)``."""

    def __init__(self, in_dim: int, n_chain: int, step_shape: tuple[int, ...], cfg: NoisePolicyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_covered = 1 if cfg.covers == "initial" else n_chain
        """Leading chain entries the noise policy draws (``xi[:, :n_covered]``)."""
        self.shape = (self.n_covered, *step_shape)
        n = math.prod(self.shape)
        self.mean_net = mlp(in_dim, cfg.hidden_dims, n, cfg.activation, out_gain=0.0)  # output layer all zero
        self.log_std = nn.Parameter(torch.full((n,), math.log(cfg.std_init)))
        self.log_std_bounds = (math.log(cfg.std_min), math.log(cfg.std_max))

    def mean(self, feat: torch.Tensor) -> torch.Tensor:
        """``mu_psi(s)`` of shape (B, n_covered, *step) from the actor's features."""
        return self.mean_net(feat).view(feat.shape[0], *self.shape)

    def std(self) -> torch.Tensor:
        """``sigma_psi``, shaped like one draw (n_covered, *step)."""
        return self.log_std.exp().view(self.shape)

    def draw(self, feat: torch.Tensor, eps: torch.Tensor, use_mean: bool = False) -> torch.Tensor:
        """``xi_c = mu_psi(s) + sigma_psi * eps`` for the standard-normal draws ``eps`` (B, n_covered, *step);
        ``use_mean``: ``mu_psi(s)`` itself."""
        mu = self.mean(feat)
        return mu if use_mean else mu + self.std() * eps

    def log_prob(self, feat: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        """``log N(xi_c; mu_psi(s), sigma_psi^2)`` summed over the covered dimensions: (B,)."""
        mu = self.mean(feat)
        log_std = self.log_std.view(self.shape)
        z = (xi - mu) * torch.exp(-log_std)
        return (-0.5 * z**2 - log_std - 0.5 * LOG_2PI).flatten(1).sum(-1)

    @torch.no_grad()
    def project_(self) -> None:
        """Keep ``sigma_psi`` within ``[std_min, std_max]`` (called after every optimiser step)."""
        self.log_std.clamp_(*self.log_std_bounds)
