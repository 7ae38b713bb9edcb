"""PPO's pieces of maths: generalised advantage estimation, the clipped surrogate and the value loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ncdpo.errors import NonFiniteError


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, last_value: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over a (T, N) rollout.

    ``dones[t]`` marks that the episode ended with transition ``t`` (terminated or truncated; truncated
    rewards already carry the bootstrapped ``gamma * V(final_obs)``). Returns ``(advantages, returns)``.
    """
    T = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(last_value)
    for t in reversed(range(T)):
        next_value = last_value if t == T - 1 else values[t + 1]
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * not_done - values[t]
        last = delta + gamma * lam * not_done * last
        adv[t] = last
    return adv, adv + values


@dataclass
class PolicyLoss:
    """The clipped surrogate and its diagnostics for one minibatch (factored: ``approx_kl``, ``clipfrac`` and
    ``factor_losses`` per factor, ``loss`` their sum)."""

    loss: torch.Tensor
    ratio: torch.Tensor
    approx_kl: torch.Tensor
    clipfrac: torch.Tensor
    factor_losses: torch.Tensor | None = None


def clipped_policy_loss(
    new_log_prob: torch.Tensor, old_log_prob: torch.Tensor, adv: torch.Tensor, clip: float | torch.Tensor
) -> PolicyLoss:
    """PPO's clipped surrogate, to be minimised: ``-min(r A, clip(r, 1-c, 1+c) A)`` averaged.

    Factored PPO (log-probabilities and advantages of shape (B, F), one column per factor of the action, ``clip``
    a float or one per factor): each factor has its own ratio, clip and advantage, and the loss is the sum of the
    factors' surrogates."""
    log_ratio = new_log_prob - old_log_prob
    ratio = log_ratio.exp()
    surrogate = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip))
    if surrogate.dim() > 1:
        per_factor = surrogate.mean(0)
        with torch.no_grad():
            approx_kl = ((ratio - 1) - log_ratio).mean(0)
            clipfrac = ((ratio - 1).abs() > clip).float().mean(0)
        return PolicyLoss(per_factor.sum(), ratio, approx_kl, clipfrac, per_factor)
    loss = surrogate.mean()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()
        clipfrac = ((ratio - 1).abs() > clip).float().mean()
    return PolicyLoss(loss, ratio, approx_kl, clipfrac)


def value_loss(new_v: torch.Tensor, old_v: torch.Tensor, returns: torch.Tensor, clip: float | None) -> torch.Tensor:
    """0.5 * squared error, optionally clipped around the old value estimate."""
    if clip is None:
        return 0.5 * ((new_v - returns) ** 2).mean()
    v_clipped = old_v + (new_v - old_v).clamp(-clip, clip)
    return 0.5 * torch.max((new_v - returns) ** 2, (v_clipped - returns) ** 2).mean()


def check_finite(x: torch.Tensor, what: str) -> None:
    """Raise :class:`NonFiniteError` naming ``what`` if ``x`` holds a NaN or an infinity (before any step)."""
    if not bool(torch.isfinite(x).all()):
        value = float(x.detach().float().flatten()[0]) if x.numel() == 1 else "tensor"
        raise NonFiniteError(f"non-finite {what} ({value}); the update was not applied")
