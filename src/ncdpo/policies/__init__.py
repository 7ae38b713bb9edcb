"""Policies: the diffusion policy (NCDPO), the Gaussian MLP (PPO baseline), shared blocks."""

from ncdpo.policies.common import Critic, ObsNormalizer, RewardScaler, RunningMeanStd
from ncdpo.policies.diffusion import DiffusionPolicy, cosine_beta_schedule
from ncdpo.policies.gaussian import GaussianPolicy

__all__ = [
    "Critic",
    "DiffusionPolicy",
    "GaussianPolicy",
    "ObsNormalizer",
    "RewardScaler",
    "RunningMeanStd",
    "cosine_beta_schedule",
]
