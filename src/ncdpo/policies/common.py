"""Building blocks shared by the policies: MLPs, activations, running statistics, the critic."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "silu": nn.SiLU, "mish": nn.Mish}


def mlp(
    in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "tanh", out_gain: float = 1.0
) -> nn.Sequential:
    """A plain MLP with orthogonal initialisation (CleanRL/SB3 style)."""
    layers: list[nn.Module] = []
    dims = [in_dim, *hidden]
    for a, b in zip(dims, dims[1:]):
        lin = nn.Linear(a, b)
        nn.init.orthogonal_(lin.weight, gain=np.sqrt(2))
        nn.init.zeros_(lin.bias)
        layers += [lin, ACTIVATIONS[activation]()]
    last = nn.Linear(dims[-1], out_dim)
    nn.init.orthogonal_(last.weight, gain=out_gain)
    nn.init.zeros_(last.bias)
    layers.append(last)
    return nn.Sequential(*layers)


class Critic(nn.Module):
    """Value function on normalised observations (plus any extra features the agent appends).

    For a dict observation the critic has its own :attr:`encoder` (:mod:`ncdpo.policies.encoders`), which the
    agent applies (:meth:`encode`) before appending its features; ``obs_dim`` is then the width of the MLP's
    input beyond the encoder's features.
    """

    def __init__(
        self,
        obs_dim: int,
        hidden: Sequence[int] = (256, 256),
        activation: str = "tanh",
        encoder: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        in_dim = obs_dim + (encoder.out_dim if encoder is not None else 0)
        self.net = mlp(in_dim, hidden, 1, activation, out_gain=1.0)

    def encode(self, obs: Any) -> torch.Tensor:
        return obs if self.encoder is None else self.encoder(obs)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)


class RunningMeanStd:
    """Running mean and variance (parallel algorithm of Chan et al.), float64, as in gymnasium/SB3."""

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = 1e-4

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64)
        b_mean, b_var, b_count = x.mean(axis=0), x.var(axis=0), x.shape[0]
        delta = b_mean - self.mean
        tot = self.count + b_count
        new_mean = self.mean + delta * b_count / tot
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / tot
        self.mean, self.var, self.count = new_mean, m2 / tot, tot

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.mean": torch.as_tensor(self.mean),
            f"{prefix}.var": torch.as_tensor(self.var),
            f"{prefix}.count": torch.tensor([self.count], dtype=torch.float64),
        }

    def load(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        mean = tensors[f"{prefix}.mean"].numpy().astype(np.float64)
        if mean.shape != self.mean.shape:
            raise ValueError(f"{prefix} has shape {tuple(mean.shape)}, expected {tuple(self.mean.shape)}")
        self.mean = mean
        self.var = tensors[f"{prefix}.var"].numpy().astype(np.float64)
        self.count = float(tensors[f"{prefix}.count"][0])


class ObsNormalizer:
    """Observation normalisation ``clip((o - mean) / sqrt(var + eps))``; identity when disabled."""

    def __init__(self, obs_dim: int, enabled: bool = True, clip: float = 10.0) -> None:
        self.rms = RunningMeanStd((obs_dim,))
        self.enabled, self.clip = enabled, clip

    def __call__(self, obs: np.ndarray, update: bool = False) -> np.ndarray:
        obs = np.asarray(obs, np.float64)
        if not self.enabled:
            return obs.astype(np.float32)
        if update:
            self.rms.update(obs)
        out = (obs - self.rms.mean) / np.sqrt(self.rms.var + 1e-8)
        return np.clip(out, -self.clip, self.clip).astype(np.float32)


class KeyedRunningMeanStd:
    """:class:`RunningMeanStd` per low-dim key of a dict observation, saved as ``<prefix>.<key>.mean`` etc."""

    def __init__(self, dims: dict[str, int]) -> None:
        self.stats = {k: RunningMeanStd((d,)) for k, d in dims.items()}

    def update(self, obs: dict[str, np.ndarray]) -> None:
        for k, rms in self.stats.items():
            rms.update(obs[k])

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for k, rms in self.stats.items():
            out.update(rms.state(f"{prefix}.{k}"))
        return out

    def load(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        missing = [k for k in self.stats if f"{prefix}.{k}.mean" not in tensors]
        if missing:
            raise ValueError(f"{prefix} has no statistics of observation entry '{missing[0]}'")
        for k, rms in self.stats.items():
            rms.load(tensors, f"{prefix}.{k}")


class DictObsNormalizer:
    """:class:`ObsNormalizer` for dict observations: each low-dim entry normalised with its own statistics;
    images pass through as uint8 (the encoder scales them)."""

    def __init__(self, spec: Any, enabled: bool = True, clip: float = 10.0) -> None:
        self.lowdim = {k: int(np.prod(spec.shape(k))) for k in spec.lowdim_keys}
        self.images = spec.image_keys
        self.rms = KeyedRunningMeanStd(self.lowdim)
        self.enabled, self.clip = enabled, clip

    def __call__(self, obs: dict[str, np.ndarray], update: bool = False) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {k: np.asarray(obs[k], np.uint8) for k in self.images}
        low = {k: np.asarray(obs[k], np.float64) for k in self.lowdim}
        if self.enabled and update:
            self.rms.update(low)
        for k, x in low.items():
            if self.enabled:
                rms = self.rms.stats[k]
                x = np.clip((x - rms.mean) / np.sqrt(rms.var + 1e-8), -self.clip, self.clip)
            out[k] = x.astype(np.float32)
        return out


def make_obs_normalizer(spec: Any, enabled: bool = True, clip: float = 10.0) -> "ObsNormalizer | DictObsNormalizer":
    """The normaliser of an :class:`~ncdpo.envs.spec.EnvSpec`'s observations (flat or dict)."""
    obs = spec.obs_spec
    return ObsNormalizer(spec.obs_dim, enabled, clip) if obs is None else DictObsNormalizer(obs, enabled, clip)


class RewardScaler:
    """Divide rewards by the running std of the discounted return (gymnasium's NormalizeReward)."""

    def __init__(self, n_envs: int, gamma: float, enabled: bool = True) -> None:
        self.rms = RunningMeanStd(())
        self.ret = np.zeros(n_envs, np.float64)
        self.gamma, self.enabled = gamma, enabled

    def __call__(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        if not self.enabled:
            return reward.astype(np.float32)
        self.ret = self.ret * self.gamma + reward
        self.rms.update(self.ret)
        self.ret[done] = 0.0
        return (reward / np.sqrt(self.rms.var + 1e-8)).astype(np.float32)


class ValueNorm(nn.Module):
    """Running mean and std of the value targets (MAPPO's ValueNorm); saved with the agent's weights.

    The critic learns ``normalize(returns)``; :meth:`denormalize` maps its output back to returns.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("var", torch.ones((), dtype=torch.float64))
        self.register_buffer("count", torch.full((), 1e-4, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.detach().double().flatten()
        b_mean, b_var, b_count = x.mean(), x.var(unbiased=False), x.numel()
        delta, tot = b_mean - self.mean, self.count + b_count
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / tot
        self.mean.copy_(self.mean + delta * b_count / tot)
        self.var.copy_(m2 / tot)
        self.count.copy_(tot)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / (self.var + 1e-8).sqrt()).to(x.dtype)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x * (self.var + 1e-8).sqrt() + self.mean).to(x.dtype)
