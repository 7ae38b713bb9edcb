"""The diffusion policy (docs/METHOD.md section 1) and its noise-conditioned form (section 2).

An action chunk ``x`` of shape (horizon, act_dim), normalised to [-1, 1], is generated from an observation
by the reverse chain of a denoiser with a cosine beta schedule (epsilon prediction by default, x0 prediction as
an option: ``DiffusionConfig.prediction``). The chain is split as
NCDPO needs it:

* :meth:`DiffusionPolicy.sample_noise` draws every noise of the chain up front,
  ``xi = (x_K, z_K, ..., z_2)`` stacked as a tensor of shape (batch, n_chain, horizon, act_dim);
* :meth:`DiffusionPolicy.chain_mean` is the deterministic, differentiable map ``(s, xi) -> m_theta(s, xi)``,
  the mean of the last denoising step;
* the executed action is ``a = m + sigma_exp * z_1``, so ``log pi(a | s, xi)`` is a Gaussian log-density.

Chain index ``j = 0 .. n_chain-1`` runs over the denoising timesteps in descending order (all K steps for
DDPM, a uniform sub-sequence for DDIM).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ncdpo.config import DiffusionConfig
from ncdpo.errors import NcdpoError
from ncdpo.policies.common import ACTIVATIONS

LOG_2PI = math.log(2 * math.pi)
Tensor = torch.Tensor
Gen = torch.Generator | None


def cosine_beta_schedule(K: int, s: float = 0.008) -> np.ndarray:
    """Cosine schedule of Nichol & Dhariwal (2021): betas of K steps, clipped to at most 0.999."""
    x = np.linspace(0, K, K + 1, dtype=np.float64)
    abar = np.cos(((x / K) + s) / (1 + s) * np.pi * 0.5) ** 2
    abar = abar / abar[0]
    return np.clip(1 - abar[1:] / abar[:-1], 0.0, 0.999)


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer-style sinusoidal embedding of integer timesteps ``t`` (shape (B,)) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half - 1, 1))
    ang = t.float()[:, None] * freqs[None]
    return torch.cat([ang.sin(), ang.cos()], dim=-1)


class ResidualBlock(nn.Module):
    """Two-layer pre-activation residual block."""

    def __init__(self, dim: int, activation: str) -> None:
        super().__init__()
        self.act = ACTIVATIONS[activation]()
        self.l1, self.l2 = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.l2(self.act(self.l1(self.act(h))))


class Denoiser(nn.Module):
    """Residual MLP ``eps_theta(x_k, k, s)`` (or ``x0_theta``) conditioned on the (normalised) observation."""

    def __init__(self, obs_dim: int, x_dim: int, cfg: DiffusionConfig) -> None:
        super().__init__()
        act = ACTIVATIONS[cfg.activation]
        self.time_dim = cfg.time_dim
        self.time_mlp = nn.Sequential(
            nn.Linear(cfg.time_dim, 2 * cfg.time_dim), act(), nn.Linear(2 * cfg.time_dim, cfg.time_dim)
        )
        self.inp = nn.Linear(x_dim + cfg.time_dim + obs_dim, cfg.hidden_dim)
        self.blocks = nn.Sequential(*[ResidualBlock(cfg.hidden_dim, cfg.activation) for _ in range(cfg.num_blocks)])
        self.out_act = act()
        self.out = nn.Linear(cfg.hidden_dim, x_dim)
        if cfg.init == "orthogonal":
            with torch.no_grad():
                for m in self.modules():
                    if isinstance(m, nn.Linear):
                        nn.init.orthogonal_(m.weight, gain=1.0 if m is self.out else math.sqrt(2))
                        nn.init.zeros_(m.bias)
        if cfg.out_init_scale != 1.0:
            with torch.no_grad():
                self.out.weight.mul_(cfg.out_init_scale)
                self.out.bias.zero_()

    def forward(self, x: torch.Tensor, t: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """``x``: (B, x_dim) flattened chunk; ``t``: (B,) integer timesteps; ``obs``: (B, obs_dim)."""
        temb = self.time_mlp(sinusoidal_embedding(t, self.time_dim))
        h = self.inp(torch.cat([x, temb, obs], dim=-1))
        return self.out(self.out_act(self.blocks(h)))


class DiffusionPolicy(nn.Module):
    """Epsilon-prediction diffusion policy over action chunks, with the NCDPO noise-conditioned view."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        horizon: int,
        act_steps: int,
        cfg: DiffusionConfig,
        encoder: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.horizon, self.act_steps = obs_dim, act_dim, horizon, act_steps
        self.cfg = cfg
        self.encoder = encoder
        """Dict observations: the network that turns an observation into the features the denoiser is
        conditioned on (``obs_dim`` is then its output width); None: the observation is the condition."""
        self.K = cfg.denoising_steps
        self.denoiser = Denoiser(obs_dim, horizon * act_dim, cfg)

        betas = cosine_beta_schedule(self.K)
        alphas = 1.0 - betas
        abar = np.cumprod(alphas)
        abar_prev = np.concatenate([[1.0], abar[:-1]])
        f32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
        # Training-time quantities (all K steps), used by the behaviour-cloning loss.
        self.register_buffer("sqrt_abar", f32(np.sqrt(abar)), persistent=False)
        self.register_buffer("sqrt_one_minus_abar", f32(np.sqrt(1 - abar)), persistent=False)

        # Per chain-step coefficients: t_j, x0 = ca*x - cb*eps, mean = c_x0*x0 + c_x*x + c_eps*eps, std.
        if cfg.sampler == "ddpm":
            ts = np.arange(self.K)[::-1].copy()
            c_x0 = betas * np.sqrt(abar_prev) / (1 - abar)
            c_x = (1 - abar_prev) * np.sqrt(alphas) / (1 - abar)
            std = np.sqrt(np.clip(betas * (1 - abar_prev) / (1 - abar), 0, None))
            coefs = [(c_x0[t], c_x[t], 0.0, std[t]) for t in ts]
        else:
            sub = np.unique(np.round(np.linspace(0, self.K - 1, cfg.ddim_steps)).astype(np.int64))
            ts = sub[::-1].copy()
            coefs = []
            for j, t in enumerate(ts):
                a_t = abar[t]
                a_p = abar[ts[j + 1]] if j + 1 < len(ts) else 1.0
                sig = cfg.ddim_eta * math.sqrt((1 - a_p) / (1 - a_t) * (1 - a_t / a_p))
                coefs.append((math.sqrt(a_p), 0.0, math.sqrt(max(1 - a_p - sig**2, 0.0)), sig))
        coefs_np = np.array(coefs, dtype=np.float64)
        std_np = coefs_np[:, 3].copy()
        std_np[:-1] = np.maximum(std_np[:-1], cfg.min_chain_std)
        self.register_buffer("chain_t", torch.as_tensor(ts, dtype=torch.long), persistent=False)
        self.register_buffer("c_a", f32(np.sqrt(1 / abar[ts])), persistent=False)
        self.register_buffer("c_b", f32(np.sqrt(1 / abar[ts] - 1)), persistent=False)
        self.register_buffer("c_x0", f32(coefs_np[:, 0]), persistent=False)
        self.register_buffer("c_x", f32(coefs_np[:, 1]), persistent=False)
        self.register_buffer("c_eps", f32(coefs_np[:, 2]), persistent=False)
        self.register_buffer("chain_std", f32(std_np), persistent=False)
        self.n_chain = len(ts)

        # Exploration std of the last step: a learnable parameter or a scheduled buffer.
        scale = (
            torch.ones(act_dim) if not cfg.sigma_exp_scale else torch.tensor(cfg.sigma_exp_scale, dtype=torch.float32)
        )
        if scale.shape != (act_dim,):
            raise NcdpoError(
                f"diffusion.sigma_exp_scale has {len(cfg.sigma_exp_scale)} entries but the action has "
                f"{act_dim} dimensions"
            )
        self.register_buffer("log_sigma_scale", scale.log(), persistent=False)
        log_sigma = math.log(cfg.sigma_exp_start) + self.log_sigma_scale
        if cfg.sigma_exp == "learnable":
            self.log_sigma_exp = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma_exp", log_sigma)

    def encode(self, obs: Any) -> torch.Tensor:
        """The denoiser's condition for observations: the encoder's features (computed once per decision and
        reused by every chain step), or the observation itself."""
        return obs if self.encoder is None else self.encoder(obs)

    # ---------------------------------------------------------------- the NCDPO decomposition
    def sample_noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise-sampling phase: ``xi`` of shape (batch, n_chain, horizon, act_dim), times
        ``cfg.chain_noise_scale`` (1 unless the noise-conditioning ablation is asked for)."""
        dev = self.c_a.device
        xi = torch.randn(batch, self.n_chain, self.horizon, self.act_dim, generator=generator, device=dev)
        scale = self.cfg.chain_noise_scale
        return xi if scale == 1.0 else xi * scale

    def step_mean(
        self, x: torch.Tensor, obs: torch.Tensor, j: int | torch.Tensor, denoiser: nn.Module | None = None
    ) -> torch.Tensor:
        """Mean of chain step ``j`` given the flattened latent ``x`` (B, H*A).

        ``j`` is one chain index or a (B,) tensor of them (one per sample, for DPPO's per-step samples);
        ``denoiser`` replaces the policy's own (DPPO runs the early steps with a frozen copy).
        """
        per_sample = torch.is_tensor(j)
        c = (lambda buf: buf[j][:, None]) if per_sample else (lambda buf: buf[j])  # noqa: E731
        t = self.chain_t[j] if per_sample else self.chain_t[j].expand(x.shape[0])
        out = (denoiser or self.denoiser)(x, t, obs)
        c_a, c_b = c(self.c_a), c(self.c_b)
        x0 = out if self.cfg.prediction == "x0" else c_a * x - c_b * out
        clip = self.cfg.denoised_clip
        if clip > 0:
            if per_sample and not self.cfg.clip_last_step:
                x0 = torch.where(j[:, None] + 1 < self.n_chain, x0.clamp(-clip, clip), x0)
            elif per_sample or j + 1 < self.n_chain or self.cfg.clip_last_step:
                x0 = x0.clamp(-clip, clip)
        if self.cfg.sampler == "ddim":  # eps consistent with the clipped x0
            eps = (x - x0 / c_a) * (c_a / c_b)
            return c(self.c_x0) * x0 + c(self.c_eps) * eps
        return c(self.c_x0) * x0 + c(self.c_x) * x

    def chain_mean(
        self, obs: torch.Tensor, noise: torch.Tensor, return_latents: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Deterministic phase: ``m_theta(s, xi)``, differentiable through every denoising step. ``obs`` is the
        condition (:meth:`encode`'s output).

        Returns the last step's mean of shape (B, horizon, act_dim) and, if asked, the list of latents fed
        to each step (``latents[j]`` is the input of chain step ``j``), for gradient probes.
        """
        B = obs.shape[0]
        x = noise[:, 0].reshape(B, -1)
        latents = []
        use_ckpt = self.cfg.grad_checkpoint and torch.is_grad_enabled()
        for j in range(self.n_chain):
            latents.append(x)
            mean = checkpoint(self.step_mean, x, obs, j, use_reentrant=False) if use_ckpt else self.step_mean(x, obs, j)
            x = mean + self.chain_std[j] * noise[:, j + 1].reshape(B, -1) if j + 1 < self.n_chain else mean
        m = x.view(B, self.horizon, self.act_dim)
        return (m, latents) if return_latents else m

    def sigma_exp(self) -> torch.Tensor:
        """Exploration std of the last step, shape (act_dim,)."""
        s = self.log_sigma_exp.exp()
        if self.cfg.sigma_exp == "learnable":
            s = s.clamp(self.cfg.sigma_exp_min, self.cfg.sigma_exp_max)
        return s

    def set_progress(self, frac: float) -> None:
        """Update a scheduled exploration std; ``frac`` is the fraction of the run done."""
        if self.cfg.sigma_exp == "linear":
            s = self.cfg.sigma_exp_start + min(max(frac, 0.0), 1.0) * (
                self.cfg.sigma_exp_end - self.cfg.sigma_exp_start
            )
            self.log_sigma_exp.copy_(math.log(s) + self.log_sigma_scale)

    def log_prob(self, obs: torch.Tensor, noise: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``log pi_theta(a | s, xi)`` of the executed actions ``a`` (B, act_steps, act_dim)."""
        return self.log_prob_features(self.encode(obs), noise, action)

    def log_prob_features(self, feat: torch.Tensor, noise: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """:meth:`log_prob` given the condition :meth:`encode` computed."""
        m = self.chain_mean(feat, noise)[:, : self.act_steps]
        return gaussian_log_prob(action, m, self.sigma_exp())

    def entropy(self) -> torch.Tensor:
        """Entropy of the last-step Gaussian over the executed actions (depends only on sigma_exp)."""
        return self.act_steps * (0.5 * (1.0 + LOG_2PI) + self.sigma_exp().log()).sum()

    @torch.no_grad()
    def act(
        self, obs: Tensor, deterministic: bool = False, generator: Gen = None, return_mean: bool = False
    ) -> tuple[Tensor, ...]:
        """Sample executed actions. Returns ``(action (B, act_steps, A), noise xi, log-prob (B,))``, plus the
        chain mean ``m_theta(s, xi)`` of the executed actions if ``return_mean``."""
        feat = self.encode(obs)
        return self.act_given(feat, self.sample_noise(feat.shape[0], generator), deterministic, generator, return_mean)

    @torch.no_grad()
    def act_given(
        self, feat: Tensor, noise: Tensor, deterministic: bool = False, generator: Gen = None, return_mean: bool = False
    ) -> tuple[Tensor, ...]:
        """:meth:`act` given the condition :meth:`encode` computed and the chain noise ``xi`` (e.g. drawn by a noise
        policy)."""
        m = self.chain_mean(feat, noise)[:, : self.act_steps]
        if deterministic:
            a = m
        else:
            z = torch.randn(m.shape, generator=generator, device=m.device)
            a = m + self.sigma_exp() * z
        out = (a, noise, gaussian_log_prob(a, m, self.sigma_exp()))
        return (*out, m) if return_mean else out

    # ---------------------------------------------------------------- behaviour cloning
    def bc_loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Denoising loss on action chunks ``actions`` (B, horizon, act_dim) in [-1, 1]: the MSE of the
        predicted noise (``prediction: epsilon``) or of the predicted clean chunk (``x0``)."""
        obs = self.encode(obs)
        B = obs.shape[0]
        x0 = actions.reshape(B, -1)
        t = torch.randint(0, self.K, (B,), device=x0.device)
        eps = torch.randn_like(x0)
        xt = self.sqrt_abar[t, None] * x0 + self.sqrt_one_minus_abar[t, None] * eps
        return F.mse_loss(self.denoiser(xt, t, obs), x0 if self.cfg.prediction == "x0" else eps)


def gaussian_log_prob(a: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Sum over all but the batch dimension of ``log N(a; mean, std^2)``; ``std`` broadcasts."""
    var = std**2
    lp = -((a - mean) ** 2) / (2 * var) - std.log() - 0.5 * LOG_2PI
    return lp.flatten(1).sum(-1)
