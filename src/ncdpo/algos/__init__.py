"""Algorithms: one shared PPO core (:mod:`ncdpo.algos.core`) and a small agent per algorithm."""

from __future__ import annotations

from ncdpo.algos.base import ActOutput, Agent
from ncdpo.algos.dppo import DPPOAgent
from ncdpo.algos.ncdpo import NCDPOAgent
from ncdpo.algos.ppo import PPOAgent
from ncdpo.config import TrainConfig
from ncdpo.envs.spec import EnvSpec

AGENTS: dict[str, type[Agent]] = {"ncdpo": NCDPOAgent, "ppo": PPOAgent, "dppo": DPPOAgent}


def make_agent(cfg: TrainConfig, obs_dim: int, act_dim: int, spec: EnvSpec | None = None) -> Agent:
    """Build the agent of ``cfg.algo`` for an env with the given dimensions (``spec``: discrete actions,
    multi-agent rows; default a single agent with continuous actions)."""
    return AGENTS[cfg.algo](obs_dim, act_dim, cfg, spec)


__all__ = ["AGENTS", "ActOutput", "Agent", "DPPOAgent", "NCDPOAgent", "PPOAgent", "make_agent"]
