"""Categorical heads for discrete actions: the MLP policy of the MLP+(MA)PPO baseline, and the discrete
diffusion policy of NCDPO (docs/METHOD.md section 2, discrete actions).

Both produce a vector of logits, mask the actions an env declares illegal (``mask`` false: never sampled,
probability exactly 0), and sample the executed action from the categorical distribution; its log-probability
is the log-softmax of the logits. For the diffusion policy the logits are ``logit_scale * m_theta(s, xi)``: the
chain's last-step mean, a vector of ``n_actions`` numbers in [-1, 1] (the chain clips its predictions there),
given the chain noise ``xi`` drawn before acting. So the policy is ``pi(a | s, xi) = softmax(logits)[a]``, exact
and differentiable through every denoising step, as the continuous case.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ncdpo.config import DiffusionConfig, MLPConfig
from ncdpo.policies.common import mlp
from ncdpo.policies.diffusion import DiffusionPolicy

Tensor = torch.Tensor
Mask = torch.Tensor | None
"""Legal-action mask (B, n_actions), true where an action may be taken; None: all are legal."""
Gen = torch.Generator | None

MASKED_LOGIT = -1e9


def masked_logits(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``logits`` with illegal actions (``mask`` false) pushed to a huge negative value (probability 0)."""
    if mask is None:
        return logits
    return logits.masked_fill(~mask.bool(), MASKED_LOGIT)


def sample_categorical(
    logits: torch.Tensor, deterministic: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The argmax, or a draw from ``softmax(logits)``: (B,) int64."""
    if deterministic:
        return logits.argmax(-1)
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def categorical_log_prob(logits: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[action]``: (B,)."""
    return F.log_softmax(logits, dim=-1).gather(-1, action.long().unsqueeze(-1)).squeeze(-1)


def categorical_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the batch of categorical distributions (masked actions contribute nothing)."""
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1).mean()


class CategoricalPolicy(nn.Module):
    """``a ~ Categorical(softmax(f_theta(s)))`` with an MLP ``f_theta`` (the MLP+PPO / MLP+MAPPO baseline)."""

    def __init__(self, obs_dim: int, n_actions: int, cfg: MLPConfig) -> None:
        super().__init__()
        self.n_actions = n_actions
        self.logits_net = mlp(obs_dim, cfg.hidden_dims, n_actions, cfg.activation, out_gain=0.01)

    def logits(self, obs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return masked_logits(self.logits_net(obs), mask)

    def log_prob_entropy(
        self, obs: torch.Tensor, action: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        lg = self.logits(obs, mask)
        return categorical_log_prob(lg, action), categorical_entropy(lg)

    @torch.no_grad()
    def act(
        self, obs: Tensor, deterministic: bool = False, mask: Mask = None, generator: Gen = None
    ) -> tuple[Tensor, Tensor]:
        """Returns ``(action (B,), log-prob (B,))``."""
        lg = self.logits(obs, mask)
        a = sample_categorical(lg, deterministic, generator)
        return a, categorical_log_prob(lg, a)


class DiscreteDiffusionPolicy(DiffusionPolicy):
    """The diffusion policy over a vector of ``n_actions`` logits (horizon 1, one decision per step)."""

    def __init__(self, obs_dim: int, n_actions: int, cfg: DiffusionConfig) -> None:
        super().__init__(obs_dim, n_actions, 1, 1, cfg)
        del self.log_sigma_exp  # no Gaussian last step: the categorical draw is the exploration
        self.n_actions = n_actions

    def logits(self, obs: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``logit_scale * m_theta(s, xi)``, masked: (B, n_actions), differentiable through every denoising step."""
        return masked_logits(self.cfg.logit_scale * self.chain_mean(obs, noise)[:, 0], mask)

    def log_prob_entropy(
        self, obs: torch.Tensor, noise: torch.Tensor, action: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log pi_theta(a | s, xi), mean entropy of pi_theta(. | s, xi))``."""
        lg = self.logits(obs, noise, mask)
        return categorical_log_prob(lg, action), categorical_entropy(lg)

    def sigma_exp(self) -> torch.Tensor:
        raise NotImplementedError("a discrete diffusion policy has no Gaussian exploration std")

    def set_progress(self, frac: float) -> None:
        """Nothing is scheduled."""

    @torch.no_grad()
    def act(  # type: ignore[override]
        self, obs: Tensor, deterministic: bool = False, generator: Gen = None, mask: Mask = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Returns ``(action (B,), noise xi, log-prob (B,), logits (B, n_actions))``."""
        return self.act_given(obs, self.sample_noise(obs.shape[0], generator), deterministic, generator, mask)

    @torch.no_grad()
    def act_given(  # type: ignore[override]
        self, obs: Tensor, noise: Tensor, deterministic: bool = False, generator: Gen = None, mask: Mask = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """:meth:`act` with the chain noise ``xi`` given (e.g. drawn by a noise policy)."""
        lg = self.logits(obs, noise, mask)
        a = sample_categorical(lg, deterministic, generator)
        return a, noise, categorical_log_prob(lg, a), lg
